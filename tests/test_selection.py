"""Off-policy evaluation and policy selection (voc_rl.selection, voc-rl select, the benchmark)."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from voc_rl import selection
from voc_rl.critic import CriticConfig, TDCritic, train_td_critic
from voc_rl.occupancy import OccupancyConfig, OccupancyModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.selection import PixelPolicy, StatePolicy, policy_actions, selection_metrics, true_returns
from voc_rl.train_loop import Loop

GOAL = np.array([0.75, 0.25])  # the fake env's goal


class Seeker:
    """Accelerates toward (or, with sign -1, away from) the fake env's goal: acts on the state."""

    def __init__(self, sign: float = 1.0, name: str = "seeker"):
        self.sign, self.name, self.act_dim = sign, name, 2

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        return np.clip(self.sign * 4.0 * (GOAL - obs[..., :2]) - obs[..., 2:], -1, 1).astype(np.float32)


class Constant:
    """A pixel policy (``predict``) with one action everywhere."""

    def __init__(self, action: tuple[float, float]):
        self.action = np.asarray(action, np.float32)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        batch = np.asarray(obs).ndim == 4
        return (np.tile(self.action, (len(obs), 1)) if batch else self.action), None


def test_metrics_of_a_perfect_a_reversed_and_a_constant_ranking() -> None:
    truth = [1.0, 2.0, 3.0, 4.0]
    perfect = selection_metrics([10.0, 20.0, 30.0, 40.0], truth)
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["regret@1"] == 0.0 and perfect["regret@3"] == 0.0
    assert perfect["abs_error"] == pytest.approx(np.mean([9, 18, 27, 36]) / 3.0)
    reversed_ = selection_metrics([4.0, 3.0, 2.0, 1.0], truth)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["regret@1"] == pytest.approx(1.0)  # picks the worst: the whole spread lost
    assert reversed_["regret@3"] == pytest.approx(1.0 / 3.0)  # its top 3 hold the second best
    constant = selection_metrics([5.0] * 4, truth)
    assert np.isnan(constant["spearman"])  # a constant cannot rank
    with pytest.raises(ValueError, match="one estimate per policy"):
        selection_metrics([1.0, 2.0], truth)


def test_action_tables_of_state_and_pixel_policies(ds: Any) -> None:
    n = len(ds.arrays["action"])
    det = policy_actions(StatePolicy(Seeker(), deterministic=True), ds)
    assert det.shape == (n, 1, 2)  # deterministic: one action per frame
    expected = Seeker().act(ds.arrays["proprio"], np.random.default_rng(0))
    np.testing.assert_allclose(det[:, 0], expected)  # read from the recorded state
    noisy = policy_actions(StatePolicy(Seeker(), deterministic=True, epsilon=0.5), ds, samples=3)
    assert noisy.shape == (n, 3, 2)
    replaced = ~np.isclose(noisy, det).all(-1)  # (n, 3): a uniform action drawn instead
    assert 0.35 < replaced.mean() < 0.65
    pixels = policy_actions(PixelPolicy(Constant((0.5, -0.5))), ds)
    assert pixels.shape == (n, 1, 2) and np.all(pixels == np.array([0.5, -0.5], np.float32))
    assert selection.table_key(det) != selection.table_key(pixels)


def test_bad_policies_are_refused_with_what_to_do(ds: Any) -> None:
    with pytest.raises(ValueError, match=r"unknown policy 'expart'.*expert"):
        selection.policy_from_spec("expart", "walker-walk")
    with pytest.raises(ValueError, match="noise after '~'"):
        selection.policy_from_spec("expert~lots", "walker-walk")
    with pytest.raises(FileNotFoundError, match="no saved agent"):
        selection.policy_from_spec("/nonexistent/agent.zip", "walker-walk")
    with pytest.raises(TypeError, match="predict"):
        selection.as_policy(object(), "walker-walk")

    class Wrong(Constant):
        def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
            return np.zeros((len(obs), 3), np.float32), None

    with pytest.raises(ValueError, match="actions of shape"):
        policy_actions(PixelPolicy(Wrong((0, 0))), ds)


def test_true_returns_tell_a_goal_seeker_from_a_goal_fleer(ds: Any) -> None:
    seeker = true_returns(StatePolicy(Seeker(), deterministic=True), ds, 0.9, episodes=4)
    fleer = true_returns(StatePolicy(Seeker(-1.0), deterministic=True), ds, 0.9, episodes=4)
    assert seeker.shape == (4,) and seeker.min() > fleer.max()


