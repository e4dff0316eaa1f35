"""The field's offline-RL baselines from pixels on the shared pixel trunk: IQL and TD3+BC (DrQ+BC).

One trainer, :func:`train_actor_critic`, fits a :class:`PixelCritic` (a pixel encoder,
twin Q heads and, for IQL, a state-value head) and an actor, a :class:`~voc_rl.pixel_policy.PixelBCPolicy`
whose encoder *is* the critic's (the same module): as in DrQ-v2 and V-D4RL's DrQ+BC, only the critic's
losses train the encoder (with random shifts), and the actor's head reads its features detached.

- ``iql`` (Kostrikov et al., arXiv 2110.06169): V(s) by expectile regression (``expectile``) on the
  target network's min Q(s, a_t); Q by TD on ``r + gamma V(s')``; the actor by advantage-weighted
  regression of the dataset action, weights ``exp(A / (temperature std(A)))`` clipped at ``clip``
  with ``A = min Q_target(s, a_t) - V(s)`` (the advantages' own spread per batch sets the scale,
  as :func:`voc_rl.prior.advantage_weights` does for the other agents).
- ``td3bc`` (Fujimoto & Gu, arXiv 2106.06860; DrQ+BC in V-D4RL, arXiv 2206.04779): Q by TD on
  ``r + gamma min Q_target(s', pi(s') + clipped noise)``; the actor by
  ``-lambda Q(s, pi(s)) + MSE(pi(s), a_t)`` with ``lambda = alpha / mean |Q|`` (``alpha = 2.5``).

Values are learned on the per-step reward scale, ``(1 - gamma) Q``, as :mod:`voc_rl.critic` does;
``PixelCritic.q_values`` returns Q in return units. Both use one-step TD (V-D4RL used 3-step
returns), an EMA target (``target_rate``) and the dataset's training episodes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import WindowSampler
from voc_rl.pixel_policy import PixelBCPolicy, bc_terms, held_out
from voc_rl.pixel_trunk import PixelModel, PixelModelConfig, chunked, mlp, pixel_batch, standardised_state
from voc_rl.token_trunk import Batch, window_starts
from voc_rl.train_loop import Loop, Run, TrainReport, train
from voc_rl.utils import adamw, ema_update, make_target, resolve_device

ALGOS = ("iql", "td3bc")


@dataclass(frozen=True)
class ActorCriticConfig(PixelModelConfig):
    """IQL's and TD3+BC's config (the encoder and heads of :class:`PixelModelConfig`)."""

    algo: str = "iql"
    gamma: float = 0.9
    target_rate: float = 0.01  # EMA of the target network per step (V-D4RL's DrQ+BC: 0.01)
    expectile: float = 0.7  # iql: tau of V's expectile regression (IQL's locomotion setting)
    temperature: float = 1.0  # iql: the advantage weights' beta in units of the batch's std(A)
    clip: float = 20.0  # iql: the largest advantage weight
    alpha: float = 2.5  # td3bc: lambda = alpha / mean |Q|
    policy_noise: float = 0.2  # td3bc: target policy smoothing noise, clipped at noise_clip
    noise_clip: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose from {ALGOS}")
        if not 0.0 <= self.gamma < 1.0 or not 0.0 < self.target_rate <= 1.0:
            raise ValueError(
                f"need gamma in [0, 1) and target_rate in (0, 1], got {self.gamma}, {self.target_rate}"
            )
        if not 0.5 <= self.expectile < 1.0:
            raise ValueError(f"expectile must be in [0.5, 1), got {self.expectile}")
        if self.temperature <= 0 or self.clip <= 1 or self.alpha <= 0:
            raise ValueError("need temperature > 0, clip > 1 and alpha > 0")
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ValueError("need policy_noise >= 0 and noise_clip >= 0")


class PixelCritic(PixelModel):
    """Twin ``(1 - gamma) Q(s, a)`` heads (and, for IQL, ``(1 - gamma) V(s)``) on the pixel encoder."""

    FORMAT = "voc_rl.pixel_critic/1"
    CONFIG = ActorCriticConfig
    config: ActorCriticConfig

    def __init__(self, config: ActorCriticConfig):
        super().__init__(config)
        f, h, a = config.feature_dim, config.hidden, config.action_dim
        self.q1, self.q2 = mlp(f + a, h, 1), mlp(f + a, h, 1)
        self.v = mlp(f, h, 1) if config.algo == "iql" else None

    def qs(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both normalised Q heads, (B,) each."""
        x = torch.cat([features, action], -1)
        return self.q1(x)[:, 0], self.q2(x)[:, 0]

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """IQL's normalised V(s), (B,)."""
        assert self.v is not None, "a td3bc critic has no V head"
        return self.v(features)[:, 0]

    @torch.no_grad()
    def q_values(self, obs: Any, actions: Any) -> torch.Tensor:
        """min of the twin Q in return units: actions (B, A) -> (B,) or (B, K, A) -> (B, K)."""
        obs = self.check_context(obs)
        actions = self.check_actions(actions, len(obs))
        feats = chunked(self.encoder, obs)
        k = 1 if actions.ndim == 2 else actions.shape[1]
        flat = actions.reshape(len(obs) * k, -1)
        q = torch.minimum(*self.qs(feats.repeat_interleave(k, 0), flat)) / (1.0 - self.config.gamma)
        return q.view(len(obs), k) if actions.ndim == 3 else q

    @torch.no_grad()
    def state_values(self, obs: Any) -> torch.Tensor:
        """IQL's V(s) in return units, (B,)."""
        return self.value(chunked(self.encoder, self.check_context(obs))) / (1.0 - self.config.gamma)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean of ``|tau - 1(diff < 0)| diff^2``: the asymmetric L2 whose minimiser is the tau-expectile."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


