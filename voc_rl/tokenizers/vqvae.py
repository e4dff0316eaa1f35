"""A convolutional VQ-VAE: 64 px frames -> a 2-D grid of codes (8x8 by default, 4x4 optional).

Encoder: strided convolutions and a residual block down to ``grid x grid`` vectors; a cosine EMA
codebook with dead-code restarts (:mod:`voc_rl.tokenizers.quantizer`); a mirror-image decoder.
Loss: pixel MSE plus the commitment term. With ``input_frames = k > 1`` the encoder reads a frame
and the k - 1 before it (3k channels) and the decoder draws the frame alone, so the codes may carry
its motion. FACTS.md measured that 4x4 codes keep the picture but
lose the motion a reward needs, hence 8x8 by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from voc_rl.tokenizers.base import Tokenizer, TokenizerConfig
from voc_rl.tokenizers.quantizer import VectorQuantizer


@dataclass(frozen=True)
class VQVAEConfig(TokenizerConfig):
    channels: int = 64
    """Width of the first convolution (doubles once on the way down)."""
    downsample: int = 3
    """Number of stride-2 convolutions: 3 -> 8x8 codes for 64 px frames, 4 -> 4x4."""


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def conv_down(channels: int, downsample: int, in_channels: int = 3) -> list[nn.Module]:
    """Stride-2 convolutions (ReLU after each) from ``in_channels`` (RGB, or RGB of several frames) to
    2 * channels, halving the size each time."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for i in range(downsample):
        c_out = channels if i < downsample - 1 else 2 * channels
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        c_in = c_out
    return layers


def frame_encoder(channels: int, downsample: int, code_dim: int, input_frames: int = 1) -> nn.Sequential:
    """The VQ-VAE's encoder of one frame (read with the ``input_frames - 1`` before it), its layers
    before quantization: :func:`conv_down`, a residual block and a 1x1 projection to ``code_dim`` (the
    pixel policy's ``vqvae`` encoder reuses it)."""
    c = channels
    down = conv_down(c, downsample, 3 * input_frames)
    return nn.Sequential(*down, ResBlock(2 * c), nn.ReLU(), nn.Conv2d(2 * c, code_dim, 1))


class GridCodes:
    """Codes on a 2-D grid from a convolutional ``encoder`` (also used by the MUSIK backend)."""

    encoder: nn.Module
    quantizer: VectorQuantizer
    grid: int

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x * 2 - 1)  # (M, d, g, g)
        return z.permute(0, 2, 3, 1)  # (M, g, g, d)

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        z = self._latents(x)
        return self.quantizer.codes(z.reshape(-1, z.shape[-1])).reshape(len(x), -1)  # (M, g*g)


class VQVAETokenizer(GridCodes, Tokenizer):
    backend = "vqvae"
    config_cls = VQVAEConfig
    has_decoder = True
    reads_input_frames = True
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"channels": 16, "vocab_size": 64, "code_dim": 16, "batch_size": 16, "steps": 100},
        "small": {"channels": 64, "vocab_size": 512, "code_dim": 32, "batch_size": 64, "steps": 3000},
        "base": {"channels": 128, "vocab_size": 1024, "code_dim": 64, "batch_size": 128, "steps": 20000},
    }

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        c, d = config.channels, config.code_dim
        self.encoder = frame_encoder(c, config.downsample, d, config.input_frames)
        up: list[nn.Module] = [nn.Conv2d(d, 2 * c, 1), ResBlock(2 * c), nn.ReLU()]
        c_in = 2 * c
        for i in range(config.downsample):
            last = i == config.downsample - 1
            up += [nn.ConvTranspose2d(c_in, 3 if last else c, 4, stride=2, padding=1)]
            if not last:
                up.append(nn.ReLU())
            c_in = c
        self.decoder = nn.Sequential(*up)
        self.quantizer = VectorQuantizer(config.vocab_size, d, restart_after=config.restart_after)
        self.grid = config.image_size // 2**config.downsample
        self._add_state_head()

    def decode_frames(self, codes: torch.Tensor) -> torch.Tensor:
        zq = self.quantizer.lookup(codes).reshape(len(codes), self.grid, self.grid, -1)
        return torch.sigmoid(self.decoder(zq.permute(0, 3, 1, 2)))  # (M, 3, H, W)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        x = batch["frames"]  # (M, 3 * input_frames, H, W) in [0, 1]: a frame last, those before it first
        zq, codes, commit = self.quantizer(self._latents(x))
        recon = torch.sigmoid(self.decoder(zq.permute(0, 3, 1, 2)))
        mse = F.mse_loss(recon, x[:, -3:])  # the codes are the last frame's
        aux, aux_logs = self.state_term(zq, batch)
        logs = {"recon_mse": float(mse.detach()), "commitment": float(commit.detach()), **aux_logs}
        return mse + commit + aux, logs, codes
