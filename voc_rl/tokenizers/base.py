"""The tokenizer contract every backend follows, its quality metrics and checkpoints.

``encode(frames uint8 [B, F, 3, H, W]) -> tokens long [B, F * tokens_per_frame]``,
``embed(tokens) -> float [B, N, D]``, ``decode(tokens) -> uint8 frames`` where a decoder exists.
A backend implements ``encode_frames`` (floats in [0, 1] -> codes), ``embed`` and ``loss``; the base
class validates input and saves/loads safely. Training (``fit``) and measuring (``evaluate``) live in
:mod:`voc_rl.tokenizers.train`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voc_rl.checkpoint import CheckpointError, load_model, save_model
from voc_rl.data.dataset import PixelDataset
from voc_rl.presets import from_preset
from voc_rl.tokenizers.quantizer import codebook_stats
from voc_rl.typed import check_fields

FORMAT = "voc_rl.tokenizer/1"


@dataclass(frozen=True)
class TokenizerConfig:
    """Fields every backend has; backends subclass this with their own."""

    image_size: int = 64
    """Frame height and width in pixels."""
    vocab_size: int = 512
    """Number of codes in the codebook."""
    code_dim: int = 32
    """Dimension of a code vector (and of ``embed``'s output)."""
    lr: float = 1e-3
    """AdamW learning rate (constant after a 100-step warm-up)."""
    batch_size: int = 64
    """Frames (or frame pairs) per training step."""
    steps: int = 2000
    """Default number of training steps for ``fit``."""
    restart_after: int = 100
    """Steps a code may stay unused before the quantizer restarts it on a recent encoder output."""
    state_aux: float = 0.0
    """Weight of an auxiliary target in training: a linear head regresses the proprioceptive state
    the dataset recorded for a frame (standardised) from the frame's quantized code vectors, so that
    the codes keep the body's state (the probe of :func:`~voc_rl.tokenizers.train.evaluate`). 0 off."""
    state_dim: int = 0
    """Size of that state, from the dataset (:meth:`Tokenizer.config_for` sets it where
    ``state_aux > 0``)."""
    state_frames: int = 1
    """Frames ending at the state's whose codes that head reads: 2 reads frames t-1 and t, so that
    the velocities too must be readable from the codes of a frame stack, as the probe reads them (a
    training step then encodes that many frames per batch row)."""
    input_frames: int = 1
    """Frames the encoder reads to make one frame's codes: the frame and the ``input_frames - 1``
    before it, so that its codes can carry the motion (a velocity is not linear in the positions of
    a stack of frames: ``results/tokenizers.md``). In a dataset (the token cache, the probe) these are
    the frame's own predecessors in its episode; in a stack given to :meth:`Tokenizer.encode` (an
    agent's observation) the frames before it in the stack, the earliest repeated where there are
    fewer, as at an episode's start. Backends whose ``reads_input_frames`` is set (vqvae)."""

    def __post_init__(self) -> None:
        """Check the shared fields; a backend's config that adds its own checks calls this first."""
        check_fields(self)
        lows = {
            "image_size": 1,
            "vocab_size": 2,
            "code_dim": 1,
            "batch_size": 1,
            "steps": 1,
            "restart_after": 1,
            "state_dim": 0,
            "state_frames": 1,
            "input_frames": 1,
        }
        for name, low in lows.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{type(self).__name__}.{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not 0 < self.lr < math.inf:
            raise ValueError(f"{type(self).__name__}.lr must be a finite number > 0, got {self.lr!r}")
        if not self.state_aux >= 0 or (self.state_aux > 0 and self.state_dim < 1):
            raise ValueError(f"{type(self).__name__} needs state_aux >= 0, and state_dim >= 1 where it is "
                             f"> 0; got {self.state_aux}, {self.state_dim}")  # fmt: skip


class Tokenizer(nn.Module):
    """Base class. Subclasses set ``backend``, ``config_cls``, ``presets`` and implement the hooks."""

    quantizer: nn.Module  # every backend quantizes with a VectorQuantizer (or a loaded codebook)
    backend: ClassVar[str] = "base"
    config_cls: ClassVar[type[TokenizerConfig]] = TokenizerConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "small": {}, "base": {}}
    has_decoder: ClassVar[bool] = False
    reads_input_frames: ClassVar[bool] = False  # its encoder takes 3 * input_frames channels

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if config.input_frames > 1 and not self.reads_input_frames:
            raise ValueError(f"the {self.backend} tokenizer encodes each frame alone: input_frames must "
                             f"be 1, got {config.input_frames} (vqvae reads several)")  # fmt: skip
        self.config = config
        self.step = 0

    def _add_state_head(self) -> None:
        """The ``state_aux`` head and its standardisation (training only); a backend calls this at the
        end of its ``__init__``, once ``tokens_per_frame`` is known."""
        c = self.config
        if c.state_aux > 0:
            self.state_head = nn.Linear(c.state_frames * self.tokens_per_frame * c.code_dim, c.state_dim)
            self.register_buffer("state_mean", torch.zeros(c.state_dim))
            self.register_buffer("state_std", torch.ones(c.state_dim))

    def set_state_scale(self, ds: PixelDataset, frames: np.ndarray) -> None:
        """Standardise the ``state_aux`` target by the recorded state of the flat frame indices
        ``frames`` (the training frames); kept in the checkpoint."""
        state = np.asarray(ds.arrays["proprio"][frames], np.float64)
        if state.shape[1] != self.config.state_dim:
            raise ValueError(f"the tokenizer's state_dim is {self.config.state_dim}; {ds.path} records "
                             f"{state.shape[1]} state dimensions")  # fmt: skip
        self.state_mean.copy_(torch.as_tensor(state.mean(0)))
        self.state_std.copy_(torch.as_tensor(state.std(0) + 1e-6))

    def state_target(self, ds: PixelDataset, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """``{"state": the standardised recorded state of frames (B, S)}`` with ``state_aux``, else ``{}``."""
        if self.config.state_aux == 0:
            return {}
        state = torch.as_tensor(np.asarray(ds.arrays["proprio"][frames], np.float32))
        return {"state": (state - self.state_mean.cpu()) / self.state_std.cpu()}

    def state_term(
        self, zq: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``state_aux`` x the head's mean squared error to ``batch["state"]`` (B, S) from the quantized
        vectors ``zq`` (state_frames * B, ..., d) of the frames ending at each state's, frame by frame
        (oldest first), flattened per row; zero without the target."""
        if self.config.state_aux == 0 or "state" not in batch:
            return zq.new_zeros(()), {}
        b = len(batch["state"])
        rows = zq.reshape(self.config.state_frames, b, -1).transpose(0, 1).reshape(b, -1)
        err = F.mse_loss(self.state_head(rows), batch["state"])
        return self.config.state_aux * err, {"state_mse": float(err.detach())}

    @classmethod
    def config_for(cls, ds: PixelDataset | None, size: str = "small", **fields: Any) -> TokenizerConfig:
        """The ``size`` preset, then what the pixel dataset ``ds`` fixes (:meth:`dataset_fields`), then
        ``fields``: the one place a tokenizer's config meets the data it trains on."""
        fields = {**(cls.dataset_fields(ds) if ds is not None else {}), **fields}
        if ds is not None and fields.get("state_aux", 0) > 0:
            if "proprio" not in ds.arrays:
                raise ValueError(f"state_aux needs the proprioceptive state, which {ds.path} did not record; "
                                 "collect the dataset with `voc-rl collect`, or set state_aux=0")  # fmt: skip
            fields = {"state_dim": int(ds.arrays["proprio"].shape[1]), **fields}
        return from_preset(
            cls.config_cls, cls.presets, size, fields, f"{cls.backend} tokenizer", "config fields"
        )

    @classmethod
    def dataset_fields(cls, ds: PixelDataset) -> dict[str, Any]:
        """Config fields the dataset fixes; none for most backends (MUSIK: the action size)."""
        return {}

    # ------------------------------------------------------------------ backend hooks
    @property
    def tokens_per_frame(self) -> int:
        raise NotImplementedError(f"{type(self).__name__}.tokens_per_frame -> int")

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.encode_frames(x float (M, 3 * input_frames, H, W)) -> codes (M, T)"
        )

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) -> their code vectors, unit norm, (B, N, D). Backends have a ``quantizer``."""
        return F.normalize(self.quantizer.lookup(self.check_tokens(tokens)), dim=-1)

    def decode_frames(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"the {self.backend} tokenizer has no pixel decoder")

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """(loss, scalars to log, codes used) for one training batch from :meth:`sample_batch`."""
        raise NotImplementedError(f"{type(self).__name__}.loss(batch) -> (loss, logs, codes)")

    def sample_batch(
        self, ds: PixelDataset, frames: np.ndarray, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """A training batch from candidate flat frame indices ``frames``; default: the encoder's input
        of each frame (its ``input_frames`` frames, oldest first: (B, 3 * input_frames, H, W)), or with
        ``state_aux`` that of the ``state_frames`` frames ending at each (frame by frame, oldest first:
        (state_frames * B, ...)), and their state."""
        pick = np.sort(rng.choice(frames, size=self.config.batch_size))
        n = self.config.state_frames if self.config.state_aux > 0 else 1
        at = ds.stack_index(pick, n).T.ravel()  # (n * B,): the frames ending at each pick, by frame
        return {"frames": to_float(ds.stacks(at, self.config.input_frames)), **self.state_target(ds, pick)}

    def after_step(self) -> None:
        """Called after each optimiser step (EMA teachers and the like)."""

    # ------------------------------------------------------------------ public interface
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_frames(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(frames, np.ndarray) and not frames.flags.writeable:
            frames = frames.copy()  # torch wants writable memory; memmapped datasets are read-only
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8:
            raise TypeError(
                f"frames must be uint8 in [0, 255], got {frames.dtype}; do not pre-normalise them"
            )
        if frames.ndim == 4:
            frames = frames[:, None]
        s = self.config.image_size
        if frames.ndim != 5 or frames.shape[2:] != (3, s, s):
            raise ValueError(
                f"frames must be (B, F, 3, {s}, {s}) or (B, 3, {s}, {s}), got {tuple(frames.shape)}"
            )
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise ValueError("frames is an empty batch")
        return frames

    @torch.no_grad()
    def encode(self, frames: torch.Tensor | np.ndarray, chunk: int = 256) -> torch.Tensor:
        """uint8 frames (B, F, 3, H, W) -> tokens (B, F * tokens_per_frame), frame by frame in order
        (with ``input_frames`` k > 1, each frame's codes read it and the k - 1 before it in the stack,
        the first frame repeated where there are fewer)."""
        frames = self._check_frames(frames)
        return self._codes(self.frame_inputs(frames), chunk).reshape(len(frames), -1)

    def frame_inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """Stacks (B, F, 3, H, W) -> the encoder's input of each frame (B * F, 3 * input_frames, H, W),
        frame by frame: the frame last, the ``input_frames - 1`` before it in the stack first (the
        stack's first frame repeated where there are fewer)."""
        b, f = frames.shape[:2]
        k = self.config.input_frames
        before = (torch.arange(f)[:, None] + torch.arange(-k + 1, 1)).clamp_min(0)  # (F, k)
        return frames[:, before.to(frames.device)].reshape(b * f, 3 * k, *frames.shape[3:])

    @torch.no_grad()
    def encode_index(self, ds: PixelDataset, index: np.ndarray, chunk: int = 256) -> torch.Tensor:
        """Codes (M, tokens_per_frame) of the dataset's frames at flat ``index`` (M,), each read with its
        own ``input_frames - 1`` predecessors in its episode: the codes the token cache stores."""
        index = np.asarray(index)
        return torch.cat(
            [self._codes(torch.as_tensor(ds.stacks(index[i : i + chunk], self.config.input_frames)), chunk)
             for i in range(0, len(index), chunk)]
            or [torch.zeros(0, self.tokens_per_frame, dtype=torch.long)]
        )  # fmt: skip

    def _codes(self, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
        """Codes (M, T) of uint8 encoder inputs (M, 3 * input_frames, H, W), in eval mode, on the CPU."""
        was_training = self.training
        self.eval()
        codes = torch.cat(
            [
                self.encode_frames(to_float(inputs[i : i + chunk], self.device))
                for i in range(0, len(inputs), chunk)
            ]
        )
        self.train(was_training)
        return codes.cpu()

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16):
            raise TypeError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        if tokens.ndim != 2 or tokens.shape[1] % self.tokens_per_frame:
            raise ValueError(f"tokens must be (B, F * {self.tokens_per_frame}), got {tuple(tokens.shape)}")
        return tokens.long().to(self.device)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, F * T) -> uint8 frames (B, F, 3, H, W); only backends with a pixel decoder."""
        if not self.has_decoder:
            raise NotImplementedError(f"the {self.backend} tokenizer has no pixel decoder")
        tokens = self.check_tokens(tokens)
        b, f = tokens.shape[0], tokens.shape[1] // self.tokens_per_frame
        x = self.decode_frames(tokens.reshape(b * f, self.tokens_per_frame))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).reshape(b, f, *x.shape[1:]).cpu()

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> Path:
        return save_model(path, self, FORMAT, self.config, backend=self.backend)

    @classmethod
    def load(cls, path: str | Path, **expect: Any) -> Tokenizer:
        """Load any backend's checkpoint; ``expect`` (e.g. ``backend="dino"``) must match it."""
        from voc_rl.tokenizers import get_backend

        def build(ckpt: dict[str, Any]) -> Tokenizer:
            try:
                backend_cls = get_backend(ckpt["backend"])
            except (TypeError, ValueError) as exc:  # ValueError: unknown name; TypeError: not a string
                raise CheckpointError(
                    f"{path} names the tokenizer backend {ckpt['backend']!r}, which this voc_rl version "
                    f"does not have ({exc}); it was written by another version, or is not a tokenizer "
                    "checkpoint"
                ) from exc
            return backend_cls(backend_cls.config_cls(**ckpt["config"]))

        return load_model(path, FORMAT, build, expect, required=("backend",))[0]

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}({self.backend}, {self.tokens_per_frame} tokens/frame, "
            f"vocab {self.vocab_size}, {n / 1e6:.2f}M params)"
        )


