"""benchmarks/action_response.py runs end to end at a tiny size, for every way the action can enter."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from voc_rl.benchmarks import action_response as bench

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_action_response_writes_a_row_per_model_with_its_diagnostics(tmp_path: Path) -> None:
    bench.main(
        ["--tasks", "fake-pixels", "--dataset", "random", "--collect-episodes", "3", "--size", "tiny",
         "--tokenizer-steps", "2", "--conditionings", "token", "film", "every:mlp", "--occupancy-steps", "3",
         "--critic-steps", "3", "--states", "6", "--rollouts", "1", "--pool", "4",
         "--data-root", str(tmp_path / "d"), "--runs", str(tmp_path / "runs"),
         "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "action_response.csv").open()))
    assert [r["model"] for r in rows] == [
        "simulator",
        "td-critic",
        "voc (token)",
        "voc (film)",
        "voc (every, mlp)",
    ]
    for r in rows[2:]:
        for c in ("nll_future", "unigram_nll", "action_info", "q_nmse", "response_random"):
            assert np.isfinite(float(r[c])), (c, r)
    folders = sorted(p.name for p in (tmp_path / "runs" / "fake-pixels-random").glob("occupancy_*"))
    assert folders == ["occupancy_every-mlp_s0", "occupancy_film_s0", "occupancy_token_s0"]
