"""Baselines on the occupancy model's tokens: a SARSA TD critic and a behaviour-cloning prior.

Both read the token ids of a frame stack s (``n_context = frame_stack * tokens_per_frame``) through
their own small trunk: an ``nn.Embedding(vocab, emb_dim)`` of every token, flattened and
layer-normalised, then an MLP with two hidden layers.

- :class:`TDCritic`: ``Q(s, a)`` of the behaviour policy by fitted Q evaluation (SARSA TD with the
  dataset's next action and an EMA target network). It predicts the *normalised* value
  ``(1 - gamma) Q``, a per-step reward scale at every gamma (Q itself reaches ``r_max / (1 - gamma)``,
  200 at gamma 0.99), regressed by MSE on ``(1 - gamma) r_t + gamma (1 - terminal) (1 - gamma)
  Q_target(s_{t+1}, a_{t+1})``; its output bias starts at the mean training reward.
- :class:`BCPolicy`: ``pi(a | s)``, a tanh-squashed diagonal Gaussian fitted by maximum likelihood
  to the dataset's actions (the proposal of candidate actions for the agents), with beta-NLL
  weighting (Seitzer et al., 2022): under plain NLL an action dimension that fits badly early gets a
  wide std, hence small gradients, and can stay unlearned (measured on a deterministic rule).
  Token dropout (0.2) and 2k steps by default: on 100k transitions its held-out NLL is best after
  1-2k steps and rises later as the std shrinks on the training episodes.

``train_td_critic`` and ``train_bc`` follow :func:`voc_rl.occupancy_train.train_occupancy`: the same
episode split, TensorBoard logs, atomic checkpoints and exact resume from ``out/train_state.pt``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voc_rl.checkpoint import Callback, CheckpointError, load_checkpoint, save_checkpoint
from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import WindowSampler, discounted_returns
from voc_rl.occupancy import ema_update
from voc_rl.occupancy_train import resolve_device
from voc_rl.paths import optional_user_path
from voc_rl.presets import from_preset
from voc_rl.tokenizers.cache import check_model_fits, model_fields

ACTION_EPS = 1e-4  # dataset actions are clamped to [-1 + eps, 1 - eps] before atanh
MC_TAIL = 0.05  # Monte-Carlo check: only states whose truncated tail weighs gamma^(T-t) <= this
EVAL_MAX = 4096  # held-out frames scored per evaluation (evenly spaced)


@dataclass(frozen=True)
class BaselineConfig:
    """Fields shared by :class:`CriticConfig` and :class:`BCConfig`."""

    vocab_size: int
    tokens_per_frame: int
    action_dim: int
    frame_stack: int = 3  # frames of context
    emb_dim: int = 16  # embedding size per token
    hidden: int = 256  # width of the two hidden layers
    lr: float = 3e-4  # AdamW; 100 warm-up steps, then cosine to 10% over ``steps``
    weight_decay: float = 0.0
    token_dropout: float = 0.0  # training only: each context token's embedding zeroed with this probability
    batch_size: int = 256
    steps: int = 10_000  # small: about 8 min on one CPU core (critic, 64-token frames, frame stack 3)
    tokenizer: str = ""  # backend name of the tokens' tokenizer (informational)
    tokenizer_sha256: str = ""  # checkpoint hash of that tokenizer: a model only reads its tokens

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"emb_dim": 4, "hidden": 32, "batch_size": 32, "steps": 50},  # tests: CPU seconds
        "small": {},  # the defaults
    }

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "tokens_per_frame", "action_dim", "frame_stack", "emb_dim", "hidden")
        for name in (*sizes, "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {self.token_dropout}")

    @property
    def n_context(self) -> int:
        return self.frame_stack * self.tokens_per_frame

    @classmethod
    def preset(cls, size: str, **fields: Any) -> Any:
        return from_preset(cls, cls.presets, size, fields, cls.__name__)


@dataclass(frozen=True)
class CriticConfig(BaselineConfig):
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


@dataclass(frozen=True)
class BCConfig(BaselineConfig):
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


def _config_for(cls: type, ds: PixelDataset, size: str, fields: dict[str, Any]) -> Any:
    return cls.preset(size, **{**model_fields(ds), **fields})


def critic_config_for(token_ds: PixelDataset, size: str = "small", **fields: Any) -> CriticConfig:
    """A :class:`CriticConfig` preset whose vocabulary, tokens per frame and action size fit ``token_ds``."""
    return _config_for(CriticConfig, token_ds, size, fields)


def bc_config_for(token_ds: PixelDataset, size: str = "small", **fields: Any) -> BCConfig:
    """A :class:`BCConfig` preset whose vocabulary, tokens per frame and action size fit ``token_ds``."""
    return _config_for(BCConfig, token_ds, size, fields)


# ---------------------------------------------------------------------- models
M = TypeVar("M", bound="_TokenModel")


class _TokenModel(nn.Module):
    """A token trunk (embedding, flatten, LayerNorm) and an MLP head; input checks and checkpoints."""

    FORMAT: ClassVar[str]
    CONFIG: ClassVar[type]

    def __init__(self, config: BaselineConfig, extra_in: int, out: int):
        super().__init__()
        self.config = config
        n = config.n_context * config.emb_dim
        self.emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.norm = nn.LayerNorm(n)
        self.mlp = nn.Sequential(
            nn.Linear(n + extra_in, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, out),
        )
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def features(self, context: torch.Tensor) -> torch.Tensor:
        """(B, n_context) token ids -> (B, n_context * emb_dim)."""
        x = self.emb(context)  # (B, n_context, emb_dim)
        p = self.config.token_dropout
        if self.training and p > 0:
            x = x * (torch.rand(*x.shape[:2], 1, device=x.device) >= p) / (1 - p)
        return self.norm(x.flatten(1))

    def check_context(self, context: Any) -> torch.Tensor:
        c, context = self.config, torch.as_tensor(context)
        if context.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"context must be integer token ids, got {context.dtype}")
        if context.ndim != 2 or context.shape[1] != c.n_context or len(context) == 0:
            raise ValueError(
                f"context must be (B, {c.n_context}) token ids (frame_stack={c.frame_stack} x "
                f"tokens_per_frame={c.tokens_per_frame}) with a non-empty batch, got {tuple(context.shape)}"
            )
        lo, hi = int(context.min()), int(context.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"context ids must be in [0, {c.vocab_size}), got [{lo}, {hi}]")
        return context.long().to(self.device)

    def check_actions(self, actions: Any, batch: int) -> torch.Tensor:
        """Actions (B, A) or (B, K, A) as float32 on the model's device."""
        actions, a = torch.as_tensor(actions), self.config.action_dim
        if not actions.is_floating_point():
            raise TypeError(f"actions must be float, got {actions.dtype}")
        if actions.ndim not in (2, 3) or actions.shape[0] != batch or actions.shape[-1] != a:
            raise ValueError(
                f"actions must be (B={batch}, action_dim={a}) or (B, K, {a}), got {tuple(actions.shape)}"
            )
        if not torch.isfinite(actions).all():
            raise ValueError("actions contain NaN or inf")
        return actions.float().to(self.device)

    def save(self, path: str | Path, **extra: Any) -> Path:
        return save_checkpoint(
            {
                "format": self.FORMAT,
                "config": dataclasses.asdict(self.config),
                "step": self.step,
                "model": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                **extra,
            },
            path,
        )

    @classmethod
    def load(cls: type[M], path: str | Path, **expect: Any) -> M:
        """A model from :meth:`save`; ``expect`` fields must match its config (else CheckpointError)."""
        ckpt = load_checkpoint(path, required=("format", "config", "model"))
        if ckpt["format"] != cls.FORMAT:
            raise CheckpointError(f"{path} has format {ckpt['format']!r}, expected {cls.FORMAT!r}")
        for key, want in expect.items():
            if key not in ckpt["config"]:
                raise ValueError(f"{cls.CONFIG.__name__} has no field {key!r}")
            if ckpt["config"][key] != want:
                raise CheckpointError(
                    f"{path} was trained with {key}={ckpt['config'][key]!r}, but {want!r} was asked for"
                )
        try:
            model = cls(cls.CONFIG(**ckpt["config"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its config does not fit this version of voc_rl: {exc}") from exc
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not match its config: {exc}") from exc
        model.step = int(ckpt.get("step", 0))
        return model.eval()

    def __repr__(self) -> str:
        c, n = self.config, sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}({c.n_context} context tokens, vocab {c.vocab_size}, emb {c.emb_dim}, "
            f"hidden {c.hidden}, {c.action_dim}-d actions, {n / 1e6:.2f}M params)"
        )


class TDCritic(_TokenModel):
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


class BCPolicy(_TokenModel):
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
        mean, log_std = self(context)
        if actions.ndim == 3:
            mean, log_std = mean[:, None], log_std[:, None]
        a = actions.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
        u = torch.atanh(a)  # (..., A)
        gauss = -0.5 * ((u - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        if beta > 0:  # without it, dimensions fitted badly early get a wide std and stop being learned
            gauss = gauss * torch.exp(2 * beta * log_std).detach()
        return (gauss - torch.log1p(-a * a)).sum(-1)  # change of variables: da/du = 1 - a^2

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


# ---------------------------------------------------------------------- training
@dataclass
class BaselineReport:
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, float]


Policy = Callable[[torch.Tensor], torch.Tensor]  # tokens of s_{t+1} (B, n_context) -> a_{t+1} (B, A)
Batch = dict[str, torch.Tensor]


def _batch(ds: PixelDataset, index: np.ndarray, frame_stack: int, device: torch.device, nxt: bool) -> Batch:
    """Token stacks, actions and rewards at flat frame indices (and at index + 1 where ``nxt``)."""
    arrays = ds.arrays
    if not nxt:
        obs = ds.stacks(index, frame_stack)
        return {
            "obs": torch.from_numpy(obs.astype(np.int64)).to(device),
            "action": torch.from_numpy(arrays["action"][index]).to(device),
        }
    stacks = ds.stacks(np.stack([index, index + 1], 1), frame_stack).astype(np.int64)  # (B, 2, n_context)
    return {
        "obs": torch.from_numpy(stacks[:, 0]).to(device),
        "action": torch.from_numpy(arrays["action"][index]).to(device),
        "reward": torch.from_numpy(arrays["reward"][index]).to(device),
        "next_obs": torch.from_numpy(stacks[:, 1]).to(device),
        "next_action": torch.from_numpy(arrays["action"][index + 1]).to(device),
        "next_terminal": torch.from_numpy(arrays["is_terminal"][index + 1]).to(device),
    }


def _window_starts(ds: PixelDataset, episodes: np.ndarray, nxt: bool) -> np.ndarray:
    """Flat frames of ``episodes`` that a window starts at, as :class:`WindowSampler` draws them."""
    starts, lengths = ds.ep_start[episodes], ds.ep_len[episodes]
    terminal = ds.arrays["is_terminal"][starts + lengths]
    n = np.where(nxt & ~terminal, lengths - 1, lengths)  # a_{t+1} exists up to T-2 (or s_T is terminal)
    return np.concatenate([s + np.arange(k) for s, k in zip(starts, n, strict=True)])


def _eval_index(ds: PixelDataset, episodes: np.ndarray, nxt: bool) -> np.ndarray:
    """Up to EVAL_MAX evenly spaced held-out window starts (deterministic)."""
    valid = _window_starts(ds, episodes, nxt)
    return valid[np.linspace(0, len(valid) - 1, min(len(valid), EVAL_MAX)).round().astype(int)]


def _fit(
    model: _TokenModel,
    ds: PixelDataset,
    *,
    loss_fn: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[], dict[str, float]],
    target: nn.Module | None,
    name: str,
    nxt: bool,
    sampler: WindowSampler,
    steps: int,
    seed: int,
    out: str | Path | None,
    log_every: int,
    eval_every: int,
    ckpt_every: int,
    progress: bool,
    callback: Callback | None,
) -> BaselineReport:
    """The loop shared by both baselines: schedule, logs, evaluation, checkpoints, exact resume."""
    from tqdm import tqdm

    c, device = model.config, model.device
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    torch.manual_seed(seed)
    out = optional_user_path(out)
    writer = None
    modules = {"model": model} if target is None else {"model": model, "target": target}
    if out is not None:
        from torch.utils.tensorboard import SummaryWriter

        state_file = out / "train_state.pt"
        if state_file.exists():
            state = load_checkpoint(state_file, required=("config", *modules, "optimizer", "step"))
            if state["config"] != dataclasses.asdict(c):
                diff = {k: v for k, v in state["config"].items() if dataclasses.asdict(c).get(k) != v}
                raise CheckpointError(
                    f"{state_file} belongs to a run with another config (differs in {diff}); "
                    "use another output folder or the same config"
                )
            for key, module in modules.items():
                module.load_state_dict(state[key])
            opt.load_state_dict(state["optimizer"])
            model.step = int(state["step"])
            sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            print(f"resumed {name} at step {model.step} from {state_file}")
        writer = SummaryWriter(str(out / "tb"))
        writer.add_text("config", json.dumps(dataclasses.asdict(c), indent=1))
    start, loss_value, tic = time.perf_counter(), float("nan"), time.perf_counter()
    bar = tqdm(total=steps, initial=model.step, disable=not progress, desc=f"fit {name}", unit="step")
    while model.step < steps:
        # warm-up, then cosine to 10% over the config's steps (``steps`` only says where to stop)
        cos = math.cos(math.pi * min(model.step / c.steps, 1.0))
        lr = c.lr * min(1.0, (model.step + 1) / 100) * (0.55 + 0.45 * cos)
        for group in opt.param_groups:
            group["lr"] = lr
        index = sampler.sample_indices(c.batch_size, 0.0)[0]
        loss, logs = loss_fn(_batch(ds, index, c.frame_stack, device, nxt))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # a guard against rare spikes only
        opt.step()
        if target is not None:
            ema_update(target, model, c.target_rate)
        model.step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        stop = callback is not None and callback(model.step, {"loss": loss_value, **logs}) is False
        if model.step % log_every == 0:
            rate = log_every / (time.perf_counter() - tic)
            tic = time.perf_counter()
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if writer is not None:
                for k, v in {**logs, "lr": lr, "steps_per_s": rate}.items():
                    writer.add_scalar(f"train/{k}", v, model.step)
        if writer is not None and (model.step % eval_every == 0 or model.step == steps):
            for k, v in evaluate().items():
                writer.add_scalar(f"val/{k}", v, model.step)
            model.train()
        if out is not None and (model.step % ckpt_every == 0 or model.step == steps or stop):
            save_checkpoint(
                {
                    "config": dataclasses.asdict(c),
                    **{k: m.state_dict() for k, m in modules.items()},
                    "optimizer": opt.state_dict(),
                    "step": model.step,
                    "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),  # token dropout draws from it
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
                out / "train_state.pt",
            )
            model.save(out / f"{name}.pt")
        if stop:
            break
    bar.close()
    metrics = evaluate()
    if writer is not None:
        writer.close()
    model.eval()
    return BaselineReport(model.step, time.perf_counter() - start, loss_value, metrics)


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
    token_ds: PixelDataset,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
    val_fraction: float = 0.1,
    policy: Policy | None = None,
    log_every: int = 100,
    eval_every: int = 1000,
    ckpt_every: int = 1000,
    callback: Callback | None = None,
) -> BaselineReport:
    """Fit ``critic`` by SARSA TD on the training episodes of ``token_ds`` (``ds.split(val_fraction,
    seed)``, the occupancy model's split) with an EMA target network; returns a report.

    ``policy`` maps the tokens of s_{t+1} to a_{t+1} (the value of that policy); by default the
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
    check_model_fits(c, token_ds, "critic_config_for")
    steps = steps or c.steps
    device = resolve_device(device)
    critic.to(device).train()
    train_eps, val_eps = token_ds.split(val_fraction, seed)
    val_eps = val_eps if len(val_eps) else train_eps
    sampler = WindowSampler(token_ds, train_eps, frame_stack=c.frame_stack, seed=seed)
    if critic.step == 0:  # start at the normalised value of a constant reward: the training mean
        mean_reward = token_ds.arrays["reward"][_window_starts(token_ds, train_eps, True)].mean()
        with torch.no_grad():
            critic.mlp[-1].bias.fill_(float(mean_reward))
    target = copy.deepcopy(critic).eval().requires_grad_(False)
    val = _batch(token_ds, _eval_index(token_ds, val_eps, True), c.frame_stack, device, True)
    idx = _eval_index(token_ds, val_eps, False)
    returns, tails = discounted_returns(token_ds, c.gamma)
    episode = token_ds.arrays["episode"][idx]
    last = token_ds.ep_start[episode] + token_ds.ep_len[episode]
    far = token_ds.arrays["is_terminal"][last] | (c.gamma ** (last - idx).astype(float) <= MC_TAIL)
    mc = _batch(token_ds, idx[far], c.frame_stack, device, False) if far.any() else None
    mc_true = torch.from_numpy(returns[idx[far]]).float().to(device)

    def act(b: Batch) -> Batch:
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

    return _fit(
        critic, token_ds, loss_fn=lambda b: critic_td_loss(critic, target, act(b)), evaluate=evaluate,
        target=target, name="critic", nxt=True, sampler=sampler, steps=steps, seed=seed, out=out,
        log_every=log_every, eval_every=eval_every, ckpt_every=ckpt_every, progress=progress,
        callback=callback,
    )  # fmt: skip


def train_bc(
    policy: BCPolicy,
    token_ds: PixelDataset,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
    val_fraction: float = 0.1,
    log_every: int = 100,
    eval_every: int = 1000,
    ckpt_every: int = 1000,
    callback: Callback | None = None,
) -> BaselineReport:
    """Fit ``policy`` by maximum likelihood (beta-NLL weighted, ``config.nll_beta``) on the training
    episodes' actions (the occupancy model's split); returns a report. Held-out metrics: ``nll``
    (per state, of actions clamped to ``[-1 + 1e-4, 1 - 1e-4]``), ``mode_mse`` (mean over action
    dimensions of ``(tanh(mean) - a)^2``) and ``mode_nmse`` (the same over the actions' variance: 1 is
    predicting the mean action).
    """
    c = policy.config
    check_model_fits(c, token_ds, "bc_config_for")
    steps = steps or c.steps
    device = resolve_device(device)
    policy.to(device).train()
    train_eps, val_eps = token_ds.split(val_fraction, seed)
    val_eps = val_eps if len(val_eps) else train_eps
    sampler = WindowSampler(token_ds, train_eps, c.frame_stack, seed, require_next_action=False)
    val = _batch(token_ds, _eval_index(token_ds, val_eps, False), c.frame_stack, device, False)

    def loss_fn(b: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss = -policy._log_prob(b["obs"], b["action"], c.nll_beta).mean()
        return loss, {"beta_nll" if c.nll_beta else "nll": float(loss.detach())}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        policy.eval()
        mse = (torch.tanh(policy(val["obs"])[0]) - val["action"]).pow(2).mean()
        var = val["action"].var(0, unbiased=False).mean().clamp_min(1e-8)
        nll = -policy._log_prob(val["obs"], val["action"]).mean()
        return {"nll": float(nll), "mode_mse": float(mse), "mode_nmse": float(mse / var)}

    return _fit(
        policy, token_ds, loss_fn=loss_fn, evaluate=evaluate, target=None, name="bc", nxt=False,
        sampler=sampler, steps=steps, seed=seed, out=out, log_every=log_every, eval_every=eval_every,
        ckpt_every=ckpt_every, progress=progress, callback=callback,
    )  # fmt: skip
