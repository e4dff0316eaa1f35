"""benchmarks/many_rewards.py runs end to end at a tiny size on real walker physics."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from voc_rl.benchmarks import many_rewards as bench

TASKS = ("walker-walk", "walker-stand", "walker-run")  # walker-walk data: its own task first
OFFSET = 0.5  # walker-run's stub critic: the truth plus this, so its NMSE is OFFSET^2 / Var(true Q)


def _nmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((pred - true) ** 2) / np.var(true))


@pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)
def test_one_occupancy_model_scores_every_walker_task_beside_a_critic_per_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truths: list[Any] = []
    voc_calls: list[dict[str, tuple[np.ndarray, float]]] = []
    simulator_q, q_estimates = bench.simulator_q, bench.q_estimates

    def recorded_truth(*args: Any, **kwargs: Any) -> Any:
        truths.append(simulator_q(*args, **kwargs))
        return truths[-1]

    def known_critics(view: Any, idx: np.ndarray, gamma: float, models: Any, methods: Any, **kw: Any) -> Any:
        """The real estimates; each task's critic then replaced by a predictor of known NMSE."""
        out = q_estimates(view, idx, gamma, models, methods, **kw)
        if list(methods) != ["td-critic"]:
            voc_calls.append(out)
            return out
        q = truths[-1].at(gamma, view.reward_task)[0]  # the truth of the task the critic is for
        known = {"walker-walk": q, "walker-stand": np.full_like(q, q.mean()), "walker-run": q + OFFSET}
        return {"td-critic": (known[view.reward_task], out["td-critic"][1])}

    calls = itertools.count()

    def clock() -> float:
        """The benchmark's clock: reading n is 10 n^2 s, so that each part takes a distinct time."""
        return 10.0 * next(calls) ** 2

    monkeypatch.setattr(
        bench, "time", SimpleNamespace(perf_counter=clock, strftime=time.strftime, gmtime=time.gmtime)
    )
    monkeypatch.setattr(bench, "simulator_q", recorded_truth)
    monkeypatch.setattr(bench, "q_estimates", known_critics)
    argv = ["--datasets", "walker-walk-random", "--gammas", "0.9", "--seeds", "0", "--n-states", "6",
            "--episodes", "2", "--rollouts", "1", "--samples", "2", "--pool-actions", "2", "--pool-size", "2",
            "--tokenizer", "titok", "--tok-size", "tiny", "--size", "tiny", "--tok-steps", "2", "--occ-steps",
            "3", "--critic-steps", "3", "--bc-steps", "2", "--data-root", str(tmp_path / "d"),
            "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    bench.main(argv)
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "many_rewards.csv").open()))
    assert [(r["task"], r["method"]) for r in rows] == [
        (t, m) for t in TASKS for m in ("sample", "pool", "td-critic")
    ]
    assert {(r["dataset"], r["gamma"], r["n_states"], r["seeds"]) for r in rows} == {
        ("walker-walk-random", "0.9", "6", "1")
    }
    (truth,) = truths
    assert truth.tasks == list(TASKS) and len(voc_calls) == 1
    by = {(r["task"], r["method"]): r for r in rows}
    for r in rows:
        q, err = truth.at(0.9, r["task"])
        assert len(q) == 6 and np.ptp(q) > 0  # (a constant truth would make every NMSE degenerate)
        assert float(r["truth_std"]) == pytest.approx(q.std())
        assert float(r["truth_stderr"]) == pytest.approx(err.mean(), nan_ok=True)  # (NaN: one rollout)
        # the three error columns come from one prediction and one truth: NMSE = RMSE^2 / Var(true Q)
        assert float(r["nmse"]) == pytest.approx(float(r["rmse"]) ** 2 / q.var(), rel=1e-6, abs=1e-12)
    # a task's critic is scored against that task's truth: perfect 0, the mean 1, an offset OFFSET^2 / Var
    perfect = by["walker-walk", "td-critic"]
    assert float(perfect["nmse"]) == float(perfect["rmse"]) == 0 and float(perfect["spearman"]) == 1
    assert float(by["walker-stand", "td-critic"]["nmse"]) == pytest.approx(1)
    assert math.isnan(float(by["walker-stand", "td-critic"]["spearman"]))  # a constant has no ranks
    run_q = truth.at(0.9, "walker-run")[0]
    assert float(by["walker-run", "td-critic"]["nmse"]) == pytest.approx(OFFSET**2 / run_q.var())
    assert float(by["walker-run", "td-critic"]["rmse"]) == pytest.approx(OFFSET)
    # the VOC: one estimate per method with a column per task (the order the truth was asked in)
    for method in ("sample", "pool"):
        pred = voc_calls[0][method][0]
        assert pred.shape == (6, 3)
        for k, task in enumerate(TASKS):
            assert float(by[task, method]["nmse"]) == pytest.approx(_nmse(pred[:, k], truth.at(0.9, task)[0]))
            critic = float(by[task, "td-critic"]["nmse"])
            vs = by[task, method]["vs_critic"]  # the VOC's NMSE over its own task's critic's (none at 0)
            if critic == 0:
                assert vs == ""
            else:
                assert float(vs) == pytest.approx(float(by[task, method]["nmse"]) / critic)
        assert by["walker-stand", "sample"]["reward_nmse"] == by["walker-stand", "pool"]["reward_nmse"] != ""
    assert all(r["reward_nmse"] == "" and r["vs_critic"] == "" for r in rows if r["method"] == "td-critic")
    # every part timed once: one occupancy model, a head per other task, a critic per task; the
    # minutes in the table are those seconds: the shared model's for the VOC, each task's own critic's
    seconds = json.loads((tmp_path / "runs" / "train_seconds.json").read_text())
    (occ,) = [s for k, s in seconds.items() if "__occ_" in k and "__reward_" not in k]
    heads = {t: s for k, s in seconds.items() for t in TASKS if k.endswith(f"__reward_{t}")}
    critic_keys = [k for k in seconds if "__critic_" in k]  # another task's critic carries its name
    critics = {next((t for t in TASKS[1:] if f"_{t}" in k), TASKS[0]): seconds[k] for k in critic_keys}
    assert len(seconds) == 6 and set(heads) == set(TASKS[1:]) and set(critics) == set(TASKS)
    assert len(set(seconds.values())) == 6 and min(seconds.values()) > 0  # (so a mix-up shows)
    for r in rows:
        minutes = (occ if r["method"] != "td-critic" else critics[r["task"]]) / 60
        assert float(r["train_min"]) == pytest.approx(minutes)
        head = heads.get(r["task"])  # (the task's head: on every method's row)
        assert r["head_min"] == ("" if head is None else str(head / 60))
    text = (out / "many_rewards.md").read_text()
    ratio = re.search(r"a reward head ([\d.]+) s, a critic ([\d.]+) s: \*\*head / critic (\S+)\*\*", text)
    assert ratio, text
    h, c = np.mean([s / 60 for s in heads.values()]), np.mean([s / 60 for s in critics.values()])
    assert ratio.groups() == (f"{60 * h:.1f}", f"{60 * c:.1f}", f"{h / c:.3f}" if c > 0 else "n/a")
    for r in rows:  # the table's NMSE column is the CSV's
        cell = f"| {r['task']} | on | 0.9 | {r['method']} | {bench.fmt(float(r['nmse']))} +- "
        assert cell in text, cell
    assert (out / "many_rewards.png").stat().st_size
    bench.main([*argv, "--report-only"])  # the tables again from the per-seed rows, nothing trained
    assert list(csv.DictReader((out / "many_rewards.csv").open())) == rows
    assert json.loads((tmp_path / "runs" / "train_seconds.json").read_text()) == seconds


