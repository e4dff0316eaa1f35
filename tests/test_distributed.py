"""Training on 2 CPU processes (gloo): ranks stay bitwise equal, see different data, resume exactly.

The processes are started by ``torch.multiprocessing.spawn`` with the environment torchrun would
set (one launch for every check: starting processes is most of the cost); the entry point that
users start with torchrun, :mod:`voc_rl.distributed_train`, runs in the same processes last.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from voc_rl import distributed
from voc_rl.occupancy import OccupancyModel
from voc_rl.train_loop import Loop

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)

STEPS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, dataset: str, tokenizer: str, out: str) -> None:
    """One rank: an occupancy run straight through, one stopped and resumed, the same for a tokenizer,
    then the torchrun entry point (which ends the process group)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import voc_rl.occupancy_train as occupancy_train
    from voc_rl import distributed_train
    from voc_rl.data import open_dataset
    from voc_rl.occupancy import OccupancyConfig
    from voc_rl.occupancy_train import train_occupancy
    from voc_rl.tokenizers import make_tokenizer
    from voc_rl.tokenizers.cache import token_view
    from voc_rl.tokenizers.train import fit

    ds = open_dataset(dataset)
    view = token_view(ds, tokenizer, progress=False)
    config = OccupancyConfig.for_dataset(view, "tiny", frame_stack=2, steps=STEPS, gamma=0.8, lr=3e-2)
    loop = Loop(ckpt_every=10, eval_every=1000, log_every=5, progress=False)
    losses: list[float] = []
    targets: list[OccupancyModel] = []  # this rank's EMA target model, caught where the trainer makes it
    make_target = occupancy_train.make_target
    occupancy_train.make_target = lambda m: targets.append(make_target(m)) or targets[-1]
    torch.manual_seed(rank)  # different initial weights on each rank: rank 0's must win
    straight = OccupancyModel(config)
    train_occupancy(
        straight,
        view,
        loop=replace(loop, out=Path(out) / "a", callback=lambda s, logs: losses.append(logs["td"])),
    )
    torch.manual_seed(rank)
    train_occupancy(OccupancyModel(config), view, steps=STEPS // 2, loop=replace(loop, out=Path(out) / "b"))
    resumed = OccupancyModel(config)  # a fresh process would start from fresh weights
    train_occupancy(resumed, view, loop=replace(loop, out=Path(out) / "b"))
    tok_loop = Loop(ckpt_every=2, eval_every=1000, log_every=1000, progress=False)
    torch.manual_seed(rank)
    tok = make_tokenizer("titok", size="tiny", steps=4)
    fit(tok, ds, loop=replace(tok_loop, out=Path(out) / "tok_a"))
    torch.manual_seed(rank)
    fit(
        make_tokenizer("titok", size="tiny", steps=4),
        ds,
        steps=2,
        loop=replace(tok_loop, out=Path(out) / "tok_b"),
    )
    tok_resumed = make_tokenizer("titok", size="tiny", steps=4)
    fit(tok_resumed, ds, loop=replace(tok_loop, out=Path(out) / "tok_b"))
    drifted = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(drifted.weight, float(rank))
    try:
        distributed.assert_in_sync(drifted=drifted)
        caught = False
    except RuntimeError:
        caught = True
    argv = ["occupancy", "fit", "--dataset", dataset, "--tokenizer", tokenizer, "--size", "tiny"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = distributed_train.main([*argv, "--steps", "3", "--out", str(Path(out) / "cli")])
    torch.save(
        {
            "straight": straight.state_dict(),
            "resumed": resumed.state_dict(),
            "target": targets[0].state_dict(),
            "tokenizer": tok.state_dict(),
            "tokenizer_resumed": tok_resumed.state_dict(),
            "losses": losses,
            "drift_caught": caught,
            "cli": (code, printed.getvalue()),
        },
        Path(out) / f"rank{rank}.pt",
    )


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    for (name, x), y in zip(a.items(), b.values(), strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=f"{what}: {name} differs")


def test_two_gloo_ranks_stay_equal_and_resume_exactly(titok: tuple[Any, Any], tmp_path: Path) -> None:
    _, view = titok
    args = (_free_port(), str(view.path), view.meta["tokens"]["checkpoint"], str(tmp_path))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    _assert_equal(r0["straight"], r1["straight"], "model, rank 0 vs rank 1")
    _assert_equal(r0["resumed"], r1["resumed"], "resumed model, rank 0 vs rank 1")
    _assert_equal(r0["straight"], r0["resumed"], "straight vs stopped-and-resumed run")
    _assert_equal(r0["target"], r1["target"], "EMA target, rank 0 vs rank 1")
    pairs = zip(r0["target"].values(), r0["straight"].values(), strict=True)
    assert not all(torch.equal(x, y) for x, y in pairs)  # an EMA lags the weights it follows
    _assert_equal(r0["tokenizer"], r1["tokenizer"], "tokenizer (codebook buffers included)")
    _assert_equal(r0["tokenizer"], r0["tokenizer_resumed"], "tokenizer, straight vs stopped-and-resumed")
    tok_state = torch.load(tmp_path / "tok_a" / "train_state.pt", weights_only=True)
    assert tok_state["step"] == 4 and len(tok_state["rank_rngs"]) == 2
    assert r0["drift_caught"] and r1["drift_caught"]  # what each checkpoint checks catches a drift
    assert r0["losses"][0] != r1["losses"][0]  # each rank trains on its own batches
    for losses in (r0["losses"], r1["losses"]):
        assert len(losses) == STEPS and (sum(losses[:5]) - sum(losses[-5:])) / 5 > 0.25  # nats per token
    state = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    assert state["step"] == STEPS and len(state["rank_rngs"]) == 2
    assert state["rank_rngs"][0]["sampler_rng"] != state["rank_rngs"][1]["sampler_rng"]
    assert len(list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    assert r0["cli"][0] == r1["cli"][0] == 0
    assert "trained 3 steps" in r0["cli"][1] and r1["cli"][1] == ""  # rank 1 prints nothing
    assert OccupancyModel.load(tmp_path / "cli" / "occupancy.pt")[0].step == 3


def test_entry_point_runs_only_training_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from voc_rl.distributed_train import main

    assert main(["collect", "--task", "cheetah-run"]) == 2
    assert "tokenizer fit,occupancy fit" in capsys.readouterr().err
