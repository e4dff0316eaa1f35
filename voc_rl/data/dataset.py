"""Reading pixel datasets fast: a flat uint8 memmap cache built once from the Minari HDF5.

Minari stores each episode in its own chunked HDF5 group, which is fine for inspection and slow for
random windows. The first time a dataset is opened, :class:`PixelDataset` copies it into
``<dataset>/cache/<sha256[:16]>/``: ``frames.npy`` (all frames of all episodes, contiguous,
``(N, 3, H, W)`` uint8, opened with ``mmap_mode="r"``) and ``arrays.npz`` (everything else, per
frame). Opening then costs milliseconds and almost no RAM: frames are paged in on demand. The
cache is keyed by the HDF5's checksum, so a changed file is never read through a stale cache.

The reader trusts nothing it reads: ``voc_rl.json`` is checked key by key, every per-episode array's
shape is checked against the episode's length and the metadata before it is read, and the cache's
``cache.json`` records the size and sha256 of ``frames.npy`` and ``arrays.npz``. Every open checks
the sizes and the shapes against the metadata; ``verify=True`` also re-hashes the HDF5 and both
cache files. A cache that fails a check is rebuilt from the HDF5 with a :class:`DatasetWarning`.

Per-frame arrays (index ``i`` over all frames, episodes back to back): ``action[i]`` is taken at
frame i and ``reward[i]`` received on reaching frame i+1 (both zero on an episode's last frame);
``episode[i]``, ``step[i]``; ``proprio``, ``physics_state`` and ``policy_id`` where recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from voc_rl.checkpoint import atomic_write, save_json, save_npz
from voc_rl.data.storage import (
    META_FILE,
    META_FORMAT,
    DatasetError,
    DatasetWarning,
    sha256_file,
)
from voc_rl.paths import cache_folder, user_path

CACHE_FORMAT = 2  # 2: cache.json records the size and sha256 of frames.npy and arrays.npz
CACHE_FILES = ("frames.npy", "arrays.npz")
ARRAY_KEYS = ("action", "reward", "episode", "step", "is_terminal", "policy_id")
AGAIN = "collect or import the dataset again"


def resolve_dataset_path(path: str | Path) -> Path:
    """Accept the dataset folder itself, or a root plus ``voc_rl/<name>-v0`` below it (one dataset).

    The folder comes back absolute (``ds.path``, hence its caches, stays valid after a ``chdir``);
    errors name the path as it was given."""
    given, path = path, user_path(path)
    if (path / META_FILE).exists():
        return path
    if not path.exists():
        raise DatasetError(f"dataset folder {given} does not exist")
    found = sorted(p.parent for p in path.glob(f"*/*/{META_FILE}")) + sorted(
        p.parent for p in path.glob(f"*/{META_FILE}")
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(f"{path} holds no voc_rl dataset (no {META_FILE} in it or below it)")
    raise DatasetError(f"{path} holds several datasets; pass one of: {', '.join(str(p) for p in found)}")


# ---------------------------------------------------------------------------------------- voc_rl.json
def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# key -> (test, what it must be); every key the reader needs, in the order they are checked
META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "env_id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string (a gymnasium env id)"),
    "episodes": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "transitions": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "frame_shape": (
        lambda v: isinstance(v, list) and len(v) == 3 and v[0] == 3 and all(_is_int(x, 1) for x in v),
        "[3, H, W] with H, W >= 1",
    ),
    "action_dim": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "hdf5_bytes": (lambda v: _is_int(v, 1), "an integer >= 1 (the HDF5's size in bytes)"),
    "hdf5_sha256": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
        "64 lowercase hex digits (the HDF5's sha256)",
    ),
}
# keys that may be absent, but are checked where present (readers use them with .get)
OPTIONAL_META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env_kwargs": (lambda v: isinstance(v, dict), "an object (the env's kwargs)"),
    "policies": (lambda v: isinstance(v, dict), "an object (policy id -> description)"),
    "task": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "reward_max": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
}


def _short_repr(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_meta(meta: Any, file: Path) -> dict[str, Any]:
    """``meta`` (parsed ``voc_rl.json``) if it has every key the reader needs, each of the right type;
    otherwise a :class:`DatasetError` naming the file and the key."""
    if not isinstance(meta, dict):
        raise DatasetError(
            f"{file} holds a JSON {type(meta).__name__}, expected an object of dataset metadata: "
            f"damaged or replaced; {AGAIN}"
        )
    if meta.get("format") != META_FORMAT:
        raise DatasetError(f"{file} has format {meta.get('format')!r}, expected {META_FORMAT!r}")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise DatasetError(
            f"{file} lacks the key(s) {missing} that the reader needs: damaged or hand-edited; {AGAIN}"
        )
    for keys, check_all in ((META_KEYS, True), (OPTIONAL_META_KEYS, False)):
        for key, (test, must) in keys.items():
            if (check_all or key in meta) and not test(meta[key]):
                raise DatasetError(
                    f"{file}: key {key!r} must be {must}, got {_short_repr(meta[key])}: damaged or "
                    f"hand-edited; {AGAIN}"
                )
    if meta["transitions"] < meta["episodes"]:
        raise DatasetError(
            f"{file}: key 'transitions' ({meta['transitions']}) must be >= 'episodes' "
            f"({meta['episodes']}), as every episode has at least one transition; {AGAIN}"
        )
    return meta


def _read_meta(ds_dir: Path) -> dict[str, Any]:
    file = ds_dir / META_FILE
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise DatasetError(f"{file} is unreadable or not JSON: {exc}") from exc
    return check_meta(meta, file)


# ---------------------------------------------------------------------------------------- the cache
def _h5_array(
    group: h5py.Group, key: str, where: str, shape: tuple[int | None, ...], what: str
) -> h5py.Dataset:
    """``group[key]``, checked to be a numeric HDF5 dataset of ``shape`` (None: any size there)
    before anything is read."""
    obj = group.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(
            f"{where} lacks the array {key!r}" if obj is None else f"{where}/{key} is not an array"
        )
    have = obj.shape if obj.shape is not None else ()  # None: an HDF5 null dataspace
    if len(have) != len(shape) or any(s is not None and s != o for s, o in zip(shape, have, strict=False)):
        want = (
            "("
            + ", ".join("any" if s is None else str(s) for s in shape)
            + ("," if len(shape) == 1 else "")
            + ")"
        )
        raise DatasetError(
            f"{where}/{key} has shape {have}, expected {want} ({what}): the file does not match "
            f"its episode length or its metadata; {AGAIN}"
        )
    if obj.dtype.kind not in "biuf":
        raise DatasetError(f"{where}/{key} holds {obj.dtype}, expected numbers")
    return obj


def _build_cache(hdf5: Path, meta: dict[str, Any], cache: Path) -> None:
    """Copy every episode of the HDF5 into one contiguous frames file and one npz of the rest.

    Every array's shape is checked before it is read, so that a damaged or crafted file cannot make
    the reader allocate what it declares. ``cache.json`` is written last: a build that stops half-way
    leaves a cache that the next open rebuilds.
    """
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "cache.json").unlink(missing_ok=True)
    try:
        _write_cache(hdf5, meta, cache)
    except BaseException:
        shutil.rmtree(cache, ignore_errors=True)  # nothing half-built stays behind
        raise


@contextlib.contextmanager
def _reading(hdf5: Path) -> Iterator[None]:
    """Turn what h5py raises on a damaged file into a :class:`DatasetError` naming it."""
    try:
        yield
    except DatasetError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise DatasetError(f"{hdf5} is truncated or corrupt ({type(exc).__name__}: {exc}); {AGAIN}") from exc


def _episode_arrays(f: h5py.File, hdf5: Path, meta: dict[str, Any]) -> list[dict[str, h5py.Dataset]]:
    """Every episode's arrays, their shapes checked against the episode's length (its frames) and the
    metadata, and the total number of frames against the metadata's: nothing is read but shapes."""
    c, h, w = meta["frame_shape"]
    a, n_frames = meta["action_dim"], meta["transitions"] + meta["episodes"]
    widths: dict[str, int | None] = {"proprio": None, "physics_state": None}
    episodes, total = [], 0
    for e in range(meta["episodes"]):
        where = f"{hdf5}: episode_{e}"
        g = f.get(f"episode_{e}")
        if not isinstance(g, h5py.Group):
            raise DatasetError(
                f"{hdf5} lacks episode_{e} (its metadata says {meta['episodes']} episodes)"
                if g is None
                else f"{where} is not an HDF5 group"
            )
        obs = g.get("observations")
        if not isinstance(obs, h5py.Dataset) or obs.ndim != 4:
            raise DatasetError(f"{where} lacks an observations array (T+1, 3, H, W)")
        t = obs.shape[0]
        if obs.shape[1:] != (c, h, w) or obs.dtype != np.uint8:
            raise DatasetError(
                f"{where} frames are {obs.dtype} {obs.shape[1:]}, metadata says uint8 {(c, h, w)}"
            )
        if t < 2:
            raise DatasetError(f"{where} has {t} frame(s): an episode needs at least 2")
        total += t
        if total > n_frames:
            raise DatasetError(f"{hdf5} holds more frames than its metadata's {n_frames}")
        infos = g.get("infos")
        if not isinstance(infos, h5py.Group):
            raise DatasetError(f"{where} lacks its infos group")
        ep = {
            "frames": obs,
            "action": _h5_array(g, "actions", where, (t - 1, a), f"{t - 1} steps of action_dim {a}"),
            "reward": _h5_array(g, "rewards", where, (t - 1,), f"one reward per step of {t - 1}"),
            "is_terminal": _h5_array(infos, "is_terminal", f"{where}/infos", (t,), f"one per frame of {t}"),
            "policy_id": _h5_array(infos, "policy_id", f"{where}/infos", (t,), f"one per frame of {t}"),
        }
        for key, width in widths.items():
            if key in infos:  # optional; the same width in every episode
                ep[key] = _h5_array(infos, key, f"{where}/infos", (t, width), f"one row per frame of {t}")
                widths[key] = ep[key].shape[1]
        episodes.append(ep)
    if total != n_frames:
        raise DatasetError(f"{hdf5} holds {total} frames, its metadata says {n_frames}: truncated?")
    return episodes


