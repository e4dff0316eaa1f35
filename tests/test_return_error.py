"""The return-error table end to end at --quick size (real cheetah-run data, tiny models)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from voc_rl.cli import main
from voc_rl.return_error import COLUMNS, nmse, paper_target, spearman

METHODS = {"sample", "density", "pool", "paper-style", "td-critic", "wm-rollout-1x", "wm-rollout-3x", "mean"}


def test_metrics() -> None:
    true = np.array([1.0, 2.0, 3.0, 4.0])
    assert nmse(true, true) == 0 and abs(nmse(np.full(4, true.mean()), true) - 1) < 1e-12
    assert spearman(true**3, true) == 1 and spearman(-true, true) == -1


def test_quick_table_has_every_column(tmp_path: Path) -> None:
    assert main(["bench", "return-error", "--quick", "--quiet", "--out-dir", str(tmp_path)]) == 0
    with open(tmp_path / "return_error.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert {r["method"] for r in rows} == METHODS
    assert {r["ground_truth"] for r in rows} == {"simulator", "paper-truncated"}
    for r in rows:
        assert all(r[c] != "" for c in COLUMNS), r
        for c in ("nmse", "rmse", "evals_per_s"):
            assert np.isfinite(float(r[c])), (c, r)
        assert r["method"] == "mean" or np.isfinite(float(r["spearman"]))  # a constant has no ranks
    assert "simulator" in (tmp_path / "return_error.md").read_text()
    assert list(tmp_path.glob("return_error_*.png"))


def test_paper_target_stops_at_ten_steps_and_episode_end(ds) -> None:
    idx = np.array([0, int(ds.ep_len[0]) - 2])  # the first frame, and two steps before the end
    target = paper_target(ds, idx, 0.99)  # min(100, 10) = 10 steps
    r = ds.arrays["reward"]
    assert np.isclose(target[0], sum(0.99**k * r[k] for k in range(10)))
    assert np.isclose(target[1], r[idx[1]] + 0.99 * r[idx[1] + 1])  # cut at the episode's end
