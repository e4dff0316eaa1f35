"""Every task reward of a dataset's domain, recomputed from its recorded physics states.

The tasks of a domain share its physics model: a walker state is a walker state whether the task
asks it to stand, walk or run. So the reward of another task for a recorded transition (s_t, a_t)
is computed exactly by restoring frame t's physics state, taking a_t for the env's
``action_repeat`` physics steps (as the data's env did) and scoring each physics step with that
task's reward function, summed as the env sums its own. The dataset's own task is recomputed on the
way and must equal the recorded reward, which checks that the physics replays.

Tasks (:data:`TASKS`): dm_control's ``walker-stand``, ``walker-walk``, ``walker-run`` and
``cheetah-run``; and ExORL's cheetah tasks on the same model: ``cheetah-walk`` (the run reward with
a target speed of 2 m/s instead of 10), ``cheetah-run-backward`` (speed -10 m/s) and
``cheetah-flip`` (the torso's angular momentum about the y axis, target 5). The last two are off
the support of this project's datasets (no behaviour policy runs backwards or flips), and say so.

:func:`relabel` writes one reward array per task beside a dataset (``<dataset>/rewards/<task>.npy``
with a manifest holding each file's sha256 and the dataset's), atomically; the dataset's own files
are not touched, so its caches and token views stay valid. :meth:`PixelDataset.task_reward` reads
them back; ``open_dataset(path, verify=True)`` checks their hashes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voc_rl.checkpoint import atomic_write, save_json
from voc_rl.data.dataset import REWARD_MANIFEST, PixelDataset, reward_manifest, rewards_dir
from voc_rl.data.storage import DatasetError, sha256_file
from voc_rl.paths import check_writable

OWN_TOLERANCE = 1e-5  # the recomputed own-task reward against the recorded one (float32 storage)


@dataclass(frozen=True)
class TaskReward:
    """One task of a domain: its reward as a function of the physics, after a physics step."""

    name: str  # "walker-run"
    domain: str  # dm_control's domain: "walker"
    source: str  # "dm_control" or "ExORL"
    on_support: bool = True  # False: no behaviour policy of this project's datasets does the task

    @property
    def reward(self) -> Callable[[Any], float]:
        return _reward_fn(self.name)


TASKS: dict[str, TaskReward] = {
    t.name: t
    for t in (
        TaskReward("walker-stand", "walker", "dm_control"),
        TaskReward("walker-walk", "walker", "dm_control"),
        TaskReward("walker-run", "walker", "dm_control"),
        TaskReward("cheetah-run", "cheetah", "dm_control"),
        TaskReward("cheetah-walk", "cheetah", "ExORL"),
        TaskReward("cheetah-run-backward", "cheetah", "ExORL", on_support=False),
        TaskReward("cheetah-flip", "cheetah", "ExORL", on_support=False),
    )
}
# (quantity, sign, target): the reward is tolerance(sign * quantity, [target, inf), margin target)
_EXORL_CHEETAH = {
    "cheetah-walk": ("speed", 1.0, 2.0),
    "cheetah-run-backward": ("speed", -1.0, 10.0),
    "cheetah-flip": ("angmomentum", 1.0, 5.0),
}


def other_tasks(ds: PixelDataset) -> list[str]:
    """The tasks of the dataset's domain other than its own, that :func:`relabel` can compute."""
    own, domain = _domain_of(ds)
    return [name for name, t in TASKS.items() if t.domain == domain and name != own]


@functools.cache
def _reward_fn(name: str) -> Callable[[Any], float]:
    from dm_control.utils import rewards

    from voc_rl.envs import DMC_TASKS

    if name in _EXORL_CHEETAH:
        quantity, sign, target = _EXORL_CHEETAH[name]

        def exorl(physics: Any) -> float:
            value = physics.speed() if quantity == "speed" else _torso_angmomentum(physics)
            return float(
                rewards.tolerance(
                    sign * value,
                    bounds=(target, float("inf")),
                    margin=target,
                    value_at_margin=0,
                    sigmoid="linear",
                )
            )

        return exorl
    from dm_control import suite

    domain, task = DMC_TASKS[name]
    return suite.load(domain, task).task.get_reward  # a function of the physics it is given


