"""A 1-D tokenizer after TiTok (Yu et al. 2024, "An Image is Worth 32 Tokens", arXiv 2406.07550).

A 64 px frame is cut into 8x8 patches (64 of them); ``num_latent_tokens`` (K) learned latent tokens
are appended and a small pre-norm ViT encoder mixes them. Only the K latent outputs are kept,
projected to ``code_dim`` and quantized (:mod:`voc_rl.tokenizers.quantizer`): K codes per frame,
whatever the image grid. The decoder reads the K quantized latents beside 64 mask tokens (one
learned token plus a learned position embedding per patch) and turns the mask-token outputs back
into pixel patches. Loss: pixel MSE plus the commitment term. Fewer tokens per frame is the point:
FACTS.md measured that tokens per state are the main cost of sampling downstream.
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
    restart_after: int = 100
    """Steps a code may stay unused before it is restarted on a recent encoder output."""


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
    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (M, 3, H, W) in [0, 1] -> unquantized latents (M, K, code_dim)."""
        h = self.patch_embed(self._patchify(x * 2 - 1)) + self.enc_pos  # (M, n, w)
        h = torch.cat([h, self.latent_tokens.expand(len(x), -1, -1)], dim=1)  # (M, n + K, w)
        for block in self.encoder:
            h = block(h)
        k = self.config.num_latent_tokens
        return self.to_code(self.enc_norm(h[:, -k:]))  # (M, K, code_dim)

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
        return torch.sigmoid(self._unpatchify(patches))  # (M, 3, H, W)

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
        return mse + commit, {"recon_mse": float(mse.detach()), "commitment": float(commit.detach())}, codes
