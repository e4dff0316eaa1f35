"""benchmarks/policy.py runs end to end at a tiny size and fills every column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import voc_rl
from voc_rl.benchmarks import policy as bench

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def run(tmp_path: Path, episodes: int) -> None:
    bench.main(
        ["--tasks", "fake-pixels", "--datasets", "random", "--agents", "bc", "voc-titok-select", "pbc",
         "pbc-67", "--seeds", "0",
         "--episodes", str(episodes), "--size", "tiny", "--set", "candidates=3", "pool_size=3",
         "--collect-episodes", "3", "--sampled", "bc",
         "--top1-states", "3", "--top1-rollouts", "1", "--processes", "1", "--data-root", str(tmp_path / "d"),
         "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip


def test_policy_benchmark_writes_every_column_and_a_rerun_adds_only_what_it_lacks(tmp_path: Path) -> None:
    run(tmp_path, 2)
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "policy.csv").open()))
    assert list(rows[0]) == list(bench.COLUMNS)
    assert {r["agent"] for r in rows} == {"bc", "bc (sampled)", "voc-titok-select", "pbc", "pbc-67"}
    assert all(v != "" for r in rows for v in r.values())
    by = {r["agent"]: r for r in rows}
    assert by["bc"]["vs_bc"] == "-" and by["voc-titok-select"]["vs_bc"] in ("better", "worse", "within noise")
    episodes = list(csv.DictReader((out / "policy_episodes.csv").open()))
    assert len(episodes) == 5 * 2  # 5 rows x 2 episodes
    seeds = list(csv.DictReader((out / "policy_seeds.csv").open()))
    assert {r["agent"] for r in seeds} == {"bc", "bc (sampled)", "voc-titok-select", "pbc", "pbc-67"}
    share = {r["agent"]: r["weight_share"] for r in seeds}  # the fake dataset is one random policy's
    assert (
        share["pbc"] == share["pbc-67"] == "random 1.00" and share["bc"] == share["voc-titok-select"] == "-"
    )
    bc_run = next((tmp_path / "runs").glob("*__vqvae__*"))  # (voc-titok has its own, of titok tokens)
    assert sorted(p.name for p in (bc_run / "bc").glob("extracted-pbc*")) == sorted(  # one prior each
        ["extracted-pbc-pixels", voc_rl.make_agent("pbc-67")._extraction_folder()]
    )
    assert (out / "policy.png").stat().st_size > 0 and "Per seed" in (out / "policy.md").read_text()
    top1 = list(csv.DictReader((tmp_path / "out" / "policy_top1.csv").open()))
    assert {r["agent"] for r in top1} == {"bc", "voc-titok-select", "pbc", "pbc-67"}
    assert all(0.0 <= float(r["top1_agreement"]) <= 1.0 for r in top1)
    assert "Top-1 agreement" in (tmp_path / "out" / "policy.md").read_text()
    zips = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/*.zip")}
    assert len(zips) == 4  # bc, pbc, pbc-67 (pixels, no tokenizer) and voc-titok
    # train_min charges the seconds recorded when each part trained: an agent's own, and the seed's
    # tokenizer where the agent reads tokens (bc and %BC read pixels). Recorded times (minutes here
    # that the tiny run could not take) are what a rerun that reuses the agents reports
    recorded = {
        "vqvae": {"bc": 600.0, "pbc": 120.0, "pbc-67": 60.0},
        "titok": {"tokenizer": 300.0, "voc-titok-select": 900.0},
    }
    for tokens, seconds in recorded.items():
        path = tmp_path / "runs" / f"fake-pixels-random__{tokens}__s0" / "train_seconds.json"
        assert set(json.loads(path.read_text())) == set(seconds)  # a time for each part trained, no more
        path.write_text(json.dumps(seconds))
    run(tmp_path, 3)  # the trained agents and their first two episodes are reused
    assert {p: p.stat().st_mtime_ns for p in zips} == zips
    for tokens, seconds in recorded.items():  # nothing retrained, nothing timed again
        path = tmp_path / "runs" / f"fake-pixels-random__{tokens}__s0" / "train_seconds.json"
        assert json.loads(path.read_text()) == seconds
    minutes = {"bc": 10.0, "bc (sampled)": 10.0, "voc-titok-select": 20.0, "pbc": 2.0, "pbc-67": 1.0}
    for table in ("policy.csv", "policy_seeds.csv"):  # (one seed: its minutes are the mean's)
        assert {r["agent"]: float(r["train_min"]) for r in csv.DictReader((out / table).open())} == minutes
    again = list(csv.DictReader((out / "policy_episodes.csv").open()))
    assert len(again) == 5 * 3
    assert [r for r in again if int(r["episode"]) < 2] == episodes


def test_agents_act_for_another_task_of_the_domain_on_the_same_parts(tmp_path: Path) -> None:
    bench.main(
        ["--tasks", "walker-walk", "--datasets", "random", "--agents", "bc", "voc-titok-select",
         "--seeds", "0",
         "--episodes", "1", "--size", "tiny", "--reward-tasks", "walker-run", "cheetah-run", "--sampled",
         "--set", "candidates=2", "pool_size=2", "tokenizer_steps=2", "prior_steps=2", "occupancy_steps=2",
         "--collect-episodes", "2", "--processes", "1", "--data-root", str(tmp_path / "d"),
         "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "policy.csv").open()))
    where = {(r["task"], r["dataset"], r["agent"]) for r in rows}
    assert where == {  # cheetah-run is another domain's task: not walker data's to act for
        ("walker-walk", "random", "bc"), ("walker-walk", "random", "voc-titok-select"),
        ("walker-run", "random (walker-walk data)", "bc"),
        ("walker-run", "random (walker-walk data)", "voc-titok-select"),
    }  # fmt: skip
    folder = tmp_path / "runs" / "walker-walk-random__titok__s0"
    assert (folder / "voc-titok" / "reward-walker-run" / "reward.pt").exists()  # a head on the same model
    assert len(list((folder / "voc-titok").glob("occupancy*"))) == 1
    zips = sorted(p.name for p in folder.glob("*.zip"))
    assert zips == [
        "voc-titok-select.zip",
        "voc-titok-select@walker-run.zip",
    ]  # bc reads pixels: its own folder


def test_extraction_agents_train_in_the_folder_of_the_agents_they_share_parts_with() -> None:
    from voc_rl.benchmarks.policy import base_of, folder_of

    assert [folder_of(n) for n in ("bc", "pbc", "pbc-67", "td-critic-awr", "td-critic")] == ["bc"] * 3 + [
        "td-critic"
    ] * 2
    for name in ("voc-vqvae", "voc-vqvae-select", "voc-vqvae-awr", "voc-vqvae-qwr"):
        assert folder_of(name) == "voc-vqvae" and base_of(name) == "voc-vqvae-select"
    assert base_of("td-critic-qbc") == "td-critic" and base_of("pbc-67") == "bc"


def test_the_bootstrap_is_seeded_so_the_same_returns_give_the_same_table() -> None:
    import numpy as np

    returns = {"bc": np.arange(20.0), "x": np.arange(20.0) + 3}
    np.random.seed(5)
    first = bench.aggregate(returns)
    drawn = np.random.rand()  # the caller's global stream is left where it was
    np.random.seed(5)
    assert bench.aggregate(returns) == first and np.random.rand() == drawn
    assert first["x"]["iqm_lo"] < first["x"]["iqm"] < first["x"]["iqm_hi"] and 0 < first["x"]["p"] < 1


def test_merge_makes_one_table_of_runs_trained_with_different_settings(tmp_path: Path) -> None:
    from voc_rl.parts import collect_or_open

    collect_or_open(tmp_path / "d", "fake-pixels", "random", 3, progress=False)
    returns = {"voc-vqvae": [9.0, 8.0, 10.0, 9.5], "bc": [1.0, 2.0, 1.5, 0.5], "iql": [5.0, 4.0, 6.0, 5.5]}
    for folder, agents in (("a", ["voc-vqvae", "bc"]), ("b", ["iql"])):
        out = tmp_path / folder
        out.mkdir()
        (out / "policy.md").write_text(
            f"# t\n\nCommand: `python benchmarks/policy.py --out-dir {folder}`  \n"
        )
        eps = [{"task": "fake-pixels", "dataset": "random", "agent": a, "seed": 0, "episode": e,
                "return": r, "decisions": 10, "seconds": 0.01}
               for a in agents for e, r in enumerate(returns[a])]  # fmt: skip
        bench.write_csv(out / "policy_episodes.csv", eps, bench.EPISODE_COLUMNS)
        seeds = [{"task": "fake-pixels", "dataset": "random", "agent": a, "seed": 0, "episodes": 4,
                  "return_mean": 0, "return_std": 0, "train_min": 7.5, "ms_per_decision": 1.0,
                  "weight_share": "-"} for a in agents]  # fmt: skip
        bench.write_csv(out / "policy_seeds.csv", seeds, bench.SEED_COLUMNS)
    common = ["--data-root", str(tmp_path / "d"), "--out-dir", str(tmp_path / "m")]
    bench.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), *common])
    rows = {r["agent"]: r for r in csv.DictReader((tmp_path / "m" / "policy.csv").open())}
    assert set(rows) == {"voc-vqvae", "bc", "iql"} and rows["iql"]["vs_bc"] == "better"
    assert float(rows["iql"]["train_min"]) == 7.5
    text = (tmp_path / "m" / "policy.md").read_text()
    assert "`b`: `python benchmarks/policy.py --out-dir b`" in text and "seeds [0]" in text
    assert "| fake-pixels | random | voc-vqvae | iql | 1.0 |" in text  # the best against each other
    assert "| random | 3 |" in text  # the dataset's behaviour row, read from --data-root
    with pytest.raises(ValueError, match="in both"):
        bench.main(["--merge", str(tmp_path / "a"), str(tmp_path / "a"), *common])
    bench.main(["--merge", f"{tmp_path / 'a'}:voc-vqvae", str(tmp_path / "b"), *common])  # a's bc left out
    rows = {r["agent"]: r for r in csv.DictReader((tmp_path / "m" / "policy.csv").open())}
    assert set(rows) == {"voc-vqvae", "iql"}
    assert "`a` (voc-vqvae only)" in (tmp_path / "m" / "policy.md").read_text()
    with pytest.raises(ValueError, match="has no rows of td3bc; it has bc, voc-vqvae"):
        bench.main(["--merge", f"{tmp_path / 'a'}:td3bc", *common])
    with pytest.raises(FileNotFoundError, match=r"policy\.md missing; pass folders"):
        bench.main(["--merge", str(tmp_path / "a"), str(tmp_path), *common])


def test_set_takes_numbers_and_json_objects_and_refuses_anything_else() -> None:
    args = bench.Args(set=("prior_steps=6000", "state_aux=1.0", 'pixel_kwargs={"channels": 16}'))
    assert args.agent_overrides == {"prior_steps": 6000, "state_aux": 1.0, "pixel_kwargs": {"channels": 16}}
    assert isinstance(args.agent_overrides["prior_steps"], int)
    for bad in ("prior_steps", "prior_steps=many", "tokenizer=dino", "state_aux=true", "a-b=1"):
        with pytest.raises(ValueError, match="FIELD=NUMBER or FIELD=JSON-OBJECT"):
            bench.Args(set=(bad,))
