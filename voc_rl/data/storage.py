"""Writing pixel datasets as Minari datasets, with voc_rl's metadata beside them.

On disk (``root`` is the folder given to ``--out``, used as Minari's datasets path)::

    root/voc_rl/<name>-v0/data/main_data.hdf5   Minari's HDF5, lossless (jpeg_encoding=False)
    root/voc_rl/<name>-v0/data/metadata.json    Minari's metadata
    root/voc_rl/<name>-v0/voc_rl.json           ours: task, env kwargs, policy, seed, versions, sha256

``MINARI_DATASETS_PATH=root python -c "import minari; minari.load_dataset('voc_rl/<name>-v0')"``
reads it with a plain Minari install. One Minari step per frame: ``observations`` are single
frames (3, H, W) (stacks are rebuilt when sampling, so nothing is stored three times); ``actions``
[t] is taken at frame t and ``rewards`` [t] received on reaching frame t+1. ``infos`` (aligned with
the T+1 frames) hold ``proprio``, ``physics_state``, ``policy_id``, ``discount``, ``is_first``,
``is_last`` and ``is_terminal``.

Writing happens in a hidden temporary folder that is renamed into place at the end, so an
interrupted collection leaves no half-written dataset behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from voc_rl.checkpoint import package_versions
from voc_rl.paths import user_path

NAMESPACE = "voc_rl"
META_FILE = "voc_rl.json"
META_FORMAT = "voc_rl.dataset/1"


class DatasetError(RuntimeError):
    """A dataset is missing, corrupt, truncated or does not match its metadata."""


class DatasetWarning(UserWarning):
    """Something about a dataset was wrong but could be repaired (e.g. a damaged cache was rebuilt)."""


@dataclass
class Episode:
    """One episode in the stored convention: T+1 frames, T actions and rewards."""

    frames: np.ndarray  # (T+1, 3, H, W) uint8
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float32
    terminated: bool  # True if the last frame is a true terminal state
    proprio: np.ndarray | None = None  # (T+1, P) float32
    physics_state: np.ndarray | None = None  # (T+1, S) float64
    policy_id: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        t = len(self.actions)
        if self.frames.ndim != 4 or self.frames.shape[1] != 3 or self.frames.dtype != np.uint8:
            raise DatasetError(
                f"frames must be uint8 (T+1, 3, H, W), got {self.frames.dtype} {self.frames.shape}"
            )
        if len(self.frames) != t + 1 or len(self.rewards) != t:
            raise DatasetError(
                f"an episode needs T+1 frames for T actions and rewards, got {len(self.frames)} frames, "
                f"{t} actions, {len(self.rewards)} rewards"
            )
        if t < 1:
            raise DatasetError("an episode needs at least one transition")
        if not np.all(np.isfinite(self.rewards)):
            raise DatasetError(
                f"rewards contain NaN or inf (first bad step {int(np.argmin(np.isfinite(self.rewards)))})"
            )
        if not np.all(np.isfinite(self.actions)):
            raise DatasetError("actions contain NaN or inf")

    def buffer(self, episode_id: int) -> Any:
        from minari.data_collector import EpisodeBuffer

        n = len(self.frames)
        last = np.zeros(n, dtype=bool)
        last[-1] = True
        first = np.zeros(n, dtype=bool)
        first[0] = True
        terminal = last & self.terminated
        infos = {
            "policy_id": np.full(n, self.policy_id, dtype=np.int64),
            "discount": (~terminal).astype(np.float32),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }
        if self.proprio is not None:
            infos["proprio"] = self.proprio.astype(np.float32)
        if self.physics_state is not None:
            infos["physics_state"] = self.physics_state.astype(np.float64)
        truncations = np.zeros(n - 1, dtype=bool)
        truncations[-1] = not self.terminated
        terminations = np.zeros(n - 1, dtype=bool)
        terminations[-1] = self.terminated
        return EpisodeBuffer(
            id=episode_id,
            seed=self.seed,
            observations=self.frames,
            actions=self.actions.astype(np.float32),
            rewards=self.rewards.astype(np.float64),
            terminations=terminations,
            truncations=truncations,
            infos=infos,
        )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_dir(root: str | Path, name: str) -> Path:
    return Path(root) / NAMESPACE / f"{name}-v0"


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    previous = os.environ.get("MINARI_DATASETS_PATH")
    # Absolute, always: Minari joins this root with paths it derived from it, so a relative one
    # came back doubled (root/.tmp-x/voc_rl/<name>-v0/data/root/.tmp-x/...).
    os.environ["MINARI_DATASETS_PATH"] = str(user_path(root))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


@dataclass
class DatasetWriter:
    """Accumulate episodes and write them in chunks to a Minari dataset, finalised atomically.

    Use as a context manager: on an exception (Ctrl-C included) the temporary folder is removed.
    """

    root: Path
    name: str
    env_id: str
    env_kwargs: dict[str, Any]
    action_dim: int
    frame_shape: tuple[int, int, int]
    metadata: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    chunk_episodes: int = 10

    def __post_init__(self) -> None:
        self.root = user_path(self.root)
        self.final_dir = dataset_dir(self.root, self.name)
        if self.final_dir.exists() and not self.overwrite:
            raise FileExistsError(
                f"{self.final_dir} already exists; pass overwrite=True (--overwrite) to replace it"
            )
        env = gym.make(self.env_id, **self.env_kwargs)
        env_actions = env.action_space.shape
        env.close()
        if env_actions != (self.action_dim,):
            raise DatasetError(
                f"{self.env_id} takes actions of shape {env_actions}, but the episodes have "
                f"({self.action_dim},): wrong task?"
            )
        self.tmp_root = self.root / f".tmp-{self.name}-{os.getpid()}"
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        self._pending: list[Episode] = []
        self._dataset: Any = None
        self._episodes = 0
        self._transitions = 0
        self._returns: list[float] = []
        self._policy_ids: list[int] = []

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # After finalize() the folder is gone already; otherwise (an exception, or no finalize) the
        # dataset is incomplete and must not be left behind.
        shutil.rmtree(self.tmp_root, ignore_errors=True)

    def add(self, episode: Episode) -> None:
        if episode.actions.shape[1:] != (self.action_dim,) or episode.frames.shape[1:] != self.frame_shape:
            raise DatasetError(
                f"episode has actions {episode.actions.shape[1:]} and frames {episode.frames.shape[1:]}, "
                f"but this dataset holds actions ({self.action_dim},) and frames {self.frame_shape}"
            )
        self._pending.append(episode)
        self._episodes += 1
        self._transitions += len(episode.actions)
        self._returns.append(float(episode.rewards.sum()))
        self._policy_ids.append(episode.policy_id)
        if len(self._pending) >= self.chunk_episodes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        import minari

        first = self._episodes - len(self._pending)
        buffers = [ep.buffer(first + i) for i, ep in enumerate(self._pending)]
        with _minari_root(self.tmp_root), warnings.catch_warnings():
            # Minari nags about author e-mail, code permalink and eval env: none apply here.
            warnings.filterwarnings("ignore", category=UserWarning, module="minari")
            if self._dataset is None:
                obs_space = spaces.Box(0, 255, shape=self.frame_shape, dtype=np.uint8)
                act_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
                spec = gym.spec(self.env_id)  # so that dataset.recover_environment() rebuilds the env
                spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **self.env_kwargs})
                self._dataset = minari.create_dataset_from_buffers(
                    dataset_id=f"{NAMESPACE}/{self.name}-v0",
                    buffer=buffers,
                    env=spec,
                    observation_space=obs_space,
                    action_space=act_space,
                    algorithm_name=", ".join(
                        str(p.get("name", "?")) for p in self.metadata.get("policies", {}).values()
                    )
                    or "unknown",
                    author="voc_rl",
                    description=self.metadata.get("description", f"voc_rl pixel dataset {self.name}"),
                    data_format="hdf5",
                    jpeg_encoding=False,
                )
            else:
                self._dataset.storage.update_episodes(buffers)
        self._pending.clear()

    def finalize(self) -> Path:
        """Write the remaining episodes and the metadata, then move the dataset into place."""
        if self._episodes == 0:
            raise DatasetError("no episodes were added; nothing to write")
        self._flush()
        tmp_dir = dataset_dir(self.tmp_root, self.name)
        hdf5 = tmp_dir / "data" / "main_data.hdf5"
        meta = {
            "format": META_FORMAT,
            "name": self.name,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "frame_shape": list(self.frame_shape),
            "action_dim": self.action_dim,
            "episodes": self._episodes,
            "transitions": self._transitions,
            "episode_return_mean": float(np.mean(self._returns)),
            "episode_return_std": float(np.std(self._returns)),
            "episodes_per_policy_id": {
                str(k): int(v) for k, v in zip(*np.unique(self._policy_ids, return_counts=True), strict=True)
            },
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": package_versions(),
            "hdf5_bytes": hdf5.stat().st_size,
            "hdf5_sha256": sha256_file(hdf5),
            **self.metadata,
        }
        (tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        old = self.tmp_root / "replaced"
        if self.final_dir.exists():  # move the old dataset aside first: a crash now loses neither
            os.replace(self.final_dir, old)
        os.replace(tmp_dir, self.final_dir)
        ns_meta = self.tmp_root / NAMESPACE / "namespace_metadata.json"
        if ns_meta.exists() and not (self.final_dir.parent / ns_meta.name).exists():
            shutil.copy(ns_meta, self.final_dir.parent / ns_meta.name)
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        return self.final_dir


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
