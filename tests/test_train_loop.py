"""The shared training loop on a toy regression: schedule, tags, checkpoints, exact resume, guards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from voc_rl.checkpoint import CheckpointError
from voc_rl.train_loop import Loop, Run, TrainReport, train, trained_seconds


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    lr: float = 1e-2
    steps: int = 20
    width: int = 4


class Toy(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Linear(config.width, 1)
        self.step = 0


def toy_run(config: ToyConfig = ToyConfig(), schedule: str = "cosine", **kw: object) -> Run:
    torch.manual_seed(0)
    model = Toy(config)
    rng = np.random.default_rng(0)
    w = torch.arange(config.width, dtype=torch.float32)

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        x = torch.from_numpy(rng.standard_normal((8, config.width)).astype(np.float32))
        noisy = x + 0.1 * torch.randn_like(x)  # torch's RNG is part of the run too
        loss = (model.net(noisy).squeeze(1) - x @ w).pow(2).mean()
        return {"loss": loss}, {"x_mean": float(x.mean())}

    return Run(
        name="toy",
        config=config,
        modules={"model": model},
        optimizers={"loss": torch.optim.AdamW(model.parameters(), lr=config.lr)},
        step=step,
        rngs=[rng],
        data_seed=0,
        device=torch.device("cpu"),
        save=lambda folder: torch.save(model.state_dict(), folder / "toy.pt"),
        schedule=schedule,
        warmup=5,
        validate=lambda: {"w_error": float((model.net.weight[0].detach() - w).pow(2).mean())},
        **kw,  # type: ignore[arg-type]
    )


def test_schedule_warms_up_then_follows_cosine_or_constant() -> None:
    cos, const = toy_run(), toy_run(schedule="constant")
    lr = ToyConfig().lr
    assert cos.lr(0) == pytest.approx(lr / 5) and const.lr(0) == pytest.approx(lr / 5)
    assert const.lr(4) == const.lr(19) == pytest.approx(lr)
    assert cos.lr(4) < lr and cos.lr(20) == pytest.approx(0.1 * lr) and cos.lr(100) == pytest.approx(0.1 * lr)
    assert all(cos.lr(s) >= cos.lr(s + 1) for s in range(4, 30))


def test_trains_logs_checkpoints_and_reports(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = toy_run()
    before = run.validate()  # type: ignore[misc]
    report = train(run, 20, Loop(tmp_path, log_every=5, eval_every=10, ckpt_every=10, progress=False))
    assert isinstance(report, TrainReport) and report.steps == 20 and run.model.step == 20
    assert report.metrics["w_error"] < before["w_error"]
    assert (tmp_path / "toy.pt").exists() and (tmp_path / "train_state.pt").exists()
    tags = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/x_mean", "train/lr", "train/steps_per_s", "val/w_error"} <= set(tags)


def test_a_stopped_run_resumes_bitwise(tmp_path: Path) -> None:
    straight = toy_run()
    train(straight, 20, Loop(tmp_path / "a", ckpt_every=100, progress=False))
    first = toy_run()
    report = train(
        first, 20, Loop(tmp_path / "b", ckpt_every=100, progress=False, callback=lambda s, _: s < 7)
    )
    assert report.steps == 7  # the callback stopped it; a checkpoint was written at the stop
    resumed = toy_run()
    train(resumed, 20, Loop(tmp_path / "b", ckpt_every=100, progress=False))
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_run_counts_the_seconds_of_the_calls_before_it(tmp_path: Path) -> None:
    import time

    def slow(step: int, _: object) -> bool:  # 0.03 s a step, stopping the first call after 5 steps
        time.sleep(0.03)
        return step < 5 or step > 5

    assert trained_seconds(tmp_path) == 0.0  # nothing trained there yet
    first = train(toy_run(), 10, Loop(tmp_path, ckpt_every=100, progress=False, callback=slow))
    assert first.steps == 5 and first.seconds >= 0.15 and first.total_seconds == first.seconds
    assert trained_seconds(tmp_path) == pytest.approx(first.seconds, abs=0.06)
    second = train(toy_run(), 10, Loop(tmp_path, ckpt_every=100, progress=False, callback=slow))
    assert second.steps == 10 and second.seconds >= 0.15
    assert second.total_seconds == pytest.approx(first.seconds + second.seconds, abs=0.06)
    assert trained_seconds(tmp_path) == pytest.approx(second.total_seconds, abs=0.06)


def test_refuses_a_run_folder_of_another_config_or_identity(tmp_path: Path) -> None:
    train(toy_run(identity={"kind": "a"}), 3, Loop(tmp_path, progress=False))
    with pytest.raises(CheckpointError, match=r"another config \(differs in \{'lr'"):
        train(toy_run(ToyConfig(lr=1e-3), identity={"kind": "a"}), 6, Loop(tmp_path, progress=False))
    with pytest.raises(CheckpointError, match="run of kind 'a', not 'b'"):
        train(toy_run(identity={"kind": "b"}), 6, Loop(tmp_path, progress=False))


def test_a_run_recorded_before_a_config_field_existed_resumes_at_its_default(tmp_path: Path) -> None:
    """A field added to a config since a run stopped counts as its default there (a tokenizer run
    folder written before ``state_aux``); another value of it is still another config."""
    first = train(toy_run(), 20, Loop(tmp_path, ckpt_every=100, progress=False, callback=lambda s, _: s < 4))
    assert first.steps == 4
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    del state["config"]["width"]  # as written by a version without the field
    torch.save(state, tmp_path / "train_state.pt")
    with pytest.raises(CheckpointError, match=r"differs in \{'width': 4\}"):
        train(toy_run(ToyConfig(width=3)), 20, Loop(tmp_path, progress=False))
    assert train(toy_run(), 20, Loop(tmp_path, progress=False)).steps == 20


def test_loop_options_fill_only_what_the_caller_left_and_refuse_bad_intervals(tmp_path: Path) -> None:
    loop = Loop("runs/x", log_every=7)
    assert loop.out is not None and loop.out.is_absolute()  # a relative folder is resolved once, here
    filled = loop.defaults(log_every=50, eval_every=500, ckpt_every=100)
    assert (filled.log_every, filled.eval_every, filled.ckpt_every) == (7, 500, 100)
    assert Loop().out is None and Loop().defaults(1, 2, 3).log_every == 1
    with pytest.raises(ValueError, match="ckpt_every must be a positive"):
        Loop(tmp_path, ckpt_every=0)


def test_a_benchmarked_agents_cost_counts_its_resumed_parts_but_no_part_finished_before(
    tmp_path: Path,
) -> None:
    import time

    from voc_rl.benchmarks.policy import part_seconds, resumed_seconds

    def stop_at_3(step: int, _: object) -> bool:
        time.sleep(0.01)
        return step < 3

    for part in ("occupancy", "pixel-prior", "prior"):
        train(toy_run(), 10, Loop(tmp_path / part, progress=False, callback=stop_at_3))
    (tmp_path / "pixel-prior" / ".from-bc").touch()  # bc's prior, charged to bc
    before = part_seconds(tmp_path)
    assert set(before) == {tmp_path / "occupancy", tmp_path / "prior"} and before[tmp_path / "prior"] > 0
    train(toy_run(), 10, Loop(tmp_path / "occupancy", progress=False))  # this call resumes only it
    assert resumed_seconds(before, tmp_path) == before[tmp_path / "occupancy"]  # "prior": not charged
