"""The README's main job, at this stage of the library: roll a random policy through a pixel env,
write what the agent sees as a GIF and a PNG strip, and report the env's speed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from voc_rl.envs import make_env


@dataclass(frozen=True)
class RolloutReport:
    task: str
    steps: int
    episode_return: float
    seconds: float
    gif: Path
    strip: Path

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    def summary(self) -> str:
        return (
            f"{self.task}: {self.steps} agent steps of a random policy in {self.seconds:.2f} s "
            f"({self.steps_per_s:.0f} steps/s with rendering), return {self.episode_return:.1f}; "
            f"wrote {self.gif} and {self.strip}"
        )


def random_rollout(
    task: str = "cheetah-run",
    steps: int = 500,
    out_dir: str | Path = "quickstart",
    seed: int = 0,
    size: int = 64,
    strip_frames: int = 8,
) -> RolloutReport:
    """Run ``steps`` random agent steps (resetting at episode ends) and save the frames."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(task, size=size, seed=seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    frames = [obs[-3:].transpose(1, 2, 0)]  # newest frame of the stack, (H, W, 3)
    total = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total += reward
        frames.append(obs[-3:].transpose(1, 2, 0))
        if terminated or truncated:
            obs, _ = env.reset()
    seconds = time.perf_counter() - start
    env.close()

    name = task.split("/")[-1]
    gif = out / f"{name}.gif"
    images = [Image.fromarray(f).resize((size * 2, size * 2), Image.NEAREST) for f in frames[::2]]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=40, loop=0)
    picks = np.linspace(0, len(frames) - 1, min(strip_frames, len(frames))).astype(int)
    strip = out / f"{name}_strip.png"
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(strip)
    return RolloutReport(name, steps, total, seconds, gif, strip)
