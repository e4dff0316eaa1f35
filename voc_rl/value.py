"""Q(s, a) from an occupancy model and a reward model: the ``sample``, ``density`` and ``pool`` estimators.

All three estimate ``Q(s, a) = E_{s_e ~ mu(.|s, a)}[r(s_e)] / (1 - gamma)``:

- ``sample_q``: the mean of r over N samples of the occupancy. Cost: N x n_target sequential
  decoding steps (batched).
- ``density_q``: self-normalised importance weights over candidate states drawn from a proposal q,
  ``w_j ~ mu(s_j | s, a) / q(s_j)``, with exact ``log mu`` from ``log_prob`` (one batched pass, each
  context computed once). The default proposal is uniform over the given candidates (for example
  states drawn uniformly from a dataset): then ``q`` is constant and cancels.
- ``pool_q``: for K candidate actions of one state, a shared pool of futures sampled from the
  mixture ``q = (1/K) sum_k mu(. | s, a_k)``, whose density is known exactly from the same
  ``log_prob`` pass that scores the pool under every action. All actions are compared on the same
  futures: lower variance where actions are ranked.

Both importance-weighted estimators can return the effective sample size (Kish, ``1 / sum w^2`` of
the normalised weights) of their weights, ``return_ess=True``. Over dataset candidates it collapses
as the model sharpens (exact log-densities of near-identical states differ by tens of nats, so one
or two candidates decide Q: FACTS.md), which is why ``density``
over a dataset is a baseline and the pool of the model's own samples is the density-based estimator
of record.

``reward`` is any callable from target tokens (..., n_target) to rewards (...): the trained
:class:`~voc_rl.occupancy.RewardModel`, or an exact function in tests. One that returns (..., T),
the rewards of T tasks (:func:`stack_rewards` of their heads), gives every task's Q from the same
futures and weights: a trailing task axis on every estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from voc_rl.occupancy import OccupancyModel

Reward = Callable[[torch.Tensor], torch.Tensor]


def stack_rewards(rewards: Sequence[Reward]) -> Reward:
    """One reward callable for several tasks: target tokens (..., n_target) -> rewards (..., T)."""
    if not rewards:
        raise ValueError("stack_rewards needs at least one reward")
    return lambda tokens: torch.stack([reward(tokens) for reward in rewards], dim=-1)


def effective_sample_size(w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Kish's effective sample size of normalised weights along ``dim``: 1 (one weight decides)
    to the number of weights (uniform)."""
    return 1.0 / (w.double() ** 2).sum(dim).float()


