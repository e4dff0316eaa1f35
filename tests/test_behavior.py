"""Behaviour policies: the SAC actor copy, safe save/load, training with resume, level selection."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from voc_rl.behavior import (
    BehaviorPolicy,
    RandomPolicy,
    evaluate,
    load_policy,
    select_levels,
    shipped_policy_path,
    train_behavior,
)
from voc_rl.checkpoint import CheckpointError


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    policy = BehaviorPolicy(5, 2, (16, 16), name="p")
    policy.meta = {"level": "medium", "eval_return_stochastic": 123.0}
    loaded = BehaviorPolicy.load(policy.save(tmp_path / "p.pt"))
    for (k, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert loaded.meta == policy.meta and loaded.name == "p"
    obs = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    a1 = policy.act(obs, np.random.default_rng(1))
    a2 = loaded.act(obs, np.random.default_rng(1))
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (7, 2) and np.all(np.abs(a1) <= 1)
    assert policy.act(obs[0], np.random.default_rng(1), deterministic=True).shape == (2,)


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would have run",))


def test_loading_refuses_pickled_code_and_junk(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "voc_rl.behavior_policy/1", "payload": _RunsCode()}, evil)
    with pytest.raises(CheckpointError, match="could run code"):
        BehaviorPolicy.load(evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        BehaviorPolicy.load(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        BehaviorPolicy.load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "config": {}, "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="format"):
        BehaviorPolicy.load(other)


def test_mismatched_weights_are_a_clear_error(tmp_path: Path) -> None:
    path = BehaviorPolicy(5, 2, (16,)).save(tmp_path / "p.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["hidden"] = [32]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not match"):
        BehaviorPolicy.load(path)


def test_unknown_levels_and_missing_policies() -> None:
    with pytest.raises(ValueError, match="did you mean 'expert'"):
        load_policy("cheetah-run", "expret")
    with pytest.raises(FileNotFoundError, match="voc-rl behavior train"):
        load_policy("fake-pixels", "medium")
    assert isinstance(load_policy("fake-pixels", "random"), RandomPolicy)


def test_from_sb3_copies_the_actor_exactly() -> None:
    from stable_baselines3 import SAC

    from voc_rl.envs import make_env

    model = SAC(
        "MlpPolicy", make_env("fake-pixels", obs_type="state"), policy_kwargs={"net_arch": [32, 32]}, seed=0
    )
    policy = BehaviorPolicy.from_sb3(model)
    obs = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(
        policy.act(obs, np.random.default_rng(0), deterministic=True), expected, atol=1e-6
    )


@pytest.mark.slow
def test_train_resume_and_select_levels(tmp_path: Path) -> None:
    kw = {"eval_every": 100, "eval_episodes": 1, "checkpoint_every": 100, "learning_starts": 50}
    ladder = train_behavior("fake-pixels", tmp_path, total_steps=200, **kw)
    assert [r["step"] for r in ladder] == [100, 200]
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["num_timesteps"] == 200 and state["n_updates"] > 0
    ladder = train_behavior("fake-pixels", tmp_path, total_steps=300, **kw)  # resumes, does not restart
    assert [r["step"] for r in ladder] == [100, 200, 300]
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["n_updates"] > state["n_updates"]
    picks = select_levels(tmp_path)
    assert set(picks) == {"medium", "expert"} and all(p.exists() for p in picks.values())


def test_select_levels_rule(tmp_path: Path) -> None:
    rows = [(10, 50.0), (20, 210.0), (30, 380.0), (40, 800.0), (50, 700.0)]
    with open(tmp_path / "ladder.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "return_det", "return_sto", "path"])
        w.writerows([(s, r, r, f"step_{s}.pt") for s, r in rows])
    picks = select_levels(tmp_path)
    assert picks["expert"].name == "step_40.pt" and picks["medium"].name == "step_30.pt"


@pytest.mark.parametrize("task", ["cheetah-run", "walker-walk"])
def test_shipped_policies_load_and_beat_random(task: str) -> None:
    for level in ("expert", "medium"):  # shipped as package data: a missing file is a packaging bug
        assert shipped_policy_path(task, level).is_file(), f"{shipped_policy_path(task, level)} is missing"
    expert, medium = load_policy(task, "expert"), load_policy(task, "medium")
    assert expert.meta["level"] == "expert" and medium.meta["level"] == "medium"
    assert shipped_policy_path(task, "expert").stat().st_size < 1_000_000
    ret = evaluate(expert, task, episodes=1, seed=0)
    rand = evaluate(load_policy(task, "random"), task, episodes=1, seed=0)
    assert ret[0] > rand[0] + 50
