"""A ViT trained from scratch by DINO self-distillation, its patch features quantized VQ-KD style.

DINO (Caron et al. 2021): a student ViT and its EMA teacher, each with a projection head onto
``dino_out_dim`` prototypes; the teacher's outputs are centred (EMA centre) and sharpened, and the
student learns to match them by cross-entropy, from 2 global crops (area 0.4-1, back to 64 px) and
``local_crops`` small ones (area 0.1-0.4, 32 px, interpolated position embeddings). No horizontal
flips: left and right matter for control. VQ-KD (BEiT v2, Peng et al. 2022): a head maps the
teacher's patch features (detached) to codes of a cosine codebook, and a one-block decoder must
rebuild those features (layer-normalised) from the codes alone. Tokens: one code per 8x8 patch.

Measured on cheetah-run frames (static background, so a fresh ViT sees every frame alike): without
BatchNorm in the projection heads the teacher's outputs went uniform (collapse) within ~100 steps,
whatever the learning rate or Sinkhorn centring; with it (``head_bn``) they stay peaked for
hundreds of steps. DINO is slow, though: it beat a frozen random teacher clearly only by ~1000 steps.

:meth:`DINOTokenizer.from_beit_vqkd` loads the published BEiT-v2 VQ-KD tokenizer (its DINO variant
is what the Video Occupancy Models code used) into the same architecture, for encoding only.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from voc_rl.checkpoint import CheckpointError, load_checkpoint
from voc_rl.tokenizers.base import Tokenizer, TokenizerConfig
from voc_rl.tokenizers.quantizer import VectorQuantizer


@dataclass(frozen=True)
class DINOConfig(TokenizerConfig):
    patch_size: int = 8
    """Side of a square ViT patch: 8 -> 8x8 = 64 tokens per 64 px frame."""
    width: int = 128
    """ViT width (model dimension)."""
    depth: int = 4
    """Number of ViT blocks."""
    heads: int = 4
    """Attention heads per block (``width`` must be divisible by it)."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP, as a multiple of ``width``."""
    input_size: int = 0
    """Resolution the ViT sees (frames are resized to it); 0 means ``image_size``."""
    dino_out_dim: int = 1024
    """Number of DINO prototypes (output width of the projection heads)."""
    local_crops: int = 2
    """Small crops per frame, seen by the student only."""
    local_size: int = 32
    """Side in pixels that local crops are resized to."""
    global_scale: tuple[float, float] = (0.4, 1.0)
    """Range of the area fraction of a global crop."""
    local_scale: tuple[float, float] = (0.1, 0.4)
    """Range of the area fraction of a local crop."""
    jitter: float = 0.4
    """Brightness and contrast factors of every crop are drawn from [1 - jitter, 1 + jitter]."""
    teacher_temp: float = 0.04
    """Softmax temperature of the teacher (sharpening)."""
    student_temp: float = 0.1
    """Softmax temperature of the student."""
    center_momentum: float = 0.9
    """EMA momentum of the centre subtracted from the teacher's outputs."""
    head_bn: bool = True
    """BatchNorm in the projection heads' MLP (DINO's ``use_bn_in_head``): keeps DMC frames apart."""
    ema_momentum: float = 0.996
    """Teacher EMA momentum at step 0; rises to 1 on a cosine schedule over ``steps`` (the run's length)."""
    encoder_only: bool = False
    """Teacher ViT, quantizer head and codebook only (a loaded BEiT-v2 VQ-KD encoder): no training."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input_size == 0:
            object.__setattr__(self, "input_size", self.image_size)
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        for name in ("input_size", "local_size"):
            if getattr(self, name) % self.patch_size:
                raise ValueError(f"{name} {getattr(self, name)} must be a multiple of patch_size")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        return self.proj(a.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm ViT block, named as timm and BEiT name theirs (so their weights map one to one)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(dim, hidden), "fc2": nn.Linear(hidden, dim)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))  # (B, N, D)


class ViT(nn.Module):
    """Patch embedding, a CLS token, learned absolute positions (interpolated for other grids)."""

    def __init__(self, c: DINOConfig):
        super().__init__()
        self.grid = c.input_size // c.patch_size
        self.patch_embed = nn.ModuleDict({"proj": nn.Conv2d(3, c.width, c.patch_size, c.patch_size)})
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, c.width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, 3, S, S) normalised to [-1, 1] -> tokens (M, 1 + (S/p)^2, D), CLS first."""
        x = self.patch_embed.proj(x)  # (M, D, g, g)
        g = x.shape[-1]
        pos = self.pos_embed
        if g != self.grid:
            patch_pos = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=(g, g), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :1], patch_pos.flatten(2).transpose(1, 2)], dim=1)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + pos  # (M, 1 + g*g, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class DINOHead(nn.Module):
    """MLP to a bottleneck, l2-normalised, then cosine scores against unit-norm prototypes."""

    def __init__(self, dim: int, out_dim: int, bn: bool = False):
        super().__init__()
        h = 4 * dim

        def layer(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), nn.BatchNorm1d(o) if bn else nn.Identity(), nn.GELU()]

        self.mlp = nn.Sequential(*layer(dim, h), *layer(h, h), nn.Linear(h, dim))
        self.prototypes = nn.Parameter(torch.randn(out_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T  # (M, K)


class DINOTokenizer(Tokenizer):
    backend = "dino"
    config_cls = DINOConfig
    has_decoder = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"width": 32, "depth": 1, "heads": 2, "vocab_size": 64, "code_dim": 16, "dino_out_dim": 64}
        | {"local_crops": 1, "batch_size": 8, "steps": 100},
        "small": {"width": 128, "depth": 4, "heads": 4, "vocab_size": 512, "code_dim": 32}
        | {"dino_out_dim": 1024, "local_crops": 2, "batch_size": 64, "steps": 3000, "lr": 1e-4},
        "base": {"width": 192, "depth": 6, "heads": 6, "vocab_size": 1024, "code_dim": 32}
        | {"dino_out_dim": 4096, "local_crops": 4, "batch_size": 128, "steps": 20000, "lr": 2e-4},
    }

    def __init__(self, config: DINOConfig):
        super().__init__(config)
        c, w = config, config.width
        self.teacher = ViT(c).requires_grad_(False)
        self.vq_head = nn.Sequential(nn.Linear(w, w), nn.Tanh(), nn.Linear(w, c.code_dim))
        self.quantizer = VectorQuantizer(c.vocab_size, c.code_dim, restart_after=c.restart_after)
        if c.encoder_only:
            return
        self._add_state_head()
        self.student = copy.deepcopy(self.teacher).requires_grad_(True)
        self.student_head = DINOHead(w, c.dino_out_dim, c.head_bn)
        self.teacher_head = copy.deepcopy(self.student_head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, c.dino_out_dim))  # (1, K)
        self.dec_in = nn.Linear(c.code_dim, w)
        self.dec_pos = nn.Parameter(torch.randn(1, self.tokens_per_frame, w) * 0.02)
        self.dec_block = Block(w, c.heads, c.mlp_ratio)
        self.dec_out = nn.Sequential(nn.LayerNorm(w, eps=1e-6), nn.Linear(w, w))

    @property
    def tokens_per_frame(self) -> int:
        return (self.config.input_size // self.config.patch_size) ** 2

    # ------------------------------------------------------------------ encoding
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1] -> the ViT's resolution, in [-1, 1] (BEiT's 'default' preprocessing)."""
        s = self.config.input_size
        if x.shape[-1] != s:
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
        return x * 2 - 1

    def _patch_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(self._prep(x))[:, 1:]  # (M, N, D)

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.vq_head(self._patch_features(x)), dim=-1)  # (M, N, d)
        book = self.quantizer.codebook  # (K, d); argmin of the squared distance, as BEiT computes it
        return (book.pow(2).sum(-1) - 2 * z @ book.T).argmin(dim=-1)  # (M, N)

    # ------------------------------------------------------------------ training
    def _crop(self, x: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
        """Random resized crops (area fraction in ``scale``, aspect 3/4-4/3) with brightness/contrast."""
        b, dev, j = len(x), x.device, self.config.jitter
        area = torch.empty(b, device=dev).uniform_(*scale)
        aspect = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3)).exp()
        w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # of the side
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1] = w, h
        theta[:, 0, 2] = (torch.rand(b, device=dev) * 2 - 1) * (1 - w)  # box centre, in [-1, 1] units
        theta[:, 1, 2] = (torch.rand(b, device=dev) * 2 - 1) * (1 - h)
        grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright, contrast = 1 + j * (torch.rand(2, b, 1, 1, 1, device=dev) * 2 - 1)
        out = out * bright
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        return ((out - mean) * contrast + mean).clamp(0, 1)  # (B, 3, size, size)

    def multi_crop(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """2 global views (B, 3, S, S) and ``local_crops`` local views (B, 3, s, s) of frames x."""
        c = self.config
        views = [self._crop(x, c.input_size, c.global_scale) for _ in range(2)]
        return views, [self._crop(x, c.local_size, c.local_scale) for _ in range(c.local_crops)]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        c = self.config
        if c.encoder_only:
            raise RuntimeError("this dino tokenizer holds a loaded VQ-KD encoder only; it cannot be trained")
        x = batch["frames"]  # (B, 3, H, W) in [0, 1]
        views, local = self.multi_crop(x)
        glob = torch.cat(views) * 2 - 1  # (2B, 3, S, S)
        cls = [self.student(glob)[:, 0]]  # (2B, D)
        if local:
            cls.append(self.student(torch.cat(local) * 2 - 1)[:, 0])  # (LB, D)
        s_out = self.student_head(torch.cat(cls))  # ((2 + L)B, K)
        log_p = F.log_softmax(s_out / c.student_temp, dim=-1).chunk(2 + len(local))
        with torch.no_grad():
            t_out = self.teacher_head(self.teacher(glob)[:, 0])  # (2B, K)
            q = F.softmax((t_out - self.center) / c.teacher_temp, dim=-1).chunk(2)
            feats = self._patch_features(x)  # (B, N, D)
        terms = [-(q[i] * log_p[j]).sum(-1).mean() for i in range(2) for j in range(len(log_p)) if i != j]
        dino = torch.stack(terms).mean()
        zq, codes, commit = self.quantizer(self.vq_head(feats))  # (B, N, d), (B, N)
        rec = self.dec_out(self.dec_block(self.dec_in(zq) + self.dec_pos))  # (B, N, D)
        target = F.layer_norm(feats, feats.shape[-1:])
        rec_loss = 1 - F.cosine_similarity(rec, target, dim=-1).mean()
        if self.training:
            with torch.no_grad():
                m = c.center_momentum
                self.center.mul_(m).add_(t_out.mean(0, keepdim=True), alpha=1 - m)
        entropy = -(q[0] * q[0].clamp_min(1e-12).log()).sum(-1).mean()
        logs = {"dino": float(dino.detach()), "vqkd_rec": float(rec_loss.detach())}
        logs["commitment"] = float(commit.detach())
        logs["teacher_entropy"] = float(entropy)
        aux, aux_logs = self.state_term(zq, batch)  # trains the VQ head: the patch features are the teacher's
        return dino + rec_loss + commit + aux, {**logs, **aux_logs}, codes

    def momentum(self, step: int) -> float:
        """Teacher EMA momentum after ``step`` + 1 optimiser steps: cosine from ``ema_momentum`` to 1."""
        progress = min(1.0, (step + 1) / max(self.config.steps, 1))
        return 1 - (1 - self.config.ema_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_step(self) -> None:
        if self.config.encoder_only:
            return
        m = self.momentum(self.step)
        for t, s in ((self.teacher, self.student), (self.teacher_head, self.student_head)):
            for pt, ps in zip(t.parameters(), s.parameters(), strict=True):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    # ------------------------------------------------------------------ BEiT v2 VQ-KD weights
    @classmethod
    def from_beit_vqkd(
        cls, path: str | Path, heads: int | None = None, image_size: int = 64
    ) -> DINOTokenizer:
        """Encoder, ``encode_task_layer`` and codebook of a BEiT-v2 VQ-KD checkpoint (microsoft/unilm,
        ``beit2/modeling_vqkd.py``), e.g. ``vqkd_encoder_base_decoder_3x768x12_dino.pth``.

        Width, depth, patch size, input resolution, MLP ratio, vocabulary and code size are read
        from the tensor shapes; the number of heads cannot be, and defaults to ``width // 64``
        (ViT-B: 12). Frames of ``image_size`` px are resized (bicubic) to the checkpoint's input
        size and mapped to [-1, 1]; codes are the nearest codebook entries of the l2-normalised
        features, as the original computes them. The decoder (which rebuilt DINO features) is not
        needed to encode and is skipped; any other key, or a missing one, is an error.
        """
        with torch.serialization.safe_globals([argparse.Namespace]):  # training runs save their args
            ckpt = load_checkpoint(path)
        state = ckpt.get("model", ckpt.get("state_dict", ckpt))
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path}: expected a state dict (under 'model'), got {type(state).__name__}"
            )
        state = {k: v for k, v in state.items() if not k.startswith(("loss", "teacher", "scaling"))}
        need = ["encoder.cls_token", "encoder.pos_embed", "encoder.patch_embed.proj.weight"]
        need += ["encoder.blocks.0.mlp.fc1.weight", "quantize.embedding.weight"]
        if missing := [k for k in need if k not in state]:
            raise CheckpointError(f"{path} lacks {missing}: it is not a BEiT-v2 VQ-KD checkpoint")
        width = state["encoder.cls_token"].shape[-1]
        patch = state["encoder.patch_embed.proj.weight"].shape[-1]
        grid = math.isqrt(state["encoder.pos_embed"].shape[1] - 1)
        if grid * grid + 1 != state["encoder.pos_embed"].shape[1]:
            raise CheckpointError(f"{path}: encoder.pos_embed is not a CLS token plus a square grid")
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks."))
        vocab, code_dim = state["quantize.embedding.weight"].shape
        config = DINOConfig(
            image_size=image_size,
            input_size=grid * patch,
            patch_size=patch,
            width=width,
            depth=depth,
            heads=heads or max(1, width // 64),
            mlp_ratio=state["encoder.blocks.0.mlp.fc1.weight"].shape[0] / width,
            vocab_size=vocab,
            code_dim=code_dim,
            encoder_only=True,
        )
        model = cls(config)
        if "quantize.embedding.initted" in state and not bool(state["quantize.embedding.initted"].all()):
            raise CheckpointError(f"{path}: its codebook was never initialised (quantize.embedding.initted)")
        mapped, source = _map_beit(state, depth)
        own = model.state_dict()
        if unexpected := sorted(source[k] for k in mapped if k not in own):
            raise CheckpointError(f"{path} has keys this architecture cannot use: {unexpected}")
        aux = ("quantizer.ema_sum", "quantizer.ema_count", "quantizer.idle_steps", "quantizer.initialised")
        if missing := sorted(k for k in own if k not in mapped and k not in aux):
            raise CheckpointError(f"{path} lacks the weights for {missing} (names in voc_rl's layout)")
        for k, v in mapped.items():
            if v.shape != own[k].shape:
                raise CheckpointError(
                    f"{path}: {source[k]} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
                )
        book = mapped["quantizer.codebook"]
        mapped |= {"quantizer.ema_sum": book.clone(), "quantizer.ema_count": torch.ones(vocab)}
        mapped |= {
            "quantizer.idle_steps": own["quantizer.idle_steps"],
            "quantizer.initialised": torch.tensor(True),
        }
        model.load_state_dict(mapped)
        return model.eval()


_BEIT_UNUSED = ("decoder.", "decode_task_layer.", "quantize.cluster_size", "quantize.embedding.")


def _map_beit(state: dict[str, torch.Tensor], depth: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """BEiT-v2 VQ-KD keys -> this module's keys (and each new key's original name, for errors)."""
    mapped: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        if key == "quantize.embedding.weight":
            name = "quantizer.codebook"
        elif key.startswith(_BEIT_UNUSED):
            continue  # the decoder and codebook statistics: not needed to encode
        elif key.startswith("encode_task_layer."):
            name = "vq_head." + key.removeprefix("encode_task_layer.")
        elif key.startswith("encoder."):
            name = "teacher." + key.removeprefix("encoder.").replace("fc_norm.", "norm.")  # norms patches
        else:
            name = key
        if name in mapped:
            raise CheckpointError(f"{key} and {source[name]} would both load into {name}")
        mapped[name], source[name] = value.float(), key
    for i in range(depth):  # BEiT keeps q and v biases apart; k has none
        p = f"teacher.blocks.{i}.attn."
        if p + "qkv.bias" in mapped or p + "qkv.weight" not in mapped:
            continue  # timm layout, or a missing block that the caller reports
        if (p + "q_bias" in mapped) != (p + "v_bias" in mapped):
            continue  # a lone q or v bias is left in place and reported as unusable
        bias = torch.zeros(len(mapped[p + "qkv.weight"]))  # qkv_bias=False: no biases at all
        if p + "q_bias" in mapped:
            q, v = mapped.pop(p + "q_bias"), mapped.pop(p + "v_bias")
            bias = torch.cat([q, torch.zeros_like(q), v])
        mapped[p + "qkv.bias"], source[p + "qkv.bias"] = bias, f"encoder.blocks.{i}.attn.q_bias/v_bias"
    return mapped, source