def test_generative_td_bootstraps_with_the_tables_action(titok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bootstrapped row of one-step generative TD is conditioned on the table's action at its
    bootstrap state s_{t+1}; the other rows' bootstrap actions stay zero."""
    from voc_rl import occupancy_train

    _, view = titok
    table = np.random.default_rng(0).uniform(-1, 1, (len(view.arrays["action"]), 1, 2)).astype(np.float32)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    draw = occupancy_train.WindowSampler.occupancy_targets

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        tb = draw(self, *args, **kwargs)
        seen.append((tb.index + tb.j, tb.bootstrap))
        return tb

    captured: list[torch.Tensor] = []
    td_loss = occupancy_train.td_loss

    def capture(
        model: Any, target: Any, obs: Any, action: Any, future: Any, boot: Any, boot_action: Any
    ) -> Any:
        captured.append(boot_action.cpu())
        return td_loss(model, target, obs, action, future, boot, boot_action)

    monkeypatch.setattr(occupancy_train.WindowSampler, "occupancy_targets", recording)
    monkeypatch.setattr(occupancy_train, "td_loss", capture)
    config = OccupancyConfig.for_dataset(view, "tiny", gamma=0.9, n_step=1, batch_size=16)
    train_occupancy(OccupancyModel(config), view, 3, loop=Loop(progress=False), next_actions=table)
    assert len(captured) == 3
    for (where, boot), got in zip(seen, captured, strict=True):
        assert boot.any()
        np.testing.assert_allclose(got.numpy()[boot], table[where[boot], 0])
        assert np.all(got.numpy()[~boot] == 0)
    mc = OccupancyConfig.for_dataset(view, "tiny", gamma=0.9)  # Monte-Carlo: another policy is refused
    with pytest.raises(ValueError, match="needs n_step=1"):
        train_occupancy(OccupancyModel(mc), view, 1, loop=Loop(progress=False), next_actions=table)
    with pytest.raises(ValueError, match="next_actions must be an array"):
        train_occupancy(OccupancyModel(config), view, 1, loop=Loop(progress=False), next_actions=table[:-1])


def test_fqe_bootstraps_with_the_tables_action_at_the_next_frame(
    titok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voc_rl import critic as critic_module

    _, view = titok
    table = np.random.default_rng(1).uniform(-1, 1, (len(view.arrays["action"]), 2, 2)).astype(np.float32)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    loss = critic_module.critic_td_loss

    def capture(critic: Any, target: Any, b: dict[str, torch.Tensor]) -> Any:
        rows.append((b["index"].cpu().numpy(), b["next_action"].cpu().numpy()))
        return loss(critic, target, b)

    monkeypatch.setattr(critic_module, "critic_td_loss", capture)
    critic = TDCritic(CriticConfig.for_dataset(view, "tiny", gamma=0.9))
    train_td_critic(critic, view, 4, loop=Loop(progress=False), next_actions=table)
    assert len(rows) == 4
    for index, action in rows:
        options = table[index + 1]  # (B, K, A): one of the K samples at s_{t+1}
        assert np.isclose(action[:, None], options).all(-1).any(-1).all()
        assert not np.isclose(action, view.arrays["action"][index + 1]).all()  # not the dataset's a_{t+1}


def test_select_policies_ranks_and_reuses_its_models(fake_ds_path: Path, tmp_path: Path) -> None:
    steps = {"tokenizer": 5, "occupancy": 10, "critic": 10}
    kw: dict[str, Any] = {"runs": tmp_path, "size": "tiny", "behaviour_steps": steps, "steps": 5,
                          "fqe_steps": 5, "samples": 2, "progress": False}  # fmt: skip
    policies = {"seeker": Seeker(), "constant": Constant((1.0, 1.0))}
    for method in ("voc", "fqe", "behaviour-q"):
        ranked = selection.select_policies(policies, fake_ds_path, method=method, **kw)
        assert sorted(e.policy for e in ranked) == ["constant", "seeker"]
        assert [e.value for e in ranked] == sorted((e.value for e in ranked), reverse=True)
        assert all(np.isfinite(e.value) and e.low <= e.value <= e.high and e.n_states == 3 for e in ranked)
        if method == "voc":  # the behaviour's critic trains only for FQE
            assert not any("__critic_" in p.name for p in tmp_path.iterdir())
    folders = sorted(p.name for p in tmp_path.iterdir() if "__ope_" in p.name)
    assert len(folders) == 4  # voc and fqe, each policy's own
    again = selection.estimate_return(policies["seeker"], fake_ds_path, method="voc", **kw)
    first = next(e for e in selection.select_policies(policies, fake_ds_path, method="voc", **kw)
                 if e.policy == "seeker")  # fmt: skip
    assert again.value == pytest.approx(first.value)  # the fine-tune is reused, the sampling seeded
    assert sorted(p.name for p in tmp_path.iterdir() if "__ope_" in p.name) == folders
    with pytest.raises(ValueError, match="unknown method"):
        selection.select_policies(policies, fake_ds_path, method="oracle", **kw)


@pytest.mark.slow
def test_select_cli_ranks_the_behaviour_levels_and_refuses_a_typo(tmp_path: Path) -> None:
    from voc_rl.data.collect import collect

    data = collect("cheetah-run", "mixed", episodes=3, out=tmp_path / "data", progress=False)
    cmd = [sys.executable, "-m", "voc_rl.cli", "select", "expert-det", "random", "--dataset", str(data),
           "--runs", str(tmp_path / "runs"), "--size", "tiny", "--behaviour-steps", "20", "--steps", "5",
           "--fqe-steps", "5", "--samples", "2", "--quiet"]  # fmt: skip
    bad = subprocess.run([*cmd[:4], "expart", *cmd[5:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown policy 'expart'" in bad.stderr and "Traceback" not in bad.stderr
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()[:2] in (" 1", "1.", "2.")]
    assert len(lines) == 2 and "95% CI" in lines[0]


@pytest.mark.slow
def test_policy_selection_benchmark_runs_end_to_end_on_real_physics(tmp_path: Path) -> None:
    from voc_rl.benchmarks import policy_selection as bench

    out = tmp_path / "results"
    bench.main(["--quick", "--out-dir", str(out), "--quiet"])
    with open(out / "policy_selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == set(selection.METHODS)
    assert {r["policy"] for r in rows} == {"random", "medium", "expert-det"}
    truth = {r["policy"]: float(r["truth"]) for r in rows}
    assert truth["expert-det"] > truth["medium"] > truth["random"]  # the simulator's returns, discounted
    text = (out / "policy_selection.md").read_text()
    assert "| cheetah-run-mixed | voc |" in text and (out / "policy_selection.png").stat().st_size > 0


def test_an_interrupted_fine_tune_is_resumed_not_taken_as_done(
    fake_ds_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy's folder holding a checkpoint of a fine-tune that stopped part way is trained on to
    its steps (the checkpoint written every few hundred steps is not the finished model)."""
    from voc_rl.data import open_dataset
    from voc_rl.parts import SharedParts
    from voc_rl.tokenizers.cache import token_view

    ds = open_dataset(fake_ds_path)
    parts = SharedParts(tmp_path, "tiny", "tiny", steps={"tokenizer": 5, "occupancy": 10, "critic": 10},
                        progress=False)  # fmt: skip
    view = token_view(ds, parts.tokenizer(ds, "titok"), progress=False)
    ev = selection.Evaluator(view, parts, 0.9, 0, steps=6, samples=2)
    table = policy_actions(StatePolicy(Seeker(), deterministic=True), ds)
    real = selection.train_occupancy

    def stops_early(model: Any, view: Any, steps: int, **kw: Any) -> Any:
        return real(
            model, view, steps, **{**kw, "loop": dataclasses.replace(kw["loop"], callback=lambda s, _: s < 3)}
        )

    monkeypatch.setattr(selection, "train_occupancy", stops_early)
    first = ev.voc("seeker", table).seconds
    folder = next(p for p in tmp_path.iterdir() if "__ope_voc_" in p.name)
    assert OccupancyModel.load(folder / "occupancy.pt")[0].step == 3
    monkeypatch.setattr(selection, "train_occupancy", real)
    second = ev.voc("seeker", table).seconds
    assert OccupancyModel.load(folder / "occupancy.pt")[0].step == 6
    assert second > first  # the training time of both calls
    assert ev.voc("seeker", table).seconds < second + 1.0  # reused: no training time added
    # from scratch: its own folder, a model that does not start from the behaviour's
    scratch = dataclasses.replace(ev, warm_start=False)
    scratch.voc("seeker", table)
    (new,) = [p for p in tmp_path.iterdir() if p.name.endswith("_scratch")]
    fresh, warm = (OccupancyModel.load(p / "occupancy.pt")[0].state_dict() for p in (new, folder))
    assert new.name.replace("_scratch", "") == folder.name
    assert not all(torch.equal(fresh[k], warm[k]) for k in warm)  # (warm: the same steps, the same weights)
