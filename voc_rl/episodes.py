"""Episodes of an agent in its env, and the summary of their returns that ``voc-rl agent eval`` and
the main job print. (The control benchmark aggregates runs of several seeds with rliable's
stratified bootstrap instead: ``benchmarks/policy.py``.)"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from voc_rl.envs import make_env


def play_episode(
    agent: Any, task: str, seed: int, frames: list | None = None, deterministic: bool = True
) -> tuple[float, int, float]:
    """One episode of ``agent.predict(deterministic=...)`` (any object with ``predict`` and ``seed``)
    on env seed ``seed``: (return, decisions, seconds spent deciding). ``frames`` (a list) receives
    the newest frame of every observation."""
    env = make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    agent.seed(seed)
    total, decisions, spent, done = 0.0, 0, 0.0, False
    while True:
        if frames is not None:
            frames.append(obs[-3:].transpose(1, 2, 0))  # (H, W, 3)
        if done:
            break
        start = time.perf_counter()
        action, _ = agent.predict(obs, deterministic=deterministic)
        spent += time.perf_counter() - start
        obs, reward, terminated, truncated, _ = env.step(action)
        total, decisions, done = total + reward, decisions + 1, terminated or truncated
    env.close()
    return total, decisions, spent


def iqm(returns: np.ndarray) -> float:
    """The interquartile mean, as rliable computes it (scipy's ``trim_mean`` at 0.25)."""
    r = np.sort(np.asarray(returns, dtype=float))
    cut = len(r) // 4
    return float(r[cut : len(r) - cut].mean())


def mean_interval(returns: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean (seeded: the same returns, the same interval)."""
    r = np.asarray(returns, dtype=float)
    boot = np.random.default_rng(seed).choice(r, size=(reps, len(r))).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)
