"""Collect pixel datasets: a behaviour policy acts on states while the env renders what it sees.

Dataset kinds per task: ``random``, ``medium``, ``expert`` and ``mixed``, whole episodes of the
three levels in the proportions of :data:`MIXED_PROPORTIONS` (assigned exactly, in an order
shuffled by the seed). 200 episodes of 500 agent steps = 100k transitions, the V-D4RL size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from voc_rl.behavior import LEVELS, BehaviorPolicy, Policy, load_policy
from voc_rl.data.storage import DatasetWriter, Episode, dataset_dir
from voc_rl.envs import env_id, make_env
from voc_rl.paths import check_writable, user_path

KINDS = (*LEVELS, "mixed")
MIXED_PROPORTIONS = {"random": 1 / 3, "medium": 1 / 3, "expert": 1 / 3}
POLICY_IDS = {"random": 0, "medium": 1, "expert": 2, "file": 3}


def _episode_levels(kind: str, episodes: int, rng: np.random.Generator) -> list[str]:
    if kind != "mixed":
        return [kind] * episodes
    counts = {lvl: int(np.floor(p * episodes)) for lvl, p in MIXED_PROPORTIONS.items()}
    for lvl in list(MIXED_PROPORTIONS)[: episodes - sum(counts.values())]:
        counts[lvl] += 1  # hand out the remainder in order
    levels = [lvl for lvl, n in counts.items() for _ in range(n)]
    return [levels[i] for i in rng.permutation(len(levels))]


def describe_policy(policy: Policy) -> dict[str, Any]:
    return {"name": policy.name, **(policy.meta if isinstance(policy, BehaviorPolicy) else {})}


def collect(
    task: str,
    policy: str = "medium",
    episodes: int = 200,
    out: str | Path = "datasets",
    seed: int = 0,
    size: int = 64,
    action_repeat: int = 2,
    render_quality: str = "fast",
    policy_file: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Collect ``episodes`` episodes into a Minari dataset under ``out``; returns its folder.

    ``policy`` is a level or ``mixed``; ``policy_file`` (a behaviour-policy checkpoint) overrides
    it with a policy of your own.
    """
    out = check_writable(out, "dataset folder")
    if policy not in KINDS and policy_file is None:
        raise ValueError(f"unknown dataset kind {policy!r}; choose from {KINDS} or pass a policy file")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    rng = np.random.default_rng(seed)
    if policy_file is not None:
        policies: dict[str, Policy] = {"file": BehaviorPolicy.load(user_path(policy_file))}
        levels = ["file"] * episodes
        kind = "custom"
    else:
        kind = policy
        levels = _episode_levels(kind, episodes, rng)
        policies = {lvl: load_policy(task, lvl) for lvl in sorted(set(levels))}
    env_kwargs = {
        "size": size,
        "action_repeat": action_repeat,
        "render_quality": render_quality,
        "frame_stack": 1,
    }
    env = make_env(task, seed=seed, **env_kwargs)
    base = env.unwrapped
    name = name or f"{task}-{kind}"
    metadata = {
        "task": task,
        "kind": kind,
        "seed": seed,
        "reward_max": float(action_repeat),  # DMC rewards are in [0, 1] per control step
        "camera": base.camera_id,
        "policies": {
            str(POLICY_IDS[lvl]): {"level": lvl, **describe_policy(p)} for lvl, p in policies.items()
        },
        "mixed_proportions": MIXED_PROPORTIONS if kind == "mixed" else None,
        "description": f"{task} pixels ({size}px, action repeat {action_repeat}), {kind} behaviour policy",
    }
    writer = DatasetWriter(
        root=out,
        name=name,
        env_id=env_id(task),
        env_kwargs={**env_kwargs, "camera": base.camera_id},
        action_dim=int(env.action_space.shape[0]),
        frame_shape=(3, size, size),
        metadata=metadata,
        overwrite=overwrite,
    )
    total = episodes * base.max_episode_steps
    with writer, tqdm(total=total, unit="frame", disable=not progress, desc=name, smoothing=0.05) as bar:
        for ep, lvl in enumerate(levels):
            obs, info = env.reset(seed=seed * 1_000_003 + ep)
            frames, proprio, physics, actions, rewards = (
                [obs],
                [info["proprio"]],
                [info["physics_state"]],
                [],
                [],
            )
            done = terminated = False
            while not done:
                action = policies[lvl].act(info["proprio"], rng)
                obs, reward, terminated, truncated, info = env.step(action)
                frames.append(obs)
                proprio.append(info["proprio"])
                physics.append(info["physics_state"])
                actions.append(action)
                rewards.append(reward)
                done = terminated or truncated
                bar.update(1)
            writer.add(
                Episode(
                    frames=np.stack(frames),
                    actions=np.asarray(actions, np.float32),
                    rewards=np.asarray(rewards, np.float32),
                    terminated=bool(terminated),
                    proprio=np.stack(proprio),
                    physics_state=np.stack(physics),
                    policy_id=POLICY_IDS[lvl],
                    seed=seed * 1_000_003 + ep,
                )
            )
        path = writer.finalize()
    env.close()
    assert path == dataset_dir(out, name)
    return path
