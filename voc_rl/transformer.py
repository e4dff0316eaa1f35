"""A small causal transformer (nanoGPT-sized) over input embeddings, with a KV cache.

The occupancy model builds its own input embeddings (token embeddings of the context and target
tokens, a projected action in between) and calls :class:`GPT` on them. ``forward`` takes an optional
:class:`KVCache`: the new keys and values are written into its preallocated buffers (no copy of the
past at each step) and the inputs attend to everything cached before them, so the same code does
teacher forcing, prefilling a prompt once and decoding one token at a time. A prompt shared by many
rows (the context of a state, for K candidate actions x M futures) is computed once and either
copied to its rows (:meth:`KVCache.repeat_rows`: one fused attention kernel over each row's keys,
the faster choice for few rows per prompt and for teacher forcing) or shared by them
(:meth:`KVCache.share`: each row attends to its prompt's keys and values in place, which saves the
copy and the memory traffic of many rows per prompt while decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Preallocated keys and values of every layer, ``(depth, 2, B, heads, max_len, head_dim)``.

    ``length`` positions are filled; a forward pass writes its inputs' keys and values after them.
    With a ``prefix`` (``(depth, 2, S, heads, P, head_dim)``, :meth:`share`) the first P positions of
    each of S groups of B / S consecutive rows are those shared keys and values, and ``buffers`` hold
    each row's own positions after them.
    """

    def __init__(self, buffers: torch.Tensor, length: int = 0, prefix: torch.Tensor | None = None):
        self.buffers, self.length, self.prefix = buffers, length, prefix

    @property
    def shared(self) -> int:
        """Positions every row reads from its group's shared prefix (0 without one)."""
        return 0 if self.prefix is None else self.prefix.shape[4]

    @classmethod
    def empty(
        cls, config: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype, max_len: int = 0
    ) -> KVCache:
        """An empty cache of ``batch`` rows for ``max_len`` positions (0: the whole block)."""
        head_dim, length = config.width // config.heads, max_len or config.block_size
        shape = (config.depth, 2, batch, config.heads, length, head_dim)
        return cls(torch.empty(shape, device=device, dtype=dtype))

    def repeat_rows(self, group: int, extra: int, rows: slice = slice(None)) -> KVCache:
        """A new cache of ``group`` consecutive copies of each of ``rows``, its filled positions
        copied once, with room for ``extra`` more positions per row."""
        src = self.buffers[:, :, rows, :, : self.length]
        d, _, b, h, n, hd = src.shape
        out = src.new_empty((d, 2, b, group, h, n + extra, hd))
        out[:, :, :, :, :, :n] = src[:, :, :, None]
        return KVCache(out.view(d, 2, b * group, h, n + extra, hd), self.length)

    def share(self, group: int, extra: int, rows: slice = slice(None)) -> KVCache:
        """A cache of ``group`` consecutive rows per row of ``rows`` that read its filled positions in
        place (no copy), with room for ``extra`` positions of their own."""
        if self.prefix is not None:
            raise ValueError("this cache already shares a prefix")
        prefix = self.buffers[:, :, rows, :, : self.length]
        d, _, s, h, _, hd = prefix.shape
        return KVCache(prefix.new_empty((d, 2, s * group, h, extra, hd)), self.length, prefix)

    def write(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys and values (2, B, heads, t, head_dim) at the next positions; the rows' own ones
        cached so far (after the shared prefix, if any)."""
        start = self.length - self.shared
        end = start + kv.shape[3]
        self.buffers[layer, :, :, :, start:end] = kv
        return self.buffers[layer, 0, :, :, :end], self.buffers[layer, 1, :, :, :end]


def prefix_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor
) -> torch.Tensor:
    """Attention of queries ``q`` (B, heads, t, head_dim), the last t of each row's own keys and
    values ``k``, ``v`` (B, heads, n, head_dim), to all of its group's shared prefix ``kp``, ``vp``
    (S, heads, P, head_dim; B / S consecutive rows per group) and causally to its own positions."""
    b, h, t, d = q.shape
    s, p, g, n = kp.shape[0], kp.shape[2], b // kp.shape[0], k.shape[2]
    by_group = q.view(s, g, h, t, d).transpose(1, 2).reshape(s, h, g * t, d)
    scores_p = (by_group @ kp.transpose(-1, -2)).view(s, h, g, t, p).transpose(1, 2).reshape(b, h, t, p)
    scores_own = q @ k.transpose(-1, -2)
    if t > 1:  # own query i (position n - t + i) sees own keys up to it
        mask = torch.ones(t, n, dtype=torch.bool, device=q.device).tril(n - t)
        scores_own = scores_own.masked_fill(~mask, float("-inf"))
    att = (torch.cat([scores_p, scores_own], -1) * d**-0.5).softmax(-1)
    att_p = att[..., :p].reshape(s, g, h, t, p).transpose(1, 2).reshape(s, h, g * t, p)
    out_p = (att_p @ vp).view(s, h, g, t, d).transpose(1, 2).reshape(b, h, t, d)
    return out_p + att[..., p:] @ v


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

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, t, head_dim) each
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.write(layer, qkv[1:])
            if cache.prefix is not None:
                y = prefix_attention(q, k, v, cache.prefix[layer, 0], cache.prefix[layer, 1])
                return self.proj(y.transpose(1, 2).reshape(b, t, c))
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
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


Modulation = tuple[torch.Tensor, int]  # per-row (B, 4, width) multipliers and shifts; first position


def modulate(h: torch.Tensor, times: torch.Tensor, shift: torch.Tensor, start: int) -> torch.Tensor:
    """``h * times + shift`` at positions ``start`` on of ``h`` (B, T, width); rows' (B, width)."""
    out = torch.addcmul(shift[:, None], h[:, start:], times[:, None])
    return out if start == 0 else torch.cat([h[:, :start], out], 1)


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.width), nn.LayerNorm(c.width)
        self.attn = SelfAttention(c)
        self.mlp = nn.Sequential(
            nn.Linear(c.width, 4 * c.width), nn.GELU(), nn.Linear(4 * c.width, c.width), nn.Dropout(c.dropout)
        )

    def forward(
        self, x: torch.Tensor, cache: KVCache | None, layer: int, mod: Modulation | None = None
    ) -> torch.Tensor:
        h = self.ln1(x)
        if mod is not None:  # adaptive layer norm of the conditioned positions (FiLM)
            h = modulate(h, mod[0][:, 0], mod[0][:, 1], mod[1])
        x = x + self.attn(h, cache, layer)
        h = self.ln2(x)
        if mod is not None:
            h = modulate(h, mod[0][:, 2], mod[0][:, 3], mod[1])
        return x + self.mlp(h)


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
        self, x: torch.Tensor, cache: KVCache | None = None, mod: Modulation | None = None
    ) -> torch.Tensor:
        """Input embeddings (B, T, width) -> final hidden states (B, T, width).

        Without a cache the inputs sit at positions 0..T-1; with one they follow its ``length``
        filled positions, attend to them, and are appended to it. ``mod``: per-row multipliers and
        shifts of every block's two layer norms' outputs (``h * times + shift``), (B, depth, 4, width)
        in the order times, shift, times, shift, applied from input position ``start`` on (``(mod,
        start)``); positions before it, and everything cached, are not modulated.
        """
        start, t = (0 if cache is None else cache.length), x.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(f"positions up to {start + t} exceed block_size {self.config.block_size}")
        x = self.drop(x + self.pos_emb.weight[start : start + t])
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, None if mod is None else (mod[0][:, i], mod[1]))
        if cache is not None:
            cache.length += t
        return self.ln_f(x)
