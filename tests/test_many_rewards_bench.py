"""benchmarks/many_rewards.py runs end to end at a tiny size on real walker physics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from voc_rl.benchmarks import many_rewards as bench

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_one_occupancy_model_scores_every_walker_task_beside_a_critic_per_task(tmp_path: Path) -> None:
    argv = ["--datasets", "walker-walk-random", "--gammas", "0.9", "--seeds", "0", "--n-states", "6",
            "--episodes", "2", "--rollouts", "1", "--samples", "2", "--pool-actions", "2", "--pool-size", "2",
            "--tokenizer", "titok", "--tok-size", "tiny", "--size", "tiny", "--tok-steps", "2", "--occ-steps",
            "3", "--critic-steps", "3", "--bc-steps", "2", "--data-root", str(tmp_path / "d"),
            "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    bench.main(argv)
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "many_rewards.csv").open()))
    got = {(r["task"], r["method"]) for r in rows}
    tasks = ("walker-walk", "walker-stand", "walker-run")
    assert got == {(t, m) for t in tasks for m in ("sample", "pool", "td-critic")}
    assert all(r["nmse"] != "" and float(r["nmse"]) >= 0 for r in rows)
    voc = [r for r in rows if r["method"] == "sample"]
    assert all(r["reward_nmse"] != "" and r["vs_critic"] != "" for r in voc)
    # every part timed once: one occupancy model, a head per other task, a critic per task
    seconds = json.loads((tmp_path / "runs" / "train_seconds.json").read_text())
    assert sum("__occ_" in k and "__reward_" not in k for k in seconds) == 1
    assert sum("__reward_" in k for k in seconds) == 2 and sum("__critic_" in k for k in seconds) == 3
    text = (out / "many_rewards.md").read_text()
    assert "head / critic" in text and "walker-run" in text and (out / "many_rewards.png").stat().st_size
    bench.main([*argv, "--report-only"])  # the tables again from the per-seed rows, nothing trained
    assert list(csv.DictReader((out / "many_rewards.csv").open())) == rows
    assert json.loads((tmp_path / "runs" / "train_seconds.json").read_text()) == seconds
