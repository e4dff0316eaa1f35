"""A small causal transformer (nanoGPT-sized) over input embeddings, with a KV cache.

The occupancy model builds its own input embeddings (token embeddings of the context and target
tokens, a projected action in between) and calls :class:`GPT` on them. ``forward`` takes the
position of the first input (``start``) and optional per-layer key/value caches, and returns the
final hidden states and the extended caches, so the same code does teacher forcing, prefilling a
prompt once and decoding one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# one (keys, values) pair per layer, each (B, heads, T, head_dim)
Cache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int  # longest sequence (positions)
    width: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0


class SelfAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        if c.width % c.heads:
            raise ValueError(f"width {c.width} is not divisible by heads {c.heads}")
        self.heads, self.dropout = c.heads, c.dropout
        self.qkv = nn.Linear(c.width, 3 * c.width)
        self.proj = nn.Linear(c.width, c.width)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, 2))
        past = 0
        if cache is not None:
            past = cache[0].shape[2]
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        mask, causal = None, past == 0
        if past and t > 1:  # queries at positions past..past+t-1 see keys up to their own position
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal and t > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, c)), (k, v)


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.width), nn.LayerNorm(c.width)
        self.attn = SelfAttention(c)
        self.mlp = nn.Sequential(
            nn.Linear(c.width, 4 * c.width), nn.GELU(), nn.Linear(4 * c.width, c.width), nn.Dropout(c.dropout)
        )

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class GPT(nn.Module):
    """Token embedding, learned positions, pre-LN blocks and a tied output head."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.config = c
        self.tok_emb = nn.Embedding(c.vocab_size, c.width)
        self.pos_emb = nn.Embedding(c.block_size, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.depth)])
        self.ln_f = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying, as in GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / (2 * c.depth) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(
        self, x: torch.Tensor, start: int = 0, cache: Cache | None = None
    ) -> tuple[torch.Tensor, Cache]:
        """Input embeddings (B, T, width) at positions start..start+T-1 -> (hidden (B, T, width), cache)."""
        t = x.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(f"positions up to {start + t} exceed block_size {self.config.block_size}")
        x = self.drop(x + self.pos_emb(torch.arange(start, start + t, device=x.device)))
        new: Cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new.append(kv)
        return self.ln_f(x), new


def expand_cache(cache: Cache, repeats: int) -> Cache:
    """Each batch row of a cache repeated ``repeats`` times in place (row i -> rows i*r..i*r+r-1)."""
    return [(k.repeat_interleave(repeats, 0), v.repeat_interleave(repeats, 0)) for k, v in cache]