def _check_count(name: str, value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 ({what}), got {value!r}")


@torch.no_grad()
def sample_q(
    model: OccupancyModel,
    reward: Reward,
    context: torch.Tensor,
    action: torch.Tensor,
    n: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B,) Q estimates from ``n`` occupancy samples per (context, action) ((B, T) for T tasks)."""
    futures = model.sample(context, action, n=n, temperature=temperature, top_k=top_k, generator=generator)
    return reward(futures).float().mean(1) / (1 - model.config.gamma)


@torch.no_grad()
def density_q(
    model: OccupancyModel,
    reward: Reward,
    context: torch.Tensor,
    action: torch.Tensor,
    candidates: torch.Tensor,
    log_proposal: torch.Tensor | None = None,
    return_ess: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B,) Q estimates by self-normalised importance weights over ``candidates`` (and, with
    ``return_ess``, the weights' effective sample size (B,)).

    ``candidates`` is (M, n_target), shared by every row, or (B, M, n_target); ``log_proposal`` the
    log density (M,) or (B, M) of the proposal they were drawn from (default: uniform, cancels).
    """
    logp = model.log_prob(context, action, candidates)  # (B, M)
    if log_proposal is not None:
        log_proposal = torch.as_tensor(log_proposal)
        b, m = logp.shape
        if tuple(log_proposal.shape) not in ((m,), (b, m)):
            raise ValueError(
                f"log_proposal must be ({m},) or (B={b}, {m}): one log density per candidate state, "
                f"got {tuple(log_proposal.shape)}"
            )
        if not torch.isfinite(log_proposal).all():
            raise ValueError(
                "log_proposal contains NaN or inf: it must be the finite log density of each candidate"
            )
        logp = logp - log_proposal.to(logp.device)
    w = torch.softmax(logp, dim=1)
    r = reward(candidates.to(logp.device)).float()
    r = r.expand_as(w) if r.ndim == 1 else r
    q = (w * r).sum(1) / (1 - model.config.gamma)
    return (q, effective_sample_size(w)) if return_ess else q


@torch.no_grad()
def pool_futures(
    model: OccupancyModel,
    context: torch.Tensor,
    actions: torch.Tensor,
    pool_size: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One shared pool of futures per context and each candidate action's weights over it: the
    pool (B, M, n_target) and the self-normalised importance weights (B, K, M) of every future
    under every action. Nothing here depends on the reward: :func:`pool_value` turns them into any
    task's Q, so one pool serves every reward head of a domain.

    ``context`` (B, n_context), ``actions`` (B, K, action_dim). Each action contributes
    ``ceil(pool_size / K)`` samples, so the pool is a draw from the equal-weight mixture over the
    actions, whose exact log density ``logsumexp_k log mu(x | s, a_k) - log K`` is the proposal.
    """
    context, actions = torch.as_tensor(context), torch.as_tensor(actions)
    if actions.ndim != 3 or len(actions) != len(context):
        raise ValueError(f"actions must be (B={len(context)}, K, action_dim), got {tuple(actions.shape)}")
    b, k = actions.shape[:2]
    if k < 1:
        raise ValueError(
            f"actions must hold K >= 1 candidate actions per context, got {tuple(actions.shape)} (K = 0)"
        )
    _check_count("pool_size", pool_size, "futures sampled per context")
    per = math.ceil(pool_size / k)
    pool = model.sample(context, actions, n=per, generator=generator)  # (B, K, per, n_target)
    pool = pool.view(b, k * per, -1)  # every context's pool: its K actions' samples together
    logp = model.log_prob(context, actions, pool)  # (B, K, M): every future under every action
    log_q = torch.logsumexp(logp, dim=1, keepdim=True) - math.log(k)  # (B, 1, M) mixture density
    return pool, torch.softmax(logp - log_q, dim=2)


@torch.no_grad()
def pool_value(reward: Reward, pool: torch.Tensor, weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, K) Q of each action from a pool and its weights (:func:`pool_futures`); (B, K, T) for a
    reward of T tasks (:func:`stack_rewards`)."""
    r = reward(pool).float()  # (B, M), or (B, M, T) for T tasks
    q = (weights * r[:, None]).sum(2) if r.ndim == 2 else torch.einsum("bkm,bmt->bkt", weights, r)
    return q / (1 - gamma)


@torch.no_grad()
def pool_q(
    model: OccupancyModel,
    reward: Reward,
    context: torch.Tensor,
    actions: torch.Tensor,
    pool_size: int = 64,
    generator: torch.Generator | None = None,
    return_ess: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B, K) Q estimates of K candidate actions per context from one shared pool per context ((B, K,
    T) for T tasks; and, with ``return_ess``, the effective sample size (B, K) of each action's
    weights over the pool): :func:`pool_futures`, then :func:`pool_value`.
    """
    pool, w = pool_futures(model, context, actions, pool_size, generator)
    q = pool_value(reward, pool, w, model.config.gamma)
    return (q, effective_sample_size(w)) if return_ess else q


@torch.no_grad()
def rollout_q(
    world_model: OccupancyModel,
    reward: Reward,
    policy: Callable[[torch.Tensor], torch.Tensor],
    context: torch.Tensor,
    action: torch.Tensor,
    gamma: float,
    horizon: int,
    n: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B,) Q estimates by rolling a one-step world model (a gamma = 0 occupancy model) out ``horizon``
    steps: ``sum_{h < horizon} gamma^h r(s_{h+1})``, ``a_{h+1} = policy(s_{h+1})``, mean of ``n`` rollouts.

    The compounding-error baseline: every step feeds the model its own samples. ``policy`` maps the
    tokens of a frame stack (B, n_context) to actions (B, action_dim) (e.g. a behaviour-cloning prior).
    """
    c = world_model.config
    if c.gamma != 0.0 or c.target_frames != c.frame_stack:
        raise ValueError(
            "rollout_q needs a one-step world model: gamma = 0 and target_frames = frame_stack "
            f"(got gamma {c.gamma}, target_frames {c.target_frames}, frame_stack {c.frame_stack})"
        )
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    _check_count("horizon", horizon, "model steps per rollout")
    _check_count("n", n, "rollouts per state")
    b = len(context)
    state = torch.as_tensor(context).repeat_interleave(n, 0)
    act = torch.as_tensor(action).repeat_interleave(n, 0)
    total = torch.zeros(b * n)
    for h in range(horizon):
        state = world_model.sample(state, act, generator=generator)[:, 0]  # (B*n, n_context): s_{h+1}
        total += gamma**h * reward(state).float().cpu()
        if h + 1 < horizon:
            act = policy(state)
    return total.view(b, n).mean(1)
