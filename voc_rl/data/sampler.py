"""Random windows for training, and exact discounted returns to episode end.

A window at frame t of an episode with T transitions holds the frame stack s_t, a_t, r_t, s_{t+1},
a_{t+1}, and a future stack s_{t+k} with k ~ Geometric(1 - gamma) on {1, 2, ...}, so that s_{t+k}
is a draw from the discounted occupancy of s_{t+1+j}, j >= 0. Windows never cross episodes; stacks
at an episode's start repeat its first frame.

When t + k runs past the end of a truncated episode the future is clipped to the last recorded
frame and ``future_clipped`` says so (the true future was never recorded); at a true terminal
state the future stays there (an absorbing state), which is exact.

:meth:`WindowSampler.occupancy_targets` gives the training targets of an occupancy model with a
horizon ``n_step`` (see :func:`future_targets`): per row the dataset's s_{t+k}, or the (state,
action) at which the model must bootstrap, gathering only the stacks it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voc_rl.data.dataset import PixelDataset


@dataclass
class WindowBatch:
    obs: np.ndarray  # (B, 3F, H, W) uint8, s_t
    action: np.ndarray  # (B, A) float32, a_t
    reward: np.ndarray  # (B,) float32, r_t
    next_obs: np.ndarray  # (B, 3F, H, W) uint8, s_{t+1}
    next_action: np.ndarray  # (B, A) float32, a_{t+1} (zeros where next_terminal)
    next_terminal: np.ndarray  # (B,) bool, s_{t+1} is a true terminal state
    future_obs: np.ndarray  # (B, 3F, H, W) uint8, s_{t+k}
    k: np.ndarray  # (B,) int, steps from t to the future frame (after clipping)
    future_clipped: np.ndarray  # (B,) bool, t+k ran past a truncated episode's end
    index: np.ndarray  # (B,) flat frame index of s_t's newest frame


@dataclass
class TargetBatch:
    """Occupancy-model targets: per row either the dataset's future or where to bootstrap."""

    obs: np.ndarray  # (B, 3F, H, W) s_t (or tokens (B, F * tokens_per_frame) on a token view)
    action: np.ndarray  # (B, A) float32, a_t
    target: np.ndarray  # (B, 3F, H, W) s_{t+k} where not bootstrap, else s_{t+j}
    bootstrap: np.ndarray  # (B,) bool: the target is a model sample at (s_{t+j}, a_{t+j})
    bootstrap_action: np.ndarray  # (B, A) float32, a_{t+j} where bootstrap, else zeros
    k: np.ndarray  # (B,) int, the geometric draw (before any clipping)
    j: np.ndarray  # (B,) int, steps to the bootstrap state (meaningful where bootstrap)
    index: np.ndarray  # (B,) flat frame index of s_t's newest frame


