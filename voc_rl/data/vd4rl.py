"""Import the published V-D4RL benchmark's files (Lu et al., 2022) as one voc_rl dataset.

Two layouts are read, detected from the folder's contents (a single file works too):

* 64 px: one ``.npz`` per episode with ``image`` (T, 64, 64, 3) uint8, ``action`` (T, A),
  ``reward``, ``discount``, ``is_first``, ``is_last``, ``is_terminal`` (T,).
* 84 px: ``.hdf5`` shards of several episodes back to back: ``observation`` (N, 3, 84, 84) uint8,
  ``action``, ``reward``, ``discount``, ``step_type`` (0 first, 1 mid, 2 last).

Both follow the DreamerV2 convention: row 0 is the first observation with a dummy (zero) action and
reward, ``action[t]`` is the action that *led to* frame t and ``reward[t]`` the reward received on
arriving at it. voc_rl stores the action taken *at* frame i and the reward received on reaching
frame i+1, so T frames become T-1 transitions with ``actions[i] = action[i + 1]`` and
``rewards[i] = reward[i + 1]``; the dummy row 0 is dropped. An episode is terminated if its last
step is terminal (``is_terminal``; in the 84 px shards a last step with discount 0). The files hold
no proprioception or physics state, so neither is stored.
"""

from __future__ import annotations

import itertools
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from voc_rl.data.storage import DatasetError, DatasetWriter, Episode
from voc_rl.envs import DMC_TASKS, env_id
from voc_rl.paths import check_writable, user_path

KINDS = ("medium_replay", "medium_expert", "random", "medium", "expert")  # longest first: matched in order
ACTION_REPEAT = 2
ACTION_TOLERANCE = 1e-4  # |a| up to 1 + this is clipped to [-1, 1] (float noise); beyond it is an error
HDF5_KEYS = ("observation", "action", "reward", "discount", "step_type")
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _match(path: Path, names: dict[str, str]) -> str | None:
    """The value of the first alias found in ``path``'s folder names, deepest folder first."""
    for part in reversed(path.resolve().parts):
        part = part.lower().replace("-", "_")
        for alias, value in names.items():
            if re.search(rf"(?:^|[^a-z]){re.escape(alias)}(?:[^a-z]|$)", part):
                return value
    return None


def infer_task(path: str | Path) -> str | None:
    """``.../walker_walk/medium/64px`` or ``.../cheetah_run_medium_replay`` -> the task, else None."""
    aliases = {}
    for task, (domain, dmc_task) in DMC_TASKS.items():
        aliases[task.replace("-", "_")] = task
        aliases[f"{domain}_{dmc_task}"] = task
    return _match(Path(path), aliases)


def infer_kind(path: str | Path) -> str:
    """The V-D4RL dataset name (random, medium_replay, medium, medium_expert, expert) in ``path``."""
    return _match(Path(path), {k: k for k in KINDS}) or "unknown"