def _losses(critic: PixelCritic, actor: PixelBCPolicy, target: PixelCritic, b: Batch,
            state: torch.Tensor | None = None
            ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:  # fmt: skip
    """The actor's and the critic's losses on batch ``b``; ``state`` (every frame's standardised
    recorded state) adds the auxiliary target of ``state_aux`` to the critic's, which trains the encoder."""
    c = critic.config
    g = c.gamma
    feats = critic.encoder(b["obs"], augment=True)
    with torch.no_grad():
        t_feats = target.encoder(torch.cat([b["obs"], b["next_obs"]]), augment=True)
        t_obs, t_next = t_feats.chunk(2)
        alive = (~b["next_terminal"]).float()
        q_data_t = torch.minimum(*target.qs(t_obs, b["action"]))
        if c.algo == "iql":
            boot = target.value(t_next)
        else:
            mean, _ = actor.heads(t_next)
            noise = (torch.randn_like(mean) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            boot = torch.minimum(*target.qs(t_next, (torch.tanh(mean) + noise).clamp(-1, 1)))
        y = (1.0 - g) * b["reward"] + g * alive * boot
    q1, q2 = critic.qs(feats, b["action"])
    q_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
    logs = {"td": float(q_loss.detach()) / 2, "q_mean": float(q1.detach().mean()) / (1.0 - g)}
    if state is not None:
        aux = critic.state_error(feats, state[b["index"]]).mean()
        q_loss = q_loss + c.state_aux * aux
        logs["state_mse"] = float(aux.detach())
    f = feats.detach()
    if c.algo == "iql":
        v = critic.value(feats)
        v_loss = expectile_loss(q_data_t - v, c.expectile)
        adv = (q_data_t - v.detach()).detach()
        z = adv / (c.temperature * adv.std().clamp_min(1e-8))
        w = torch.exp(z.clamp(max=float(np.log(c.clip))))
        terms = bc_terms(actor, f, b["action"])
        actor_loss = (w * terms).sum() / w.sum()
        logs |= {"v_loss": float(v_loss.detach()), "adv_std": float(adv.std()) / (1.0 - g)}
        return {"actor": actor_loss, "critic": q_loss + v_loss}, logs
    mean, _ = actor.heads(f)
    pi = torch.tanh(mean)
    q_pi = critic.qs(f, pi)[0]
    lam = c.alpha / q_pi.detach().abs().mean().clamp_min(1e-6)
    bc = bc_terms(actor, f, b["action"]).mean()
    actor_loss = -lam * q_pi.mean() + bc
    logs |= {"bc": float(bc.detach()), "lambda": float(lam)}
    return {"actor": actor_loss, "critic": q_loss}, logs  # the actor's first: its loss reads q1


def make_actor(critic: PixelCritic) -> PixelBCPolicy:
    """The actor whose encoder is ``critic``'s own module (shared, trained by the critic only)."""
    from voc_rl.pixel_policy import PixelBCConfig

    c = critic.config
    fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(PixelModelConfig)}
    fields |= {"state_aux": 0.0, "state_dim": 0}  # the critic's encoder (and head) learn the state
    actor = PixelBCPolicy(PixelBCConfig(**fields)).to(critic.device)
    actor.encoder = critic.encoder
    return actor


def train_actor_critic(
    critic: PixelCritic,
    actor: PixelBCPolicy,
    ds: PixelDataset,
    steps: int | None = None,
    loop: Loop | None = None,
    val_fraction: float = 0.1,
) -> TrainReport:
    """Fit ``critic`` and ``actor`` (from :func:`make_actor`) by the config's ``algo`` on the training
    episodes of the pixel dataset ``ds``. Held-out metrics: the actor's ``mode_mse`` and ``mode_nmse``
    against the dataset's actions, the critic's ``td_rmse`` (return units) and ``q_mean``."""
    c = critic.config
    if actor.encoder is not critic.encoder:
        raise ValueError("the actor must share the critic's encoder: make it with make_actor(critic)")
    steps, loop = steps or c.steps, loop or Loop()
    device = resolve_device(loop.device)
    critic.to(device).train()
    actor.to(device).train()
    train_eps, val_eps = ds.split(val_fraction, loop.seed)
    sampler = WindowSampler(ds, train_eps, c.frame_stack, loop.seed)
    if critic.step == 0:  # start Q (and V) at the normalised value of a constant reward: the mean
        mean_reward = float(ds.arrays["reward"][window_starts(ds, train_eps, True)].mean())
        with torch.no_grad():
            for head in (critic.q1, critic.q2, *([critic.v] if critic.v is not None else [])):
                head[-1].bias.fill_(mean_reward)
    target = make_target(critic)
    val = held_out(ds, val_eps, c.frame_stack, device, True, train_eps)

    state = None if c.state_aux == 0 else standardised_state(critic, ds, train_eps)

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        index = sampler.sample_indices(c.batch_size, 0.0)[0]
        batch = {
            **pixel_batch(ds, index, c.frame_stack, device, True),
            "index": torch.from_numpy(index).to(device),
        }
        return _losses(critic, actor, target, batch, state)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        critic.eval()
        feats = chunked(critic.encoder, val["obs"])
        next_feats = chunked(critic.encoder, val["next_obs"])
        mse = (torch.tanh(actor.heads(feats)[0]) - val["action"]).pow(2).mean()
        var = val["action"].var(0, unbiased=False).mean().clamp_min(1e-8)
        q = torch.minimum(*critic.qs(feats, val["action"]))
        q_next = torch.minimum(*critic.qs(next_feats, val["next_action"]))
        resid = q - (1 - c.gamma) * val["reward"] - c.gamma * (~val["next_terminal"]).float() * q_next
        critic.train()
        return {"mode_mse": float(mse), "mode_nmse": float(mse / var),
                "td_rmse": float(resid.pow(2).mean().sqrt()) / (1 - c.gamma),
                "q_mean": float(q.mean()) / (1 - c.gamma)}  # fmt: skip

    run = Run(
        name=c.algo,
        config=c,
        modules={"model": critic, "actor_head": actor.head, "target": target},
        optimizers={  # the actor's step first: its loss reads the critic's Q heads before they move
            "actor": adamw(actor.head.parameters(), c.lr, c.weight_decay),
            "critic": adamw(critic.parameters(), c.lr, c.weight_decay),
        },
        step=step,
        rngs=[sampler.rng],
        data_seed=loop.seed,
        device=device,
        save=lambda folder: (critic.save(folder / "critic.pt"), _save_actor(actor, critic, folder)),
        clip=10.0,
        after_step=lambda: ema_update(target, critic, c.target_rate),
        validate=evaluate,
    )
    report = train(run, steps, loop.defaults(log_every=100, eval_every=1000, ckpt_every=1000))
    actor.step = critic.step
    return report


def _save_actor(actor: PixelBCPolicy, critic: PixelCritic, folder: Any) -> None:
    actor.step = critic.step
    actor.save(folder / "actor.pt")
