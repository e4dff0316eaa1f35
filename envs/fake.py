"""A cheap, deterministic pixel environment with the same interface as the DMC envs, for tests.

A square moves on a textured background; the 2-D action is an acceleration. The reward is higher
the closer the square is to a goal, so values differ between states and actions. Everything the
DMC envs offer is here too: frame stacks, action repeat, truncation, ``info["proprio"]``,
``info["physics_state"]`` and :meth:`FakePixelEnv.set_physics_state`. Rendering is numpy only.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .common import FrameStack, check_action

GOAL = np.array([0.75, 0.25])
DT, DAMPING = 0.1, 0.9


class FakePixelEnv(gym.Env[np.ndarray, np.ndarray]):
    """A point mass on a 2-D plane seen from above; ``episode_steps`` control steps per episode."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        size: int = 64,
        frame_stack: int = 3,
        action_repeat: int = 2,
        episode_steps: int = 100,
        obs_type: str = "pixels",
        seed: int | None = None,
        render_mode: str | None = None,
        camera: int | None = None,
        render_quality: str = "fast",
    ):
        """``camera`` and ``render_quality`` are accepted so that the DMC envs' kwargs fit here too:
        there is one fixed top-down view and one way to draw it. Any other kwarg is a TypeError."""
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        if frame_stack < 1 or action_repeat < 1 or episode_steps < 1:
            raise ValueError("frame_stack, action_repeat and episode_steps must be >= 1")
        if obs_type not in ("pixels", "state"):
            raise ValueError(f"obs_type must be 'pixels' or 'state', got {obs_type!r}")
        if render_quality not in ("fast", "standard"):
            raise ValueError(f"render_quality must be 'fast' or 'standard', got {render_quality!r}")
        if camera is not None and (isinstance(camera, bool) or not isinstance(camera, int | np.integer)):
            raise TypeError(f"camera must be an integer camera id or None, got {camera!r}")
        self.size, self.frame_stack, self.action_repeat = size, frame_stack, action_repeat
        self.obs_type, self.render_mode = obs_type, render_mode
        self.camera_id = 0  # one fixed top-down view
        self.max_episode_steps = math.ceil(episode_steps / action_repeat)
        self._default_seed = seed
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        if obs_type == "pixels":
            self.observation_space = spaces.Box(0, 255, shape=(3 * frame_stack, size, size), dtype=np.uint8)
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        yy, xx = np.mgrid[0:size, 0:size]
        self._background = (
            np.stack(  # (3, H, W): a fixed texture, so the frame is not mostly flat
                [(xx * 255 // size), (yy * 255 // size), ((xx + yy) % 16) * 8], axis=0
            ).astype(np.uint8)
            // 2
        )
        self._stack = FrameStack(frame_stack, (3, size, size))
        self._state = np.zeros(4)  # x, y, vx, vy
        self._steps = 0
        self._needs_reset = True

    def _render_frame(self) -> np.ndarray:
        frame = self._background.copy()
        half = max(self.size // 16, 1)
        cx, cy = (np.clip(self._state[:2], 0.0, 1.0) * (self.size - 1)).astype(int)
        speed = min(float(np.linalg.norm(self._state[2:])) / 2.0, 1.0)
        frame[:, max(cy - half, 0) : cy + half + 1, max(cx - half, 0) : cx + half + 1] = np.array(
            [255, int(255 * (1 - speed)), int(255 * speed)], dtype=np.uint8
        )[:, None, None]
        return frame

    def _observe(self) -> np.ndarray:
        return self._stack.observation() if self.obs_type == "pixels" else self._state.astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {"proprio": self._state.astype(np.float32), "physics_state": self._state.copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None and self._default_seed is not None and self._np_random is None:
            seed = self._default_seed
        super().reset(seed=seed)
        self._state = np.concatenate([self.np_random.uniform(0.1, 0.9, size=2), np.zeros(2)])
        self._stack.fill(self._render_frame())
        self._steps, self._needs_reset = 0, False
        return self._observe(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        a = check_action(action, (2,))
        reward = 0.0
        for _ in range(self.action_repeat):
            vel = DAMPING * self._state[2:] + DT * 2.0 * a
            pos = self._state[:2] + DT * vel
            bounced = (pos < 0.0) | (pos > 1.0)
            vel[bounced] *= -1.0
            self._state = np.concatenate([np.clip(pos, 0.0, 1.0), vel])
            reward += float(np.exp(-4.0 * np.linalg.norm(self._state[:2] - GOAL)))
        self._stack.push(self._render_frame())
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        self._needs_reset = truncated
        return self._observe(), reward, False, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._stack.frames[-1].transpose(1, 2, 0)

    def set_physics_state(
        self, physics_state: np.ndarray, step: int = 0, frames: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restore a state saved from ``info["physics_state"]``; same contract as the DMC envs."""
        state = np.asarray(physics_state, dtype=np.float64)
        if state.shape != (4,) or not np.all(np.isfinite(state)):
            raise ValueError(f"physics_state must be 4 finite numbers, got {state.shape}")
        if not 0 <= step < self.max_episode_steps:
            raise ValueError(f"step must be in [0, {self.max_episode_steps}), got {step}")
        if self._np_random is None:
            self.reset()
        self._state = state.copy()
        if frames is None:
            self._stack.fill(self._render_frame())
        else:
            self._stack.load(frames)
        self._steps, self._needs_reset = step, False
        return self._observe(), self._info()