def find_files(path: str | Path) -> tuple[str, list[Path]]:
    """``("npz" | "hdf5", files sorted by name)`` for a V-D4RL folder or a single file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"V-D4RL path {path} does not exist")
    if path.is_file():
        files = [path]
    else:
        files = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: p.name)
    npz = [p for p in files if p.suffix == ".npz"]
    hdf5 = [p for p in files if p.suffix in (".hdf5", ".h5")]
    if npz and hdf5:
        raise DatasetError(f"{path} holds both .npz and .hdf5 files; point at one V-D4RL layout")
    if not npz and not hdf5:
        raise DatasetError(
            f"{path} holds no .npz (64 px) or .hdf5 (84 px) V-D4RL files; "
            "point at the folder that holds them, e.g. .../walker_walk/medium/64px"
        )
    return ("npz", npz) if npz else ("hdf5", hdf5)


def _episode(
    src: str, frames: np.ndarray, action: np.ndarray, reward: np.ndarray, terminated: bool
) -> Episode:
    """Check one episode in Dreamer's convention (frames already (T, 3, H, W)) and shift it to ours."""
    if (
        frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[1] != 3
        or frames.shape[2] != frames.shape[3]
    ):
        raise DatasetError(
            f"{src}: frames are {frames.dtype} {frames.shape}, expected square uint8 RGB images"
        )
    t = len(frames)
    if action.ndim != 2 or len(action) != t or reward.shape != (t,):
        raise DatasetError(
            f"{src}: key lengths disagree: {t} images, action {action.shape}, reward {reward.shape}; "
            "expected (T, A) and (T,)"
        )
    if t < 2:
        raise DatasetError(
            f"{src}: episode too short ({t} frame(s)); at least 2 are needed for one transition"
        )
    if not np.all(np.isfinite(reward)):
        raise DatasetError(
            f"{src}: rewards contain NaN or inf (first at row {int(np.argmin(np.isfinite(reward)))})"
        )
    if not np.all(np.isfinite(action)):
        raise DatasetError(f"{src}: actions contain NaN or inf")
    worst = float(np.abs(action[1:]).max())
    if worst > 1.0 + ACTION_TOLERANCE:
        raise DatasetError(f"{src}: actions reach |a| = {worst:.4g}, outside [-1, 1]")
    return Episode(
        frames=np.ascontiguousarray(frames),
        actions=np.clip(action[1:], -1.0, 1.0).astype(np.float32),
        rewards=reward[1:].astype(np.float32),
        terminated=bool(terminated),
    )


