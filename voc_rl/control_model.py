"""The base of the control heads' models, on tokens (:mod:`voc_rl.token_trunk`) or on pixels
(:mod:`voc_rl.pixel_trunk`): a config, a training step count, the check of actions, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from voc_rl.checkpoint import load_model, save_model

M = TypeVar("M", bound="ControlModel")


def check_actions(actions: Any, batch: int, action_dim: int, device: torch.device) -> torch.Tensor:
    """Actions (B, A) or (B, K, A) as float32 on ``device``: the token and the pixel models' check."""
    actions, a = torch.as_tensor(actions), action_dim
    if not actions.is_floating_point():
        raise TypeError(f"actions must be float, got {actions.dtype}")
    if actions.ndim not in (2, 3) or actions.shape[0] != batch or actions.shape[-1] != a:
        raise ValueError(
            f"actions must be (B={batch}, action_dim={a}) or (B, K, {a}), got {tuple(actions.shape)}"
        )
    if not torch.isfinite(actions).all():
        raise ValueError("actions contain NaN or inf")
    return actions.float().to(device)


class ControlModel(nn.Module):
    """A model with a ``config`` (of type ``CONFIG``, with an ``action_dim``), saved in the format
    ``FORMAT``; subclasses build the trunk and heads and define ``device``."""

    FORMAT: ClassVar[str]
    CONFIG: ClassVar[type]
    device: torch.device

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.step = 0

    def check_actions(self, actions: Any, batch: int) -> torch.Tensor:
        """Actions (B, A) or (B, K, A) as float32 on the model's device."""
        return check_actions(actions, batch, self.config.action_dim, self.device)

    def save(self, path: str | Path, **extra: Any) -> Path:
        return save_model(path, self, self.FORMAT, self.config, **extra)

    @classmethod
    def load(cls: type[M], path: str | Path, **expect: Any) -> M:
        """A model from :meth:`save`; ``expect`` fields must match its config (else CheckpointError)."""
        return load_model(path, cls.FORMAT, lambda ck: cls(cls.CONFIG(**ck["config"])), expect)[0]
