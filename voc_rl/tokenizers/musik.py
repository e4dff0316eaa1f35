"""MUSIK: a VQ encoder trained by multi-step inverse dynamics (Lamb et al. 2022, "Guaranteed
discovery of control-endogenous latent states with multi-step inverse models").

The encoder is the VQ-VAE's (strided convolutions down to a ``grid x grid`` map, 8x8 for 64 px
frames by default) followed by the shared cosine :class:`VectorQuantizer`; there is no pixel
decoder. Training samples pairs (s_t, s_{t+k}) from one episode, k uniform in [1, max_k] and clipped
at the episode's end, and an inverse head predicts the action a_t from the quantized grids of both
frames and an embedding of k. Only what the agent's actions move is needed for that, so the codes
are pushed towards the control-endogenous part of the frame (the body, not the background).

A single frame holds no velocity, so ``frame_stack_input = F > 1`` gives the inverse head the
tokens of the F frames ending at t and at t+k. The encoder still sees one frame at a time, so
``encode`` keeps the per-frame token contract every backend shares. Measured on cheetah-run random
data (800 steps, batch 32, one seed): F=3 predicted held-out actions better (R^2 0.22 vs 0.14) but
its tokens were no better for a proprio probe (0.60 vs 0.61) at 1.8x the cost per step, so F=1 is
the default. In the same runs max_k=4 / 8 / 15 gave probe R^2 0.61 / 0.56 / 0.29: with k up to 15
the action loss had not left its plateau after 800 steps, so ``small`` uses max_k=8 (``base``,
meant for longer runs, keeps 15, the published choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voc_rl.data.dataset import PixelDataset
from voc_rl.tokenizers.base import Tokenizer, TokenizerConfig, to_float
from voc_rl.tokenizers.quantizer import VectorQuantizer
from voc_rl.tokenizers.vqvae import GridCodes, ResBlock, conv_down


@dataclass(frozen=True)
class MUSIKConfig(TokenizerConfig):
    channels: int = 64
    """Width of the first convolution (doubles once on the way down)."""
    downsample: int = 3
    """Number of stride-2 convolutions: 3 -> 8x8 codes for 64 px frames, 4 -> 4x4."""
    action_dim: int = 6
    """Dimension of the dataset's actions (6 for DMC cheetah and walker); checked against the data."""
    max_k: int = 15
    """Largest gap k between the two frames of a training pair; k is uniform in [1, max_k]."""
    frame_stack_input: int = 1
    """Frames (ending at t and at t+k) whose tokens the inverse head reads; >1 gives it velocities."""
    head_channels: int = 64
    """Width of the inverse head's convolutions over the two stacked token grids."""
    hidden: int = 256
    """Width of the inverse head's MLP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size % 2**self.downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**downsample")
        if self.action_dim < 1 or self.max_k < 1 or self.frame_stack_input < 1:
            raise ValueError("action_dim, max_k and frame_stack_input must all be >= 1")
        if self.state_aux > 0 and self.state_frames > self.frame_stack_input:
            raise ValueError(f"musik's state head reads its input stack: state_frames ({self.state_frames}) "
                             f"must be <= frame_stack_input ({self.frame_stack_input})")  # fmt: skip


class MUSIKTokenizer(GridCodes, Tokenizer):
    backend = "musik"
    config_cls = MUSIKConfig
    has_decoder = False
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {
            "channels": 16,
            "vocab_size": 64,
            "code_dim": 16,
            "batch_size": 16,
            "steps": 100,
            "head_channels": 16,
            "hidden": 64,
        },
        "small": {
            "channels": 64,
            "vocab_size": 512,
            "code_dim": 32,
            "batch_size": 64,
            "steps": 3000,
            "max_k": 8,  # measured: 15 left the action loss on its plateau for a CPU-sized run (see above)
        },
        "base": {
            "channels": 128,
            "vocab_size": 1024,
            "code_dim": 64,
            "batch_size": 128,
            "steps": 20000,
            "head_channels": 128,
            "hidden": 512,
        },
    }

    @classmethod
    def dataset_fields(cls, ds: PixelDataset) -> dict[str, Any]:
        """The inverse head predicts the dataset's actions: their size."""
        return {"action_dim": int(ds.arrays["action"].shape[1])}

    def __init__(self, config: MUSIKConfig):
        super().__init__(config)
        c, d, h = config.channels, config.code_dim, config.head_channels
        self.encoder = nn.Sequential(
            *conv_down(c, config.downsample), ResBlock(2 * c), nn.ReLU(), nn.Conv2d(2 * c, d, 1)
        )
        # Centre the latents on their running mean before the cosine VQ. Without it every encoder
        # output points the same way (mean cosine 0.996 at init) and, with no pixel loss to spread
        # them, the codebook fell to 1-3 codes within 25 steps; with it ~50 of 64 stayed in use.
        self.encoder.append(nn.BatchNorm2d(d, affine=False))
        self.quantizer = VectorQuantizer(config.vocab_size, d, restart_after=config.restart_after)
        self.grid = config.image_size // 2**config.downsample
        # Inverse head: both ends' grids (and their difference) stacked as channels, so a 1x1 conv
        # compares s_t and s_{t+k} at each place, a 3x3 one across neighbours; the flatten keeps where.
        self.head_conv = nn.Sequential(
            nn.Conv2d(3 * config.frame_stack_input * d, h, 1),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            nn.ReLU(),
        )
        self.head_in = nn.Linear(h * self.grid * self.grid, config.hidden)
        self.k_embed = nn.Embedding(config.max_k + 1, config.hidden)
        self.head_out = nn.Sequential(
            nn.ReLU(),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.action_dim),
        )
        self._add_state_head()

    # ------------------------------------------------------------------ inverse dynamics
    def inverse(self, zq_now: torch.Tensor, zq_future: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Predicted a_t in [-1, 1] (B, A) from code grids (B, F, g, g, d) of both ends and gaps k (B,)."""
        # The explicit difference and the sqrt(d) scale (unit code vectors have entries ~1/sqrt(d))
        # each shortened the initial plateau of the action loss on the fake env.
        grids = torch.cat([zq_now, zq_future, zq_future - zq_now], dim=1)  # (B, 3F, g, g, d)
        grids = grids.permute(0, 1, 4, 2, 3).reshape(len(k), -1, self.grid, self.grid)  # (B, 3F*d, g, g)
        grids = grids * self.config.code_dim**0.5
        h = self.head_in(self.head_conv(grids).flatten(1)) + self.k_embed(k)  # (B, hidden)
        return torch.tanh(self.head_out(h))  # (B, A)

    def _check_action_dim(self, action_dim: int) -> None:
        if action_dim != self.config.action_dim:
            raise ValueError(
                f"the dataset's actions have {action_dim} dimensions but this musik tokenizer was built "
                f"for {self.config.action_dim}; make it with action_dim={action_dim}"
            )

    def sample_batch(
        self, ds: PixelDataset, frames: np.ndarray, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """Pairs (s_t, s_{t+k}) within one episode, k uniform in [1, max_k] clipped at its end.

        Returns ``frames`` and ``future`` float (B, 3F, H, W) in [0, 1] (the F frames ending at t
        and at t+k, oldest first, as :meth:`PixelDataset.stacks`), ``action`` a_t (B, A), ``k`` (B,).
        """
        actions = ds.arrays["action"]
        self._check_action_dim(actions.shape[1])
        frames = np.asarray(frames)
        episode = ds.arrays["episode"][frames]
        valid = frames[ds.arrays["step"][frames] < ds.ep_len[episode]]  # frames with an action
        if len(valid) == 0:
            raise ValueError("no frame with an action among the candidate frames (episodes of length 0?)")
        t = np.sort(rng.choice(valid, size=self.config.batch_size))  # (B,)
        e = ds.arrays["episode"][t]
        last = ds.ep_start[e] + ds.ep_len[e]  # each episode's last frame
        k = np.minimum(rng.integers(1, self.config.max_k + 1, size=len(t)), last - t)  # (B,)
        f = self.config.frame_stack_input
        return {
            **self.state_target(ds, t),  # the state at t, the last frame of the stack
            "frames": to_float(ds.stacks(t, f)),  # (B, 3F, H, W)
            "future": to_float(ds.stacks(t + k, f)),  # (B, 3F, H, W)
            "action": torch.as_tensor(actions[t], dtype=torch.float32),  # (B, A)
            "k": torch.as_tensor(k, dtype=torch.long),  # (B,)
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        action, k = batch["action"], batch["k"]  # (B, A), (B,)
        self._check_action_dim(action.shape[-1])
        if int(k.min()) < 1 or int(k.max()) > self.config.max_k:
            raise ValueError(
                f"gaps k must be in [1, max_k={self.config.max_k}], got [{int(k.min())}, {int(k.max())}]"
            )
        b, f, s = len(action), self.config.frame_stack_input, self.config.image_size
        x = torch.cat([batch["frames"], batch["future"]]).reshape(2 * b * f, 3, s, s)  # (2BF, 3, H, W)
        zq, codes, commit = self.quantizer(self._latents(x))  # (2BF, g, g, d), (2BF, g, g)
        zq = zq.reshape(2, b, f, self.grid, self.grid, -1)  # (2, B, F, g, g, d)
        pred = self.inverse(zq[0], zq[1], k)  # (B, A)
        mse = F.mse_loss(pred, action)
        now = zq[0, :, f - self.config.state_frames :].transpose(0, 1)  # the frames ending at t, by frame
        aux, aux_logs = self.state_term(now.reshape(-1, *now.shape[2:]), batch)
        with torch.no_grad():
            ss_tot = ((action - action.mean(0)) ** 2).sum().clamp_min(1e-8)
            r2 = 1 - ((pred - action) ** 2).sum() / ss_tot
        logs = {
            "action_mse": float(mse.detach()),
            "action_r2": float(r2),
            "commitment": float(commit.detach()),
            **aux_logs,
        }
        return mse + commit + aux, logs, codes
