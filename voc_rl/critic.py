"""The TD critic: ``Q(s, a)`` of the behaviour policy (or of a given policy) from the tokens of s, by
fitted Q evaluation, the value baseline the occupancy model is compared with and the scorer of the
``td-critic`` agent.

:class:`TDCritic` reads the tokens through the shared trunk of :mod:`voc_rl.token_trunk` and learns by
SARSA TD with the dataset's next action and an EMA target network. It predicts the *normalised* value
``(1 - gamma) Q``, a per-step reward scale at every gamma (Q itself reaches ``r_max / (1 - gamma)``,
200 at gamma 0.99), regressed by MSE on ``(1 - gamma) r_t + gamma (1 - terminal) (1 - gamma)
Q_target(s_{t+1}, a_{t+1})`` (:func:`critic_td_loss`); its output bias starts at the mean training
reward. :func:`train_td_critic` fits it with :func:`voc_rl.token_trunk.fit_token_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voc_rl.data.dataset import TokenView
from voc_rl.data.sampler import WindowSampler, check_action_table, discounted_returns, table_actions
from voc_rl.token_trunk import (
    Batch,
    Objective,
    TokenModel,
    TokenModelConfig,
    eval_index,
    fit_token_model,
    token_batch,
    window_starts,
)
from voc_rl.tokenizers.cache import check_model_fits
from voc_rl.train_loop import Loop, TrainReport
from voc_rl.utils import adamw, make_target, resolve_device

MC_TAIL = 0.05  # Monte-Carlo check: only states whose truncated tail weighs gamma^(T-t) <= this

Policy = Callable[[torch.Tensor], torch.Tensor]  # tokens of s_{t+1} (B, n_context) -> a_{t+1} (B, A)


@dataclass(frozen=True)
class CriticConfig(TokenModelConfig):
    """The TD critic's config. ``token_dropout`` stays 0: with it the critic diverged at gamma 0.99
    (the online network trains with dropout, the target bootstraps without)."""

    gamma: float = 0.9
    # EMA: target <- (1 - rate) target + rate online, each step. Held-out NMSE against Monte-Carlo
    # returns at gamma 0.99 after 10k steps (cheetah-run, 100k transitions): 0.09 at 0.05, 0.18 at 0.01
    target_rate: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must be in (0, 1], got {self.target_rate}")


# ---------------------------------------------------------------------- model
class TDCritic(TokenModel):
    """``Q(s, a)`` of the behaviour policy from the tokens of s and an action, by SARSA TD."""

    FORMAT = "voc_rl.td_critic/1"
    CONFIG = CriticConfig
    config: CriticConfig

    def __init__(self, config: CriticConfig):
        super().__init__(config, extra_in=config.action_dim, out=1)

    def normalized(self, context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(1 - gamma) Q``: (B, n_context) long, (B, A) -> (B,); no input checks (training path)."""
        return self.mlp(torch.cat([self.features(context), action], -1))[:, 0]

    def forward(self, context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q in return units, (B,); differentiable, no input checks."""
        return self.normalized(context, action) / (1.0 - self.config.gamma)

    @torch.no_grad()
    def q_values(self, context: Any, actions: Any) -> torch.Tensor:
        """Q for actions (B, A) -> (B,), or K candidate actions per state (B, K, A) -> (B, K)."""
        context = self.check_context(context)
        actions = self.check_actions(actions, len(context))
        if actions.ndim == 2:
            return self(context, actions)
        b, k, _ = actions.shape
        feats = self.features(context).repeat_interleave(k, 0)  # the trunk once per state
        out = self.mlp(torch.cat([feats, actions.reshape(b * k, -1)], -1))[:, 0]
        return out.view(b, k) / (1.0 - self.config.gamma)


# ---------------------------------------------------------------------- training
def critic_td_loss(critic: TDCritic, target: TDCritic, b: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of ``(1 - gamma) Q(s_t, a_t)`` to its SARSA target; ``b["next_action"]`` is a_{t+1}.

    The target ``(1 - gamma) r_t + gamma (1 - terminal_{t+1}) (1 - gamma) Q_target(s_{t+1}, a_{t+1})``
    is on the per-step reward scale at every gamma (a terminal s_{t+1} is absorbing with reward 0).
    """
    g = critic.config.gamma
    with torch.no_grad():
        boot = target.normalized(b["next_obs"], b["next_action"]) * (~b["next_terminal"]).float()
        y = (1.0 - g) * b["reward"] + g * boot
    pred = critic.normalized(b["obs"], b["action"])
    loss = F.mse_loss(pred, y)
    return loss, {"td": float(loss.detach()), "q_mean": float(pred.detach().mean()) / (1.0 - g)}


def train_td_critic(
    critic: TDCritic,
    token_ds: TokenView,
    steps: int | None = None,
    loop: Loop | None = None,
    val_fraction: float = 0.1,
    policy: Policy | None = None,
    next_actions: np.ndarray | None = None,
) -> TrainReport:
    """Fit ``critic`` by SARSA TD on the training episodes of ``token_ds`` (``ds.split(val_fraction,
    seed)``, the occupancy model's split) with an EMA target network; returns a report.

    ``policy`` maps the tokens of s_{t+1} to a_{t+1} (the value of that policy: fitted Q evaluation);
    ``next_actions``, a table of a policy's actions at every frame ((N, K, A), one of the K drawn per
    row), does the same for a policy that reads pixels or the recorded state; by default the
    dataset's next action is used (the behaviour policy's value). Held-out metrics (the report's
    ``metrics`` and ``val/...`` in TensorBoard):

    - ``td_rmse``: RMSE of the Bellman residual ``Q(s, a) - r - gamma Q(s', a')`` in return units
      (one sampled transition each: on a stochastic task it does not fall to 0).
    - ``mc_nmse``, ``mc_rmse``, ``mc_bias``: Q(s_t, a_t) against the episode's discounted return to its
      end (:func:`voc_rl.data.discounted_returns`), on states whose truncated tail weighs
      ``gamma^(T-t) <= 0.05`` (all states of terminated episodes). This target is one sample of a
      stochastic return (its noise inflates the NMSE) and truncated at the episode's end: it misses
      up to ``gamma^(T-t) r_max / (1 - gamma)`` (``mc_tail_max``, the largest such bound among the
      states used; up to 5% of the return scale, so a small positive ``mc_bias`` is expected), which
      is why states nearer the end are left out. ``mc_states`` counts the states used.
    """
    c = critic.config
    check_model_fits(c, token_ds, "CriticConfig.for_dataset")
    if policy is not None and next_actions is not None:
        raise ValueError("give the policy either as a callable (policy) or as an action table (next_actions)")
    if next_actions is not None:
        check_action_table(next_actions, token_ds)
    steps, loop = steps or c.steps, loop or Loop()
    device = resolve_device(loop.device)
    critic.to(device).train()
    train_eps, val_eps = token_ds.split(val_fraction, loop.seed)
    val_eps = val_eps if len(val_eps) else train_eps
    sampler = WindowSampler(token_ds, train_eps, frame_stack=c.frame_stack, seed=loop.seed)
    if critic.step == 0:  # start at the normalised value of a constant reward: the training mean
        mean_reward = token_ds.arrays["reward"][window_starts(token_ds, train_eps, True)].mean()
        with torch.no_grad():
            critic.mlp[-1].bias.fill_(float(mean_reward))
    target = make_target(critic)
    val_index = eval_index(token_ds, val_eps, True)
    val = token_batch(token_ds, val_index, c.frame_stack, device, True)
    val["index"] = torch.from_numpy(val_index).to(device)
    idx = eval_index(token_ds, val_eps, False)
    returns, tails = discounted_returns(token_ds, c.gamma)
    episode = token_ds.arrays["episode"][idx]
    last = token_ds.ep_start[episode] + token_ds.ep_len[episode]
    far = token_ds.arrays["is_terminal"][last] | (c.gamma ** (last - idx).astype(float) <= MC_TAIL)
    mc = token_batch(token_ds, idx[far], c.frame_stack, device, False) if far.any() else None
    mc_true = torch.from_numpy(returns[idx[far]]).float().to(device)

    def act(b: Batch) -> Batch:
        if next_actions is not None:
            index = b["index"].cpu().numpy() + 1
            return {
                **b,
                "next_action": torch.from_numpy(table_actions(next_actions, index, sampler.rng)).to(device),
            }
        if policy is None:
            return b
        return {**b, "next_action": policy(b["next_obs"]).to(device)}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        critic.eval()
        b = act(val)
        boot = critic(b["next_obs"], b["next_action"]) * (~b["next_terminal"]).float()
        resid = critic(b["obs"], b["action"]) - b["reward"] - c.gamma * boot
        metrics = {"td_rmse": float(resid.pow(2).mean().sqrt())}
        if mc is not None:
            err = critic(mc["obs"], mc["action"]) - mc_true
            metrics |= {
                "mc_nmse": float(err.pow(2).mean() / mc_true.var(unbiased=False).clamp_min(1e-8)),
                "mc_rmse": float(err.pow(2).mean().sqrt()),
                "mc_bias": float(err.mean()),
                "mc_states": float(len(mc_true)),
                "mc_tail_max": float(tails[idx[far]].max()),
            }
        return metrics

    objective = Objective(
        "critic", lambda b: critic_td_loss(critic, target, act(b)), evaluate, target=target, next_frames=True
    )
    return fit_token_model(critic, token_ds, objective, sampler, steps, loop)


def distill_q(
    critic: TDCritic,
    context: torch.Tensor,
    actions: torch.Tensor,
    q: torch.Tensor,
    steps: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Amortise a slow scorer into ``critic``: regress its ``(1 - gamma) Q`` on the estimates ``q``
    (N, K) of the actions ``actions`` (N, K, A) at the states ``context`` (N, n_context) by MSE, in
    memory (the pairs fit there), on the critic's device. Returns the fit: ``distill_nmse`` on a
    held-out tenth of the states, and ``distill_diff_corr``, the held-out correlation of the
    within-state differences ``Q(s, a_k) - mean_k Q(s, a_k)`` (what advantage weights read) with
    the scorer's."""
    c, device = critic.config, critic.device
    context, actions = critic.check_context(context), critic.check_actions(actions, len(context))
    y = torch.as_tensor(q, dtype=torch.float32, device=device) * (1.0 - c.gamma)
    if y.shape != actions.shape[:2] or not torch.isfinite(y).all():
        raise ValueError(f"q must be finite, (N, K) = {tuple(actions.shape[:2])}; got {tuple(y.shape)}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(context), generator=gen).to(device)
    n_val = max(1, len(context) // 10)
    val, train = order[:n_val], order[n_val:]
    k = actions.shape[1]
    with torch.no_grad():
        critic.mlp[-1].bias.fill_(float(y[train].mean()))
    opt = adamw(critic.parameters(), c.lr, c.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * c.lr)
    critic.train()
    for _ in range(steps):
        rows = train[torch.randint(len(train), (c.batch_size,), generator=gen).to(device)]
        cols = torch.randint(k, (c.batch_size,), generator=gen).to(device)
        loss = F.mse_loss(critic.normalized(context[rows], actions[rows, cols]), y[rows, cols])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    critic.eval()
    critic.step += steps
    with torch.no_grad():
        pred = critic.q_values(context[val], actions[val]) * (1.0 - c.gamma)
    target = y[val]
    nmse = float((pred - target).pow(2).mean() / target.var(unbiased=False).clamp_min(1e-12))
    dp, dt = pred - pred.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
    corr = float((dp * dt).sum() / (dp.norm() * dt.norm()).clamp_min(1e-12)) if k > 1 else float("nan")
    return {"distill_nmse": nmse, "distill_diff_corr": corr}