def _write_cache(hdf5: Path, meta: dict[str, Any], cache: Path) -> None:
    n_frames = meta["transitions"] + meta["episodes"]
    arrays: dict[str, np.ndarray] = {}
    optional: dict[str, list[np.ndarray]] = {"proprio": [], "physics_state": []}

    def write_frames(f: h5py.File, tmp: str) -> None:
        with _reading(hdf5):
            episodes = _episode_arrays(f, hdf5, meta)  # all shapes checked before anything is allocated
        arrays.update(
            action=np.zeros((n_frames, meta["action_dim"]), np.float32),
            reward=np.zeros(n_frames, np.float32),
            episode=np.zeros(n_frames, np.int64),
            step=np.zeros(n_frames, np.int64),
            is_terminal=np.zeros(n_frames, bool),
            policy_id=np.zeros(n_frames, np.int64),
        )
        shape = (n_frames, *meta["frame_shape"])
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        pos = 0
        for e, ep in enumerate(episodes):
            with _reading(hdf5):
                data = {key: item[()] for key, item in ep.items()}
            for key in ("reward", "action"):
                if not np.all(np.isfinite(data[key])):
                    raise DatasetError(f"{hdf5} has NaN or inf {key}s (episode_{e})")
            t = len(data["frames"])
            frames[pos : pos + t] = data["frames"]
            arrays["action"][pos : pos + t - 1] = data["action"]
            arrays["reward"][pos : pos + t - 1] = data["reward"]
            arrays["episode"][pos : pos + t] = e
            arrays["step"][pos : pos + t] = np.arange(t)
            arrays["is_terminal"][pos : pos + t] = data["is_terminal"]
            arrays["policy_id"][pos : pos + t] = data["policy_id"]
            for key, parts in optional.items():
                if key in data:
                    parts.append(data[key])
            pos += t
        frames.flush()
        del frames

    with _reading(hdf5):
        f = h5py.File(hdf5, "r")
    with f:
        atomic_write(cache / "frames.npy", lambda tmp: write_frames(f, tmp))
    for key, parts in optional.items():
        if len(parts) == meta["episodes"]:
            arrays[key] = np.concatenate(parts)
    save_npz(arrays, cache / "arrays.npz")
    info = {
        "cache_format": CACHE_FORMAT,
        "hdf5_sha256": meta["hdf5_sha256"],
        "files": {
            name: {"bytes": (cache / name).stat().st_size, "sha256": sha256_file(cache / name)}
            for name in CACHE_FILES
        },
    }
    save_json(info, cache / "cache.json")


