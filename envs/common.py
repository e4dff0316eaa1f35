"""Pieces shared by every voc_rl environment: action checks and the frame stack."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate an action and return it as a float64 array clipped to [-1, 1]."""
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action must be a numeric array of shape {shape}, got {action!r}") from exc
    if arr.shape != shape:
        raise ValueError(
            f"action has shape {arr.shape}, expected {shape}; pass one action per step "
            "(for a batch, use a vector env)"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action contains NaN or inf: {arr}")
    return np.clip(arr, -1.0, 1.0)


class FrameStack:
    """A fixed-size stack of channel-first frames; the first frame of an episode fills every slot."""

    def __init__(self, frame_stack: int, frame_shape: tuple[int, int, int]):
        self.frames = np.zeros((frame_stack, *frame_shape), dtype=np.uint8)  # (F, 3, H, W)

    def fill(self, frame: np.ndarray) -> None:
        self.frames[:] = frame

    def push(self, frame: np.ndarray) -> None:
        self.frames[:-1] = self.frames[1:]
        self.frames[-1] = frame

    def load(self, observation: np.ndarray) -> None:
        """Set every slot from a recorded stacked observation of shape (F*3, H, W)."""
        obs = np.asarray(observation)
        f, c, h, w = self.frames.shape
        if obs.shape != (f * c, h, w) or obs.dtype != np.uint8:
            raise ValueError(
                f"frames must be a uint8 observation of shape {(f * c, h, w)}, got {obs.dtype} {obs.shape}"
            )
        self.frames[:] = obs.reshape(self.frames.shape)

    def observation(self) -> np.ndarray:
        f, c, h, w = self.frames.shape
        return self.frames.reshape(f * c, h, w).copy()  # (F*3, H, W)
