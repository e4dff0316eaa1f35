"""A 1-D tokenizer after TiTok (Yu et al. 2024, "An Image is Worth 32 Tokens", arXiv 2406.07550).

A 64 px frame is cut into 8x8 patches (64 of them); ``num_latent_tokens`` (K) learned latent tokens
are appended and a small pre-norm ViT encoder mixes them. Only the K latent outputs are kept,
projected to ``code_dim`` and quantized (:mod:`voc_rl.tokenizers.quantizer`): K codes per frame,
whatever the image grid. The decoder reads the K quantized latents beside 64 mask tokens (one
learned token plus a learned position embedding per patch) and turns the mask-token outputs back
into pixel patches. Loss: pixel MSE plus the commitment term. Fewer tokens per frame is the point:
FACTS.md measured that tokens per state are the main cost of sampling downstream.

Two additions to the paper, both kept in the checkpoint through a reference set of training frames
(the first ``num_ref_frames`` seen). ``slot_norm``: each slot's latent is standardised per channel
before the cosine VQ. A latent token's output is mostly its own learned identity plus the static
background; the part that depends on the frame was 1-2% of its norm on fake-pixels, so every frame
fell on the same code per slot, the commitment loss shrank that part further, and within 100 steps
all slots of all frames had one code. Training standardises with the batch's statistics (as
BatchNorm does); encoding with those of the reference frames under the current weights (cached
until a weight changes). BatchNorm's running averages failed: the constant part drifts during
training by many times the image-dependent spread. ``residual``: the encoder sees each frame minus
the reference frames' mean, and the decoder's logits are added to that mean's, so an untrained
model already outputs the mean frame and training goes to what moves. Measured, small preset, 300
steps on fake-pixels (mean-frame MSE 0.0057): plain, usage 3% and MSE 0.0061; slot_norm, 12% and
0.0071; both, 33% and 0.0054, probe R^2 0.10.
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
class TiTokConfig(TokenizerConfig):
    patch_size: int = 8
    """Side of a square pixel patch: 8 -> 64 patches for 64 px frames."""
    num_latent_tokens: int = 16
    """K, the number of latent tokens, hence of codes per frame."""
    width: int = 128
    """Transformer width (model dimension) of encoder and decoder."""
    encoder_depth: int = 4
    """Number of transformer blocks in the encoder."""
    decoder_depth: int = 4
    """Number of transformer blocks in the decoder."""
    heads: int = 4
    """Attention heads per block (``width`` must be divisible by it)."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP, as a multiple of ``width``."""
    slot_norm: bool = True
    """Standardise each slot's latent per channel before quantizing (see the module docstring)."""
    residual: bool = True
    """Encode each frame minus the reference frames' mean, and decode onto that mean (see above)."""
    num_ref_frames: int = 64
    """Training frames kept (the first ones seen) whose latent statistics standardise at encode time."""


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)); no mask, no dropout."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        qkv = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))  # (B, N, D)


