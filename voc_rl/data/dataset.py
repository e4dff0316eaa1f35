"""Reading pixel datasets fast: a flat uint8 memmap cache built once from the Minari HDF5.

Minari stores each episode in its own chunked HDF5 group, which is fine for inspection and slow for
random windows. The first time a dataset is opened, :class:`PixelDataset` copies it into
``<dataset>/cache/<sha256[:16]>/``: ``frames.npy`` (all frames of all episodes, contiguous,
``(N, 3, H, W)`` uint8, opened with ``mmap_mode="r"``) and ``arrays.npz`` (everything else, per
frame). Opening then costs milliseconds and almost no RAM: frames are paged in on demand. The
cache is keyed by the HDF5's checksum, so a changed file is never read through a stale cache.

Per-frame arrays (index ``i`` over all frames, episodes back to back): ``action[i]`` is taken at
frame i and ``reward[i]`` received on reaching frame i+1 (both zero on an episode's last frame);
``episode[i]``, ``step[i]``; ``proprio``, ``physics_state`` and ``policy_id`` where recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from voc_rl.checkpoint import atomic_write, save_npz
from voc_rl.data.storage import META_FILE, META_FORMAT, DatasetError, dataset_dir, sha256_file

CACHE_FORMAT = 1


def resolve_dataset_path(path: str | Path) -> Path:
    """Accept the dataset folder itself, or a root plus ``voc_rl/<name>-v0`` below it (one dataset)."""
    path = Path(path)
    if (path / META_FILE).exists():
        return path
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist")
    found = sorted(p.parent for p in path.glob(f"*/*/{META_FILE}")) + sorted(
        p.parent for p in path.glob(f"*/{META_FILE}")
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(f"{path} holds no voc_rl dataset (no {META_FILE} in it or below it)")
    raise DatasetError(f"{path} holds several datasets; pass one of: {', '.join(str(p) for p in found)}")


def _read_meta(ds_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((ds_dir / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{ds_dir / META_FILE} is unreadable or not JSON: {exc}") from exc
    if meta.get("format") != META_FORMAT:
        raise DatasetError(
            f"{ds_dir / META_FILE} has format {meta.get('format')!r}, expected {META_FORMAT!r}"
        )
    return meta


def _build_cache(hdf5: Path, meta: dict[str, Any], cache: Path) -> None:
    """Copy every episode of the HDF5 into one contiguous frames file and one npz of the rest."""
    n_frames = meta["transitions"] + meta["episodes"]
    c, h, w = meta["frame_shape"]
    a = meta["action_dim"]
    cache.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "action": np.zeros((n_frames, a), np.float32),
        "reward": np.zeros(n_frames, np.float32),
        "episode": np.zeros(n_frames, np.int64),
        "step": np.zeros(n_frames, np.int64),
        "is_terminal": np.zeros(n_frames, bool),
        "policy_id": np.zeros(n_frames, np.int64),
    }
    optional: dict[str, list[np.ndarray]] = {"proprio": [], "physics_state": []}

    def write_frames(tmp: str) -> None:
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n_frames, c, h, w))
        pos = 0
        try:
            with h5py.File(hdf5, "r") as f:
                for e in range(meta["episodes"]):
                    g = f[f"episode_{e}"]
                    obs = g["observations"]
                    t = obs.shape[0]
                    if obs.shape[1:] != (c, h, w) or obs.dtype != np.uint8:
                        raise DatasetError(
                            f"{hdf5}: episode_{e} frames are {obs.dtype} {obs.shape[1:]}, "
                            f"metadata says uint8 {(c, h, w)}"
                        )
                    if pos + t > n_frames:
                        raise DatasetError(f"{hdf5} holds more frames than its metadata's {n_frames}")
                    frames[pos : pos + t] = obs[()]
                    arrays["action"][pos : pos + t - 1] = g["actions"][()]
                    arrays["reward"][pos : pos + t - 1] = g["rewards"][()]
                    arrays["episode"][pos : pos + t] = e
                    arrays["step"][pos : pos + t] = np.arange(t)
                    infos = g["infos"]
                    arrays["is_terminal"][pos : pos + t] = infos["is_terminal"][()]
                    arrays["policy_id"][pos : pos + t] = infos["policy_id"][()]
                    for key, parts in optional.items():
                        if key in infos:
                            parts.append(infos[key][()])
                    pos += t
        except (OSError, KeyError) as exc:
            raise DatasetError(f"{hdf5} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
        if pos != n_frames:
            raise DatasetError(f"{hdf5} holds {pos} frames, its metadata says {n_frames}: truncated?")
        frames.flush()
        del frames

    atomic_write(cache / "frames.npy", write_frames)
    for key, parts in optional.items():
        if len(parts) == meta["episodes"]:
            arrays[key] = np.concatenate(parts)
    if not np.all(np.isfinite(arrays["reward"])):
        raise DatasetError(f"{hdf5} has NaN or inf rewards")
    save_npz(arrays, cache / "arrays.npz")
    (cache / "cache.json").write_text(
        json.dumps({"cache_format": CACHE_FORMAT, "hdf5_sha256": meta["hdf5_sha256"]})
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
        """Open a dataset folder; build the cache on first use. ``verify`` re-hashes the HDF5."""
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
        cache = ds_dir / "cache" / meta["hdf5_sha256"][:16]
        fresh = not (cache / "cache.json").exists()
        if verify or fresh:
            digest = sha256_file(hdf5)
            if digest != meta["hdf5_sha256"]:
                raise DatasetError(
                    f"{hdf5} checksum {digest[:16]}... does not match its metadata's: corrupt or modified"
                )
        if fresh:
            _build_cache(hdf5, meta, cache)
        frames = np.load(cache / "frames.npy", mmap_mode="r")
        with np.load(cache / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
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

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.arrays["reward"], self.ep_start)

    def episode_frames(self, e: int) -> np.ndarray:
        """All frames of episode ``e``, (T+1, 3, H, W)."""
        return np.asarray(self.frames[self.ep_start[e] : self.ep_start[e] + self.ep_len[e] + 1])

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Train / validation episode ids, split by whole episodes, fixed by ``seed``."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        order = np.random.default_rng(seed).permutation(self.num_episodes)
        n_val = round(val_fraction * self.num_episodes)
        if val_fraction > 0 and n_val == 0 and self.num_episodes > 1:
            n_val = 1
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def stacks(self, index: np.ndarray, frame_stack: int) -> np.ndarray:
        """Frame stacks ending at flat frame ``index`` (any shape S), padded at episode starts.

        Returns (*S, 3 * frame_stack, H, W) uint8; for a token view (``voc_rl.tokenizers.cache``),
        (*S, frame_stack * T) token ids. The earliest frame repeats where the episode has fewer than
        ``frame_stack`` frames so far, as the published pixel benchmarks do.
        """
        index = np.asarray(index)
        step = self.arrays["step"][index]
        offsets = np.arange(-frame_stack + 1, 1)  # (F,)
        idx = index[..., None] + np.maximum(offsets, -step[..., None])  # (*S, F)
        out = self.frames[idx.ravel()]  # (prod(S)*F, 3, H, W), or (prod(S)*F, T) for a token view
        return out.reshape(*index.shape, frame_stack * out.shape[1], *out.shape[2:])

    def __repr__(self) -> str:
        return (
            f"PixelDataset({self.meta['name']!r}: {self.num_episodes} episodes, "
            f"{self.num_transitions} transitions, "
            f"frames {tuple(self.frames.shape[1:])}, env {self.env_id})"
        )


def open_dataset(path: str | Path, verify: bool = False) -> PixelDataset:
    return PixelDataset.open(path, verify=verify)


def find_dataset(root: str | Path, name: str) -> Path:
    """The folder of dataset ``name`` under a datasets root (as written by ``voc-rl collect --out``)."""
    path = dataset_dir(root, name)
    if not path.exists():
        raise DatasetError(f"no dataset {name!r} under {root} (looked for {path})")
    return path
