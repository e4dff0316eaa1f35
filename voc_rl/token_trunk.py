"""The token trunk that the behaviour prior (:mod:`voc_rl.prior`) and the TD critic
(:mod:`voc_rl.critic`) share, and the training loop they both run.

Both models read the token ids of a frame stack s (``n_context = frame_stack * tokens_per_frame``)
through their own :class:`TokenModel`: an ``nn.Embedding(vocab, emb_dim)`` of every token, flattened
and layer-normalised, then an MLP with two hidden layers whose input and output sizes each model sets.
:class:`TokenModelConfig` holds the fields both configs share and their size presets.

:func:`fit_token_model` is their loop; it follows :func:`voc_rl.occupancy_train.train_occupancy`: the
same episode split, TensorBoard logs, atomic checkpoints and exact resume from ``out/train_state.pt``.
"""

from __future__ import annotations

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
from torch import nn

from voc_rl.checkpoint import Callback, CheckpointError, load_checkpoint, save_checkpoint
from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import WindowSampler
from voc_rl.paths import optional_user_path
from voc_rl.presets import from_preset
from voc_rl.tokenizers.cache import model_fields
from voc_rl.utils import ema_update

EVAL_MAX = 4096  # held-out frames scored per evaluation (evenly spaced)
C = TypeVar("C", bound="TokenModelConfig")


@dataclass(frozen=True)
class TokenModelConfig:
    """Fields shared by :class:`~voc_rl.critic.CriticConfig` and :class:`~voc_rl.prior.BCConfig`."""

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
        # the defaults as well: the agents have used them at base size; no larger trunk was measured
        "base": {},
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

    @classmethod
    def for_dataset(cls: type[C], token_ds: PixelDataset, size: str = "small", **fields: Any) -> C:
        """The ``size`` preset with the vocabulary, tokens per frame, action size and tokenizer of
        the token dataset ``token_ds``, then ``fields``."""
        return cls.preset(size, **{**model_fields(token_ds), **fields})


# ---------------------------------------------------------------------- models
M = TypeVar("M", bound="TokenModel")


class TokenModel(nn.Module):
    """A token trunk (embedding, flatten, LayerNorm) and an MLP head; input checks and checkpoints."""

    FORMAT: ClassVar[str]
    CONFIG: ClassVar[type]

    def __init__(self, config: TokenModelConfig, extra_in: int, out: int):
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


# ---------------------------------------------------------------------- training
@dataclass
class TokenModelReport:
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, float]


Batch = dict[str, torch.Tensor]


def token_batch(
    ds: PixelDataset, index: np.ndarray, frame_stack: int, device: torch.device, nxt: bool
) -> Batch:
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


def window_starts(ds: PixelDataset, episodes: np.ndarray, nxt: bool) -> np.ndarray:
    """Flat frames of ``episodes`` that a window starts at, as :class:`WindowSampler` draws them."""
    starts, lengths = ds.ep_start[episodes], ds.ep_len[episodes]
    terminal = ds.arrays["is_terminal"][starts + lengths]
    n = np.where(nxt & ~terminal, lengths - 1, lengths)  # a_{t+1} exists up to T-2 (or s_T is terminal)
    return np.concatenate([s + np.arange(k) for s, k in zip(starts, n, strict=True)])


def eval_index(ds: PixelDataset, episodes: np.ndarray, nxt: bool) -> np.ndarray:
    """Up to EVAL_MAX evenly spaced held-out window starts (deterministic)."""
    valid = window_starts(ds, episodes, nxt)
    return valid[np.linspace(0, len(valid) - 1, min(len(valid), EVAL_MAX)).round().astype(int)]


def fit_token_model(
    model: TokenModel,
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
) -> TokenModelReport:
    """The loop of the prior and the critic: schedule, logs, evaluation, checkpoints, exact resume."""
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
        loss, logs = loss_fn(token_batch(ds, index, c.frame_stack, device, nxt))
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
    return TokenModelReport(model.step, time.perf_counter() - start, loss_value, metrics)
