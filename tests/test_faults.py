"""Faults: a run killed with SIGKILL resumes exactly; half-written and hostile checkpoints are refused."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_child import CKPT_EVERY, LOOP, STEPS, config

from voc_rl.checkpoint import CheckpointError, load_checkpoint
from voc_rl.critic import CriticConfig, TDCritic
from voc_rl.occupancy import OccupancyConfig, OccupancyModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.prior import BCConfig, BCPolicy
from voc_rl.tokenizers import Tokenizer, make_tokenizer

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)

CHILD = Path(__file__).with_name("fault_child.py")


def _assert_same(a: Any, b: Any, where: str) -> None:
    """Nested dicts/lists of tensors and plain values are equal, bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=f"{where} differs")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_sigkill_mid_run_resumes_from_the_last_checkpoint_exactly(
    titok: tuple[Any, Any], tmp_path: Path
) -> None:
    _, view = titok
    out = tmp_path / "run"
    cmd = [sys.executable, str(CHILD), str(view.path), view.meta["tokens"]["checkpoint"], str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill_after = CKPT_EVERY + CKPT_EVERY // 2  # between the first and the second checkpoint
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen, deadline = [], time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], 1.0)[0]:
                continue
            line = proc.stdout.readline()
            assert line, f"the run ended before it was killed: {proc.stderr.read() if proc.stderr else ''}"
            seen.append(line.strip())
            if line.strip() == f"step {kill_after}":
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        rest, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(int(s.split()[1]) for s in [*seen, *rest.splitlines()] if s.startswith("step "))
    assert "done" not in rest and killed_at < STEPS
    saved = torch.load(out / "train_state.pt", weights_only=True)["step"]
    assert saved >= CKPT_EVERY and saved % CKPT_EVERY == 0

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = int(re.search(r"resumed occupancy model at step (\d+)", again.stdout).group(1))
    assert resumed == saved and 0 < resumed <= killed_at
    assert killed_at - resumed <= CKPT_EVERY  # at most one checkpoint interval is lost
    steps_run = [int(s.split()[1]) for s in again.stdout.splitlines() if s.startswith("step ")]
    assert steps_run == list(range(resumed + 1, STEPS + 1)) and "done" in again.stdout

    # the same run without the kill, in this process: weights, EMA target, optimiser, RNGs, step
    torch.manual_seed(0)
    train_occupancy(OccupancyModel(config(view)), view, loop=replace(LOOP, out=tmp_path / "straight"))
    straight = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    killed = torch.load(out / "train_state.pt", weights_only=True)
    assert killed["step"] == STEPS
    assert killed.pop("seconds") > 0 and straight.pop("seconds") > 0  # wall time: not state
    _assert_same(straight, killed, "train_state")


def test_truncated_checkpoint_and_leftover_temp_file(
    titok: tuple[Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, view = titok
    run = tmp_path / "run"
    torch.manual_seed(0)
    train_occupancy(OccupancyModel(config(view)), view, steps=CKPT_EVERY, loop=replace(LOOP, out=run))
    state = run / "train_state.pt"
    # a kill during a save leaves the temp file that atomic_write renames into place: half written
    shutil.copy(state, run / ".train_state.pt.x1y2z3.tmp")
    with open(run / ".train_state.pt.x1y2z3.tmp", "r+b") as f:
        f.truncate(state.stat().st_size // 2)
    model = OccupancyModel(config(view))
    capsys.readouterr()
    train_occupancy(model, view, steps=2 * CKPT_EVERY, loop=replace(LOOP, out=run))
    assert f"resumed occupancy model at step {CKPT_EVERY} from {state}" in capsys.readouterr().out
    assert model.step == 2 * CKPT_EVERY
    assert torch.load(state, weights_only=True)["step"] == 2 * CKPT_EVERY
    # a checkpoint cut short (a copy made mid-write, a full disk) is refused with a clear error
    data = state.read_bytes()
    for cut in (len(data) // 10, len(data) // 2, len(data) - 1):
        state.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            train_occupancy(OccupancyModel(config(view)), view, loop=replace(LOOP, out=run))
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(state)


def _tokenizer(path: Path) -> Path:
    return make_tokenizer("vqvae", size="tiny").save(path)


def _occupancy(path: Path) -> Path:
    fields = {"vocab_size": 11, "tokens_per_frame": 3, "action_dim": 2}
    return OccupancyModel(OccupancyConfig.preset("tiny", **fields)).save(path)


def _bc(path: Path) -> Path:
    return BCPolicy(BCConfig.preset("tiny", vocab_size=11, tokens_per_frame=3, action_dim=2)).save(path)


def _critic(path: Path) -> Path:
    return TDCritic(CriticConfig.preset("tiny", vocab_size=11, tokens_per_frame=3, action_dim=2)).save(path)


LOADERS: dict[str, tuple[Callable[[Path], Any], Callable[[Path], Path]]] = {
    "Tokenizer.load": (Tokenizer.load, _tokenizer),
    "OccupancyModel.load": (OccupancyModel.load, _occupancy),
    "BCPolicy.load": (BCPolicy.load, _bc),
    "TDCritic.load": (TDCritic.load, _critic),
    "load_checkpoint": (load_checkpoint, _occupancy),
}


class _MakesADirectory:
    """Unpickling this calls os.makedirs(path): proof that the loader ran code from the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.makedirs, (self.path,))


@pytest.mark.parametrize("name", list(LOADERS))
def test_public_loaders_refuse_code_and_truncation(name: str, tmp_path: Path) -> None:
    load, make = LOADERS[name]
    good = make(tmp_path / "good.pt")
    ckpt = torch.load(good, weights_only=True)
    marker = tmp_path / "code_ran"
    key = "state_dict" if "state_dict" in ckpt else "model"
    torch.save({**ckpt, key: {**ckpt[key], "payload": _MakesADirectory(marker)}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        load(tmp_path / "evil.pt")
    assert not marker.exists()
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path / "cut.pt")
    load(good)  # and the whole file loads
