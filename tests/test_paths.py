"""Every writer works with relative paths, from any working directory (issue 14, part 1).

Each test runs in an empty temporary working directory and passes relative paths, as a user typing
``--out datasets`` does; the outputs must land there, and what they record (dataset folders, token
caches, run folders, agent files) must stay valid after a change of directory. Before the fix, a
relative datasets root reached Minari as a relative ``MINARI_DATASETS_PATH`` and came back doubled
(``datasets/.tmp-x/voc_rl/NAME-v0/data/datasets/.tmp-x/...: No such file or directory``): every
other test passes absolute temporary paths, so none caught it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_vd4rl import dreamer_episode, write_npz, write_shard

import voc_rl
from voc_rl.cli import main
from voc_rl.data import open_dataset
from voc_rl.data.collect import collect
from voc_rl.data.vd4rl import import_vd4rl
from voc_rl.occupancy import OccupancyConfig, OccupancyModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.tokenizers import make_tokenizer
from voc_rl.tokenizers.cache import cache_dir, token_view
from voc_rl.tokenizers.train import fit
from voc_rl.train_loop import Loop

FAKE = "datasets/voc_rl/fake-pixels-random-v0"  # what collect("fake-pixels", "random", out="datasets") writes


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; ``elsewhere`` beside it is where tests move to afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(work)
    return work


def cli(*argv: str) -> None:
    assert main(list(argv)) == 0, f"voc-rl {' '.join(argv)} failed (its error is printed above)"


def fake_dataset(out: str = "datasets", episodes: int = 3) -> Path:
    return collect("fake-pixels", "random", episodes=episodes, out=out, size=64, progress=False)


def assert_no_temporary_folders(root: Path) -> None:
    assert not list(root.glob(".tmp-*")), list(root.glob(".tmp-*"))


# ------------------------------------------------------------------------------ datasets
def test_collect_with_a_relative_out(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", "somewhere/relative")  # a user's own setting is kept
    path = fake_dataset()
    assert path == cwd / FAKE and path.is_absolute()
    assert (path / "data" / "main_data.hdf5").is_file()
    assert_no_temporary_folders(cwd / "datasets")
    assert os.environ["MINARI_DATASETS_PATH"] == "somewhere/relative"
    assert open_dataset(FAKE).path == path  # the relative form opens too, and comes back absolute
    cli("collect", "--task", "fake-pixels", "--policy", "random", "--episodes", "2", "--out", "cli-datasets")
    assert open_dataset("cli-datasets/voc_rl/fake-pixels-random-v0").num_episodes == 2
    assert_no_temporary_folders(cwd / "cli-datasets")
    monkeypatch.setenv("HOME", str(cwd))
    assert fake_dataset(out="~/home-datasets") == cwd / "home-datasets" / "voc_rl" / "fake-pixels-random-v0"
    monkeypatch.chdir(cwd.parent / "elsewhere")
    assert open_dataset(path).num_episodes == 3


def test_import_vd4rl_with_relative_paths(cwd: Path) -> None:
    rng = np.random.default_rng(0)
    write_npz(Path("vd4rl/walker_walk/medium/64px"), [dreamer_episode(rng, 8), dreamer_episode(rng, 6)])
    path = import_vd4rl("vd4rl/walker_walk/medium/64px", "datasets", progress=False)
    assert path == cwd / "datasets" / "voc_rl" / "walker-walk-vd4rl-medium-64px-v0"
    assert open_dataset(path).num_episodes == 2
    assert json.loads((path / "voc_rl.json").read_text())["source_path"] == str(
        cwd / "vd4rl/walker_walk/medium/64px"
    )
    write_shard(Path("vd4rl/walker_walk/expert/84px/shard.hdf5"), [dreamer_episode(rng, 7, size=84)])
    cli("import-vd4rl", "vd4rl/walker_walk/expert/84px", "--out", "datasets")
    assert open_dataset("datasets/voc_rl/walker-walk-vd4rl-expert-84px-v0").num_transitions == 6
    assert_no_temporary_folders(cwd / "datasets")


# ------------------------------------------------------------------------------ tokenizers
def test_tokenizer_fit_and_encode_with_relative_paths(cwd: Path) -> None:
    ds = open_dataset(fake_dataset())
    report = fit(make_tokenizer("titok", size="tiny"), ds, steps=2, loop=Loop("runs/tok", progress=False))
    assert report.steps == 2 and (cwd / "runs/tok/tokenizer.pt").is_file()
    assert list((cwd / "runs/tok/tb").glob("events.*"))
    view = token_view(ds, "runs/tok/tokenizer.pt", progress=False)
    assert cache_dir(ds, "runs/tok/tokenizer.pt").parent == cwd / FAKE / "tokens"
    assert view.meta["tokens"]["checkpoint"] == str(cwd / "runs/tok/tokenizer.pt")
    cli("tokenizer", "fit", "--backend", "titok", "--dataset", FAKE, "--size", "tiny", "--steps", "2")
    ckpt = "runs/tokenizers/fake-pixels-random__titok__tiny/tokenizer.pt"
    assert (cwd / ckpt).is_file()
    cli("tokenizer", "encode", "--dataset", FAKE, "--checkpoint", ckpt)
    cache = cache_dir(ds, ckpt)
    assert (cache / "tokens.npy").is_file()
    os.chdir(cwd.parent / "elsewhere")  # the fixture's monkeypatch restores the directory afterwards
    again = token_view(open_dataset(cwd / FAKE), cwd / ckpt, progress=False)  # the cache, found again
    assert again.meta["tokens"]["key"] == cache.name


# ------------------------------------------------------------------------------ occupancy model
def test_occupancy_fit_with_relative_paths(cwd: Path) -> None:
    fake_dataset()
    make_tokenizer("titok", size="tiny").save("tok.pt")
    view = token_view(open_dataset(FAKE), "tok.pt", progress=False)
    model = OccupancyModel(OccupancyConfig.for_dataset(view, "tiny", steps=2))
    report, _ = train_occupancy(model, view, loop=Loop("runs/occ", device="cpu", progress=False))
    assert report.steps == 2 and (cwd / "runs/occ/occupancy.pt").is_file()
    assert list((cwd / "runs/occ/tb").glob("events.*"))
    cli("occupancy", "fit", "--dataset", FAKE, "--tokenizer", "tok.pt", "--size", "tiny", "--steps", "2",
        "--device", "cpu", "--out", "runs/occ-cli")  # fmt: skip
    assert (cwd / "runs/occ-cli/occupancy.pt").is_file()
    assert OccupancyModel.load("runs/occ-cli/occupancy.pt")[0].config.vocab_size == model.config.vocab_size


# ------------------------------------------------------------------------------ agents
def test_agent_learn_save_load_with_relative_paths(cwd: Path) -> None:
    fake_dataset()
    agent = voc_rl.make_agent("voc-titok-select", size="tiny", candidates=2, pool_size=2)
    agent.learn(FAKE, steps=2, runs="runs", progress=False)
    assert agent.run_dir is not None and agent.run_dir.parent == cwd / "runs"
    config = json.loads((agent.run_dir / "config.json").read_text())
    assert config["dataset"] == str(cwd / FAKE)
    assert (agent.run_dir / "tokenizer" / "tokenizer.pt").is_file()
    saved = agent.save("agents/voc-titok")
    assert saved == cwd / "agents" / "voc-titok.zip" and saved.is_file()
    obs = voc_rl.make_env("fake-pixels").reset(seed=0)[0]
    loaded = voc_rl.load_agent("agents/voc-titok.zip")
    agent.seed(1), loaded.seed(1)
    np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    bc = voc_rl.make_agent("bc-tokens", size="tiny", tokenizer="titok")
    tok = str(agent.run_dir.relative_to(cwd) / "tokenizer" / "tokenizer.pt")
    bc.learn(FAKE, steps=2, tokenizer=tok, run_dir="runs/bc", progress=False)  # a relative run_dir
    assert bc.run_dir == cwd / "runs/bc" and (cwd / "runs/bc/prior/train_state.pt").is_file()
    os.chdir(cwd.parent / "elsewhere")
    assert type(voc_rl.load_agent(saved)) is type(agent)


# ------------------------------------------------------------------------------ the main job
@pytest.mark.slow
def test_quickstart_with_a_relative_out(cwd: Path) -> None:
    """The failure of the issue: ``voc-rl quickstart`` with its default relative ``--out``.

    Real cheetah-run (the main job collects with the shipped behaviour policies), tiny everything;
    about half a minute, most of it the 500-decision evaluation episode and the simulator.
    """
    cli("quickstart", "--size", "tiny", "--steps", "2", "--episodes", "3", "--states", "4")
    out = cwd / "quickstart"  # the default --out
    for name in ("agent.zip", "return_error.md", "cheetah-run.gif"):
        assert (out / name).is_file(), name
    assert (out / "datasets" / "voc_rl" / "cheetah-run-quickstart-v0" / "voc_rl.json").is_file()
    assert_no_temporary_folders(out / "datasets")
    assert list((out / "runs").glob("cheetah-run__voc-vqvae-select__0__*/config.json"))


# ------------------------------------------------------------------------------ benchmarks
@pytest.mark.slow
def test_a_benchmark_with_relative_data_root_runs_and_out_dir(cwd: Path) -> None:
    from voc_rl.benchmarks import policy as bench

    bench.main(
        ["--tasks", "fake-pixels", "--datasets", "random", "--agents", "bc", "--seeds", "0",
         "--episodes", "1", "--size", "tiny", "--collect-episodes", "3", "--top1-states", "2",
         "--top1-rollouts", "1", "--processes", "1",
         "--data-root", "datasets", "--runs", "runs", "--out-dir", "out"]
    )  # fmt: skip
    assert (cwd / FAKE / "voc_rl.json").is_file()
    assert_no_temporary_folders(cwd / "datasets")
    assert list((cwd / "runs").iterdir())
    assert {p.name for p in (cwd / "out").iterdir()} >= {"policy.md", "policy.csv", "policy_top1.csv"}
