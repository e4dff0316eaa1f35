"""voc_rl.parts: run folders keep their names, finished parts are reused, stopped ones resume, and the
policy benchmark assembles agents from the parts that the return-error benchmark leaves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from voc_rl.benchmarks import policy
from voc_rl.checkpoint import CheckpointError
from voc_rl.data import PixelDataset
from voc_rl.occupancy import OccupancyConfig
from voc_rl.parts import SharedParts, collect_or_open, fit_occupancy, fit_tokenizer
from voc_rl.tokenizers import make_tokenizer
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop

STEPS = {"tokenizer": 3, "prior": 3, "occupancy": 3, "critic": 3}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedParts:
    return SharedParts(tmp_path_factory.mktemp("shared"), "tiny", "tiny", steps=STEPS, progress=False)


@pytest.fixture(scope="module")
def view(ds: PixelDataset, shared: SharedParts) -> PixelDataset:
    return token_view(ds, shared.tokenizer(ds, "titok"), progress=False)


def test_shared_folders_keep_the_names_of_existing_return_error_runs(
    ds: PixelDataset, view: PixelDataset, shared: SharedParts
) -> None:
    key = view.meta["tokens"]["key"][:8]
    presets = SharedParts(shared.root, "tiny", "tiny")  # the presets' steps: the names runs have had
    names = {
        presets.folder("tokenizer", ds, "titok").name: "fake-pixels-random__tok_titok_tiny_16",
        presets.folder("prior", view).name: "fake-pixels-random__titok__bc",
        presets.folder("critic", view, gamma=0.9, seed=1).name: "fake-pixels-random__titok__critic_g0.9_s1",
        presets.folder("occupancy", view, gamma=0.9, seed=1).name: (
            f"fake-pixels-random__titok_{key}__occ_g0.9_nmc_s1_tiny"
        ),
    }
    assert all(have == want for have, want in names.items()), names
    # overridden steps are in the name: another step count is another folder, not a refused resume
    assert shared.folder("tokenizer", ds, "titok").name == "fake-pixels-random__tok_titok_tiny_16_steps3"
    assert shared.folder("critic", view, gamma=0.9, seed=1).name.endswith("__critic_g0.9_s1_steps3")
    longer = SharedParts(shared.root, "tiny", "tiny", steps={**STEPS, "occupancy": 5}, progress=False)
    assert longer.folder("occupancy", view, gamma=0.5).name.endswith("__occ_g0.5_nmc_s0_tiny_steps5")
    assert longer.folder("prior", view) == shared.folder("prior", view)
    shared.occupancy(view, 0.5, 0)
    model, _ = longer.occupancy(view, 0.5, 0)  # refused before: the 3-step run's folder had this name
    assert model.step == 5
    one_step = SharedParts(shared.root, "tiny", "tiny", agent_tokens=False, n_step=1)
    assert one_step.folder("occupancy", view, gamma=0.0).name.endswith("__occ_g0.0_n1_s0_tiny")
    assert one_step.folder("tokenizer", ds, "vqvae").name == "fake-pixels-random__tok_vqvae_tiny"
    # tokenizer fields name the tokenizer, and its token key the parts its view trains
    state = SharedParts(
        shared.root, "tiny", "tiny", steps=STEPS, progress=False, tokenizer_fields={"state_aux": 1.0}
    )
    assert (
        state.folder("tokenizer", ds, "titok").name
        == "fake-pixels-random__tok_titok_tiny_16_state_aux1.0_steps3"
    )
    state_view = token_view(ds, state.tokenizer(ds, "titok"), progress=False)
    assert state_view.meta["tokens"]["key"] != view.meta["tokens"]["key"]
    state_key = state_view.meta["tokens"]["key"][:8]
    assert state.folder("prior", state_view).name == f"fake-pixels-random__titok_{state_key}__bc_steps3"
    assert state.prior(state_view).step == 3  # its own folder: no refused resume of the plain one's


def test_a_finished_part_is_reused_and_a_stopped_one_resumes(view: PixelDataset, tmp_path: Path) -> None:
    config = OccupancyConfig.for_dataset(view, "tiny", gamma=0.5, steps=4)
    out = tmp_path / "occ"
    steps: list[int] = []

    def fit(stop_at: int = 99, config: OccupancyConfig = config) -> tuple:
        def callback(step: int, logs: dict) -> bool:
            steps.append(step)
            return step < stop_at

        return fit_occupancy(view, config, loop=Loop(out, progress=False, callback=callback))

    assert fit(stop_at=2)[0].step == 2 and steps == [1, 2]  # stopped by the callback, checkpointed
    model, reward = fit()
    assert model.step == 4 and steps == [1, 2, 3, 4]  # resumed where it stopped
    written = (out / "occupancy.pt").stat().st_mtime_ns
    again, again_reward = fit()
    assert steps == [1, 2, 3, 4] and (out / "occupancy.pt").stat().st_mtime_ns == written  # reused
    for a, b in [(model, again), (reward, again_reward)]:
        assert all(torch.equal(x, b.state_dict()[k]) for k, x in a.state_dict().items())
    with pytest.raises(CheckpointError, match="another config"):  # a folder of another config is refused
        fit(config=OccupancyConfig.for_dataset(view, "tiny", gamma=0.9, steps=4))


def test_tokenizer_config_takes_what_the_dataset_fixes(ds: PixelDataset, tmp_path: Path) -> None:
    action_dim = int(ds.arrays["action"].shape[1])
    assert make_tokenizer("musik", "tiny", ds).config.action_dim == action_dim != 6
    assert make_tokenizer("musik", "tiny", ds, action_dim=6).config.action_dim == 6  # fields come last
    tok = fit_tokenizer(ds, "musik", "tiny", {"steps": 2}, loop=Loop(tmp_path / "musik", progress=False))
    assert tok.config.action_dim == action_dim and (tmp_path / "musik" / "tokenizer.pt").is_file()


def test_collect_or_open_collects_once(tmp_path: Path) -> None:
    first = collect_or_open(tmp_path, "fake-pixels", "random", 2, progress=False)
    assert first.path == tmp_path / "voc_rl" / "fake-pixels-random-v0" and first.num_episodes == 2
    assert collect_or_open(tmp_path, "fake-pixels", "random", 5, progress=False).num_episodes == 2


def test_policy_benchmark_assembles_agents_from_shared_parts(
    ds: PixelDataset, view: PixelDataset, shared: SharedParts
) -> None:
    """The parts the return-error benchmark trains in its --runs, found by --from-return-error."""
    shared.prior(view)
    for gamma in (0.0, 0.9):
        shared.occupancy(view, gamma, 0)
    shared.critic(view, 0.9, 0)
    steps = tuple(f"{part}_steps={n}" for part, n in STEPS.items())  # the run's steps, as --set gives them
    args = policy.Args(from_return_error=shared.root, size="tiny", gamma=0.9, set=steps)
    for name in ("voc-titok-select", "wm-rollout", "td-critic", "bc"):
        agent = policy.from_return_error(name, ds, 0, args)
        assert agent.task == "fake-pixels" and agent.tokenizer.backend == "titok", name
    args = dataclasses.replace(args, baseline_tokenizer="vqvae")  # no such run here: a clear error
    with pytest.raises(FileNotFoundError, match="no return-error run of vqvae tokens"):
        policy.from_return_error("bc", ds, 0, args)
