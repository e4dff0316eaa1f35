"""The return-error table end to end at --quick size (real cheetah-run data, tiny models), and the
metrics and targets of voc_rl.evaluation that it reports."""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest

from voc_rl.args import parse_args
from voc_rl.benchmarks.return_error import COLUMNS, DIAGNOSTICS, Args, kept_rows, quick
from voc_rl.cli import main
from voc_rl.evaluation import METHODS, nmse, paper_target, rmse, spearman

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_metrics() -> None:
    true = np.array([1.0, 2.0, 3.0, 4.0])
    assert nmse(true, true) == 0 and abs(nmse(np.full(4, true.mean()), true) - 1) < 1e-12
    assert rmse(true + 2, true) == 2
    assert spearman(true**3, true) == 1 and spearman(-true, true) == -1
    constant = np.full(99, 5.862)  # its float std is about 1e-15, not 0
    assert np.isnan(spearman(constant, np.arange(99.0)))


def test_quick_table_has_every_column(tmp_path: Path) -> None:
    assert main(["bench", "return-error", "--quick", "--quiet", "--out-dir", str(tmp_path)]) == 0
    with open(tmp_path / "return_error.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert {r["method"] for r in rows} == set(METHODS)
    assert {r["ground_truth"] for r in rows} == {"simulator", "paper-truncated"}
    for r in rows:
        uses_reward = r["method"] in ("sample", "density", "pool", "paper-style")
        assert all(r[c] != "" for c in COLUMNS if c not in DIAGNOSTICS), r
        assert (r["reward_nmse"] != "") == uses_reward, r
        assert not uses_reward or 0 <= float(r["reward_nmse"]) < 100
        # the diagnostics of the action: information on the occupancy model's rows, response on those
        # of the estimators that score another action (a finite number, of either sign)
        assert (r["action_info"] != "") == uses_reward, r
        assert (r["action_response"] != "") == (r["method"] in ("pool", "td-critic")), r
        for c in ("action_info", "action_response"):
            assert r[c] == "" or np.isfinite(float(r[c])), (c, r)
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


def test_keep_retains_the_rows_a_new_run_does_not_redo(tmp_path: Path) -> None:
    from voc_rl.report import write_csv

    base = {"task": "cheetah-run", "dataset": "mixed", "tokenizer": "titok", "method": "sample",
            "n_states": 10, "nmse": 0.5, "rmse": 1.0, "spearman": 0.9, "evals_per_s": 3.0,
            "ground_truth": "simulator", "seed": 0, "truth_stderr": 0.1, "truth_std": 2.0}  # fmt: skip
    rows = [{**base, "gamma": 0.9}, {**base, "gamma": 0.99}, {**base, "gamma": 0.99, "seed": 1}]
    write_csv(tmp_path / "return_error_seeds.csv", rows, [*COLUMNS, "seed", "truth_stderr", "truth_std"])
    grid = {"tasks": ("cheetah-run",), "datasets": ("mixed",), "tokenizers": ("titok",)}
    args = Args(out_dir=tmp_path, gammas=(0.99,), seeds=(1,), **grid)
    kept = kept_rows(args)  # a run of gamma 0.99 seed 1 keeps gamma 0.9 and gamma 0.99's seed 0
    assert [(r["gamma"], r["seed"]) for r in kept] == [(0.9, 0), (0.99, 0)]
    assert kept[0]["nmse"] == 0.5 and kept[0]["method"] == "sample"
    assert kept_rows(dataclasses.replace(args, out_dir=tmp_path / "empty")) == []
    assert len(kept_rows(dataclasses.replace(args, report_only=True))) == 3
    # a run of tokens with the state target redoes its own rows (tokenizer titok+state), not titok's
    state_row = {**base, "gamma": 0.99, "seed": 1, "tokenizer": "titok+state"}
    write_csv(
        tmp_path / "return_error_seeds.csv",
        [*rows, state_row],
        [*COLUMNS, "seed", "truth_stderr", "truth_std"],
    )
    kept = kept_rows(dataclasses.replace(args, tok_state_aux=1.0))
    assert [r["tokenizer"] for r in kept] == ["titok"] * 3


def test_quick_keeps_the_options_given_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--quick is a preset below the options typed: --seeds 5 stays, the rest is the quick size."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the preset's scratch folder goes
    args = parse_args(Args, ["--quick", "--seeds", "5", "--gammas", "0.99", "--n-states", "200"], quick)
    assert (args.seeds, args.gammas, args.n_states) == ((5,), (0.99,), 200)  # 200: the default, typed
    assert (args.tasks, args.tokenizers, args.episodes) == (("cheetah-run",), ("titok",), 3)
    assert args.out_dir.parent.parent == tmp_path and args.out_dir.name == "results"
    args = parse_args(Args, ["--quick", "--out-dir", "results"], quick)
    assert args.out_dir == Path("results").resolve() and args.runs.parent.parent == tmp_path