def _npz_episodes(files: list[Path]) -> Iterator[tuple[str, Episode]]:
    for f in files:
        if not zipfile.is_zipfile(f):  # else np.load tries it as a pickle and complains about that
            raise DatasetError(f"{f} is corrupt or truncated: not a readable .npz (zip) archive")
        try:
            with np.load(f, allow_pickle=False) as data:
                missing = [k for k in ("image", "action", "reward") if k not in data.files]
                if "is_terminal" not in data.files and "discount" not in data.files:
                    missing.append("is_terminal")
                if missing:
                    raise DatasetError(f"{f}: missing key(s) {missing} (found {sorted(data.files)})")
                keys = ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
                arrays = {k: data[k] for k in keys if k in data.files}
        except _READ_ERRORS as exc:
            raise DatasetError(f"{f} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
        lengths = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DatasetError(f"{f}: key lengths disagree: {lengths}")
        image = arrays["image"]
        if image.ndim != 4 or image.shape[-1] != 3 or image.shape[1] != image.shape[2]:
            raise DatasetError(f"{f}: image has shape {image.shape}, expected (T, H, H, 3)")
        terminal = arrays["is_terminal"] if "is_terminal" in arrays else arrays["discount"] == 0
        yield (
            str(f),
            _episode(
                str(f), image.transpose(0, 3, 1, 2), arrays["action"], arrays["reward"], bool(terminal[-1])
            ),
        )


def _hdf5_episodes(files: list[Path]) -> Iterator[tuple[str, Episode]]:
    for f in files:
        try:
            with h5py.File(f, "r") as h5:
                missing = [k for k in HDF5_KEYS if k not in h5]
                if missing:
                    raise DatasetError(f"{f}: missing key(s) {missing} (found {sorted(h5)})")
                obs = h5["observation"]
                step_type, discount = h5["step_type"][()], h5["discount"][()]
                lengths = {k: h5[k].shape[0] if h5[k].ndim else 0 for k in HDF5_KEYS}
                if len(set(lengths.values())) != 1:
                    raise DatasetError(f"{f}: key lengths disagree: {lengths}")
                if obs.ndim != 4 or obs.shape[1] != 3 or obs.shape[2] != obs.shape[3]:
                    raise DatasetError(f"{f}: observation has shape {obs.shape}, expected (N, 3, H, H)")
                if len(step_type) == 0 or step_type[0] != 0:
                    raise DatasetError(
                        f"{f}: the shard must start with an episode's first step (step_type 0)"
                    )
                if not np.isin(step_type, (0, 1, 2)).all():
                    raise DatasetError(f"{f}: step_type holds values other than 0, 1, 2")
                if np.any((step_type[:-1] == 2) & (step_type[1:] != 0)):
                    raise DatasetError(f"{f}: a last step (step_type 2) is not followed by a first step")
                starts = np.flatnonzero(step_type == 0)
                for k, (s, e) in enumerate(zip(starts, [*starts[1:], len(step_type)], strict=True)):
                    src = f"{f} (episode {k}, rows {s}:{e})"
                    terminated = step_type[e - 1] == 2 and discount[e - 1] == 0
                    action, reward = h5["action"][s:e], h5["reward"][s:e]
                    yield src, _episode(src, obs[s:e], action, reward, terminated)
        except _READ_ERRORS as exc:
            raise DatasetError(f"{f} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def import_vd4rl(
    path: str | Path,
    out: str | Path,
    task: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a V-D4RL folder (64 px npz or 84 px hdf5) into a voc_rl dataset under ``out``; returns it.

    ``task`` (e.g. ``walker-walk``) defaults to the one named in the path; the dataset name defaults
    to ``{task}-vd4rl-{kind}-{size}px``. Nothing is left in ``out`` if any file is bad.
    """
    path, out = user_path(path), check_writable(out, "dataset folder")
    layout, files = find_files(path)
    task = task or infer_task(path)
    if task is None:
        raise ValueError(
            f"cannot infer the task from {path}; pass it with --task (one of {', '.join(DMC_TASKS)})"
        )
    if task not in DMC_TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(DMC_TASKS)}")
    kind = infer_kind(path)
    episodes = _npz_episodes(files) if layout == "npz" else _hdf5_episodes(files)
    first = next(episodes)  # find_files found at least one file and each file yields an episode or raises
    c, h, w = (int(n) for n in first[1].frames.shape[1:])
    frame_shape = (c, h, w)
    action_dim = int(first[1].actions.shape[1])
    size = w
    name = name or f"{task}-vd4rl-{kind}-{size}px"
    camera = 2 if task.startswith("quadruped") else 0
    env_kwargs: dict[str, Any] = {
        "size": size,
        "action_repeat": ACTION_REPEAT,
        "frame_stack": 1,
        "camera": camera,
        "render_quality": "standard",
    }
    metadata = {
        "task": task,
        "kind": kind,
        "seed": None,
        "reward_max": float(ACTION_REPEAT),  # DMC rewards are in [0, 1] per control step
        "camera": camera,
        "policies": {"0": {"level": kind, "name": f"V-D4RL {kind}"}},
        "mixed_proportions": None,
        "description": f"{task} pixels ({size}px, action repeat {ACTION_REPEAT}) imported from V-D4RL {kind}",
        "source": "V-D4RL import",
        "source_path": str(path.resolve()),
        "source_layout": layout,
        "source_files": len(files),
        "has_proprio": False,
        "has_physics_state": False,
    }
    writer = DatasetWriter(
        root=out,
        name=name,
        env_id=env_id(task),
        env_kwargs=env_kwargs,
        action_dim=action_dim,
        frame_shape=frame_shape,
        metadata=metadata,
        overwrite=overwrite,
    )
    with writer, tqdm(unit="episode", disable=not progress, desc=name) as bar:
        for src, episode in itertools.chain([first], episodes):
            if episode.frames.shape[1:] != frame_shape:
                raise DatasetError(
                    f"{src}: frames are {episode.frames.shape[1:]} but earlier episodes' are {frame_shape}: "
                    "mixed image sizes; import each size separately"
                )
            if episode.actions.shape[1] != action_dim:
                raise DatasetError(
                    f"{src}: {episode.actions.shape[1]} action dims, earlier episodes have {action_dim}"
                )
            writer.add(episode)
            bar.update(1)
        return writer.finalize()
