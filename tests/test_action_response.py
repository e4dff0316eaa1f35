"""benchmarks/action_response.py runs end to end at a tiny size, for every way the action can enter."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from voc_rl.benchmarks import action_response as bench

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def argv(tmp_path: Path, *conditionings: str) -> list[str]:
    return ["--tasks", "fake-pixels", "--dataset", "random", "--collect-episodes", "3", "--size", "tiny",
            "--tokenizer-steps", "2", "--conditionings", *conditionings, "--occupancy-steps", "3",
            "--critic-steps", "3", "--states", "6", "--rollouts", "1", "--pool", "4",
            "--data-root", str(tmp_path / "d"), "--runs", str(tmp_path / "runs"),
            "--out-dir", str(tmp_path / "out")]  # fmt: skip


def rows_of(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {r["model"]: r for r in csv.DictReader((tmp_path / "out" / "action_response.csv").open())}


def record_truth(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """(actions, Q) of each ``simulator_q`` call: the dataset's a_t (None), then the uniform u."""
    calls: list[tuple[np.ndarray | None, np.ndarray]] = []
    simulator_q = bench.simulator_q

    def recorded(*args: Any, **kwargs: Any) -> Any:
        truth = simulator_q(*args, **kwargs)
        calls.append((kwargs.get("actions"), truth.at(truth.gammas[0])[0]))  # (one gamma)
        return truth

    monkeypatch.setattr(bench, "simulator_q", recorded)
    return calls


def close(cell: str, value: float) -> bool:
    """The CSV rounds to 3 decimals."""
    return float(cell) == pytest.approx(round(value, 3), abs=1e-9)


def test_action_response_writes_a_row_per_model_with_its_diagnostics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = record_truth(monkeypatch)
    pooled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (actions, Q) of each pool_q call, in order
    criticised: list[tuple[torch.Tensor, torch.Tensor]] = []
    pool_q, fit_critic = bench.pool_q, bench.fit_critic

    def recorded_pool(model: Any, reward: Any, ctx: torch.Tensor, actions: torch.Tensor, **kw: Any) -> Any:
        pooled.append((actions, pool_q(model, reward, ctx, actions, **kw)))
        return pooled[-1][1]

    def recorded_critic(*args: Any, **kwargs: Any) -> Any:
        critic = fit_critic(*args, **kwargs)
        q_values = critic.q_values

        def recorded(ctx: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            criticised.append((actions, q_values(ctx, actions)))
            return criticised[-1][1]

        critic.q_values = recorded
        return critic

    monkeypatch.setattr(bench, "pool_q", recorded_pool)
    monkeypatch.setattr(bench, "fit_critic", recorded_critic)
    bench.main(argv(tmp_path, "token", "film", "every:mlp"))
    rows = rows_of(tmp_path)
    models = ["voc (token)", "voc (film)", "voc (every, mlp)"]
    assert list(rows) == ["simulator", "td-critic", *models]
    (_, q_data), (uniform, q_unif) = truth
    assert q_data.shape == (6,) and uniform.shape == (6, 2) and np.abs(uniform).max() <= 1
    # the simulator's response: Q(s, a_t) - Q(s, u) over the random level's states (the only level here)
    assert close(rows["simulator"]["response_random"], np.mean(q_data - q_unif))
    assert rows["simulator"]["response_expert"] == rows["simulator"]["vs_true_expert"] == "-"
    assert len(pooled) == 3  # one chunk of 6 states per model
    for name, (actions, q) in zip(["td-critic", *models], [*criticised, *pooled], strict=True):
        r, q = rows[name], q.detach().numpy()
        assert q.shape == (6, 2)
        # the models score a_t and the same u that the simulator took
        np.testing.assert_array_equal(actions[:, 1].numpy(), uniform)
        assert not np.array_equal(actions[:, 0].numpy(), uniform)
        assert close(r["response_random"], np.mean(q[:, 0] - q[:, 1])), (name, r)
        assert close(r["q_nmse"], np.mean((q[:, 0] - q_data) ** 2) / np.var(q_data)), (name, r)
        assert r["response_expert"] == r["vs_critic_expert"] == "-"  # (no expert states in random data)
    for name in models:
        for c in ("nll_future", "unigram_nll", "action_info"):
            assert np.isfinite(float(rows[name][c])), (c, rows[name])
    folders = sorted(p.name for p in (tmp_path / "runs" / "fake-pixels-random").glob("occupancy_*"))
    assert folders == ["occupancy_every-mlp_s0", "occupancy_film_s0", "occupancy_token_s0"]


def test_a_q_linear_in_the_action_responds_by_its_slope_and_one_that_ignores_it_by_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = record_truth(monkeypatch)  # (the simulator runs before any model scores)
    scored: list[torch.Tensor] = []

    def linear(model: Any, reward: Any, ctx: torch.Tensor, actions: torch.Tensor, **kw: Any) -> torch.Tensor:
        """Q(s, a) = Q_true(s, a_t) + 3 (sum(a) - sum(a_t)): exact at a_t, slope 3 in each action's sum."""
        scored.append(actions)
        q_data = torch.from_numpy(truth[0][1])[:, None]
        return q_data + 3 * (actions.sum(-1) - actions[:, :1].sum(-1))

    def blind(ctx: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The mean true Q for every state and action: no response to the action."""
        return torch.full(actions.shape[:2], float(truth[0][1].mean()), dtype=torch.float64)

    monkeypatch.setattr(bench, "pool_q", linear)
    monkeypatch.setattr(bench, "fit_critic", lambda *a, **k: SimpleNamespace(q_values=blind))
    bench.main(argv(tmp_path, "token"))
    rows = rows_of(tmp_path)
    uniform = truth[1][0]
    (actions,) = scored
    np.testing.assert_array_equal(actions[:, 1].numpy(), uniform)
    response = 3 * np.mean(actions[:, 0].numpy().sum(1) - uniform.sum(1))
    assert abs(response) > 0.01  # (a response that rounds to 0 would not tell the two apart)
    assert close(rows["voc (token)"]["response_random"], response)
    assert float(rows["voc (token)"]["q_nmse"]) == 0  # exact at a_t
    assert float(rows["td-critic"]["response_random"]) == 0
    assert float(rows["td-critic"]["q_nmse"]) == pytest.approx(1, abs=1e-3)  # the mean: NMSE 1
