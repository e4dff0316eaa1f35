"""The pixel prior: ``pi(a | s)`` from the raw frame stack through :class:`~voc_rl.pixel_trunk.PixelEncoder`,
the control head of every agent whose ``policy_input`` is ``pixels`` (the default).

:class:`PixelBCPolicy` has the interface of the token prior (:class:`voc_rl.prior.BCPolicy`):
``forward -> (mean, log_std)`` of a tanh-squashed diagonal Gaussian, ``log_prob``, ``sample`` and
``mode = tanh(mean)``. It is fitted by the recipe that measured 0.90x of the expert's return on
walker-walk (FACTS.md): the mode regresses the dataset action by MSE, with the encoder trained
through it and random-shift augmentation. The log-std learns by Gaussian NLL around the mode, which
is detached, so the spread the candidates are drawn from never pulls the mode. ``weights`` (one per
frame) weight each transition's terms: %BC and advantage-weighted extraction
(:func:`voc_rl.prior.advantage_weights`) train this policy exactly as they train the token prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import WindowSampler
from voc_rl.pixel_trunk import (
    EVAL_STATES,
    PixelModel,
    PixelModelConfig,
    chunked,
    mlp,
    pixel_batch,
    standardised_state,
)
from voc_rl.prior import ACTION_EPS, check_weights, squashed_log_prob
from voc_rl.token_trunk import Batch, Objective, eval_index, fit_token_model
from voc_rl.train_loop import Loop, TrainReport
from voc_rl.utils import resolve_device


@dataclass(frozen=True)
class PixelBCConfig(PixelModelConfig):
    """The pixel prior's config."""

    log_std_min: float = -5.0  # pre-tanh log standard deviation bounds
    log_std_max: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"need log_std_min < log_std_max, got {self.log_std_min}, {self.log_std_max}")