def _torso_angmomentum(physics: Any) -> float:
    """The cheetah torso's subtree angular momentum about the y axis (MuJoCo computes subtree
    momenta on demand only)."""
    import mujoco

    mujoco.mj_subtreeVel(physics.model.ptr, physics.data.ptr)
    return float(physics.named.data.subtree_angmom["torso"][1])


def _domain_of(ds: PixelDataset) -> tuple[str, str]:
    from voc_rl.envs import DMC_TASKS

    task = ds.meta.get("task", "")
    if task not in DMC_TASKS:
        raise DatasetError(
            f"{ds.path} holds {task!r}, not a DeepMind Control task: no task rewards to relabel"
        )
    return task, DMC_TASKS[task][0]


def check_tasks(ds: PixelDataset, tasks: Sequence[str]) -> None:
    """Refuse a task that is unknown or of another domain than the dataset's, and a dataset without
    recorded physics states."""
    own, domain = _domain_of(ds)
    for name in tasks:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
        if TASKS[name].domain != domain:
            raise ValueError(f"{name} is a {TASKS[name].domain} task; {ds.path} holds {own} ({domain}) data")
    if "physics_state" not in ds.arrays:
        raise DatasetError(
            f"{ds.path} has no recorded physics states (imported from V-D4RL?): other tasks' rewards "
            "cannot be recomputed; relabel a dataset collected with `voc-rl collect`"
        )


def task_rewards(ds: PixelDataset, tasks: Sequence[str], progress: bool = True) -> dict[str, np.ndarray]:
    """One reward array per task, aligned with ``ds.arrays["reward"]`` (``[t]`` received on reaching
    frame t+1, 0 on each episode's last frame), recomputed from the physics states. Raises where the
    dataset's own recomputed reward differs from the recorded one by more than :data:`OWN_TOLERANCE`."""
    return _replay(ds, tasks, progress)[0]


def _replay(ds: PixelDataset, tasks: Sequence[str], progress: bool) -> tuple[dict[str, np.ndarray], float]:
    """:func:`task_rewards` and the largest difference of the recomputed own reward from the recorded."""
    from tqdm import tqdm

    from voc_rl.envs import state_env

    check_tasks(ds, tasks)
    env = state_env(ds.env_id, ds.meta.get("env_kwargs"))
    fns = [TASKS[t].reward for t in tasks]
    out = np.zeros((len(tasks), len(ds.frames)))
    own = np.zeros(len(ds.frames))
    states, actions = ds.arrays["physics_state"], ds.arrays["action"]
    for i in tqdm(
        ds.frame_index(np.arange(ds.num_episodes), last=False), disable=not progress, desc="relabel"
    ):
        env.set_physics_state(states[i], step=0)
        own[i], out[:, i] = env.task_rewards(actions[i], fns)
    env.close()
    error = np.abs(own - ds.arrays["reward"]).max(initial=0.0)
    if error > OWN_TOLERANCE:
        raise DatasetError(
            f"replaying {ds.path}'s physics gives its own reward to within {error:.2g}, not {OWN_TOLERANCE}: "
            "recorded with another MuJoCo or dm_control? Other tasks' rewards would not be exact"
        )
    return {t: out[k].astype(np.float32) for k, t in enumerate(tasks)}, float(error)


def relabel(ds: PixelDataset, tasks: Sequence[str], progress: bool = True) -> Path:
    """Write every task's rewards beside ``ds`` (``<dataset>/rewards/<task>.npy``, one atomic write
    each, then the manifest); returns the folder. Tasks relabelled before are kept."""
    start, folder = time.perf_counter(), check_writable(rewards_dir(ds.path), "rewards folder of the dataset")
    arrays, error = _replay(ds, tasks, progress)
    folder.mkdir(exist_ok=True)
    manifest = reward_manifest(ds)
    for name, values in arrays.items():
        path = folder / f"{name}.npy"
        atomic_write(path, functools.partial(_save, values=values))
        manifest["tasks"][name] = {
            "sha256": sha256_file(path),
            "mean": round(float(values.mean()), 6),
            "std": round(float(values.std()), 6),
            "on_support": TASKS[name].on_support,
            "source": TASKS[name].source,
        }
    manifest["own_task_max_error"] = error  # the dataset's own reward, replayed, against the recorded
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    save_json(manifest, folder / REWARD_MANIFEST)
    return folder


def _save(tmp: str, values: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.save(f, values)
