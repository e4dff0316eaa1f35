"""benchmarks/learning_curve.py runs end to end at a tiny size: every method, estimator and column."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from voc_rl.benchmarks import learning_curve as bench


@pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)
def test_learning_curve_writes_every_method_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    scores = bench.Bench.scores

    def recorded(self: bench.Bench, pred: np.ndarray, cands: np.ndarray | None) -> dict[str, Any]:
        scored.append((self.q_true, self.q_cands, pred, cands))  # what each row's metrics were computed on
        return scores(self, pred, cands)

    monkeypatch.setattr(bench.Bench, "scores", recorded)
    bench.main(
        ["--quick", "--quiet", "--task", "fake-pixels", "--dataset", "random",
         "--data-root", str(tmp_path / "d"), "--runs", str(tmp_path / "runs"),
         "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "learning_curve.csv").open()))
    assert list(rows[0]) == bench.COLUMNS
    voc = [(m, e) for m in ("td1", "nstep10", "mc") for e in ("sample", "density", "pool")]
    # two checkpoints (--quick's eval_at: 0.02 and 0.04 training minutes) of every method, in order
    assert [(r["method"], r["estimator"]) for r in rows] == [
        *[(m, e) for m in ("td1", "nstep10", "mc") for _ in range(2) for e in ("sample", "density", "pool")],
        *[("td-critic", "critic")] * 2,
    ]
    assert len(scored) == len(rows) == 2 * len(voc) + 2
    q_true, q_cands = scored[0][0], scored[0][1]
    assert q_true.shape == (6,) and q_cands.shape == (6, 2) and np.ptp(q_true) > 0  # n_states, actions
    for r, (true, cands_true, pred, cands) in zip(rows, scored, strict=True):
        assert true is q_true and cands_true is q_cands  # every row against the same simulator Q
        assert int(r["n_states"]) == 6 and pred.shape == (6,)
        assert float(r["nmse"]) == pytest.approx(np.mean((pred - true) ** 2) / np.var(true))
        if r["estimator"] in ("pool", "critic"):  # Q of a_t is the first of the K candidates' Q
            np.testing.assert_array_equal(pred, cands[:, 0])
            assert float(r["top1"]) == np.mean(cands.argmax(1) == q_cands.argmax(1))
        else:
            assert cands is None and r["top1"] == ""
        if r["method"] != "td-critic":  # the occupancy model's own curves beside the unigram
            assert float(r["nll_future"]) > 0 and float(r["unigram_nll"]) > 0 and r["reward_nmse"] != ""
            assert math.isfinite(float(r["action_info"]))
        if r["estimator"] == "sample":
            assert float(r["ess"]) == 4  # --quick's N samples
        if r["estimator"] in ("density", "pool"):  # at most --quick's 16 candidate states / 4 pool futures
            assert 1.0 <= float(r["ess"]) <= (16 if r["estimator"] == "density" else 4)
    for method in bench.METHODS:  # training seconds reach each checkpoint; the steps go on between them
        mine = [r for r in rows if r["method"] == method]
        steps = sorted({int(r["step"]) for r in mine})
        seconds = sorted({float(r["seconds"]) for r in mine})
        assert len(steps) == len(seconds) == 2 and steps[0] < steps[1], mine
        assert seconds[0] >= 60 * 0.02 and seconds[1] >= 60 * 0.04
        if method != "td-critic":  # ~50 more steps of a tiny model: its held-out NLL of the future falls
            first, last = (float(r["nll_future"]) for r in mine if r["estimator"] == "sample")
            assert last < first, (method, first, last)
    table = (tmp_path / "out" / "learning_curve.md").read_text()
    three = ("nll_future", "unigram_nll", "action_info", "reward_nmse", "nmse", "spearman")
    for r in rows:  # the table's rows are the CSV's, to 3 decimals
        cells = [
            r["method"],
            r["estimator"],
            r["step"],
            r["seconds"],
            *(f"{float(r[c]):.3f}" if r[c] else "" for c in three),
        ]
        assert "| " + " | ".join(cells) + " |" in table, cells
    assert (tmp_path / "out" / "learning_curve.png").exists()


def test_scores_are_0_for_the_truth_and_1_for_its_mean() -> None:
    b = bench.Bench.__new__(bench.Bench)  # (the held-out states' truth only, no dataset)
    b.q_true = np.array([1.0, 3.0, 2.0, 6.0])
    b.q_cands = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 1.0], [5.0, 6.0]])  # the best: 0, 1, 0, 1
    exact = b.scores(b.q_true.copy(), b.q_cands.copy())
    assert exact == {"nmse": 0.0, "spearman": pytest.approx(1.0), "top1": 1.0}
    mean = b.scores(np.full(4, b.q_true.mean()), None)
    assert mean["nmse"] == pytest.approx(1.0) and math.isnan(mean["spearman"]) and mean["top1"] == ""
    flipped = b.scores(-b.q_true, -b.q_cands)  # every ranking reversed
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["top1"] == 0.0
    assert flipped["nmse"] == pytest.approx(np.mean((2 * b.q_true) ** 2) / b.q_true.var())
    first = b.scores(b.q_true + 1.0, np.array([[1.0, 0.0]] * 4))  # always candidate 0: right half the time
    assert first["nmse"] == pytest.approx(1.0 / b.q_true.var()) and first["top1"] == 0.5


def test_the_clock_counts_training_time_only_and_stops_after_the_last_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(process_time=lambda: now[0]))
    seen: list[tuple[int, float]] = []

    def evaluate(step: int, spent: float) -> None:
        seen.append((step, spent))
        now[0] += 100.0  # an evaluation: not training time

    clock = bench.Clock([0.02, 0.04], evaluate)  # checkpoints at 1.2 and 2.4 s
    going = []
    for step in range(1, 20):
        now[0] += 0.5  # a training step
        going.append(clock(step, {}))
        if not going[-1]:
            break
    assert seen == [(3, 1.5), (5, 2.5)] and going == [True, True, True, True, False]