class _UnusableCache(Exception):
    """The cache fails a check; the message says which (the reader rebuilds it)."""


def _open_cache(cache: Path, meta: dict[str, Any], verify: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The cache's frames (memmap) and arrays, checked against ``cache.json`` and the metadata:
    sizes and shapes always, the sha256 of both files with ``verify``."""
    try:
        info = json.loads((cache / "cache.json").read_text())
    except (OSError, ValueError) as exc:
        raise _UnusableCache(f"cache.json is unreadable ({exc})") from exc
    if not isinstance(info, dict) or info.get("cache_format") != CACHE_FORMAT:
        got = info.get("cache_format") if isinstance(info, dict) else None
        raise _UnusableCache(f"it has cache format {got!r}, this voc_rl reads {CACHE_FORMAT}")
    if info.get("hdf5_sha256") != meta["hdf5_sha256"]:
        raise _UnusableCache("it was built from another version of the HDF5")
    records = info.get("files")
    for name in CACHE_FILES:
        record = records.get(name) if isinstance(records, dict) else None
        if not isinstance(record, dict) or not _is_int(record.get("bytes"), 0):
            raise _UnusableCache(f"cache.json does not record {name}")
        try:
            size = (cache / name).stat().st_size
        except OSError:
            raise _UnusableCache(f"{name} is missing") from None
        if size != record["bytes"]:
            raise _UnusableCache(f"{name} is {size} bytes but was written as {record['bytes']}: truncated")
        if verify and sha256_file(cache / name) != record.get("sha256"):
            raise _UnusableCache(f"{name} does not match its recorded checksum: corrupt or modified")
    n = meta["transitions"] + meta["episodes"]
    try:
        frames = np.load(cache / "frames.npy", mmap_mode="r", allow_pickle=False)
        with np.load(cache / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a damaged npy/npz raises anything from ValueError to BadZipFile
        raise _UnusableCache(f"it is unreadable ({type(exc).__name__}: {exc})") from exc
    want = (n, *meta["frame_shape"])
    if frames.dtype != np.uint8 or frames.shape != want:
        raise _UnusableCache(
            f"frames.npy holds {frames.dtype} {frames.shape}, the metadata says uint8 {want}"
        )
    if missing := [k for k in ARRAY_KEYS if k not in arrays]:
        raise _UnusableCache(f"arrays.npz lacks {missing}")
    if bad := [k for k, v in arrays.items() if len(v) != n]:
        raise _UnusableCache(f"arrays.npz has arrays {bad} whose length is not the metadata's {n} frames")
    if arrays["action"].shape != (n, meta["action_dim"]):
        raise _UnusableCache(f"its actions are {arrays['action'].shape[1:]}, the metadata says action_dim")
    step = arrays["step"]
    starts = np.flatnonzero(step == 0)
    if (
        len(starts) != meta["episodes"]
        or (n and starts[0] != 0)
        or not np.array_equal(step[1:], np.where(step[1:] == 0, 0, step[:-1] + 1))
        or np.any(np.diff(np.append(starts, n)) < 2)
    ):
        raise _UnusableCache(f"its episode boundaries do not give the metadata's {meta['episodes']} episodes")
    lengths = np.diff(np.append(starts, n))
    if not np.array_equal(arrays["episode"], np.repeat(np.arange(len(starts)), lengths)):
        raise _UnusableCache("its episode ids do not follow its episode boundaries")
    if not np.all(np.isfinite(arrays["reward"])):
        raise _UnusableCache("its rewards hold NaN or inf")
    return frames, arrays


def _check_hdf5_sha256(hdf5: Path, meta: dict[str, Any]) -> None:
    digest = sha256_file(hdf5)
    if digest != meta["hdf5_sha256"]:
        raise DatasetError(
            f"{hdf5} checksum {digest[:16]}... does not match its metadata's: corrupt or modified"
        )


@dataclass
class PixelDataset:
    """A pixel dataset on disk, read through its memmap cache. ``PixelDataset.open(path)``."""

    path: Path
    meta: dict[str, Any]
    frames: np.ndarray  # (N, 3, H, W) uint8, memmap
    arrays: dict[str, np.ndarray]
    ep_start: np.ndarray  # (E,) index of each episode's first frame
    ep_len: np.ndarray  # (E,) transitions per episode (frames - 1)

    @classmethod
    def open(cls, path: str | Path, verify: bool = False) -> PixelDataset:
        """Open a dataset folder; build the cache on first use.

        Every open checks ``voc_rl.json``, the HDF5's size and the cache's sizes and shapes (cheap);
        ``verify`` also re-hashes the HDF5 and the cache. A cache that fails a check is rebuilt from
        the HDF5, with a :class:`DatasetWarning` saying why.
        """
        ds_dir = resolve_dataset_path(path)
        meta = _read_meta(ds_dir)
        hdf5 = ds_dir / "data" / "main_data.hdf5"
        if not hdf5.exists():
            raise DatasetError(f"{hdf5} is missing: the dataset folder is incomplete")
        size = hdf5.stat().st_size
        if size != meta["hdf5_bytes"]:
            raise DatasetError(
                f"{hdf5} is {size} bytes but was written as {meta['hdf5_bytes']}: truncated or modified; "
                "collect or import it again"
            )
        cache = cache_folder(ds_dir, "cache", meta["hdf5_sha256"][:16], "cache.json")
        hashed = False
        if verify:
            _check_hdf5_sha256(hdf5, meta)
            hashed = True
        if (cache / "cache.json").exists():
            try:
                frames, arrays = _open_cache(cache, meta, verify)
            except _UnusableCache as exc:
                warnings.warn(
                    f"the cache {cache} cannot be used ({exc}); rebuilding it from {hdf5.name}",
                    DatasetWarning,
                    stacklevel=3,  # the caller of open_dataset
                )
            else:
                return cls._from_arrays(ds_dir, meta, frames, arrays)
        if not hashed:
            _check_hdf5_sha256(hdf5, meta)
        _build_cache(hdf5, meta, cache)
        try:
            frames, arrays = _open_cache(cache, meta, verify=False)
        except _UnusableCache as exc:  # just written: the disk, or another process writing the same cache
            raise DatasetError(
                f"the cache {cache} just built from {hdf5} cannot be read back ({exc}): is the disk "
                "full, or is another process writing the same cache?"
            ) from exc
        return cls._from_arrays(ds_dir, meta, frames, arrays)

    @classmethod
    def _from_arrays(
        cls, ds_dir: Path, meta: dict[str, Any], frames: np.ndarray, arrays: dict[str, np.ndarray]
    ) -> PixelDataset:
        starts = np.flatnonzero(arrays["step"] == 0)
        lengths = np.diff(np.append(starts, len(frames))) - 1
        return cls(ds_dir, meta, frames, arrays, starts, lengths)

    # -------------------------------------------------------------- basics
    @property
    def num_episodes(self) -> int:
        return len(self.ep_start)

    @property
    def num_transitions(self) -> int:
        return int(self.ep_len.sum())

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def task(self) -> str:
        """The task the dataset was collected on (its recorded ``task``, else its env id)."""
        return self.meta.get("task", self.env_id)

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.arrays["reward"], self.ep_start)

    def level_episodes(self, level: str) -> np.ndarray:
        """Ids of the episodes the behaviour policy of ``level`` (``expert``, ...) collected."""
        policies = self.meta.get("policies") or {}
        ids = [int(k) for k, v in policies.items() if v.get("level") == level]
        if not ids or "policy_id" not in self.arrays:
            raise ValueError(f"{self.path} has no {level!r} episodes (levels: {policies or 'none recorded'})")
        return np.flatnonzero(np.isin(self.arrays["policy_id"][self.ep_start], ids))

    def episode_frames(self, e: int) -> np.ndarray:
        """All frames of episode ``e``, (T+1, 3, H, W)."""
        return np.asarray(self.frames[self.ep_start[e] : self.ep_start[e] + self.ep_len[e] + 1])

    def task_reward(self, task: str) -> np.ndarray:
        """The rewards of ``task``, aligned with ``arrays["reward"]``: the recorded ones for the
        dataset's own task, else those written by ``voc-rl dataset relabel`` (another task of the
        same domain, recomputed from the physics: :mod:`voc_rl.task_rewards`)."""
        if task == self.task:
            return self.arrays["reward"]
        if task not in reward_manifest(self)["tasks"]:
            raise DatasetError(
                f"{self.path} has no rewards of {task!r}: "
                f"run `voc-rl dataset relabel {self.path} --tasks {task}`"
            )
        values = np.load(rewards_dir(self.path) / f"{task}.npy", mmap_mode="r")
        if values.shape != self.arrays["reward"].shape:
            raise DatasetError(
                f"{task}'s rewards have shape {values.shape}, not {self.arrays['reward'].shape}"
            )
        return values

    def for_task(self, task: str) -> PixelDataset:
        """This dataset (or token view) with ``arrays["reward"]`` holding ``task``'s rewards
        (:meth:`task_reward`) and ``meta["reward_task"]`` naming it: what a critic, a reward head or
        %BC reads to learn another task of the domain. The dataset's own task returns it unchanged."""
        if task == self.reward_task:
            return self
        if "reward_task" in self.meta:
            raise ValueError(
                f"this view already carries {self.meta['reward_task']!r}'s rewards; call for_task on the "
                "dataset itself"
            )
        rewards = np.asarray(self.task_reward(task), dtype=np.float32)
        return dataclasses.replace(
            self, meta={**self.meta, "reward_task": task}, arrays={**self.arrays, "reward": rewards}
        )

    @property
    def reward_task(self) -> str:
        """The task whose rewards ``arrays["reward"]`` holds: the dataset's own unless :meth:`for_task`."""
        return self.meta.get("reward_task", self.task)

    def frame_index(self, episodes: np.ndarray, last: bool = True) -> np.ndarray:
        """Flat indices of every frame of ``episodes``, in their order; ``last=False`` leaves out each
        episode's final frame (s_T, which has no action)."""
        extra = 1 if last else 0
        parts = [self.ep_start[e] + np.arange(self.ep_len[e] + extra) for e in np.asarray(episodes)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Train / validation episode ids, split by whole episodes, fixed by ``seed``.

        Stratified by behaviour policy: each policy's episodes (``policy_id``) are held out in the
        same proportion, at least one of each policy that has two or more (and at least one in all),
        so a ``mixed`` dataset's held-out episodes cover every level and their spread of returns is
        the dataset's.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        policy = self.arrays["policy_id"][self.ep_start] if "policy_id" in self.arrays else None
        groups = [np.arange(self.num_episodes)] if policy is None else [
            np.flatnonzero(policy == p) for p in np.unique(policy)
        ]  # fmt: skip
        val = []
        for episodes in groups:
            order = rng.permutation(episodes)
            n_val = round(val_fraction * len(order))
            if val_fraction > 0 and n_val == 0 and len(order) > 1:
                n_val = 1
            val.append(order[:n_val])
        held = np.sort(np.concatenate(val)).astype(np.int64)
        if val_fraction > 0 and len(held) == 0 and self.num_episodes > 1:  # one episode per policy
            held = np.sort(rng.permutation(self.num_episodes)[:1]).astype(np.int64)
        return np.setdiff1d(np.arange(self.num_episodes), held), held

    def stack_index(self, index: np.ndarray, frame_stack: int) -> np.ndarray:
        """Flat indices (*S, frame_stack) of the frames of the stacks ending at ``index`` (*S), oldest
        first, the episode's first frame repeated where fewer have been seen (as :meth:`stacks`)."""
        index = np.asarray(index)
        offsets = np.arange(-frame_stack + 1, 1)  # (F,)
        return index[..., None] + np.maximum(offsets, -self.arrays["step"][index][..., None])

    def stacks(self, index: np.ndarray, frame_stack: int) -> np.ndarray:
        """Frame stacks ending at flat frame ``index`` (any shape S), padded at episode starts.

        Returns (*S, 3 * frame_stack, H, W) uint8; for a token view (``voc_rl.tokenizers.cache``),
        (*S, frame_stack * T) token ids. The earliest frame repeats where the episode has fewer than
        ``frame_stack`` frames so far, as the published pixel benchmarks do.
        """
        index = np.asarray(index)
        idx = self.stack_index(index, frame_stack)  # (*S, F)
        out = self.frames[idx.ravel()]  # (prod(S)*F, 3, H, W), or (prod(S)*F, T) for a token view
        return out.reshape(*index.shape, frame_stack * out.shape[1], *out.shape[2:])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.meta['name']!r}: {self.num_episodes} episodes, "
            f"{self.num_transitions} transitions, "
            f"frames {tuple(self.frames.shape[1:])}, env {self.env_id})"
        )