def future_targets(
    index: np.ndarray, last: np.ndarray, terminal: np.ndarray, k: np.ndarray, n_step: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the occupancy target of each window comes from: (target index, bootstrap, j), each (B,).

    The occupancy of the behaviour policy at (s_t, a_t) is the law of s_{t+k}, k ~ Geom(1 - gamma)
    on {1, 2, ...}. The geometric law is memoryless: given k > j, k - j ~ Geom(1 - gamma) again, so
    s_{t+k} is then a draw of the occupancy at (s_{t+j}, a_{t+j}). Hence, exactly, with
    m = T - 1 - t (T the episode's last frame, the last one with an action is T - 1):

    - ``j = min(n_step, m)`` (``n_step=None``: ``j = m``, Monte-Carlo);
    - if k <= j the target is the recorded s_{t+k};
    - otherwise it is a sample of the model at (s_{t+j}, a_{t+j}) (a bootstrap).

    ``n_step=1`` is one-step generative TD. A true terminal s_T is absorbing (s_{t+k} = s_T for
    t + k >= T), so an episode that terminates needs a bootstrap only when k > n_step and t + n_step
    < T. ``index`` and ``last`` are flat frame indices of s_t and of its episode's last frame.
    """
    if n_step is not None and (isinstance(n_step, bool) or not isinstance(n_step, int) or n_step < 1):
        raise ValueError(f"n_step must be an integer >= 1 or None (Monte-Carlo), got {n_step!r}")
    horizon = np.full(len(index), np.iinfo(np.int64).max // 4 if n_step is None else n_step, np.int64)
    j = np.where(terminal, horizon, np.minimum(horizon, last - 1 - index))
    bootstrap = (k > j) & (index + j < last)
    target = np.where(bootstrap, index + j, np.minimum(index + k, last))
    return target, bootstrap, np.where(bootstrap, j, 0)


def check_episodes(dataset: PixelDataset, episodes: np.ndarray | None) -> np.ndarray:
    """``episodes`` as a 1-D array of episode ids of ``dataset`` (all of them for None)."""
    n = dataset.num_episodes
    if episodes is None:
        return np.arange(n)
    ids = np.asarray(episodes)
    if ids.ndim != 1:
        raise ValueError(f"episodes must be a 1-D list of episode ids, got shape {ids.shape}")
    if len(ids) == 0:
        raise ValueError("no episodes to sample from")
    if ids.dtype.kind not in "iu":
        raise TypeError(
            f"episodes must be integer episode ids in [0, {n}), got dtype {ids.dtype}"
            + (" (a boolean mask? pass np.flatnonzero(mask))" if ids.dtype == bool else "")
        )
    bad = ids[(ids < 0) | (ids >= n)]
    if len(bad):
        raise ValueError(
            f"episode ids must be in [0, {n}) (the dataset has {n} episodes), got {bad[:5].tolist()}"
        )
    return ids


def check_action_table(table: np.ndarray, ds: PixelDataset) -> None:
    """A policy's action table must hold (N, K, A) finite actions, one row per frame of ``ds``."""
    n, a_dim = len(ds.arrays["action"]), ds.arrays["action"].shape[1]
    if not isinstance(table, np.ndarray) or table.ndim != 3 or table.shape[0] != n or table.shape[2] != a_dim:
        shape = getattr(table, "shape", type(table).__name__)
        raise ValueError(
            f"next_actions must be an array (N={n}, K, A={a_dim}) of a policy's actions; got {shape}"
        )
    if not np.isfinite(table).all():
        raise ValueError("next_actions holds NaN or infinite actions")


def table_actions(table: np.ndarray, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the K actions of ``table`` (N, K, A) at each flat frame ``index`` (B,): (B, A)."""
    k = rng.integers(0, table.shape[1], size=len(index)) if table.shape[1] > 1 else np.zeros(len(index), int)
    return table[index, k]


class WindowSampler:
    """Sample :class:`WindowBatch` es from some episodes of a :class:`PixelDataset`."""

    def __init__(
        self,
        dataset: PixelDataset,
        episodes: np.ndarray | None = None,
        frame_stack: int = 3,
        seed: int = 0,
        require_next_action: bool = True,
    ):
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.ds, self.frame_stack = dataset, frame_stack
        self.rng = np.random.default_rng(seed)
        episodes = check_episodes(dataset, episodes)
        starts, lengths = dataset.ep_start[episodes], dataset.ep_len[episodes]
        last = starts + lengths  # flat index of each episode's last frame
        terminal = dataset.arrays["is_terminal"][last]
        # a_{t+1} exists for t <= T-2; at t = T-1 only if s_T is terminal (then it is not needed)
        n_valid = np.where(require_next_action & ~terminal, lengths - 1, lengths)
        if np.all(n_valid <= 0):
            raise ValueError("episodes are too short: need at least 2 transitions for windows with a_{t+1}")
        self._valid = np.concatenate([s + np.arange(n) for s, n in zip(starts, n_valid, strict=True)])
        self._last = np.repeat(last, n_valid)  # last frame of the episode of each valid index
        self._terminal_end = np.repeat(terminal, n_valid)

    def __len__(self) -> int:
        return len(self._valid)

    def _draw(self, batch_size: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the valid windows (B,) and geometric draws k (B,)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        pick = self.rng.integers(0, len(self._valid), size=batch_size)
        return pick, self.rng.geometric(1.0 - gamma, size=batch_size)

    def sample_indices(
        self, batch_size: int, gamma: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices (B,), their episode's last frame (B,), k (B,) and the clipped flags (B,)."""
        pick, k = self._draw(batch_size, gamma)
        index, last = self._valid[pick], self._last[pick]
        over = index + k > last
        clipped = over & ~self._terminal_end[pick]
        k = np.minimum(k, last - index)
        return index, last, k, clipped

    def sample(self, batch_size: int, gamma: float) -> WindowBatch:
        index, _, k, clipped = self.sample_indices(batch_size, gamma)
        stacks = self.ds.stacks(
            np.stack([index, index + 1, index + k], axis=1), self.frame_stack
        )  # (B, 3, 3F, H, W)
        arrays = self.ds.arrays
        next_terminal = arrays["is_terminal"][index + 1]
        return WindowBatch(
            obs=stacks[:, 0],
            action=arrays["action"][index],
            reward=arrays["reward"][index],
            next_obs=stacks[:, 1],
            next_action=arrays["action"][index + 1],
            next_terminal=next_terminal,
            future_obs=stacks[:, 2],
            k=k,
            future_clipped=clipped,
            index=index,
        )

    def occupancy_targets(self, batch_size: int, gamma: float, n_step: int | None = None) -> TargetBatch:
        """Training targets of an occupancy model with horizon ``n_step`` (see :func:`future_targets`).

        Two stacks per row: s_t and the target (the recorded future, or the state to bootstrap at).
        """
        pick, k = self._draw(batch_size, gamma)
        index, last = self._valid[pick], self._last[pick]
        target, bootstrap, j = future_targets(index, last, self._terminal_end[pick], k, n_step)
        stacks = self.ds.stacks(np.stack([index, target], axis=1), self.frame_stack)  # (B, 2, ...)
        actions = self.ds.arrays["action"]
        boot_action = np.where(bootstrap[:, None], actions[np.where(bootstrap, target, index)], 0.0)
        return TargetBatch(
            obs=stacks[:, 0],
            action=actions[index],
            target=stacks[:, 1],
            bootstrap=bootstrap,
            bootstrap_action=boot_action.astype(np.float32),
            k=k,
            j=j,
            index=index,
        )

    def rewards(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A reward-model batch: the stacks s_{t+1} (B, ...) and the rewards r_t received on entering
        them (B,), over every transition of the sampler's episodes."""
        pick, _ = self._draw(batch_size, 0.0)
        index = self._valid[pick]
        return self.ds.stacks(index + 1, self.frame_stack), self.ds.arrays["reward"][index]


def discounted_returns(
    dataset: PixelDataset, gamma: float, reward_max: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted return to episode end, ``G_t = sum_j gamma^j r_{t+j}``, for every frame (N,).

    Also returns an upper bound (N,) on what truncation dropped: ``gamma^(T-t) r_max / (1-gamma)``
    on truncated episodes, 0 on terminated ones, with r_max the largest reward per agent step
    (DMC rewards are in [0, 1] per control step, so ``action_repeat``; from the metadata by
    default). Exact, vectorised over episodes: one pass backwards over time.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if reward_max is None:
        reward_max = float(
            dataset.meta.get("reward_max", dataset.meta.get("env_kwargs", {}).get("action_repeat", 1))
        )
    reward, starts, lengths = dataset.arrays["reward"].astype(np.float64), dataset.ep_start, dataset.ep_len
    n_ep, t_max = len(starts), int(lengths.max()) + 1
    col = np.arange(t_max)
    mask = col[None, :] <= lengths[:, None]  # (E, Tmax+1): frames that exist
    flat = (starts[:, None] + col[None, :])[mask]
    padded = np.zeros((n_ep, t_max))
    padded[mask] = reward[flat]  # last frame of each episode carries reward 0
    g = np.zeros((n_ep, t_max + 1))
    for t in range(t_max - 1, -1, -1):
        g[:, t] = padded[:, t] + gamma * g[:, t + 1]
    returns = np.zeros(len(reward))
    returns[flat] = g[:, :t_max][mask]
    remaining = (lengths[:, None] - col[None, :])[mask]
    terminal = dataset.arrays["is_terminal"][starts + lengths]
    tail = np.where(
        np.repeat(terminal, lengths + 1),
        0.0,
        gamma ** remaining.astype(np.float64) * reward_max / (1 - gamma),
    )
    tails = np.zeros(len(reward))
    tails[flat] = tail
    return returns, tails