class TiTokTokenizer(Tokenizer):
    backend = "titok"
    config_cls = TiTokConfig
    has_decoder = True
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {
            "width": 32,
            "encoder_depth": 1,
            "decoder_depth": 1,
            "heads": 2,
            "num_latent_tokens": 8,
            "vocab_size": 64,
            "code_dim": 16,
            "batch_size": 16,
            "steps": 100,
        },
        "small": {
            "width": 128,
            "encoder_depth": 4,
            "decoder_depth": 4,
            "heads": 4,
            "num_latent_tokens": 16,
            "vocab_size": 512,
            "code_dim": 32,
            "batch_size": 64,
            "steps": 3000,
        },
        "base": {
            "width": 192,
            "encoder_depth": 6,
            "decoder_depth": 6,
            "heads": 6,
            "num_latent_tokens": 32,
            "vocab_size": 1024,
            "code_dim": 32,
            "batch_size": 128,
            "steps": 20000,
        },
    }

    def __init__(self, config: TiTokConfig):
        super().__init__(config)
        p, w = config.patch_size, config.width
        if config.image_size % p:
            raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {p}")
        if w % config.heads:
            raise ValueError(f"width {w} is not divisible by heads {config.heads}")
        if config.num_latent_tokens < 1:
            raise ValueError(f"num_latent_tokens must be >= 1, got {config.num_latent_tokens}")
        self.grid = config.image_size // p
        n, k, patch_dim = self.grid**2, config.num_latent_tokens, 3 * p * p
        # encoder: patches + K latent tokens -> K latent vectors
        self.patch_embed = nn.Linear(patch_dim, w)
        self.enc_pos = nn.Parameter(torch.zeros(1, n, w))  # (1, n, w)
        self.latent_tokens = nn.Parameter(torch.zeros(1, k, w))  # (1, K, w)
        self.encoder = nn.ModuleList(
            Block(w, config.heads, config.mlp_ratio) for _ in range(config.encoder_depth)
        )
        self.enc_norm = nn.LayerNorm(w)
        self.to_code = nn.Linear(w, config.code_dim)
        s = config.image_size
        self.register_buffer("ref_frames", torch.zeros(config.num_ref_frames, 3, s, s, dtype=torch.uint8))
        self.register_buffer("ref_count", torch.tensor(0))
        self._ref_stats: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # (key, mean, var)
        self.quantizer = VectorQuantizer(
            config.vocab_size, config.code_dim, restart_after=config.restart_after
        )
        # decoder: K quantized latents + n mask tokens -> n pixel patches
        self.from_code = nn.Linear(config.code_dim, w)
        self.dec_latent_pos = nn.Parameter(torch.zeros(1, k, w))  # (1, K, w): which latent slot is which
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))  # (1, 1, w)
        self.dec_pos = nn.Parameter(torch.zeros(1, n, w))  # (1, n, w)
        self.decoder = nn.ModuleList(
            Block(w, config.heads, config.mlp_ratio) for _ in range(config.decoder_depth)
        )
        self.dec_norm = nn.LayerNorm(w)
        self.to_pixels = nn.Linear(w, patch_dim)
        self._init_weights()
        self._add_state_head()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for param in (self.enc_pos, self.latent_tokens, self.dec_latent_pos, self.mask_token, self.dec_pos):
            nn.init.trunc_normal_(param, std=0.02)

    @property
    def tokens_per_frame(self) -> int:
        return self.config.num_latent_tokens

    # ------------------------------------------------------------------ patches
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        m, c, g, p = len(x), x.shape[1], self.grid, self.config.patch_size
        x = x.reshape(m, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1)  # (M, g, g, p, p, 3)
        return x.reshape(m, g * g, p * p * c)  # (M, n, p*p*3)

    def _unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        m, g, p = len(patches), self.grid, self.config.patch_size
        x = patches.reshape(m, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4)  # (M, 3, g, p, g, p)
        return x.reshape(m, 3, g * p, g * p)  # (M, 3, H, W)

    # ------------------------------------------------------------------ encoder / decoder
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (M, 3, H, W) in [0, 1] -> encoder outputs of the latent slots (M, K, code_dim)."""
        h = self.patch_embed(self._patchify((x - self._mean_frame()) * 2)) + self.enc_pos  # (M, n, w)
        h = torch.cat([h, self.latent_tokens.expand(len(x), -1, -1)], dim=1)  # (M, n + K, w)
        for block in self.encoder:
            h = block(h)
        k = self.config.num_latent_tokens
        return self.to_code(self.enc_norm(h[:, -k:]))  # (M, K, code_dim)

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (M, 3, H, W) in [0, 1] -> latents to quantize (M, K, code_dim)."""
        if self.training:
            self._remember(x)
        z = self._encode(x)  # (M, K, d)
        if not self.config.slot_norm:
            return z
        if self.training:
            mean, var = z.mean(0), z.var(0, unbiased=False)  # (K, d) each: the batch's statistics
        else:
            mean, var = self._reference_stats()
        return (z - mean) * torch.rsqrt(var + 1e-8)  # (M, K, d)

    def _mean_frame(self) -> torch.Tensor:
        """The reference frames' mean (1, 3, H, W) in [0, 1]; mid-grey before training or without residual."""
        n = int(self.ref_count)
        if not self.config.residual or n == 0:
            return torch.full((1, 3, 1, 1), 0.5, device=self.device)
        return self.ref_frames[:n].float().mean(0, keepdim=True) / 255

    @torch.no_grad()
    def _remember(self, x: torch.Tensor) -> None:
        n, r = int(self.ref_count), len(self.ref_frames)
        if n < r:
            take = x[: r - n]
            self.ref_frames[n : n + len(take)] = (take * 255).round().to(torch.uint8)
            self.ref_count.add_(len(take))

    @torch.no_grad()
    def _reference_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (K, d) of the reference frames' latents under the current weights."""
        n = int(self.ref_count)
        if n < 2:  # never trained: no standardisation
            return torch.zeros((), device=self.device), torch.ones((), device=self.device)
        # in-place updates (optimiser steps, load_state_dict) bump a tensor's version counter
        key = (n, self.device, tuple(t._version for t in (*self.parameters(), self.ref_frames)))
        if self._ref_stats is None or self._ref_stats[0] != key:
            z = torch.cat([self._encode(f.float() / 255) for f in self.ref_frames[:n].split(256)])
            self._ref_stats = (key, z.mean(0), z.var(0, unbiased=False))
        return self._ref_stats[1], self._ref_stats[2]

    def _decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantized latents (M, K, code_dim) -> frames (M, 3, H, W) in (0, 1)."""
        m = len(zq)
        lat = self.from_code(zq) + self.dec_latent_pos  # (M, K, w)
        mask = (self.mask_token + self.dec_pos).expand(m, -1, -1)  # (M, n, w)
        h = torch.cat([mask, lat], dim=1)  # (M, n + K, w)
        for block in self.decoder:
            h = block(h)
        n = self.grid * self.grid
        patches = self.to_pixels(self.dec_norm(h[:, :n]))  # (M, n, p*p*3)
        mean_logit = torch.logit(self._mean_frame().clamp(0.01, 0.99))  # (1, 3, H, W)
        return torch.sigmoid(self._unpatchify(patches) + mean_logit)  # (M, 3, H, W)

    # ------------------------------------------------------------------ tokenizer hooks
    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        z = self._latents(x)  # (M, K, d)
        return self.quantizer.codes(z.reshape(-1, z.shape[-1])).reshape(len(x), -1)  # (M, K)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(self.check_tokens(tokens))  # (B, N, d), unit norm

    def decode_frames(self, codes: torch.Tensor) -> torch.Tensor:
        return self._decode(self.quantizer.lookup(codes))  # (M, 3, H, W)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        x = batch["frames"]  # (M, 3, H, W) in [0, 1]
        zq, codes, commit = self.quantizer(self._latents(x))  # (M, K, d), (M, K)
        recon = self._decode(zq)
        mse = F.mse_loss(recon, x)
        aux, aux_logs = self.state_term(zq, batch)
        logs = {"recon_mse": float(mse.detach()), "commitment": float(commit.detach()), **aux_logs}
        return mse + commit + aux, logs, codes