def test_the_table_averages_the_seeds_and_divides_by_the_tasks_own_critic() -> None:
    def row(task: str, method: str, seed: int, nmse: float) -> dict[str, Any]:
        values = dict.fromkeys(bench.COLUMNS[6:], 0.0) | {"nmse": nmse, "head_min": ""}
        return {"dataset": "d", "task": task, "on_support": True, "gamma": 0.9, "method": method,
                "seed": seed, "n_states": 4, **values}  # fmt: skip

    agg = bench.aggregate(
        [row("a", "sample", 0, 0.2), row("a", "sample", 1, 0.4), row("a", "td-critic", 0, 0.1),
         row("a", "td-critic", 1, 0.3), row("b", "sample", 0, 0.9), row("b", "td-critic", 0, 0.3)]
    )  # fmt: skip
    by = {(a["task"], a["method"]): a for a in agg}
    assert by["a", "sample"]["nmse"] == pytest.approx(0.3)
    assert by["a", "sample"]["nmse_std"] == pytest.approx(0.1)
    assert by["a", "sample"]["seeds"] == 2 and by["b", "sample"]["seeds"] == 1
    assert by["a", "sample"]["vs_critic"] == pytest.approx(0.3 / 0.2)  # task a's critic, not b's
    assert by["b", "sample"]["vs_critic"] == pytest.approx(0.9 / 0.3)
    assert by["a", "td-critic"]["vs_critic"] == ""