def to_float(frames: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 in [0, 1] on ``device``."""
    return torch.as_tensor(frames).to(device).float().div_(255.0)


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def linear_probe_r2(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, ridge: float = 1e-2
) -> np.ndarray:
    """R^2 per target dimension of a ridge regression fit on train and scored on test (N, D) arrays.

    Features are standardised with train statistics; solved in whichever of the primal (features x
    features) or dual (samples x samples) form is smaller.
    """
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xs = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean(0)
    yt = y_train - ym
    lam = ridge * len(xt)
    if xt.shape[1] <= xt.shape[0]:
        w = np.linalg.solve(xt.T @ xt + lam * np.eye(xt.shape[1]), xt.T @ yt)
    else:
        w = xt.T @ np.linalg.solve(xt @ xt.T + lam * np.eye(xt.shape[0]), yt)
    pred = xs @ w + ym
    ss_res = ((y_test - pred) ** 2).sum(0)
    ss_tot = ((y_test - y_test.mean(0)) ** 2).sum(0) + 1e-12
    return 1 - ss_res / ss_tot


def probe_r2_cv(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    ridges: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    val_fraction: float = 0.2,
) -> tuple[np.ndarray, float]:
    """``linear_probe_r2`` with the ridge chosen on a validation slice of the training rows.

    The slice is the last ``val_fraction`` of the rows (in time order these are whole episodes, so
    the choice is not flattered by neighbouring frames); the probe is then refit on all training rows
    with the chosen ridge and scored on the test rows. Returns (R^2 per target dimension, ridge).
    """
    n_val = max(int(len(x_train) * val_fraction), 1)
    scores = [
        np.mean(linear_probe_r2(x_train[:-n_val], y_train[:-n_val], x_train[-n_val:], y_train[-n_val:], r))
        for r in ridges
    ]
    best = ridges[int(np.argmax(scores))]
    return linear_probe_r2(x_train, y_train, x_test, y_test, best), best


__all__ = [
    "Tokenizer",
    "TokenizerConfig",
    "codebook_stats",
    "linear_probe_r2",
    "probe_r2_cv",
    "psnr",
    "to_float",
]