class PixelBCPolicy(PixelModel):
    """``pi(a | s)`` on pixels: a tanh-squashed diagonal Gaussian whose mode is fitted by MSE."""

    FORMAT = "voc_rl.pixel_bc_policy/1"
    CONFIG = PixelBCConfig
    config: PixelBCConfig

    def __init__(self, config: PixelBCConfig):
        super().__init__(config)
        self.head = mlp(config.feature_dim, config.hidden, 2 * config.action_dim)

    def forward(self, obs: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and clamped log-std, (B, A) each; no input checks."""
        return self.heads(self.encoder(obs, augment))

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head on encoder features (B, feature_dim): pre-tanh mean and clamped log-std."""
        mean, log_std = self.head(features).chunk(2, -1)
        return mean, log_std.clamp(self.config.log_std_min, self.config.log_std_max)

    def _log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return squashed_log_prob(*(chunked(self, obs) if len(obs) > 512 else self(obs)), actions)

    def log_prob(self, obs: Any, actions: Any) -> torch.Tensor:
        """``log pi(a | s)`` of actions (B, A) -> (B,) or (B, K, A) -> (B, K) (clamped to 1 - 1e-4)."""
        obs = self.check_context(obs)
        actions = self.check_actions(actions, len(obs))
        if actions.abs().max() > 1.0:
            raise ValueError(f"actions must lie in [-1, 1], got one of {float(actions.abs().max()):.3g}")
        return self._log_prob(obs, actions)

    @torch.no_grad()
    def sample(self, obs: Any, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` actions per state: (B, n, action_dim) float32 in [-1, 1]."""
        obs = self.check_context(obs)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        mean, log_std = chunked(self, obs)
        device = generator.device if generator is not None else self.device
        noise = torch.randn((len(obs), n, self.config.action_dim), generator=generator, device=device)
        return torch.tanh(mean[:, None] + log_std.exp()[:, None] * noise.to(self.device))

    @torch.no_grad()
    def mode(self, obs: Any) -> torch.Tensor:
        """``tanh(mean)``: (B, action_dim)."""
        return torch.tanh(chunked(self, self.check_context(obs))[0])


def bc_terms(policy: PixelBCPolicy, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Per row: the mode's squared error to ``action`` (mean over dimensions) plus the Gaussian NLL of
    the action's pre-tanh value around the detached mode, which trains the log-std only."""
    mean, log_std = policy.heads(features)
    mse = (torch.tanh(mean) - action).pow(2).mean(-1)
    u = torch.atanh(action.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS))
    nll = (0.5 * ((u - mean.detach()) * torch.exp(-log_std)) ** 2 + log_std).mean(-1)
    return mse + 0.01 * nll  # the NLL's small weight keeps the shared encoder's gradient the MSE's


def weighted_mean(terms: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``terms`` averaged with per-row ``weight`` (normalised by the batch's weight) or plainly."""
    if weight is None:
        return terms.mean()
    return (weight * terms).sum() / weight.sum().clamp_min(1e-8)


def held_out(ds: PixelDataset, episodes: np.ndarray, frame_stack: int, device: torch.device, nxt: bool,
             train: np.ndarray) -> Batch:  # fmt: skip
    """Up to EVAL_STATES evenly spaced held-out states (``train``'s episodes where none are held out)."""
    idx = eval_index(ds, episodes if len(episodes) else train, nxt)
    idx = idx[np.linspace(0, len(idx) - 1, min(len(idx), EVAL_STATES)).round().astype(int)]
    return {**pixel_batch(ds, idx, frame_stack, device, nxt), "index": torch.from_numpy(idx).to(device)}


def train_pixel_bc(
    policy: PixelBCPolicy,
    ds: PixelDataset,
    steps: int | None = None,
    loop: Loop | None = None,
    val_fraction: float = 0.1,
    weights: np.ndarray | None = None,
) -> TrainReport:
    """Fit ``policy`` on the training episodes of the pixel dataset ``ds`` (the split every part
    uses). ``weights`` (one per flat frame, e.g. :func:`voc_rl.prior.advantage_weights`) weight each
    transition: the extraction step. Held-out metrics: ``mode_mse``, ``mode_nmse`` (1 is predicting
    the mean action) and ``nll`` (per state, actions clamped to ``[-1 + 1e-4, 1 - 1e-4]``)."""
    c = policy.config
    if ds.frames.ndim != 4 or tuple(ds.frames.shape[1:]) != (3, c.image_size, c.image_size):
        raise ValueError(
            f"the policy reads {c.image_size} px RGB frames; {ds.path} holds {ds.frames.shape[1:]}"
        )
    steps, loop = steps or c.steps, loop or Loop()
    device = resolve_device(loop.device)
    policy.to(device).train()
    train_eps, val_eps = ds.split(val_fraction, loop.seed)
    weight = check_weights(weights, len(ds.arrays["action"]), device)
    if weight is not None:  # episodes without weight are neither drawn nor scored (%BC keeps a third)
        weighted = np.add.reduceat(np.asarray(weights, np.float64), ds.ep_start) > 0
        if not weighted[train_eps].any():
            raise ValueError("weights are zero on every training episode (the rest are held out)")
        train_eps, val_eps = train_eps[weighted[train_eps]], val_eps[weighted[val_eps]]
    sampler = WindowSampler(ds, train_eps, c.frame_stack, loop.seed, require_next_action=False)
    val = held_out(ds, val_eps, c.frame_stack, device, False, train_eps)
    state = None if c.state_aux == 0 else standardised_state(policy, ds, train_eps)

    def loss_fn(b: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        features = policy.encoder(b["obs"], augment=True)
        terms = bc_terms(policy, features, b["action"])
        logs = {}
        if state is not None:
            aux = policy.state_error(features, state[b["index"]])
            logs["state_mse"] = float(aux.detach().mean())
            terms = terms + c.state_aux * aux
        loss = weighted_mean(terms, None if weight is None else weight[b["index"]])
        return loss, {"bc": float(loss.detach()), **logs}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        policy.eval()
        mean = chunked(policy, val["obs"])[0]
        mse = (torch.tanh(mean) - val["action"]).pow(2).mean()
        var = val["action"].var(0, unbiased=False).mean().clamp_min(1e-8)
        nll = -policy._log_prob(val["obs"], val["action"]).mean()
        metrics = {"mode_mse": float(mse), "mode_nmse": float(mse / var), "nll": float(nll)}
        if state is not None:  # 1 is predicting the training mean
            true = state[val["index"]]
            pred = chunked(lambda o: policy.state_head(policy.encoder(o)), val["obs"])
            metrics["state_nmse"] = float((pred - true).pow(2).mean() / true.var(0).mean())
        policy.train()
        return metrics

    objective = Objective("bc", loss_fn, evaluate)
    return fit_token_model(policy, ds, objective, sampler, steps, loop, batch_fn=pixel_batch)
