"""Scoring Q estimates on held-out states: the metrics, the choice of states, the published code's
truncated target, and the Q estimate of every method the return-error table compares.

Plain functions of models and datasets, with no argument parsing and no files: the return-error
benchmark (``benchmarks/return_error.py``), the main job (:mod:`voc_rl.quickstart`) and the
learning-curve and policy benchmarks call them. The methods (:func:`q_estimates`):

- ``sample``: N occupancy samples; ``density``: self-normalised weights over M training states;
  ``pool``: a pool shared by K candidate actions (a_t and K - 1 from the prior), a_t's estimate;
- ``paper-style``: ``sample`` as the published code scores (top-k 50, 100 samples);
- ``td-critic``: a SARSA Q network on the same tokens;
- ``wm-rollout-1x`` / ``-3x``: a gamma-0 occupancy model rolled out 1/(1-gamma) or 3/(1-gamma) steps
  as a one-step world model, with its reward model, following the prior;
- ``mean``: the mean simulator Q of training states, a constant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from voc_rl.critic import TDCritic
from voc_rl.data import PixelDataset, TokenView
from voc_rl.occupancy import OccupancyModel, RewardModel
from voc_rl.prior import BCPolicy
from voc_rl.value import density_q, pool_q, rollout_q, sample_q


# ---------------------------------------------------------------------------------------------- metrics
def nmse(pred: np.ndarray, true: np.ndarray) -> float:
    """MSE over the variance of ``true``: 1 is predicting its mean, 0 is exact."""
    return float(((pred - true) ** 2).mean() / max(true.var(), 1e-12))


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(((pred - true) ** 2).mean()))


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Rank correlation; NaN when either side is constant."""
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (pred, true)]
    # a constant has no ranks (np.ptp, not std: the std of a constant float array can be 1e-16)
    return float(np.corrcoef(*ranks)[0, 1]) if np.ptp(pred) > 0 and np.ptp(true) > 0 else float("nan")


@torch.no_grad()
def reward_nmse(view: TokenView, idx: np.ndarray, occ: OccupancyModel, reward: RewardModel) -> float:
    """Held-out NMSE of the reward model: r(s_{t+1}) against the dataset's r_t at the states ``idx``."""
    c = occ.config
    tokens = torch.from_numpy(view.stacks(idx + 1, c.frame_stack)[:, -c.n_target :].astype(np.int64))
    pred = reward(tokens.to(occ.device)).cpu().numpy().astype(np.float64)
    return nmse(pred, view.arrays["reward"][idx].astype(np.float64))


