"""voc_rl's gymnasium environments, registered under the ``voc_rl/`` namespace on ``import voc_rl``.

Entry points are strings, so dm_control and MuJoCo load only when an env is made (and Minari can
record these envs). ``gym.make("voc_rl/cheetah-run-v0", size=84, frame_stack=3, action_repeat=2,
camera=0, render_quality="fast", obs_type="pixels", seed=0)``; every kwarg is optional.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

NAMESPACE = "voc_rl"

# task name -> (dm_control domain, dm_control task). Camera 2 for quadruped, 0 otherwise, as in the
# published pixel benchmarks; the env picks it.
DMC_TASKS: dict[str, tuple[str, str]] = {
    "cheetah-run": ("cheetah", "run"),
    "walker-walk": ("walker", "walk"),
    "walker-run": ("walker", "run"),
    "walker-stand": ("walker", "stand"),
    "quadruped-run": ("quadruped", "run"),
    "quadruped-walk": ("quadruped", "walk"),
    "humanoid-walk": ("humanoid", "walk"),
    "hopper-hop": ("hopper", "hop"),
    "cartpole-swingup": ("cartpole", "swingup"),
    "finger-spin": ("finger", "spin"),
    "reacher-easy": ("reacher", "easy"),
    "cup-catch": ("ball_in_cup", "catch"),
}
FAKE_TASK = "fake-pixels"


def env_id(task: str) -> str:
    """``"cheetah-run"`` -> ``"voc_rl/cheetah-run-v0"``; full ids pass through."""
    return task if task.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{task}-v0"


def list_envs() -> list[str]:
    """All registered voc_rl env ids."""
    return sorted(i for i in gym.registry if i.startswith(f"{NAMESPACE}/"))


def make_env(task: str, **kwargs: Any) -> gym.Env:
    """Make a voc_rl env from a short task name or a full id; an unknown name suggests close ones."""
    full = env_id(task)
    if full not in gym.registry:
        known = list_envs()
        close = difflib.get_close_matches(full, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise gym.error.NameNotFound(f"Unknown voc_rl environment {task!r}.{hint} Known: {', '.join(known)}")
    return gym.make(full, **kwargs)


def state_env(task: str, env_kwargs: dict[str, Any] | None = None) -> Any:
    """The env ``task`` made with ``env_kwargs`` (a dataset's, say) but with state observations and
    one frame (nothing is rendered for DMC), unwrapped (no wrapper's cost per step) and reset with
    seed 0: what replays and simulator rollouts restore physics states into."""
    kwargs = {**(env_kwargs or {}), "frame_stack": 1, "obs_type": "state"}
    env = make_env(task, seed=0, **kwargs).unwrapped
    env.reset(seed=0)
    return env


def state_parts(task: str, dim: int) -> dict[str, np.ndarray]:
    """Columns of the recorded (flattened) state that are velocities and the rest (positions,
    orientations, height), from the task's observation spec in dm_control's key order."""
    sizes = state_env(task).proprio_parts
    velocity = np.zeros(dim, bool)
    start = 0
    for key, size in sizes:
        velocity[start : start + size] = "velocit" in key
        start += size
    if start != dim:
        raise ValueError(f"{task}'s observation has {start} dimensions; the dataset records {dim}")
    return {"position": np.flatnonzero(~velocity), "velocity": np.flatnonzero(velocity)}


def _register() -> None:
    for task, (domain, dmc_task) in DMC_TASKS.items():
        if env_id(task) not in gym.registry:
            gym.register(
                id=env_id(task),
                entry_point="voc_rl.envs.dmc:DMCPixelEnv",
                kwargs={"domain": domain, "task": dmc_task},
            )
    if env_id(FAKE_TASK) not in gym.registry:
        gym.register(id=env_id(FAKE_TASK), entry_point="voc_rl.envs.fake:FakePixelEnv")


_register()

__all__ = ["DMC_TASKS", "FAKE_TASK", "env_id", "list_envs", "make_env"]
