"""The catalogue of wrong inputs to the public API and what each one gets.

Every :class:`Case` is one bad input, the call that receives it, and the error a user should see:
its type, and a pattern that its message must contain, so that the message says what was wrong
(not merely that something raised). ``tests/test_bad_input.py`` asserts every case and
``tests/robustness_report.py`` runs the same catalogue to write ``results/robustness.md``: this
module (with the tests, not in the package) is the single source of truth for both.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import torch

import voc_rl
from voc_rl.agents import Agent, TDCriticAgent
from voc_rl.checkpoint import CheckpointError, save_checkpoint
from voc_rl.data import (
    DatasetError,
    DatasetWarning,
    PixelDataset,
    WindowSampler,
    discounted_returns,
    open_dataset,
)
from voc_rl.data.collect import collect
from voc_rl.data.storage import sha256_file
from voc_rl.ground_truth import simulator_q
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.prior import BCConfig, BCPolicy
from voc_rl.run_folder import RunFolderError
from voc_rl.selection import select_policies
from voc_rl.tokenizers import Tokenizer, make_tokenizer
from voc_rl.tokenizers.cache import token_view
from voc_rl.tokenizers.train import fit
from voc_rl.train_loop import Loop
from voc_rl.value import density_q, pool_q, rollout_q, sample_q


# ---------------------------------------------------------------------------------------- what cases use
class ExitStatus2(Exception):
    """``voc-rl`` exited with status 2, no traceback; the message is the last line of its stderr."""


class Warned(Exception):
    """The call warned, repaired what was wrong and went on: the message is ``<category>: <warning>``.
    Raised only after the call returned and its result passed the case's own check."""


class World:
    """What the cases act on, built lazily under ``root``: datasets, checkpoints, an agent, an env.

    ``pixels`` is a 64 px fake-pixels dataset (the tests pass their session one; the benchmark
    collects its own). Cases that damage a dataset damage a fresh copy of ``small`` (16 px, 2
    episodes of 50 steps), never a shared one.
    """

    def __init__(self, root: Path, pixels: Path | None = None) -> None:
        self.root = Path(root)
        self._pixels = pixels
        self._count = itertools.count()

    def fresh(self, name: str) -> Path:
        """A path under ``root`` that nothing uses yet."""
        return self.root / f"{name}-{next(self._count)}"

    # ------------------------------------------------------------------ datasets
    @functools.cached_property
    def pixels(self) -> Path:
        if self._pixels is not None:
            return self._pixels
        return collect("fake-pixels", "random", episodes=3, out=self.root / "pixels", size=64, progress=False)

    @functools.cached_property
    def small(self) -> Path:
        path = collect("fake-pixels", "random", episodes=2, out=self.root / "small", size=16, progress=False)
        open_dataset(path)  # builds the cache, so that every copy has one (cases drop it where they mean to)
        return path

    def copy_small(self) -> Path:
        path = self.fresh("small-copy")
        shutil.copytree(self.small, path)
        return path

    @functools.cached_property
    def ds(self) -> PixelDataset:
        return open_dataset(self.pixels)

    @functools.cached_property
    def small_ds(self) -> PixelDataset:
        return open_dataset(self.small)

    # ------------------------------------------------------------------ checkpoints and an agent
    @functools.cached_property
    def tokenizer_path(self) -> Path:
        return make_tokenizer("titok", size="tiny").save(self.root / "parts" / "tokenizer.pt")

    @functools.cached_property
    def view(self) -> PixelDataset:
        return token_view(self.ds, self.tokenizer_path, progress=False)

    @functools.cached_property
    def parts(self) -> dict[str, Path]:
        """Untrained parts of a tiny ``voc-titok-select`` agent: no case gets as far as using the weights."""
        config = OccupancyConfig.for_dataset(self.view, "tiny", gamma=0.9, target_frames=2)
        return {
            "tokenizer": self.tokenizer_path,
            "prior": BCPolicy(BCConfig.for_dataset(self.view, "tiny")).save(self.root / "parts" / "prior.pt"),
            "occupancy": OccupancyModel(config).save(
                self.root / "parts" / "occupancy.pt", reward=RewardModel(config)
            ),
        }

    @functools.cached_property
    def agent(self) -> Agent:
        return voc_rl.make_agent("voc-titok-select", size="tiny").load_parts("fake-pixels", **self.parts)

    @functools.cached_property
    def agent_zip(self) -> Path:
        return self.agent.save(self.root / "voc-titok-select.zip")

    def rezip(
        self,
        edit: Callable[[Any], Any] | None = None,
        drop: str | None = None,
        replace: dict[str, bytes] | None = None,
    ) -> Path:
        """A copy of ``agent_zip`` whose agent.json is ``edit(parsed json)``, without member ``drop``,
        or with members replaced by raw bytes: a hand-edited or tampered agent file."""
        out = self.fresh("agent").with_suffix(".zip")
        with zipfile.ZipFile(self.agent_zip) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.namelist():
                if item == drop:
                    continue
                data = src.read(item)
                if item == "agent.json" and edit is not None:
                    data = json.dumps(edit(json.loads(data))).encode()
                dst.writestr(item, (replace or {}).get(item, data))
        return out

    @functools.cached_property
    def obs(self) -> np.ndarray:
        obs, _ = voc_rl.make_env("fake-pixels").reset(seed=0)
        return obs  # (9, 64, 64) uint8

    @functools.cached_property
    def env(self) -> gym.Env:
        env = voc_rl.make_env("fake-pixels")
        env.reset(seed=0)
        return env

    # ------------------------------------------------------------------ a tiny occupancy model
    @functools.cached_property
    def occ(self) -> OccupancyModel:
        return OccupancyModel(TINY_OCC).eval()

    @functools.cached_property
    def occ_path(self) -> Path:
        return self.occ.save(self.root / "occupancy.pt", reward=RewardModel(TINY_OCC))

    @functools.cached_property
    def world_model(self) -> OccupancyModel:
        return OccupancyModel(OccupancyConfig(**{**TINY_FIELDS, "gamma": 0.0})).eval()


# 2-token states over a vocabulary of 4, a 1-D action, random weights: only the input checks run
TINY_FIELDS = dict(vocab_size=4, tokens_per_frame=2, action_dim=1, frame_stack=1, width=16, depth=1, heads=2)
TINY_OCC = OccupancyConfig(**TINY_FIELDS, gamma=0.5)
CTX, ACT = torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 1)  # 3 contexts and their actions
TARGETS = torch.zeros(5, 2, dtype=torch.long)  # 5 candidate states shared by every context


