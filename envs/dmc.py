"""DeepMind Control tasks as gymnasium pixel environments, with fast headless rendering.

Observations are uint8 channel-first frame stacks, ``(3 * frame_stack, size, size)``; actions are
float32 in [-1, 1], repeated ``action_repeat`` times (rewards summed). An episode is 1000 control
steps of the dm_control task, i.e. ``ceil(1000 / action_repeat)`` agent steps, after which
``truncated=True``; these tasks never terminate.

``info`` carries ``proprio`` (the task's state observation, flattened, float32) and
``physics_state`` (MuJoCo's qpos/qvel/act, float64). :meth:`DMCPixelEnv.set_physics_state`
restores such a state; stepping from it reproduces the recorded frames and rewards.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ._gl import ensure_gl_backend
from .common import FrameStack, check_action

ensure_gl_backend()  # must precede the first dm_control import

import mujoco  # noqa: E402
from dm_control import suite  # noqa: E402
from dm_control.mujoco.engine import Camera  # noqa: E402

# dm_control's own XML uses an attribute MuJoCo 3.3+ deprecates; the warning means nothing to users.
logging.getLogger("absl").addFilter(lambda record: "settotalmass" not in record.getMessage())

RenderQuality = Literal["fast", "standard"]
ObsType = Literal["pixels", "state"]
EPISODE_CONTROL_STEPS = 1000


def flatten_observation(obs: OrderedDict[str, np.ndarray]) -> np.ndarray:
    """Concatenate a dm_control observation dict (in the task's own key order) into one float32 vector."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in obs.values()])


class DMCPixelEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dm_control ``domain``/``task`` as a gymnasium env with stacked pixel observations."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str,
        task: str,
        size: int = 64,
        frame_stack: int = 3,
        action_repeat: int = 2,
        camera: int | None = None,
        render_quality: RenderQuality = "fast",
        obs_type: ObsType = "pixels",
        seed: int | None = None,
        render_mode: str | None = None,
    ):
        if size < 16 or size > 1024:
            raise ValueError(f"size must be in [16, 1024] pixels, got {size}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if render_quality not in ("fast", "standard"):
            raise ValueError(f"render_quality must be 'fast' or 'standard', got {render_quality!r}")
        if obs_type not in ("pixels", "state"):
            raise ValueError(f"obs_type must be 'pixels' or 'state', got {obs_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.domain, self.task = domain, task
        self.size, self.frame_stack, self.action_repeat = size, frame_stack, action_repeat
        self.camera_id = camera if camera is not None else (2 if domain == "quadruped" else 0)
        self.render_quality, self.obs_type, self.render_mode = render_quality, obs_type, render_mode
        self.max_episode_steps = math.ceil(EPISODE_CONTROL_STEPS / action_repeat)
        self._default_seed = seed

        # An infinite time limit: we count steps ourselves, so that a restored physics state is
        # never cut short (or silently reset) by dm_control's own counter.
        self._env = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
        self.physics = self._env.physics
        spec = self._env.action_spec()
        self._act_low, self._act_high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)
        ts = self._env.reset()
        proprio_dim = flatten_observation(ts.observation).shape[0]
        # the flattened state's parts in order: (name, size), e.g. ("position", 8), ("velocity", 9)
        self.proprio_parts = tuple((key, int(np.size(value))) for key, value in ts.observation.items())
        if obs_type == "pixels":
            self.observation_space = spaces.Box(0, 255, shape=(3 * frame_stack, size, size), dtype=np.uint8)
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(proprio_dim,), dtype=np.float32)
        self._camera: Camera | None = None
        self._stack = FrameStack(frame_stack, (3, size, size))
        self._last_frame: np.ndarray | None = None
        self._proprio = np.zeros(proprio_dim, dtype=np.float32)
        self._steps = 0
        self._needs_reset = True
        # Functions of the physics that ``step`` also scores, summed like the own reward, into
        # ``info["task_rewards"]``: other tasks of the domain (voc_rl.task_rewards), for ground truth.
        self.score_rewards: Sequence[Callable[[Any], float]] = ()

    # ------------------------------------------------------------------ rendering
    def _make_camera(self) -> Camera:
        if self.render_quality == "fast":
            # Measured: no multisampling, small shadow maps, no shadows or reflections and one reused
            # camera take cheetah 64 px from ~45 to ~600 frames/s (FACTS.md). Must precede the first
            # render, which allocates the offscreen buffer.
            vis = self.physics.model.vis
            vis.quality.offsamples = 0
            vis.quality.shadowsize = 256
            vis.global_.offwidth = max(self.size, 16)
            vis.global_.offheight = max(self.size, 16)
        camera = Camera(self.physics, self.size, self.size, self.camera_id)
        if self.render_quality == "fast":
            camera._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            camera._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return camera

    def _render_frame(self) -> np.ndarray:
        """Render the current physics state as a (3, size, size) uint8 frame."""
        if self._camera is None:
            self._camera = self._make_camera()
        frame = self._camera.render()  # (H, W, 3)
        self._last_frame = frame
        return frame.transpose(2, 0, 1)

    def _observe(self) -> np.ndarray:
        return self._stack.observation() if self.obs_type == "pixels" else self._proprio.copy()

    def _info(self) -> dict[str, Any]:
        return {"proprio": self._proprio.copy(), "physics_state": self.physics.get_state().copy()}

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None and self._default_seed is not None and self._np_random is None:
            seed = self._default_seed
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        ts = self._env.reset()
        self._proprio = flatten_observation(ts.observation)
        if self.obs_type == "pixels":
            self._stack.fill(self._render_frame())
        self._steps = 0
        self._needs_reset = False
        info = self._info()
        return self._observe(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        reward, others, terminated = self._physics_steps(action, self.score_rewards)
        if self.obs_type == "pixels":
            self._stack.push(self._render_frame())
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps and not terminated
        self._needs_reset = terminated or truncated
        info = self._info()
        if self.score_rewards:
            info["task_rewards"] = others
        return self._observe(), float(reward), terminated, truncated, info

    def _physics_steps(
        self, action: np.ndarray, rewards: Sequence[Callable[[Any], float]]
    ) -> tuple[float, np.ndarray, bool]:
        """One agent step of physics: ``(own reward, each of rewards, terminated)``, every reward
        summed over the ``action_repeat`` physics steps."""
        a = check_action(action, self.action_space.shape)
        a = self._act_low + (a + 1.0) * 0.5 * (self._act_high - self._act_low)
        own, others, terminated = 0.0, np.zeros(len(rewards)), False
        for _ in range(self.action_repeat):
            ts = self._env.step(a)
            own += ts.reward or 0.0
            if rewards:
                others += [reward(self.physics) for reward in rewards]
            if ts.discount == 0.0:  # a true terminal state (none of the standard tasks has one)
                terminated = True
                break
        self._proprio = flatten_observation(ts.observation)
        return own, others, terminated

    def task_rewards(
        self, action: np.ndarray, rewards: Sequence[Callable[[Any], float]]
    ) -> tuple[float, np.ndarray]:
        """One agent step's rewards from the current physics state, as :meth:`step` would take the
        step, without rendering or counting it: the task's own reward and each of ``rewards``
        (functions of the physics, scored after every physics step as dm_control scores its own),
        summed over the ``action_repeat`` steps. The physics is left after the step."""
        own, others, _ = self._physics_steps(action, rewards)
        return own, others

    def render(self) -> np.ndarray | None:
        """The latest frame as (H, W, 3) uint8, rendering it if the env has not yet done so."""
        if self.render_mode != "rgb_array":
            return None
        if self._last_frame is None:
            self._render_frame()
        return self._last_frame

    def close(self) -> None:
        if self._camera is not None:
            self._camera._scene.free()
            self._camera = None
        super().close()

    # ------------------------------------------------------------------ restoring states
    def set_physics_state(
        self, physics_state: np.ndarray, step: int = 0, frames: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restore a physics state saved from ``info["physics_state"]`` and return ``(obs, info)``.

        ``step`` is the agent step the state was recorded at (it sets how many steps remain before
        truncation). ``frames``, an observation recorded with the state, restores the earlier frames
        of the stack; without it every slot holds the current frame, as after a reset.
        """
        state = np.asarray(physics_state, dtype=np.float64)
        expected = self.physics.get_state().shape
        if state.shape != expected:
            raise ValueError(
                f"physics_state has shape {state.shape}, but {self.domain}-{self.task} expects {expected}"
            )
        if not np.all(np.isfinite(state)):
            raise ValueError("physics_state contains NaN or inf")
        if not 0 <= step < self.max_episode_steps:
            raise ValueError(f"step must be in [0, {self.max_episode_steps}), got {step}")
        if self._np_random is None:
            self.reset()
        with self.physics.reset_context():
            self.physics.set_state(state)
        self._proprio = flatten_observation(self._env.task.get_observation(self.physics))
        if self.obs_type == "pixels":
            frame = self._render_frame()
            if frames is None:
                self._stack.fill(frame)
            else:
                self._stack.load(frames)
        self._steps = step
        self._needs_reset = False
        info = self._info()
        return self._observe(), info
