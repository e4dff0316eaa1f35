"""The Q estimators against the analytic Q of a known Markov chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chain import N_STATES, REWARD, WORDS, chain_q, reward_of_words, train_on_chain

from voc_rl.value import density_q, effective_sample_size, pool_q, rollout_q, sample_q, stack_rewards

GAMMA = 0.9


@pytest.fixture(scope="module")
def model():
    return train_on_chain(GAMMA, "distill")


@pytest.mark.slow
def test_estimators_recover_the_analytic_q(model) -> None:
    truth = chain_q(GAMMA)  # 0.2 to 1.5 over the states
    zeros = torch.zeros(N_STATES, 1)
    g = torch.Generator().manual_seed(0)
    by_sampling = sample_q(model, reward_of_words, WORDS, zeros, n=6000, generator=g).numpy()
    by_density = density_q(model, reward_of_words, WORDS, zeros, WORDS).numpy()
    pooled = pool_q(model, reward_of_words, WORDS, torch.zeros(N_STATES, 3, 1), pool_size=4000, generator=g)
    assert pooled.shape == (N_STATES, 3)
    for name, q in [
        ("sample", by_sampling),
        ("density", by_density),
        *(("pool", c) for c in pooled.T.numpy()),
    ]:
        nmse = ((q - truth) ** 2).mean() / truth.var()
        assert nmse < 0.1, f"{name}: NMSE {nmse:.3f} against the analytic Q"
        assert np.corrcoef(q, truth)[0, 1] > 0.97, name
    # Q's scale is right: r / (1 - gamma), not a length-normalised pseudo-probability
    assert abs(by_density.mean() - truth.mean()) < 0.1 * truth.mean()


def test_density_weights_use_the_stated_proposal(model) -> None:
    zeros = torch.zeros(N_STATES, 1)
    uniform = density_q(model, reward_of_words, WORDS, zeros, WORDS)
    flat = density_q(model, reward_of_words, WORDS, zeros, WORDS, log_proposal=torch.full((N_STATES,), -2.0))
    torch.testing.assert_close(uniform, flat)  # a constant proposal cancels
    best = int(np.argmax(REWARD))
    skew = torch.zeros(N_STATES)
    skew[best] = 5.0  # claiming the best state was over-proposed must shrink its weight
    assert (density_q(model, reward_of_words, WORDS, zeros, WORDS, log_proposal=skew) < uniform).all()


def test_importance_weighted_estimators_report_their_effective_sample_size(model) -> None:
    assert effective_sample_size(torch.full((2, 5), 0.2)).tolist() == pytest.approx([5.0, 5.0])
    assert effective_sample_size(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(1.0)
    zeros = torch.zeros(N_STATES, 1)
    q, ess = density_q(model, reward_of_words, WORDS, zeros, WORDS, return_ess=True)
    torch.testing.assert_close(q, density_q(model, reward_of_words, WORDS, zeros, WORDS))
    w = torch.softmax(model.log_prob(WORDS, zeros, WORDS), 1)  # the weights: the occupancy's rows
    torch.testing.assert_close(ess, 1 / (w**2).sum(1))
    assert ess.shape == (N_STATES,) and (ess > 1.5).all() and (ess < N_STATES - 1e-3).all()
    g = torch.Generator().manual_seed(0)
    _, pool_ess = pool_q(
        model, reward_of_words, WORDS, torch.zeros(N_STATES, 3, 1), pool_size=30, generator=g, return_ess=True
    )
    # three identical actions: the mixture is each action's own law, so the weights are uniform
    torch.testing.assert_close(pool_ess, torch.full((N_STATES, 3), 30.0))


def test_stacked_rewards_give_every_task_from_the_same_futures(model) -> None:
    def double(tokens: torch.Tensor) -> torch.Tensor:
        return 2 * reward_of_words(tokens) - 1

    both = stack_rewards([reward_of_words, double])
    zeros, three = torch.zeros(N_STATES, 1), torch.zeros(N_STATES, 3, 1)
    for estimate in (
        lambda reward, g: sample_q(model, reward, WORDS, zeros, n=50, generator=g),
        lambda reward, g: pool_q(model, reward, WORDS, three, pool_size=30, generator=g),
    ):
        together = estimate(both, torch.Generator().manual_seed(3))
        assert together.shape[-1] == 2
        for k, reward in enumerate((reward_of_words, double)):  # the same draws as one task at a time
            torch.testing.assert_close(together[..., k], estimate(reward, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="at least one"):
        stack_rewards([])


def test_pool_rejects_bad_action_shapes(model) -> None:
    with pytest.raises(ValueError, match="actions must be"):
        pool_q(model, reward_of_words, WORDS, torch.zeros(N_STATES, 1))


@pytest.mark.slow
def test_world_model_rollouts_recover_the_analytic_q() -> None:
    world = train_on_chain(0.0, "sample")  # the one-step model of the same chain

    def policy(tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(tokens), 1)

    g = torch.Generator().manual_seed(0)
    q = rollout_q(
        world, reward_of_words, policy, WORDS, torch.zeros(N_STATES, 1), 0.5, 12, n=1000, generator=g
    )
    truth = chain_q(0.5)  # the horizon's tail is below 0.5^12 / (1 - 0.5) = 5e-4
    assert ((q.numpy() - truth) ** 2).mean() / truth.var() < 0.1
    with pytest.raises(ValueError, match="one-step world model"):
        rollout_q(train_on_chain(GAMMA, "distill"), reward_of_words, policy, WORDS, torch.zeros(8, 1), 0.5, 3)
