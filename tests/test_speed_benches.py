"""The speed benchmarks run end to end at a tiny size on the CPU (their GPU rows need a GPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from voc_rl.benchmarks import estimator_speed, occupancy_speed

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_estimator_speed_merges_rows_and_checks_bfloat16_against_float32(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for dtype in ("float32", "bfloat16"):
        estimator_speed.main(["--sizes", "tiny", "--repeats", "1", "--dtype", dtype, "--out-dir", str(out)])
    rows = list(csv.DictReader((out / "estimator_speed.csv").open()))
    assert list(rows[0]) == estimator_speed.COLUMNS
    by = {(r["dtype"], r["what"]): r for r in rows}
    assert len(by) == len(rows) == 6 + 7  # the second run added its rows (and a parity row)
    for dtype in ("float32", "bfloat16"):  # the floor is a measurement too (of the matmul rate): no ordering
        row = by[(dtype, "decision: pool_q K=8, pool 8")]
        assert float(row["value"]) > 0 and 0 < float(row["floor"]) < float("inf")
    assert ("float32", "log_prob: max abs. difference from CPU float32") not in by
    diff = float(by[("bfloat16", "log_prob: max abs. difference from CPU float32")]["value"])
    assert 0 < diff < 1  # bfloat16 rounds, and stays close
    assert "| tiny |" in (out / "estimator_speed.md").read_text()


def test_occupancy_speed_quick_writes_its_table(tmp_path: Path) -> None:
    occupancy_speed.main(["--quick", "--tokenizers", "titok", "--threads", "1", "--out-dir", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "occupancy_speed.csv").open()))
    what = {r["what"]: float(r["value"]) for r in rows}
    assert what["sample, KV cache"] > 0 and what["KV-cache speed-up"] > 0
    assert "## Targets" in (tmp_path / "occupancy_speed.md").read_text()