# ---------------------------------------------------------------------------------------------- states
def states_of(ds: PixelDataset, episodes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` flat indices of frames with an action (t < T) in ``episodes``, sorted."""
    frames = ds.frame_index(episodes, last=False)
    return np.sort(np.random.default_rng(seed).choice(frames, size=min(n, len(frames)), replace=False))


def states_by_level(ds: PixelDataset, episodes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` frames of ``episodes``, the same number from every behaviour level present, sorted."""
    level = ds.arrays["policy_id"][ds.ep_start[episodes]]
    kinds = np.unique(level)
    parts = [
        states_of(ds, episodes[level == k], n // len(kinds) + (i < n % len(kinds)), seed + i)
        for i, k in enumerate(kinds)
    ]
    return np.sort(np.concatenate(parts))


def paper_target(ds: PixelDataset, index: np.ndarray, gamma: float) -> np.ndarray:
    """The published code's target: the next min(1/(1-gamma), 10) dataset rewards, discounted."""
    steps = min(round(1 / (1 - gamma)), 10)
    ep = ds.arrays["episode"][index]
    end = ds.ep_start[ep] + ds.ep_len[ep]  # reward of frame i exists for i < end
    out = np.zeros(len(index))
    for k in range(steps):
        i = index + k
        out += np.where(i < end, gamma**k * ds.arrays["reward"][np.minimum(i, end - 1)], 0.0)
    return out


# ---------------------------------------------------------------------------------------------- estimates
@dataclass
class Models:
    """What the methods read (:data:`READS`): a method whose models are missing cannot be asked for."""

    occupancy: OccupancyModel | None = None
    reward: RewardModel | None = None
    prior: BCPolicy | None = None
    critic: TDCritic | None = None
    world: OccupancyModel | None = None  # a gamma-0 occupancy model: the one-step world model
    world_reward: RewardModel | None = None
    train_mean: float | None = None  # the ``mean`` method's constant


READS = {
    "sample": ("occupancy", "reward"),
    "density": ("occupancy", "reward"),
    "pool": ("occupancy", "reward", "prior"),
    "paper-style": ("occupancy", "reward"),
    "td-critic": ("critic",),
    "wm-rollout-1x": ("world", "world_reward", "prior"),
    "wm-rollout-3x": ("world", "world_reward", "prior"),
    "mean": ("train_mean",),
}
METHODS = tuple(READS)
VOC_METHODS = ("sample", "density", "pool", "paper-style")  # the methods that read the reward model
# states per call of each method (the return-error table's batches; they set how the draws fall)
CHUNK = {"sample": 16, "density": 16, "pool": 8, "paper-style": 8, "td-critic": 256, "wm-rollout-1x": 32,
         "wm-rollout-3x": 32}  # fmt: skip


def q_estimates(
    view: TokenView,
    idx: np.ndarray,
    gamma: float,
    models: Models,
    methods: Sequence[str] = METHODS,
    *,
    candidates: np.ndarray | None = None,
    samples: int = 32,
    pool_actions: int = 8,
    pool_size: int = 64,
    rollouts: int = 4,
    seed: int = 0,
    chunk: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, tuple[np.ndarray, float]]:
    """{method: (Q(s_t, a_t) estimates (n,), estimates per second)} at the states ``idx`` of the token
    dataset ``view``, computed in the order of ``methods``.

    ``candidates``: the training states (flat indices) that ``density`` weighs; ``samples``: N of
    ``sample``; ``pool_actions`` (K) and ``pool_size``: ``pool``'s; ``rollouts``: ``wm-rollout``'s
    per state. Every method draws from one generator seeded with ``seed``, ``chunk`` states per call
    (default: each method's own, :data:`CHUNK`); the tensors live on ``device``, with the models.
    """
    for method in methods:
        if method not in READS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        missing = [f for f in READS[method] if getattr(models, f) is None]
        if missing or (method == "density" and candidates is None):
            raise ValueError(f"{method} needs {missing or 'candidates'}")
    m = models
    occ, reward, prior = m.occupancy, m.reward, m.prior
    frame_stack = next(x for x in (occ, m.critic, m.world) if x is not None).config.frame_stack
    ctx = torch.from_numpy(view.stacks(idx, frame_stack).astype(np.int64)).to(device)
    act = torch.from_numpy(view.arrays["action"][idx]).to(device)
    g = torch.Generator(device=device).manual_seed(seed)

    if "density" in methods:  # the candidates' futures: the last n_target frames of their stacks
        c = occ.config
        futures = view.stacks(candidates, c.frame_stack)[:, -c.n_target :].astype(np.int64)
        futures = torch.from_numpy(futures).to(device)

    def pooled(s: slice) -> torch.Tensor:
        others = prior.sample(ctx[s], pool_actions - 1, generator=g)  # (b, K-1, A)
        actions = torch.cat([act[s][:, None], others], dim=1)
        return pool_q(occ, reward, ctx[s], actions, pool_size=pool_size, generator=g)[:, 0]

    def policy(tokens: torch.Tensor) -> torch.Tensor:
        return prior.sample(tokens, 1, generator=g)[:, 0]

    def world_model(factor: int) -> Callable[[slice], torch.Tensor]:
        horizon = math.ceil(factor / (1 - gamma))
        return lambda s: rollout_q(
            m.world, m.world_reward, policy, ctx[s], act[s], gamma, horizon, n=rollouts, generator=g
        )

    estimators: dict[str, Callable[[slice], torch.Tensor]] = {
        "sample": lambda s: sample_q(occ, reward, ctx[s], act[s], n=samples, generator=g),
        "density": lambda s: density_q(occ, reward, ctx[s], act[s], futures),
        "pool": pooled,
        "paper-style": lambda s: sample_q(occ, reward, ctx[s], act[s], n=100, top_k=50, generator=g),
        "td-critic": lambda s: m.critic.q_values(ctx[s], act[s]),
        "wm-rollout-1x": world_model(1),
        "wm-rollout-3x": world_model(3),
        "mean": lambda s: torch.full((len(idx[s]),), m.train_mean, dtype=torch.float64),
    }
    n, out = len(idx), {}
    for method in methods:
        fn, size = estimators[method], n if method == "mean" else chunk or CHUNK[method]
        start = time.perf_counter()
        with torch.no_grad():
            pred = torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)]).cpu().numpy()
        out[method] = (pred.astype(np.float64), n / (time.perf_counter() - start))
    return out


# ---------------------------------------------------------------------------------------------- the action
RESPONSE_METHODS = ("pool", "td-critic")  # the methods whose response to the action is measured


def action_response(
    view: TokenView,
    idx: np.ndarray,
    models: Models,
    methods: Sequence[str] = RESPONSE_METHODS,
    *,
    pool_size: int = 64,
    seed: int = 0,
    chunk: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """{method: mean Q(s, a_t) - Q(s, u)} over the states ``idx``, u uniform in [-1, 1]^A: how much a
    method's Q drops when the dataset's action is replaced by a random one (0: it ignores the action).

    ``pool`` scores a_t and u on one shared pool of ``pool_size`` futures (the lower-variance
    difference); ``td-critic`` reads its Q network. The simulator's response, for comparison, is
    ``benchmarks/action_response.py``'s. The tensors live on ``device``, with the models.
    """
    unknown = [m for m in methods if m not in RESPONSE_METHODS]
    if unknown:
        raise ValueError(f"no action response for {unknown}; known: {', '.join(RESPONSE_METHODS)}")
    m = models
    frame_stack = next(x for x in (m.occupancy, m.critic) if x is not None).config.frame_stack
    ctx = torch.from_numpy(view.stacks(idx, frame_stack).astype(np.int64)).to(device)
    act = view.arrays["action"][idx].astype(np.float32)
    uniform = np.random.default_rng(seed).uniform(-1, 1, act.shape).astype(np.float32)
    both = torch.from_numpy(np.stack([act, uniform], 1)).to(device)  # (n, 2, A)
    g = torch.Generator(device=device).manual_seed(seed)
    scorers: dict[str, Callable[[slice], torch.Tensor]] = {
        "pool": lambda s: pool_q(m.occupancy, m.reward, ctx[s], both[s], pool_size=pool_size, generator=g),
        "td-critic": lambda s: m.critic.q_values(ctx[s], both[s]),
    }
    out = {}
    with torch.no_grad():
        for method in methods:
            q = torch.cat([scorers[method](slice(i, i + chunk)).cpu() for i in range(0, len(idx), chunk)])
            out[method] = float((q[:, 0] - q[:, 1]).double().mean())
    return out
