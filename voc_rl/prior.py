"""The behaviour prior: ``pi(a | s)`` on the tokens of s, cloned from the dataset's actions. Every
agent proposes its candidate actions from it (:mod:`voc_rl.agents.base`).

:class:`BCPolicy` reads the tokens through the shared trunk of :mod:`voc_rl.token_trunk` and outputs
a tanh-squashed diagonal Gaussian fitted by maximum likelihood to the dataset's actions, with beta-NLL
weighting (Seitzer et al., 2022): under plain NLL an action dimension that fits badly early gets a
wide std, hence small gradients, and can stay unlearned (measured on a deterministic rule). Token
dropout (0.2) and 2k steps by default: longer runs raise the held-out NLL as the std shrinks on the
training episodes. :func:`train_bc` fits it with
:func:`voc_rl.token_trunk.fit_token_model`.

Policy extraction trains the same model with a weight per transition (``train_bc(..., weights=)``):
:func:`advantage_weights` (advantage-weighted regression, ``exp(A / beta)`` clipped) or
:func:`top_episode_weights` (%BC: only the episodes of highest return).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.data.sampler import WindowSampler
from voc_rl.token_trunk import (
    Batch,
    Objective,
    TokenModel,
    TokenModelConfig,
    eval_index,
    fit_token_model,
    token_batch,
)
from voc_rl.tokenizers.cache import check_model_fits
from voc_rl.train_loop import Loop, TrainReport
from voc_rl.utils import resolve_device

ACTION_EPS = 1e-4  # dataset actions are clamped to [-1 + eps, 1 - eps] before atanh


@dataclass(frozen=True)
class BCConfig(TokenModelConfig):
    """The behaviour-cloning prior's config. On 100k transitions the held-out NLL is best after 1-2k
    steps, then rises as the std shrinks on the training episodes; token dropout slows that down."""

    steps: int = 2000
    token_dropout: float = 0.2
    log_std_min: float = -5.0  # pre-tanh log standard deviation bounds
    log_std_max: float = 2.0
    nll_beta: float = 0.5  # beta-NLL: each dimension's NLL weighted by stop-grad std^(2 beta); 0 is plain ML

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"need log_std_min < log_std_max, got {self.log_std_min}, {self.log_std_max}")


# ---------------------------------------------------------------------- model
def squashed_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, beta: float = 0.0
) -> torch.Tensor:
    """log-density of actions (B, A) -> (B,) or (B, K, A) -> (B, K) under tanh(N(mean, std)), mean and
    log_std (B, A); actions clamped to ``[-1 + 1e-4, 1 - 1e-4]``. With ``beta > 0`` each dimension's
    Gaussian term is weighted by stop-grad std^(2 beta) (beta-NLL)."""
    if actions.ndim == 3:
        mean, log_std = mean[:, None], log_std[:, None]
    a = actions.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
    u = torch.atanh(a)  # (..., A)
    gauss = -0.5 * ((u - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    if beta > 0:  # without it, dimensions fitted badly early get a wide std and stop being learned
        gauss = gauss * torch.exp(2 * beta * log_std).detach()
    return (gauss - torch.log1p(-a * a)).sum(-1)  # change of variables: da/du = 1 - a^2


def check_weights(weights: np.ndarray | None, n: int, device: torch.device) -> torch.Tensor | None:
    """Extraction ``weights`` (one float >= 0 per flat frame of a dataset of ``n``, positive sum) as a
    tensor on ``device``, or None."""
    if weights is None:
        return None
    weights = np.asarray(weights, np.float32)
    if weights.shape != (n,) or not np.isfinite(weights).all():
        raise ValueError(f"weights must be finite, one per frame: ({n},), got {weights.shape}")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return torch.from_numpy(weights).to(device)


class BCPolicy(TokenModel):
    """``pi(a | s)``: a tanh-squashed diagonal Gaussian on the tokens of s, fitted by maximum likelihood."""

    FORMAT = "voc_rl.bc_policy/1"
    CONFIG = BCConfig
    config: BCConfig

    def __init__(self, config: BCConfig):
        super().__init__(config, extra_in=0, out=2 * config.action_dim)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and clamped log-std, (B, A) each; no input checks."""
        mean, log_std = self.mlp(self.features(context)).chunk(2, -1)
        return mean, log_std.clamp(self.config.log_std_min, self.config.log_std_max)

    def _log_prob(self, context: torch.Tensor, actions: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
        """log pi for actions (B, A) -> (B,) or (B, K, A) -> (B, K); differentiable. With ``beta > 0``
        the training objective instead: each dimension's term weighted by stop-grad std^(2 beta)."""
        return squashed_log_prob(*self(context), actions, beta)

    def log_prob(self, context: Any, actions: Any) -> torch.Tensor:
        """``log pi(a | s)`` of actions (B, A) -> (B,), or (B, K, A) -> (B, K); actions are clamped to
        ``[-1 + 1e-4, 1 - 1e-4]`` first (so saturated dataset actions have a finite density)."""
        context = self.check_context(context)
        actions = self.check_actions(actions, len(context))
        if actions.abs().max() > 1.0:
            raise ValueError(f"actions must lie in [-1, 1], got one of {float(actions.abs().max()):.3g}")
        return self._log_prob(context, actions)

    @torch.no_grad()
    def sample(self, context: Any, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` actions per state: (B, n, action_dim) float32 in [-1, 1]."""
        context = self.check_context(context)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        mean, log_std = self(context)
        shape = (len(context), n, self.config.action_dim)
        device = generator.device if generator is not None else self.device
        noise = torch.randn(shape, generator=generator, device=device).to(self.device)
        return torch.tanh(mean[:, None] + log_std.exp()[:, None] * noise)

    @torch.no_grad()
    def mode(self, context: Any) -> torch.Tensor:
        """``tanh(mean)``: (B, action_dim)."""
        return torch.tanh(self(self.check_context(context))[0])


# ---------------------------------------------------------------------- extraction weights
def advantage_weights(
    q_data: np.ndarray, q_prior: np.ndarray, temperature: float = 1.0, clip: float = 20.0
) -> tuple[np.ndarray, dict[str, float]]:
    """AWR weights ``exp(A / beta)`` clipped at ``clip``, with ``A = Q(s, a_t) - V(s)``, ``V(s)`` the mean
    Q of the behaviour prior's samples at s (``q_prior`` (N, M)) and ``beta = temperature * std(A)``
    (the advantages' own spread, so the weights do not depend on the reward's scale). Returns the
    weights (N,) and a summary: beta, the effective sample size fraction, the share clipped."""
    q_data, q_prior = np.asarray(q_data, np.float64), np.asarray(q_prior, np.float64)
    if q_prior.ndim != 2 or q_data.shape != q_prior.shape[:1]:
        raise ValueError(f"need q_data (N,) and q_prior (N, M), got {q_data.shape} and {q_prior.shape}")
    if not (np.isfinite(q_data).all() and np.isfinite(q_prior).all()):
        raise ValueError("Q estimates contain NaN or inf: the scorer is broken, weights would be too")
    if temperature <= 0 or clip <= 1:
        raise ValueError(f"need temperature > 0 and clip > 1, got {temperature}, {clip}")
    adv = q_data - q_prior.mean(1)
    beta = temperature * max(float(adv.std()), 1e-8)
    z = adv / beta
    weights = np.exp(np.minimum(z, np.log(clip)))
    ess = float(weights.sum() ** 2 / (weights**2).sum() / len(weights))
    clipped = float((z > np.log(clip)).mean())
    info = {"beta": beta, "adv_mean": float(adv.mean()), "ess_fraction": ess, "clipped": clipped}
    return weights.astype(np.float32), info


def level_shares(ds: PixelDataset, weights: np.ndarray) -> dict[str, float]:
    """The share of the total extraction weight (one per flat frame of ``ds``) on the frames of each
    behaviour policy level the dataset records (``weight_random``, ``weight_medium``, ...): how much
    of the extracted prior imitates each policy. Empty where the dataset records no levels."""
    policies = ds.meta.get("policies", {})
    if "policy_id" not in ds.arrays or not policies or weights.sum() <= 0:
        return {}
    pid, total = ds.arrays["policy_id"], float(weights.sum())
    return {
        f"weight_{desc.get('level', key)}": float(weights[pid == int(key)].sum()) / total
        for key, desc in sorted(policies.items())
        if (pid == int(key)).any()
    }


def top_episode_weights(
    ds: PixelDataset, episodes: np.ndarray, fraction: float, scores: np.ndarray | None = None
) -> np.ndarray:
    """%BC: weight 1 on every frame of the top ``fraction`` of ``episodes`` by ``scores`` (one per
    entry of ``episodes``; default their returns), 0 elsewhere (flat over ``ds``'s frames; at least
    one episode is kept)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    episodes = np.asarray(episodes)
    scores = ds.episode_returns()[episodes] if scores is None else np.asarray(scores, np.float64)
    if scores.shape != episodes.shape or not np.isfinite(scores).all():
        raise ValueError(f"need one finite score per episode ({episodes.shape}), got {scores.shape}")
    keep = episodes[np.argsort(-scores, kind="stable")[: max(1, round(fraction * len(episodes)))]]
    weights = np.zeros(len(ds.arrays["action"]), np.float32)
    for e in keep:
        weights[ds.ep_start[e] : ds.ep_start[e] + ds.ep_len[e]] = 1.0
    return weights


def episode_means(
    ds: PixelDataset, index: np.ndarray, values: np.ndarray, episodes: np.ndarray
) -> np.ndarray:
    """The mean of ``values`` (one per flat frame in ``index``) over each of ``episodes``' frames in
    ``index``: an episode's score from per-transition estimates (NaN where none of its frames is in
    ``index``)."""
    owner = np.searchsorted(ds.ep_start, index, side="right") - 1
    sums = np.bincount(owner, weights=values, minlength=len(ds.ep_start))
    counts = np.bincount(owner, minlength=len(ds.ep_start))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts)[np.asarray(episodes)]


# ---------------------------------------------------------------------- training
def train_bc(
    policy: BCPolicy,
    token_ds: TokenView,
    steps: int | None = None,
    loop: Loop | None = None,
    val_fraction: float = 0.1,
    weights: np.ndarray | None = None,
) -> TrainReport:
    """Fit ``policy`` by maximum likelihood (beta-NLL weighted, ``config.nll_beta``) on the training
    episodes' actions (the occupancy model's split); returns a report. Held-out metrics: ``nll``
    (per state, of actions clamped to ``[-1 + 1e-4, 1 - 1e-4]``), ``mode_mse`` (mean over action
    dimensions of ``(tanh(mean) - a)^2``) and ``mode_nmse`` (the same over the actions' variance: 1 is
    predicting the mean action). ``weights`` (one float >= 0 per flat frame of ``token_ds``, e.g.
    from :func:`advantage_weights`) weight each transition's term: the extraction step.
    """
    c = policy.config
    check_model_fits(c, token_ds, "BCConfig.for_dataset")
    steps, loop = steps or c.steps, loop or Loop()
    device = resolve_device(loop.device)
    policy.to(device).train()
    train_eps, val_eps = token_ds.split(val_fraction, loop.seed)
    val_eps = val_eps if len(val_eps) else train_eps
    sampler = WindowSampler(token_ds, train_eps, c.frame_stack, loop.seed, require_next_action=False)
    val = token_batch(token_ds, eval_index(token_ds, val_eps, False), c.frame_stack, device, False)
    weight = check_weights(weights, len(token_ds.arrays["action"]), device)

    def loss_fn(b: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        terms = policy._log_prob(b["obs"], b["action"], c.nll_beta)
        if weight is None:
            loss = -terms.mean()
        else:  # normalised by the batch's weight, so the step size does not follow the weights' scale
            w = weight[b["index"]]
            loss = -(w * terms).sum() / w.sum().clamp_min(1e-8)
        return loss, {"beta_nll" if c.nll_beta else "nll": float(loss.detach())}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        policy.eval()
        mse = (torch.tanh(policy(val["obs"])[0]) - val["action"]).pow(2).mean()
        var = val["action"].var(0, unbiased=False).mean().clamp_min(1e-8)
        nll = -policy._log_prob(val["obs"], val["action"]).mean()
        return {"nll": float(nll), "mode_mse": float(mse), "mode_nmse": float(mse / var)}

    return fit_token_model(policy, token_ds, Objective("bc", loss_fn, evaluate), sampler, steps, loop)