def open_dataset(path: str | Path, verify: bool = False) -> PixelDataset:
    """``PixelDataset.open``; with ``verify`` also the hashes of the relabelled rewards."""
    ds = PixelDataset.open(path, verify=verify)
    if verify:
        for task, entry in reward_manifest(ds)["tasks"].items():
            file = rewards_dir(ds.path) / f"{task}.npy"
            if not file.exists() or sha256_file(file) != entry["sha256"]:
                raise DatasetError(f"{file} is missing or does not match its manifest: relabel {task} again")
    return ds


REWARD_MANIFEST = "rewards.json"  # beside the arrays: the dataset's sha256 and each array's


def rewards_dir(ds_dir: Path) -> Path:
    """Where the rewards of a dataset's other tasks live (:mod:`voc_rl.task_rewards`)."""
    return ds_dir / "rewards"


def reward_manifest(ds: PixelDataset) -> dict[str, Any]:
    """The dataset's relabelled tasks (``{"tasks": {task: {"sha256": ...}}}``; none where it has none);
    refuses a manifest written for another version of the dataset."""
    path = rewards_dir(ds.path) / REWARD_MANIFEST
    if not path.exists():
        return {"dataset_sha256": ds.meta.get("hdf5_sha256"), "tasks": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("dataset_sha256") != ds.meta.get("hdf5_sha256"):
        raise DatasetError(
            f"{path} was written for another version of {ds.path}; delete the folder and relabel"
        )
    return manifest


@dataclass
class TokenView(PixelDataset):
    """A dataset whose ``frames`` are the token ids of every frame, (N, tokens_per_frame), with the
    tokenizer that made them in ``meta["tokens"]`` (``backend``, ``vocab_size``, ``tokens_per_frame``,
    ``key``): what the occupancy model, the prior and the critic read. Made from a pixel dataset and a
    tokenizer checkpoint by :func:`voc_rl.tokenizers.cache.token_view`."""

    def __post_init__(self) -> None:
        if self.frames.ndim != 2 or "tokens" not in self.meta:
            raise ValueError(
                f"a token view holds (N, tokens_per_frame) token ids and meta['tokens']; got frames of shape "
                f"{tuple(self.frames.shape)}{'' if 'tokens' in self.meta else ' and no meta[tokens]'}"
            )

    @classmethod
    def of(cls, ds: PixelDataset, tokens: np.ndarray, info: dict[str, Any]) -> TokenView:
        """``ds`` with its frames replaced by ``tokens`` (N, tokens_per_frame) described by ``info``."""
        return cls(ds.path, {**ds.meta, "tokens": info}, tokens, ds.arrays, ds.ep_start, ds.ep_len)

    @property
    def tokens(self) -> dict[str, Any]:
        """The tokenizer's description: ``backend``, ``vocab_size``, ``tokens_per_frame``, ``key``..."""
        return self.meta["tokens"]
