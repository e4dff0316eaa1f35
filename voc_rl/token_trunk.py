"""The token trunk that the behaviour prior (:mod:`voc_rl.prior`) and the TD critic
(:mod:`voc_rl.critic`) share, and their batches and training.

Both models read the token ids of a frame stack s (``n_context = frame_stack * tokens_per_frame``)
through their own :class:`TokenModel`: an ``nn.Embedding(vocab, emb_dim)`` of every token, flattened
and layer-normalised, then an MLP with two hidden layers whose input and output sizes each model sets.
:class:`TokenModelConfig` holds the fields both configs share and their size presets.

:func:`token_batch` turns flat frame indices into their tensors; :func:`fit_token_model` trains either
model in the shared loop (:mod:`voc_rl.train_loop`) on such batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from voc_rl.control_model import ControlModel
from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.data.sampler import WindowSampler
from voc_rl.presets import from_preset
from voc_rl.tokenizers.cache import model_fields
from voc_rl.train_loop import Loop, Run, TrainReport, train
from voc_rl.typed import check_fields
from voc_rl.utils import adamw, ema_update, to_tensors

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
    tokenizer_sha256: str = ""  # the key of its tokens (tokenizers.cache): a model reads only those

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"emb_dim": 4, "hidden": 32, "batch_size": 32, "steps": 50},  # tests: CPU seconds
        "small": {},  # the defaults
        # the defaults as well: the agents have used them at base size; no larger trunk was measured
        "base": {},
    }

    def __post_init__(self) -> None:
        check_fields(self)
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
    def for_dataset(cls: type[C], token_ds: TokenView, size: str = "small", **fields: Any) -> C:
        """The ``size`` preset with the vocabulary, tokens per frame, action size and tokenizer of
        the token dataset ``token_ds``, then ``fields``."""
        return cls.preset(size, **{**model_fields(token_ds), **fields})


# ---------------------------------------------------------------------- models


class TokenModel(ControlModel):
    """A token trunk (embedding, flatten, LayerNorm) and an MLP head; input checks and checkpoints."""

    def __init__(self, config: TokenModelConfig, extra_in: int, out: int):
        super().__init__(config)
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

    def __repr__(self) -> str:
        c, n = self.config, sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}({c.n_context} context tokens, vocab {c.vocab_size}, emb {c.emb_dim}, "
            f"hidden {c.hidden}, {c.action_dim}-d actions, {n / 1e6:.2f}M params)"
        )


# ---------------------------------------------------------------------- training
Batch = dict[str, torch.Tensor]


def token_batch(
    ds: PixelDataset, index: np.ndarray, frame_stack: int, device: torch.device, nxt: bool
) -> Batch:
    """Token stacks, actions and rewards at flat frame indices (and at index + 1 where ``nxt``)."""
    arrays = ds.arrays
    if not nxt:
        return to_tensors({"obs": ds.stacks(index, frame_stack), "action": arrays["action"][index]}, device)
    stacks = ds.stacks(np.stack([index, index + 1], 1), frame_stack)  # (B, 2, n_context)
    batch = {
        "obs": stacks[:, 0],
        "action": arrays["action"][index],
        "reward": arrays["reward"][index],
        "next_obs": stacks[:, 1],
        "next_action": arrays["action"][index + 1],
        "next_terminal": arrays["is_terminal"][index + 1],
    }
    return to_tensors(batch, device)


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


@dataclass(frozen=True)
class Objective:
    """What a token model minimises, for :func:`fit_token_model`."""

    name: str  # the run's name and its model file's (``{name}.pt``)
    loss: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]  # a batch -> the loss and its logs
    evaluate: Callable[[], dict[str, float]]  # the held-out metrics
    target: nn.Module | None = None  # an EMA copy of the model, updated after every step
    next_frames: bool = False  # batches also carry s_{t+1} and a_{t+1} (TD targets)


def fit_token_model(
    model: Any,
    ds: PixelDataset,
    objective: Objective,
    sampler: WindowSampler,
    steps: int,
    loop: Loop,
    batch_fn: Callable[..., Batch] = token_batch,
) -> TrainReport:
    """Train the prior or the critic in the shared loop (:func:`voc_rl.train_loop.train`: warm-up
    then cosine, clipping at 10, a guard against rare spikes only) on batches of ``sampler``. Pixel
    models (:mod:`voc_rl.pixel_trunk`) train here too, with ``batch_fn=pixel_batch``."""
    c, o = model.config, objective
    modules = {"model": model} if o.target is None else {"model": model, "target": o.target}

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        index = sampler.sample_indices(c.batch_size, 0.0)[0]
        batch = batch_fn(ds, index, c.frame_stack, model.device, o.next_frames)
        batch["index"] = torch.from_numpy(index).to(model.device)  # flat frame indices, for per-row weights
        loss, logs = o.loss(batch)
        return {"loss": loss}, logs

    def after_step() -> None:
        assert o.target is not None
        ema_update(o.target, model, c.target_rate)

    run = Run(
        name=o.name,
        config=c,
        modules=modules,
        optimizers={"loss": adamw(model.parameters(), c.lr, c.weight_decay)},
        step=step,
        rngs=[sampler.rng],
        data_seed=loop.seed,
        device=model.device,
        save=lambda folder: model.save(folder / f"{o.name}.pt"),
        clip=10.0,
        after_step=None if o.target is None else after_step,
        validate=o.evaluate,
    )
    return train(run, steps, loop.defaults(log_every=100, eval_every=1000, ckpt_every=1000))