def reward_of(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[..., 0].float()


def edit_meta(path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """Replace the dataset's voc_rl.json by ``edit(its parsed content)``."""
    meta = json.loads((path / "voc_rl.json").read_text())
    (path / "voc_rl.json").write_text(json.dumps(edit(meta)))
    return path


def reseal(path: Path) -> Path:
    """Record the HDF5's current size and checksum in voc_rl.json and drop the cache, as if the
    damaged file had been written that way: the reader then has to parse it."""
    hdf5 = path / "data" / "main_data.hdf5"
    edit_meta(path, lambda m: {**m, "hdf5_bytes": hdf5.stat().st_size, "hdf5_sha256": sha256_file(hdf5)})
    shutil.rmtree(path / "cache", ignore_errors=True)
    return path


def edit_episode(world: World, edit: Callable[[h5py.Group], None]) -> Path:
    """A copy of the small dataset whose first episode's HDF5 group was edited, then resealed."""
    path = world.copy_small()
    with h5py.File(path / "data" / "main_data.hdf5", "r+") as f:
        edit(f["episode_0"])
    return reseal(path)


def nan_reward(group: h5py.Group) -> None:
    group["rewards"][3] = np.nan


def short_rewards(group: h5py.Group) -> None:
    del group["rewards"]
    group["rewards"] = np.zeros(10)


def huge_actions(group: h5py.Group) -> None:
    """10^11 declared rows and no data: a few bytes on disk, 745 GiB once read."""
    del group["actions"]
    group.create_dataset("actions", shape=(10**11, 2), dtype="f4", chunks=(1024, 2))


def flip_byte(path: Path) -> Path:
    hdf5 = path / "data" / "main_data.hdf5"
    data = bytearray(hdf5.read_bytes())
    data[len(data) // 2] ^= 0xFF
    hdf5.write_bytes(bytes(data))
    return path


def truncate(file: Path, length: int) -> Path:
    file.write_bytes(file.read_bytes()[:length])
    return file


def two_datasets(world: World) -> Path:
    root = world.fresh("two")
    for name in ("a", "b"):
        shutil.copytree(world.small, root / "voc_rl" / f"{name}-v0")
    return root


def other_task(world: World) -> Path:
    """The small dataset, relabelled as cheetah-run data (the agent was assembled for fake-pixels)."""
    return edit_meta(world.copy_small(), lambda m: {**m, "task": "cheetah-run"})


def without_hdf5(world: World) -> Path:
    path = world.copy_small()
    (path / "data" / "main_data.hdf5").unlink()
    return path


def empty_folder(world: World) -> Path:
    path = world.fresh("empty")
    path.mkdir()
    return path


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A JSON edit that deletes ``key``."""
    return lambda doc: {k: v for k, v in doc.items() if k != key}


def truncated_cache(world: World) -> Path:
    path = world.copy_small()
    truncate(next(path.glob("cache/*/frames.npy")), 1000)
    return path


def cut_arrays_cache(world: World) -> Path:
    path = world.copy_small()
    truncate(next(path.glob("cache/*/arrays.npz")), 300)
    return path


def flipped_frames_cache(world: World) -> Path:
    """A copy whose cached frames have one byte flipped: same size, so only verify=True can tell."""
    path = world.copy_small()
    frames = next(path.glob("cache/*/frames.npy"))
    data = bytearray(frames.read_bytes())
    data[-100] ^= 0xFF
    frames.write_bytes(bytes(data))
    return path


def warned(category: type[Warning], call: Callable[[], Any]) -> Any:
    """Make ``call()``; if it warned with ``category``, raise :class:`Warned` with that warning."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = call()
    for w in seen:
        if issubclass(w.category, category):
            raise Warned(f"{w.category.__name__}: {w.message}")
    return result


def assert_consistent(ds: PixelDataset) -> None:
    """Every array of ``ds`` has a row per frame, as its metadata says, and rewards are finite."""
    n = len(ds.frames)
    assert n == ds.num_transitions + ds.num_episodes == ds.meta["transitions"] + ds.meta["episodes"]
    assert all(len(a) == n for a in ds.arrays.values())
    assert np.isfinite(ds.arrays["reward"]).all()


def open_repaired(world: World, path: Path, verify: bool = False) -> PixelDataset:
    """Open a copy of the small dataset whose cache was damaged: the reader must warn, rebuild, and
    read the same data as the intact dataset (then :class:`Warned` is raised with the warning)."""

    def call() -> PixelDataset:
        ds = open_dataset(path, verify=verify)
        assert_consistent(ds)
        np.testing.assert_array_equal(np.asarray(ds.frames), np.asarray(world.small_ds.frames))
        for key, array in world.small_ds.arrays.items():
            np.testing.assert_array_equal(ds.arrays[key], array)
        return ds

    return warned(DatasetWarning, call)


def unknown_backend_checkpoint(world: World) -> Path:
    """A well-formed tokenizer checkpoint naming a backend this version does not have."""
    ckpt = {"format": "voc_rl.tokenizer/1", "backend": "vqvea", "config": {}, "step": 0, "state_dict": {}}
    return save_checkpoint(ckpt, world.fresh("unknown-backend").with_suffix(".pt"))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def cut_copy(world: World, file: Path, length: int) -> Path:
    """A copy of ``file`` cut to its first ``length`` bytes."""
    return write(world.fresh("cut").with_suffix(file.suffix), file.read_bytes()[:length])


def with_config(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An agent.json edit that sets config ``fields``."""
    return lambda meta: {**meta, "config": {**meta["config"], **fields}}


def pickled_code() -> bytes:
    buf = io.BytesIO()
    torch.save({"format": "voc_rl.tokenizer/1", "hook": os.system}, buf)
    return buf.getvalue()


def config_edited(world: World, checkpoint: Path, **fields: Any) -> Path:
    """A copy of a model ``checkpoint`` whose saved config has ``fields`` changed."""
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"] = {**ckpt["config"], **fields}
    return save_checkpoint(ckpt, world.fresh("edited").with_suffix(".pt"))


def flipped_member(world: World, member: str) -> Path:
    """A copy of ``agent_zip`` with one byte of ``member``'s stored data flipped: its CRC fails."""
    out = world.fresh("crc").with_suffix(".zip")
    data = bytearray(world.agent_zip.read_bytes())
    with zipfile.ZipFile(world.agent_zip) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    return write(out, bytes(data))


def under_a_file(world: World, name: str) -> Path:
    """``<a file>/name``: a path whose folder is a file, so nothing can be written there."""
    return write(world.fresh("plain-file"), b"not a folder") / name


def run_of_seed(world: World, seed: int) -> Path:
    """A run folder where a tiny ``bc`` of ``seed`` trained one step."""
    run = world.fresh("run")
    voc_rl.make_agent("bc", size="tiny", seed=seed).learn(world.pixels, steps=1, run_dir=run, progress=False)
    return run


def held_by_another_process(world: World) -> Path:
    """A run folder whose lock names a live process (this one's parent) on this host."""
    run = world.fresh("run")
    run.mkdir(parents=True)
    record = {"pid": os.getppid(), "host": socket.gethostname(), "since": "2026-01-01 00:00:00"}
    (run / ".lock").write_text(json.dumps(record))
    return run


def tokenizer_run_of_seed(world: World, seed: int) -> Path:
    """A tokenizer run folder (two steps of a tiny titok) of ``seed``."""
    out = world.fresh("tok-run")
    fit(make_tokenizer("titok", size="tiny", steps=2), world.ds, loop=Loop(out, seed=seed, progress=False))
    return out


def cli(world: World, *argv: str) -> None:
    """Run the installed ``voc-rl`` script; raise :class:`ExitStatus2` with its message on status 2."""
    script = Path(sys.executable).with_name("voc-rl")
    proc = subprocess.run(
        [str(script), *argv], capture_output=True, text=True, cwd=world.root, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        raise ExitStatus2(proc.stderr.strip().splitlines()[-1])
    raise AssertionError(f"voc-rl {' '.join(argv)} exited with {proc.returncode}: {proc.stderr[-300:]}")


def nan_table(world: World) -> np.ndarray:
    """A policy's action table for ``world.view`` with one NaN action."""
    table = np.zeros((len(world.view.arrays["action"]), 1, world.view.arrays["action"].shape[1]), np.float32)
    table[3, 0, 0] = np.nan
    return table


def train_cli(world: World, *argv: str) -> None:
    """``voc-rl agent train --agent bc --dataset <pixels> ARGV``."""
    cli(world, "agent", "train", "--agent", "bc", "--dataset", str(world.pixels), *argv)


# ---------------------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class Case:
    id: str
    """Test id: ``<area>-<what is wrong>``."""
    call: str
    """The call as a user would write it."""
    bad: str
    """What is wrong with the input."""
    error: type[BaseException]
    """The error type the user gets."""
    match: str
    """A regular expression the message must contain (``re.search``)."""
    run: Callable[[World], Any]
    """Makes the call."""


GT = {"rollouts": 1, "processes": 1, "cache": False, "progress": False}  # simulator_q, cheap
CASES: list[Case] = [
    # ------------------------------------------------------------------ environments
    Case("env-unknown-name", 'make_env("cheetah-runn")', "a misspelt task name",
         gym.error.NameNotFound, r"Did you mean voc_rl/cheetah-run-v0",
         lambda w: voc_rl.make_env("cheetah-runn")),
    Case("env-fake-size-4", 'make_env("fake-pixels", size=4)', "4 px frames",
         ValueError, r"size must be >= 8 pixels, got 4", lambda w: voc_rl.make_env("fake-pixels", size=4)),
    Case("env-dmc-size-4", 'make_env("cheetah-run", size=4)', "4 px frames for a DMC task",
         ValueError, r"size must be in \[16, 1024\] pixels, got 4",
         lambda w: voc_rl.make_env("cheetah-run", size=4)),
    Case("env-obs-type", 'make_env("fake-pixels", obs_type="rgb")', "an unknown observation type",
         ValueError, r"obs_type must be 'pixels' or 'state', got 'rgb'",
         lambda w: voc_rl.make_env("fake-pixels", obs_type="rgb")),
    Case("env-frame-stack-0", 'make_env("fake-pixels", frame_stack=0)', "an empty frame stack",
         ValueError, r"frame_stack.* must be >= 1", lambda w: voc_rl.make_env("fake-pixels", frame_stack=0)),
    Case("env-render-quality", 'make_env("cheetah-run", render_quality="ultra")', "an unknown render quality",
         ValueError, r"render_quality must be 'fast' or 'standard', got 'ultra'",
         lambda w: voc_rl.make_env("cheetah-run", render_quality="ultra")),
    Case("env-dmc-unknown-kwarg", 'make_env("cheetah-run", frame_stak=4)', "a misspelt kwarg",
         TypeError, r"unexpected keyword argument 'frame_stak'",
         lambda w: voc_rl.make_env("cheetah-run", frame_stak=4)),
    Case("env-fake-unknown-kwarg", 'make_env("fake-pixels", frame_stak=4)', "a misspelt kwarg",
         TypeError, r"unexpected keyword argument 'frame_stak'",
         lambda w: voc_rl.make_env("fake-pixels", frame_stak=4)),
    Case("env-fake-render-quality", 'make_env("fake-pixels", render_quality="ultra")',
         "an unknown render quality for the fake env", ValueError,
         r"render_quality must be 'fast' or 'standard', got 'ultra'",
         lambda w: voc_rl.make_env("fake-pixels", render_quality="ultra")),
    Case("step-action-shape", "env.step(np.zeros(3))", "3 numbers for a 2-D action",
         ValueError, r"action has shape \(3,\), expected \(2,\)", lambda w: w.env.step(np.zeros(3))),
    Case("step-action-nan", "env.step([nan, 0])", "a NaN action",
         ValueError, r"action contains NaN or inf", lambda w: w.env.step(np.array([np.nan, 0.0]))),
    Case("step-action-inf", "env.step([inf, 0])", "an infinite action",
         ValueError, r"action contains NaN or inf", lambda w: w.env.step(np.array([np.inf, 0.0]))),
    Case("step-action-text", 'env.step("left")', "a string for an action",
         ValueError, r"action must be a numeric array of shape \(2,\)", lambda w: w.env.step("left")),
    Case("step-before-reset", "make_env(...).step(a)", "stepping before reset",
         gym.error.ResetNeeded, r"before calling env.reset",
         lambda w: voc_rl.make_env("fake-pixels").step(np.zeros(2))),
    # ------------------------------------------------------------------ datasets
    Case("ds-missing-path", 'open_dataset("missing/")', "a path that does not exist",
         DatasetError, r"missing-\d+ does not exist", lambda w: open_dataset(w.fresh("missing"))),
    Case("ds-not-a-dataset", 'open_dataset("empty/")', "a folder with no dataset in it",
         DatasetError, r"holds no voc_rl dataset \(no voc_rl.json",
         lambda w: open_dataset(empty_folder(w))),
    Case("ds-two-datasets", 'open_dataset("root/")', "a root holding two datasets",
         DatasetError, r"holds several datasets; pass one of", lambda w: open_dataset(two_datasets(w))),
    Case("ds-truncated-hdf5", "open_dataset(path)", "the HDF5 cut to 5,000 bytes",
         DatasetError, r"is 5000 bytes but was written as \d+: truncated or modified",
         lambda w: open_dataset(truncate(w.copy_small() / "data" / "main_data.hdf5", 5000).parents[1])),
    Case("ds-modified-byte", "open_dataset(path, verify=True)", "one byte of the HDF5 flipped",
         DatasetError, r"checksum [0-9a-f]+\.\.\. does not match its metadata's: corrupt or modified",
         lambda w: open_dataset(flip_byte(w.copy_small()), verify=True)),
    Case("ds-missing-hdf5", "open_dataset(path)", "the HDF5 deleted",
         DatasetError, r"main_data.hdf5 is missing: the dataset folder is incomplete",
         lambda w: open_dataset(without_hdf5(w))),
    Case("ds-meta-not-json", "open_dataset(path)", "voc_rl.json cut mid-way",
         DatasetError, r"voc_rl.json is unreadable or not JSON",
         lambda w: open_dataset(truncate(w.copy_small() / "voc_rl.json", 40).parent)),
    Case("ds-meta-format", "open_dataset(path)", 'voc_rl.json with format "voc_rl.dataset/9"',
         DatasetError, r"has format 'voc_rl.dataset/9', expected 'voc_rl.dataset/1'",
         lambda w: open_dataset(edit_meta(w.copy_small(), lambda m: {**m, "format": "voc_rl.dataset/9"}))),
    Case("ds-nan-rewards", "open_dataset(path)", "a NaN reward written into the HDF5",
         DatasetError, r"has NaN or inf rewards", lambda w: open_dataset(edit_episode(w, nan_reward))),
    Case("ds-meta-missing-key", "open_dataset(path)", "voc_rl.json without hdf5_sha256",
         DatasetError, r"voc_rl.json lacks the key\(s\) \['hdf5_sha256'\] that the reader needs",
         lambda w: open_dataset(edit_meta(w.copy_small(), without("hdf5_sha256")))),
    Case("ds-meta-no-env-id", "open_dataset(path)", "voc_rl.json without env_id",
         DatasetError, r"voc_rl.json lacks the key\(s\) \['env_id'\]",
         lambda w: open_dataset(edit_meta(w.copy_small(), without("env_id")))),
    Case("ds-meta-not-object", "open_dataset(path)", "voc_rl.json holding a JSON list",
         DatasetError, r"voc_rl.json holds a JSON list, expected an object of dataset metadata",
         lambda w: open_dataset(edit_meta(w.copy_small(), lambda m: [m]))),
    Case("ds-meta-wrong-type", "open_dataset(path)", 'voc_rl.json with "episodes": "two"',
         DatasetError, r"voc_rl.json: key 'episodes' must be an integer >= 1, got 'two'",
         lambda w: open_dataset(edit_meta(w.copy_small(), lambda m: {**m, "episodes": "two"}))),
    Case("ds-meta-frame-shape", "open_dataset(path)", 'voc_rl.json with "frame_shape": [16, 16]',
         DatasetError, r"voc_rl.json: key 'frame_shape' must be \[3, H, W\].*got \[16, 16\]",
         lambda w: open_dataset(edit_meta(w.copy_small(), lambda m: {**m, "frame_shape": [16, 16]}))),
    Case("ds-rewards-wrong-length", "open_dataset(path)", "an episode with 10 rewards for 50 steps",
         DatasetError, r"episode_0/rewards has shape \(10,\), expected \(50,\)",
         lambda w: open_dataset(edit_episode(w, short_rewards))),
    Case("ds-huge-actions", "open_dataset(path)", "an actions array declaring 10^11 rows",
         DatasetError, r"episode_0/actions has shape \(100000000000, 2\), expected \(50, 2\)",
         lambda w: open_dataset(edit_episode(w, huge_actions))),
    Case("ds-truncated-cache", "open_dataset(path, verify=True)", "the frames cache cut to 1,000 bytes",
         Warned, r"DatasetWarning: the cache .* cannot be used \(frames.npy is 1000 bytes but was written "
         r"as \d+: truncated\); rebuilding it from main_data.hdf5",
         lambda w: open_repaired(w, truncated_cache(w), verify=True)),
    Case("ds-cut-arrays-cache", "open_dataset(path)", "the arrays cache cut to 300 bytes",
         Warned, r"DatasetWarning: .*arrays.npz is 300 bytes but was written as \d+: truncated\); rebuilding",
         lambda w: open_repaired(w, cut_arrays_cache(w))),
    Case("ds-flipped-cache", "open_dataset(path, verify=True)", "one byte of the frames cache flipped",
         Warned, r"DatasetWarning: .*frames.npy does not match its recorded checksum: corrupt or modified\)",
         lambda w: open_repaired(w, flipped_frames_cache(w), verify=True)),
    Case("ds-tokens-wrong-size", "token_view(ds_16px, tokenizer_64px)", "a tokenizer for 64 px frames",
         DatasetError, r"has frames \(3, 16, 16\); .* encodes 64px frames",
         lambda w: token_view(w.small_ds, w.tokenizer_path, progress=False)),
    Case("ds-split-fraction", "ds.split(val_fraction=1.0)", "every episode held out",
         ValueError, r"val_fraction must be in \[0, 1\), got 1.0", lambda w: w.small_ds.split(1.0)),
    Case("ds-returns-gamma-1", "discounted_returns(ds, gamma=1.0)", "gamma 1",
         ValueError, r"gamma must be in \[0, 1\), got 1.0", lambda w: discounted_returns(w.small_ds, 1.0)),
    Case("sampler-frame-stack-0", "WindowSampler(ds, frame_stack=0)", "an empty frame stack",
         ValueError, r"frame_stack must be >= 1, got 0", lambda w: WindowSampler(w.small_ds, frame_stack=0)),
    Case("sampler-no-episodes", "WindowSampler(ds, episodes=[])", "no episodes",
         ValueError, r"no episodes to sample from", lambda w: WindowSampler(w.small_ds, episodes=[])),
    Case("sampler-gamma-1", "sampler.sample(4, gamma=1.0)", "gamma 1",
         ValueError, r"gamma must be in \[0, 1\), got 1.0",
         lambda w: WindowSampler(w.small_ds).sample(4, gamma=1.0)),
    Case("sampler-episode-out-of-range", "WindowSampler(ds, episodes=[5])", "episode 5 of 2",
         ValueError, r"episode ids must be in \[0, 2\) \(the dataset has 2 episodes\), got \[5\]",
         lambda w: WindowSampler(w.small_ds, episodes=[5])),
    Case("sampler-episode-negative", "WindowSampler(ds, episodes=[-1])", "episode -1",
         ValueError, r"episode ids must be in \[0, 2\).*got \[-1\]",
         lambda w: WindowSampler(w.small_ds, episodes=[-1])),
    Case("sampler-episode-float", "WindowSampler(ds, episodes=[0.5])", "a fractional episode id",
         TypeError, r"episodes must be integer episode ids in \[0, 2\), got dtype float64",
         lambda w: WindowSampler(w.small_ds, episodes=[0.5])),
    Case("sampler-batch-negative", "sampler.sample(-1, gamma=0.9)", "a negative batch size",
         ValueError, r"batch_size must be an integer >= 1, got -1",
         lambda w: WindowSampler(w.small_ds).sample(-1, gamma=0.9)),
    # ------------------------------------------------------------------ tokenizers
    Case("tok-unknown-backend", 'make_tokenizer("vqvea")', "a misspelt backend",
         ValueError, r"unknown tokenizer backend 'vqvea'. Did you mean 'vqvae'\?",
         lambda w: make_tokenizer("vqvea", size="tiny")),
    Case("tok-unknown-size", 'make_tokenizer("titok", size="huge")', "an unknown size preset",
         ValueError, r"unknown size 'huge' for titok tokenizer; choose from tiny, small, base",
         lambda w: make_tokenizer("titok", size="huge")),
    Case("tok-unknown-field", 'make_tokenizer("titok", vocab=16)', "a config field that does not exist",
         ValueError, r"titok tokenizer has no config fields \['vocab'\]",
         lambda w: make_tokenizer("titok", size="tiny", vocab=16)),
    Case("tok-vocab-0", 'make_tokenizer("titok", vocab_size=0)', "an empty codebook",
         ValueError, r"TiTokConfig.vocab_size must be an integer >= 2, got 0",
         lambda w: make_tokenizer("titok", size="tiny", vocab_size=0)),
    Case("tok-lr-0", 'make_tokenizer("dino", lr=0)', "a zero learning rate",
         ValueError, r"DINOConfig.lr must be a finite number > 0, got 0",
         lambda w: make_tokenizer("dino", size="tiny", lr=0)),
    Case("tok-encode-float", "tok.encode(frames / 255.0)", "float frames",
         TypeError, r"frames must be uint8 in \[0, 255\], got torch.float32; do not pre-normalise",
         lambda w: make_tokenizer("titok", size="tiny").encode(np.zeros((2, 3, 64, 64), np.float32))),
    Case("tok-encode-32px", "tok.encode(uint8 (2, 3, 32, 32))", "32 px frames for a 64 px tokenizer",
         ValueError, r"frames must be \(B, F, 3, 64, 64\) or \(B, 3, 64, 64\), got \(2, 1, 3, 32, 32\)",
         lambda w: make_tokenizer("titok", size="tiny").encode(np.zeros((2, 3, 32, 32), np.uint8))),
    Case("tok-encode-channels-last", "tok.encode(uint8 (2, 64, 64, 3))", "channels-last frames",
         ValueError, r"frames must be \(B, F, 3, 64, 64\).*got \(2, 1, 64, 64, 3\)",
         lambda w: make_tokenizer("titok", size="tiny").encode(np.zeros((2, 64, 64, 3), np.uint8))),
    Case("tok-encode-empty", "tok.encode(uint8 (0, 3, 64, 64))", "an empty batch",
         ValueError, r"frames is an empty batch",
         lambda w: make_tokenizer("titok", size="tiny").encode(np.zeros((0, 3, 64, 64), np.uint8))),
    Case("tok-embed-out-of-vocab", "tok.embed(full((1, 8), 10**6))", "token ids past the vocabulary",
         ValueError, r"token ids must be in \[0, 64\), got \[1000000, 1000000\]",
         lambda w: make_tokenizer("titok", size="tiny").embed(torch.full((1, 8), 10**6))),
    Case("tok-decode-no-decoder", 'make_tokenizer("dino").decode(tokens)', "decoding without a decoder",
         NotImplementedError, r"the dino tokenizer has no pixel decoder",
         lambda w: make_tokenizer("dino", size="tiny").decode(torch.zeros((1, 16), dtype=torch.long))),
    Case("tok-load-missing", 'Tokenizer.load("missing.pt")', "a file that does not exist",
         CheckpointError, r"checkpoint .*missing-\d+\.pt does not exist",
         lambda w: Tokenizer.load(w.fresh("missing").with_suffix(".pt"))),
    Case("tok-load-truncated", "Tokenizer.load(path)", "a checkpoint cut to 1,000 bytes",
         CheckpointError, r"is not a readable checkpoint: truncated or corrupt",
         lambda w: Tokenizer.load(cut_copy(w, w.tokenizer_path, 1000))),
    Case("tok-load-wrong-backend", 'Tokenizer.load(titok.pt, backend="dino")', "another backend expected",
         CheckpointError, r"was trained with backend='titok', but 'dino' was asked for",
         lambda w: Tokenizer.load(w.tokenizer_path, backend="dino")),
    Case("tok-load-pickled-code", "Tokenizer.load(path)", "a checkpoint that pickles os.system",
         CheckpointError, r"contains pickled objects that could run code",
         lambda w: Tokenizer.load(write(w.fresh("evil").with_suffix(".pt"), pickled_code()))),
    Case("tok-load-unknown-backend", "Tokenizer.load(path)", 'a checkpoint naming backend "vqvea"',
         CheckpointError, r"unknown-backend-\d+\.pt names the tokenizer backend 'vqvea', which this voc_rl "
         r"version does not have", lambda w: Tokenizer.load(unknown_backend_checkpoint(w))),
    Case("tok-load-occupancy", "Tokenizer.load(occupancy.pt)", "an occupancy checkpoint",
         CheckpointError, r"lacks the keys \['backend'\]; it is not a checkpoint of this kind",
         lambda w: Tokenizer.load(w.occ_path)),
    # ------------------------------------------------------------------ the occupancy model
    Case("occ-config-gamma-1", "OccupancyConfig(..., gamma=1.0)", "gamma 1",
         ValueError, r"gamma must be in \[0, 1\), got 1.0",
         lambda w: OccupancyConfig(**{**TINY_FIELDS, "gamma": 1.0})),
    Case("occ-config-gamma-negative", "OccupancyConfig(..., gamma=-0.1)", "a negative gamma",
         ValueError, r"gamma must be in \[0, 1\), got -0.1",
         lambda w: OccupancyConfig(**{**TINY_FIELDS, "gamma": -0.1})),
    Case("occ-config-variant", 'OccupancyConfig(..., variant="td")', "an unknown TD variant",
         ValueError, r"variant must be one of \('sample', 'distill'\), got 'td'",
         lambda w: OccupancyConfig(**{**TINY_FIELDS, "variant": "td"})),
    Case("occ-sample-context-length", "model.sample(long (3, 5), action)", "5 context tokens for 2",
         ValueError, r"context must be \(\.\.\., 2\) token ids with a non-empty batch, got \(3, 5\)",
         lambda w: w.occ.sample(torch.zeros(3, 5, dtype=torch.long), ACT)),
    Case("occ-sample-context-float", "model.sample(float context, action)", "float context tokens",
         TypeError, r"context must be integer token ids, got torch.float32",
         lambda w: w.occ.sample(CTX.float(), ACT)),
    Case("occ-sample-out-of-vocab", "model.sample(full((3, 2), 4), action)", "token id 4 of 4",
         ValueError, r"context ids must be in \[0, 4\), got \[4, 4\]",
         lambda w: w.occ.sample(torch.full((3, 2), 4), ACT)),
    Case("occ-sample-action-nan", "model.sample(context, full((3, 1), nan))", "a NaN action",
         ValueError, r"action contains NaN or inf",
         lambda w: w.occ.sample(CTX, torch.full((3, 1), torch.nan))),
    Case("occ-sample-action-batch", "model.sample(context (3, 2), action (2, 1))", "2 actions for 3 contexts",
         ValueError, r"action must be \(B=3, action_dim=1\), got \(2, 1\)",
         lambda w: w.occ.sample(CTX, torch.zeros(2, 1))),
    Case("occ-sample-n-0", "model.sample(context, action, n=0)", "zero samples",
         ValueError, r"n must be >= 1, got 0", lambda w: w.occ.sample(CTX, ACT, n=0)),
    Case("occ-log-prob-target-length", "model.log_prob(context, action, long (5, 3))", "3-token targets",
         ValueError, r"targets must be \(\.\.\., 2\) token ids with a non-empty batch, got \(5, 3\)",
         lambda w: w.occ.log_prob(CTX, ACT, torch.zeros(5, 3, dtype=torch.long))),
    Case("occ-log-prob-target-batch", "model.log_prob(context (3, 2), action, long (2, 5, 2))",
         "targets for 2 rows of 3", ValueError, r"targets must be \(B=3, M, 2\) or \(M, 2\), got \(2, 5, 2\)",
         lambda w: w.occ.log_prob(CTX, ACT, torch.zeros(2, 5, 2, dtype=torch.long))),
    Case("occ-log-prob-out-of-vocab", "model.log_prob(context, action, full((5, 2), 7))", "target id 7 of 4",
         ValueError, r"targets ids must be in \[0, 4\), got \[7, 7\]",
         lambda w: w.occ.log_prob(CTX, ACT, torch.full((5, 2), 7))),
    Case("occ-load-gamma", "OccupancyModel.load(path, gamma=0.9)", "a model trained at gamma 0.5",
         CheckpointError, r"was trained with gamma=0.5, but 0.9 was asked for",
         lambda w: OccupancyModel.load(w.occ_path, gamma=0.9)),
    Case("occ-load-unknown-field", "OccupancyModel.load(path, gama=0.5)", "a misspelt expected field",
         ValueError, r"has no config field 'gama' to compare with 0.5",
         lambda w: OccupancyModel.load(w.occ_path, gama=0.5)),
    # ------------------------------------------------------------------ value estimators
    Case("value-sample-q-context", "sample_q(model, r, long (3, 3), action)", "3 context tokens for 2",
         ValueError, r"context must be \(\.\.\., 2\) token ids.*got \(3, 3\)",
         lambda w: sample_q(w.occ, reward_of, torch.zeros(3, 3, dtype=torch.long), ACT, n=2)),
    Case("value-sample-q-action", "sample_q(model, r, context, float (3, 2))", "2-D actions for a 1-D model",
         ValueError, r"action must be \(B=3, action_dim=1\), got \(3, 2\)",
         lambda w: sample_q(w.occ, reward_of, CTX, torch.zeros(3, 2), n=2)),
    Case("value-density-q-candidates", "density_q(model, r, context, action, long (4, 3))",
         "3-token candidates for 2", ValueError, r"targets must be \(\.\.\., 2\) token ids.*got \(4, 3\)",
         lambda w: density_q(w.occ, reward_of, CTX, ACT, torch.zeros(4, 3, dtype=torch.long))),
    Case("value-density-q-log-proposal", "density_q(..., candidates (5, 2), log_proposal (4,))",
         "4 proposal densities for 5 candidates", ValueError,
         r"log_proposal must be \(5,\) or \(B=3, 5\): one log density per candidate state, got \(4,\)",
         lambda w: density_q(w.occ, reward_of, CTX, ACT, TARGETS, log_proposal=torch.zeros(4))),
    Case("value-pool-q-2d-actions", "pool_q(model, r, context, float (3, 1))", "one action per context, no K",
         ValueError, r"actions must be \(B=3, K, action_dim\), got \(3, 1\)",
         lambda w: pool_q(w.occ, reward_of, CTX, torch.zeros(3, 1), pool_size=4)),
    Case("value-pool-q-batch", "pool_q(model, r, context (3, 2), float (2, 4, 1))", "actions for 2 of 3 rows",
         ValueError, r"actions must be \(B=3, K, action_dim\), got \(2, 4, 1\)",
         lambda w: pool_q(w.occ, reward_of, CTX, torch.zeros(2, 4, 1), pool_size=4)),
    Case("value-pool-q-no-actions", "pool_q(model, r, context, float (3, 0, 1))", "K = 0 candidate actions",
         ValueError, r"actions must hold K >= 1 candidate actions per context, got \(3, 0, 1\)",
         lambda w: pool_q(w.occ, reward_of, CTX, torch.zeros(3, 0, 1), pool_size=4)),
    Case("value-pool-q-pool-size-0", "pool_q(model, r, context, actions, pool_size=0)", "an empty pool",
         ValueError, r"pool_size must be an integer >= 1 \(futures sampled per context\), got 0",
         lambda w: pool_q(w.occ, reward_of, CTX, torch.zeros(3, 2, 1), pool_size=0)),
    Case("value-rollout-q-not-one-step", "rollout_q(gamma-0.5 model, ...)", "a model that is not gamma 0",
         ValueError, r"rollout_q needs a one-step world model: gamma = 0",
         lambda w: rollout_q(w.occ, reward_of, lambda s: torch.zeros(len(s), 1), CTX, ACT, 0.9, 2)),
    Case("value-rollout-q-gamma", "rollout_q(world_model, ..., gamma=1.5, horizon=2)", "gamma 1.5",
         ValueError, r"gamma must be in \[0, 1\), got 1.5",
         lambda w: rollout_q(w.world_model, reward_of, lambda s: torch.zeros(len(s), 1), CTX, ACT, 1.5, 2)),
    # ------------------------------------------------------------------ ground truth
    Case("gt-gamma-1", "simulator_q(ds, [0], gammas=[0.5, 1.0])", "gamma 1 among the gammas",
         ValueError, r"every gamma must be in \[0, 1\), got \[1.0\]",
         lambda w: simulator_q(w.small_ds, [0], [0.5, 1.0], **GT)),
    Case("gt-gammas-empty", "simulator_q(ds, [0], gammas=[])", "no gammas",
         ValueError, r"gammas is empty", lambda w: simulator_q(w.small_ds, [0], [], **GT)),
    Case("gt-rollouts-0", "simulator_q(ds, [0], [0.9], rollouts=0)", "zero rollouts",
         ValueError, r"rollouts must be >= 1, got 0",
         lambda w: simulator_q(w.small_ds, [0], [0.9], **{**GT, "rollouts": 0})),
    Case("gt-actions-shape", "simulator_q(ds, [0, 1], [0.9], actions=zeros((2, 3)))", "3-D actions for 2-D",
         ValueError, r"actions must be finite, of shape \(2, 2\): one per state; got \(2, 3\)",
         lambda w: simulator_q(w.small_ds, [0, 1], [0.9], actions=np.zeros((2, 3)), **GT)),
    Case("gt-actions-nan", "simulator_q(ds, [0, 1], [0.9], actions=full((2, 2), nan))", "NaN actions",
         ValueError, r"actions must be finite",
         lambda w: simulator_q(w.small_ds, [0, 1], [0.9], actions=np.full((2, 2), np.nan), **GT)),
    Case("gt-index-out-of-range", "simulator_q(ds, [10**6], [0.9])", "a frame index past the end",
         ValueError, r"index holds 1 value\(s\) outside \[0, 102\)",
         lambda w: simulator_q(w.small_ds, [10**6], [0.9], **GT)),
    Case("gt-index-last-frame", "simulator_q(ds, [50], [0.9])", "an episode's last frame (no a_t)",
         ValueError, r"episode-final frame\(s\).*has no action a_t",
         lambda w: simulator_q(w.small_ds, [50], [0.9], **GT)),
    Case("gt-index-float", "simulator_q(ds, [0.5], [0.9])", "a fractional frame index",
         ValueError, r"index must be integer flat frame indices, got dtype float64",
         lambda w: simulator_q(w.small_ds, [0.5], [0.9], **GT)),
    # ------------------------------------------------------------------ agents
    Case("agent-unknown-name", 'make_agent("voc-dnio")', "a misspelt agent",
         ValueError, r"unknown agent 'voc-dnio'; did you mean 'voc-dino'",
         lambda w: voc_rl.make_agent("voc-dnio")),
    Case("agent-unknown-field", 'make_agent("voc-dino-select", gama=0.9)', "a misspelt config field",
         ValueError, r"unknown AgentConfig field\(s\) 'gama' \(did you mean 'gamma'\?\)",
         lambda w: voc_rl.make_agent("voc-dino-select", gama=0.9)),
    Case("agent-unknown-size", 'make_agent("bc", size="huge")', "an unknown size preset",
         ValueError, r"unknown size 'huge'; choose from", lambda w: voc_rl.make_agent("bc", size="huge")),
    Case("agent-gamma-1", 'make_agent("voc-titok-select", gamma=1.0)', "gamma 1",
         ValueError, r"gamma must be in \[0, 1\), got 1.0",
         lambda w: voc_rl.make_agent("voc-titok-select", gamma=1.0)),
    Case("agent-candidates-0", 'make_agent("voc-titok-select", candidates=0)', "no candidate actions",
         ValueError, r"candidates must be >= 1, got 0",
         lambda w: voc_rl.make_agent("voc-titok-select", candidates=0)),
    Case("agent-predict-untrained", 'make_agent("voc-titok-select").predict(obs)', "acting before learn",
         RuntimeError, r"voc-titok-select is not trained: call learn\(dataset\) or Agent.load\(path\) first",
         lambda w: voc_rl.make_agent("voc-titok-select", size="tiny").predict(w.obs)),
    Case("agent-predict-obs-shape", "agent.predict(obs[:6])", "2 stacked frames for 3",
         ValueError, r"obs must be stacked frames of shape \(9, 64, 64\).*got \(1, 6, 64, 64\)",
         lambda w: w.agent.predict(w.obs[:6])),
    Case("agent-predict-float-obs", "agent.predict(obs / 255.0)", "float pixels",
         TypeError, r"obs must be uint8 pixels, got torch.float32",
         lambda w: w.agent.predict(w.obs.astype(np.float32) / 255)),
    Case("agent-q-action-shape", "agent.q_values(obs, zeros((3, 5)))", "5-D actions for a 2-D task",
         ValueError, r"actions must be \(K, 2\) for one observation or \(B, K, 2\).*got \(3, 5\)",
         lambda w: w.agent.q_values(w.obs, np.zeros((3, 5)))),
    Case("agent-q-action-nan", "agent.q_values(obs, full((1, 2), nan))", "a NaN action",
         ValueError, r"actions contain NaN or inf",
         lambda w: w.agent.q_values(w.obs, np.full((1, 2), np.nan))),
    Case("agent-q-no-actions", "agent.q_values(obs, zeros((0, 2)))", "no actions to score",
         ValueError, r"K >= 1; got \(0, 2\) for 1 observation",
         lambda w: w.agent.q_values(w.obs, np.zeros((0, 2)))),
    Case("agent-bc-q-values", 'make_agent("bc-tokens").q_values(obs, actions)', "Q values from BC",
         NotImplementedError, r"bc-tokens has no value model",
         lambda w: voc_rl.make_agent("bc-tokens", size="tiny", tokenizer="titok")
         .load_parts("fake-pixels", tokenizer=w.parts["tokenizer"], prior=w.parts["prior"])
         .q_values(w.obs, np.zeros((2, 2)))),
    Case("agent-load-parts-missing", "agent.load_parts(task, tokenizer=..., prior=...)", "no occupancy part",
         ValueError, r"takes exactly the parts \['tokenizer', 'prior', 'occupancy'\]",
         lambda w: voc_rl.make_agent("voc-titok-select", size="tiny").load_parts(
             "fake-pixels", tokenizer=w.parts["tokenizer"], prior=w.parts["prior"])),
    Case("agent-learn-token-view", "agent.learn(token_view(ds, tok))", "a token view for a pixel dataset",
         ValueError, r"learn takes a pixel dataset, not a token view", lambda w: w.agent.learn(w.view)),
    Case("agent-learn-other-task", "agent.learn(cheetah_run_dataset)", "data of another task",
         ValueError, r"this agent was trained on 'fake-pixels'; .* holds 'cheetah-run'",
         lambda w: w.agent.learn(other_task(w), progress=False)),
    Case("agent-learn-tokenizer-backend", 'make_agent("voc-dino-select").learn(ds, tokenizer="titok.pt")',
         "a tokenizer of another backend", CheckpointError,
         r"was trained with backend='titok', but 'dino' was asked for",
         lambda w: voc_rl.make_agent("voc-dino-select", size="tiny").learn(
             w.pixels, tokenizer=w.tokenizer_path, runs=w.fresh("runs"), progress=False)),
    Case("load-agent-missing", 'load_agent("missing.zip")', "a file that does not exist",
         CheckpointError, r"agent file .*missing-\d+\.zip does not exist",
         lambda w: voc_rl.load_agent(w.fresh("missing").with_suffix(".zip"))),
    Case("load-agent-truncated", "load_agent(path)", "the zip cut to 500 bytes",
         CheckpointError, r"is not an agent .zip \(truncated or corrupt\?\)",
         lambda w: voc_rl.load_agent(cut_copy(w, w.agent_zip, 500))),
    Case("load-agent-foreign-class", "load_agent(path)", 'agent.json naming "os:system"',
         CheckpointError, r"names the class 'os:system', which is not a voc_rl agent",
         lambda w: voc_rl.load_agent(w.rezip(lambda m: {**m, "entry_point": "os:system"}))),
    Case("load-agent-other-class", "TDCriticAgent.load(voc-titok-select.zip)", "a zip of another agent class",
         CheckpointError, r"holds a 'voc-titok-select' agent \(VOCAgent\), not a TDCriticAgent; load it with",
         lambda w: TDCriticAgent.load(w.agent_zip)),
    Case("load-agent-missing-part", "load_agent(path)", "a zip without occupancy.pt",
         CheckpointError, r"lacks occupancy.pt: incomplete agent file",
         lambda w: voc_rl.load_agent(w.rezip(drop="occupancy.pt"))),
    Case("load-agent-pickled-part", "load_agent(path)", "tokenizer.pt replaced by pickled os.system",
         CheckpointError, r"contains pickled objects that could run code",
         lambda w: voc_rl.load_agent(w.rezip(replace={"tokenizer.pt": pickled_code()}))),
    Case("load-agent-unknown-field", "load_agent(path)", "agent.json with a config field 'colour'",
         CheckpointError, r"config fields \['colour'\] are unknown to this voc_rl version",
         lambda w: voc_rl.load_agent(w.rezip(with_config(colour=1)))),
    Case("load-agent-parts-disagree", "load_agent(path)", 'agent.json saying "dino" over titok parts',
         CheckpointError, r"tokenizer is 'titok', config says 'dino'",
         lambda w: voc_rl.load_agent(w.rezip(with_config(tokenizer="dino")))),
    Case("load-agent-missing-class", "load_agent(path)", 'agent.json naming "voc_rl.agents.agents:Nope"',
         CheckpointError, r"Nope",
         lambda w: voc_rl.load_agent(w.rezip(lambda m: {**m, "entry_point": "voc_rl.agents.agents:Nope"}))),
    Case("load-agent-no-entry-point", "load_agent(path)", "agent.json without entry_point",
         CheckpointError, r"entry_point",
         lambda w: voc_rl.load_agent(w.rezip(without("entry_point")))),
    # ------------------------------------------------------------------ config types
    Case("agent-field-text-for-int", 'make_agent("voc-titok", occupancy_steps="abc")', "a word for a number",
         ValueError, r"AgentConfig.occupancy_steps must be an integer or None, got 'abc' \(str\)",
         lambda w: voc_rl.make_agent("voc-titok", occupancy_steps="abc")),
    Case("agent-field-nan", 'make_agent("voc-titok", gamma=nan)', "a NaN discount",
         ValueError, r"AgentConfig.gamma must be a finite number, got nan",
         lambda w: voc_rl.make_agent("voc-titok", gamma=float("nan"))),
    Case("agent-field-float-for-int", 'make_agent("voc-titok", candidates=2.5)', "a fraction of a candidate",
         ValueError, r"AgentConfig.candidates must be an integer, got 2.5 \(float\)",
         lambda w: voc_rl.make_agent("voc-titok", candidates=2.5)),
    Case("agent-field-text-for-list", 'make_agent("voc-titok", tasks="walker-run")', "one name for a list",
         ValueError, r"AgentConfig.tasks must be a list, got 'walker-run'",
         lambda w: voc_rl.make_agent("voc-titok", tasks="walker-run")),
    Case("tok-config-type", 'make_tokenizer("titok", size="tiny", image_size="64")', "text for a size",
         ValueError, r"TiTokConfig.image_size must be an integer, got '64' \(str\)",
         lambda w: make_tokenizer("titok", size="tiny", image_size="64")),
    Case("occ-config-type", 'OccupancyConfig.for_dataset(view, "tiny", gamma="0.9")', "text for gamma",
         ValueError, r"OccupancyConfig.gamma must be a finite number, got '0.9' \(str\)",
         lambda w: OccupancyConfig.for_dataset(w.view, "tiny", gamma="0.9")),
    Case("bc-config-type", 'BCConfig.for_dataset(view, "tiny", steps=None)', "no steps",
         ValueError, r"BCConfig.steps must be an integer, got None",
         lambda w: BCConfig.for_dataset(w.view, "tiny", steps=None)),
    Case("loop-interval-type", 'Loop(out, ckpt_every="500")', "text for a checkpoint interval",
         ValueError, r"Loop.ckpt_every must be an integer or None, got '500' \(str\)",
         lambda w: Loop(w.fresh("run"), ckpt_every="500")),
    Case("tok-checkpoint-config-type", "Tokenizer.load(path)", 'a saved config with image_size "64"',
         CheckpointError, r"does not fit this version of voc_rl: TiTokConfig.image_size must be an integer",
         lambda w: Tokenizer.load(config_edited(w, w.tokenizer_path, image_size="64"))),
    # ------------------------------------------------------------------ run folders
    Case("run-folder-other-seed", 'make_agent("bc", seed=0).learn(ds, run_dir=<a seed-1 run>)',
         "a seed sweep sharing one run folder", RunFolderError,
         r"holds a run of seed 1 \(asked: 0\); its parts would be reused under the wrong label",
         lambda w: voc_rl.make_agent("bc", size="tiny", seed=0).learn(
             w.pixels, steps=1, run_dir=run_of_seed(w, 1), progress=False)),
    Case("run-folder-in-use", "agent.learn(ds, run_dir=<a folder another process trains in>)",
         "two processes on one run folder", RunFolderError,
         r"is in use by process \d+ on .* wait for it to finish or use another run folder",
         lambda w: voc_rl.make_agent("bc", size="tiny").learn(
             w.pixels, steps=1, run_dir=held_by_another_process(w), progress=False)),
    Case("train-resume-other-seed", "fit(tok, ds, loop=Loop(<a seed-1 run>, seed=0))",
         "resuming a trainer's run with another seed", CheckpointError,
         r"belongs to a run of seed 1, not 0; use another output folder",
         lambda w: fit(make_tokenizer("titok", size="tiny", steps=4), w.ds,
                       loop=Loop(tokenizer_run_of_seed(w, 1), seed=0, progress=False))),
    # ------------------------------------------------------------------ outputs written
    Case("collect-out-unwritable", 'collect(..., out="<a file>/data")', "an output folder under a file",
         ValueError, r"cannot write the dataset folder .*: .* is a file, not a folder",
         lambda w: collect("fake-pixels", "random", episodes=1, out=under_a_file(w, "data"), progress=False)),
    Case("agent-learn-run-unwritable", 'agent.learn(ds, run_dir="<a file>/run")', "a run folder under a file",
         ValueError, r"cannot write the run folder .*: .* is a file, not a folder",
         lambda w: voc_rl.make_agent("bc", size="tiny").learn(
             w.pixels, steps=1, run_dir=under_a_file(w, "run"), progress=False)),
    Case("load-agent-field-type", "load_agent(path)", 'agent.json with candidates "8"',
         CheckpointError, r"its agent config is invalid: AgentConfig.candidates must be an integer, got '8'",
         lambda w: voc_rl.load_agent(w.rezip(with_config(candidates="8")))),
    Case("load-agent-bad-crc", "load_agent(path)", "a zip whose occupancy.pt fails its CRC",
         CheckpointError, r"is corrupt \(Bad CRC-32 for file 'occupancy.pt'\): save or copy the agent again",
         lambda w: voc_rl.load_agent(flipped_member(w, "occupancy.pt"))),
    # ------------------------------------------------------------------ the command line
    Case("cli-unknown-command", "voc-rl frobnicate", "a command that does not exist",
         ExitStatus2, r"invalid choice: 'frobnicate' \(choose from", lambda w: cli(w, "frobnicate")),
    Case("cli-unknown-task", "voc-rl collect --task cheetah-runn --policy random", "a misspelt task",
         ExitStatus2, r"voc-rl collect: error: Unknown voc_rl environment 'cheetah-runn'. Did you mean",
         lambda w: cli(w, "collect", "--task", "cheetah-runn", "--policy", "random", "--episodes", "1")),
    Case("cli-missing-dataset", "voc-rl dataset info missing/", "a dataset path that does not exist",
         ExitStatus2, r"voc-rl dataset: error: dataset folder missing does not exist",
         lambda w: cli(w, "dataset", "info", "missing")),
    Case("cli-bad-int", "voc-rl collect --episodes many", "a word for a number",
         ExitStatus2, r"argument --episodes: invalid int value: 'many'",
         lambda w: cli(w, "collect", "--episodes", "many")),
    Case("cli-config-unknown-field", "voc-rl agent train ... --occupancy-stepz 3", "a misspelt config option",
         ExitStatus2, r"unrecognized arguments: --occupancy-stepz 3 \(did you mean --occupancy-steps\?\)",
         lambda w: train_cli(w, "--occupancy-stepz", "3")),
    Case("cli-config-bad-type", "voc-rl agent train ... --occupancy-steps abc", "a word for a config number",
         ExitStatus2, r"AgentConfig.occupancy_steps must be an integer or None; 'abc' is not one",
         lambda w: train_cli(w, "--occupancy-steps", "abc")),
    Case("cli-train-out-unwritable", "voc-rl agent train ... --out <a file>/agent.zip",
         "an agent file under a file, found before training", ExitStatus2,
         r"voc-rl agent: error: cannot write the agent file .* is a file, not a folder",
         lambda w: train_cli(w, "--size", "tiny", "--out", str(under_a_file(w, "agent.zip")))),
    Case("cli-collect-out-unwritable", "voc-rl collect --out <a file>/data", "a dataset folder under a file",
         ExitStatus2, r"voc-rl collect: error: cannot write the dataset folder",
         lambda w: cli(w, "collect", "--task", "fake-pixels", "--policy", "random", "--episodes", "1",
                       "--out", str(under_a_file(w, "data")))),
    Case("cli-eval-gif-unwritable", "voc-rl agent eval agent.zip --gif <a file>/x.gif",
         "a GIF path under a file, found before the episodes", ExitStatus2,
         r"voc-rl agent: error: cannot write the GIF",
         lambda w: cli(w, "agent", "eval", str(w.agent_zip), "--gif", str(under_a_file(w, "x.gif")))),
    Case("cli-imagine-out-unwritable", "voc-rl agent imagine agent.zip --out <a file>/f.png",
         "an image path under a file", ExitStatus2, r"voc-rl agent: error: cannot write the image",
         lambda w: cli(w, "agent", "imagine", str(w.agent_zip), "--dataset", str(w.pixels),
                       "--out", str(under_a_file(w, "f.png")))),
    Case("cli-bench-out-dir-unwritable", "voc-rl bench return-error --out-dir <a file>/results",
         "a results folder under a file", ExitStatus2, r"cannot write the --out-dir folder",
         lambda w: cli(w, "bench", "return-error", "--out-dir", str(under_a_file(w, "results")))),
    Case("cli-agent-bad-crc", "voc-rl agent eval crc.zip", "an agent zip whose occupancy.pt fails its CRC",
         ExitStatus2, r"voc-rl agent: error: .* is corrupt \(Bad CRC-32 for file 'occupancy.pt'\)",
         lambda w: cli(w, "agent", "eval", str(flipped_member(w, "occupancy.pt")))),
    # ------------------------------------------------------------------ policy selection
    Case("select-unknown-policy", "voc-rl select expart --dataset D", "a misspelt behaviour level",
         ExitStatus2, r"voc-rl select: error: unknown policy 'expart': give a level \(random, medium, expert",
         lambda w: cli(w, "select", "expart", "--dataset", str(w.pixels))),
    Case("select-missing-agent", "voc-rl select missing.zip --dataset D", "an agent file that does not exist",
         ExitStatus2, r"voc-rl select: error: policy 'missing.zip': no saved agent at",
         lambda w: cli(w, "select", "missing.zip", "--dataset", str(w.pixels))),
    Case("select-missing-dataset", "voc-rl select expert --dataset missing/", "a dataset that does not exist",
         ExitStatus2, r"voc-rl select: error: dataset folder missing does not exist",
         lambda w: cli(w, "select", "expert", "--dataset", "missing")),
    Case("select-unknown-method", 'select_policies(["random"], ds, method="oracle")', "an unknown estimator",
         ValueError, r"unknown method 'oracle'; known: voc, fqe, behaviour-q, behaviour-value",
         lambda w: select_policies(["random"], w.pixels, method="oracle")),
    Case("select-table-nan", "train_occupancy(..., next_actions=<NaN table>)", "a policy's NaN actions",
         ValueError, r"next_actions holds NaN or infinite actions",
         lambda w: train_occupancy(OccupancyModel(OccupancyConfig.for_dataset(w.view, "tiny", n_step=1)),
                                   w.view, 1, loop=Loop(progress=False), next_actions=nan_table(w))),
]  # fmt: skip
