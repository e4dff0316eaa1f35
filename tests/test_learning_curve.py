"""benchmarks/learning_curve.py runs end to end at a tiny size: every method, estimator and column."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from voc_rl.benchmarks import learning_curve as bench

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_learning_curve_writes_every_method_and_column(tmp_path: Path) -> None:
    bench.main(
        ["--quick", "--quiet", "--task", "fake-pixels", "--dataset", "random",
         "--data-root", str(tmp_path / "d"), "--runs", str(tmp_path / "runs"),
         "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "learning_curve.csv").open()))
    assert list(rows[0]) == bench.COLUMNS
    seen = {(r["method"], r["estimator"]) for r in rows}
    voc = {(m, e) for m in ("td1", "nstep10", "mc") for e in ("sample", "density", "pool")}
    assert seen == voc | {("td-critic", "critic")}
    for r in rows:
        assert float(r["nmse"]) >= 0 and float(r["seconds"]) > 0 and int(r["n_states"]) == 6
        if r["method"] != "td-critic":  # the occupancy model's own curves beside the unigram
            assert float(r["nll_future"]) > 0 and float(r["unigram_nll"]) > 0 and r["reward_nmse"] != ""
            assert math.isfinite(float(r["action_info"]))
        if r["estimator"] in ("density", "pool"):
            assert 1.0 <= float(r["ess"]) <= 64
        if r["estimator"] in ("pool", "critic"):
            assert 0.0 <= float(r["top1"]) <= 1.0
    assert len({r["step"] for r in rows if r["method"] == "mc"}) == 2  # two checkpoints each
    assert "| mc | pool |" in (tmp_path / "out" / "learning_curve.md").read_text()
    assert (tmp_path / "out" / "learning_curve.png").exists()
