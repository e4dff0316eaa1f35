"""The shared tokenizer backbone: ``make_tokenizer("vqvae", size="small")``.

Backends: ``vqvae`` (convolutional VQ-VAE, 2-D grid of codes), ``dino`` (a ViT trained by DINO
self-distillation, patch features quantized VQ-KD style), ``musik`` (an encoder trained by
multi-step inverse dynamics, VQ bottleneck) and ``titok`` (a 1-D tokenizer writing K latent
tokens per frame). Size presets: ``tiny`` (tests), ``small`` (the CPU default), ``base``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the package stays light (the registry reads AGENT_TOKENS); torch loads on use
    from voc_rl.data.dataset import PixelDataset
    from voc_rl.tokenizers.base import Tokenizer, TokenizerConfig

BACKENDS: dict[str, str] = {
    "vqvae": "voc_rl.tokenizers.vqvae:VQVAETokenizer",
    "dino": "voc_rl.tokenizers.dino:DINOTokenizer",
    "musik": "voc_rl.tokenizers.musik:MUSIKTokenizer",
    "titok": "voc_rl.tokenizers.titok:TiTokTokenizer",
}
SIZES = ("tiny", "small", "base")
# The tokenizer fields of the agents' tokens: 16 per 64 px frame (4x4 grids, 16x16 ViT patches, 16
# TiTok slots), where the presets write 64; scoring a candidate costs several times less (decision
# latency on a CPU: README, "Control from offline data").
AGENT_TOKENS: dict[str, dict[str, Any]] = {
    "vqvae": {"downsample": 4},
    "dino": {"patch_size": 16},
    "musik": {"downsample": 4},
    "titok": {},
}


def __getattr__(name: str) -> Any:
    if name in ("Tokenizer", "TokenizerConfig"):
        from voc_rl.tokenizers import base

        return getattr(base, name)
    raise AttributeError(f"module 'voc_rl.tokenizers' has no attribute {name!r}")


def list_tokenizers() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str) -> type[Tokenizer]:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=2)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown tokenizer backend {name!r}.{hint} Known: {', '.join(sorted(BACKENDS))}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_tokenizer(
    name: str, size: str = "small", dataset: PixelDataset | None = None, **overrides: Any
) -> Tokenizer:
    """A fresh (untrained) tokenizer of backend ``name`` at preset ``size``, with the fields the pixel
    ``dataset`` fixes (MUSIK's action size; see :meth:`Tokenizer.config_for`), overridden by kwargs."""
    cls = get_backend(name)
    return cls(cls.config_for(dataset, size, **overrides))


__all__ = [
    "AGENT_TOKENS",
    "BACKENDS",
    "SIZES",
    "Tokenizer",
    "TokenizerConfig",
    "get_backend",
    "list_tokenizers",
    "make_tokenizer",
]
