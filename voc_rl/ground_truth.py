"""Ground-truth action values Q(s_t, a_t) of dataset states, by rollouts in the simulator.

For each flat frame index t of a :class:`~voc_rl.data.PixelDataset` that has an action,
:func:`simulator_q` restores the saved physics state of frame t, takes the dataset's action a_t,
then follows the episode's own behaviour policy (stochastic, as during collection) for H agent
steps, H the smallest horizon with ``max(gammas)^H < 1e-3``. One rollout to H serves every gamma:
``Q = sum_k gamma^k r_{t+k}``, k from 0, r_t the reward of the step that takes a_t (the dataset's
convention). Rollouts do not stop at the env's time limit: when the env truncates, the rollout
continues from the same physics state (the dataset's truncation is a time limit, not an end of the
task), so this is the infinite-horizon value up to a tail below ``gamma^H r_max / (1 - gamma)``.
Nothing is rendered.

DMC physics is deterministic, the policies are not: every state gets ``rollouts`` rollouts, their
mean and its standard error. Each state's random stream is seeded from ``(seed, index)``, so results
do not depend on the number of processes or on which other states are computed. Results are cached
in ``<dataset>/ground_truth/<key>.npz``, the key hashing everything they depend on.

The dataset's own discounted return to episode end (one sample, cut off at the time limit) is
carried along as :attr:`GroundTruth.truncated_return`, clearly not the ground truth.

Checks: the simulated r_t (deterministic given the restored state and a_t) must match the recorded
reward, else restoring does not reproduce the dataset and this raises; and the behaviour policy
loaded now must be the one the dataset records (name and training metadata), else this raises.
A saved physics state (qpos, qvel, act) lacks MuJoCo's solver warm start: a restored state steps
differently by ~1e-16, which chaotic dynamics (a running cheetah) grow to O(1) reward differences
after a few hundred steps. That changes single trajectories, not the
distribution the rollouts average over.

Parallel runs use the ``spawn`` start method (safest with MuJoCo): a script calling
:func:`simulator_q` with ``processes > 1`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from voc_rl.behavior import BehaviorPolicy, Policy, load_policy
from voc_rl.checkpoint import save_npz
from voc_rl.data import DatasetError, PixelDataset, discounted_returns, open_dataset
from voc_rl.data.collect import POLICY_IDS, describe_policy
from voc_rl.data.storage import json_default
from voc_rl.task_rewards import TASKS, check_tasks

GT_FORMAT = 1  # bump when what a cache file means changes
HORIZON_TOL = 1e-3  # H is the smallest horizon with gamma_max^H < HORIZON_TOL
REWARD_CHECK_TOL = 1e-4  # the simulated r_t must match the recorded one this closely


@dataclass
class GroundTruth:
    """Simulator action values for dataset states; column j belongs to flat frame ``index[j]``."""

    index: np.ndarray  # (N,) int64 flat frame indices
    gammas: np.ndarray  # (G,) float64
    q: np.ndarray  # (G, N) float64: mean over rollouts of sum_k gamma^k r_{t+k}, k < horizon
    stderr: np.ndarray  # (G, N) float64: standard error of that mean (NaN with one rollout)
    horizon: int  # agent steps per rollout, including the dataset's action a_t
    rollouts: int
    seed: int
    deterministic: bool  # the behaviour policies acted with their mean action (random stays random)
    tail_bound: np.ndarray  # (G,) bound on the reward beyond the horizon: gamma^H r_max / (1 - gamma)
    # The dataset's own return to episode end (one sample), cut off at the episode's time limit: NOT
    # the ground truth, for comparison only. ``truncated_bound`` bounds what the cut-off dropped.
    truncated_return: np.ndarray = field(repr=False)  # (G, N)
    truncated_bound: np.ndarray = field(repr=False)  # (G, N)
    cache_path: Path | None = None  # the cache file read or written, if any
    task: str = ""  # the dataset's own task, whose rewards ``q`` sums
    # Other tasks of the domain scored on the same rollouts: task -> (q, stderr), each (G, N).
    task_q: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def tasks(self) -> list[str]:
        """Every task whose Q this holds: the dataset's own first."""
        return [self.task, *self.task_q]

    def at(self, gamma: float, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(q, stderr)`` for one of the computed discount factors, each (N,), of the dataset's own
        task or of another ``task`` that was asked for (``simulator_q(..., tasks=...)``)."""
        hits = np.flatnonzero(np.isclose(self.gammas, gamma, rtol=0.0, atol=1e-12))
        if len(hits) == 0:
            raise KeyError(f"gamma {gamma} was not computed; have {self.gammas.tolist()}")
        if task is None or task == self.task:
            return self.q[hits[0]], self.stderr[hits[0]]
        if task not in self.task_q:
            raise KeyError(f"task {task!r} was not computed; have {self.tasks} (simulator_q's tasks)")
        q, stderr = self.task_q[task]
        return q[hits[0]], stderr[hits[0]]


# ---------------------------------------------------------------------------------------------- helpers


def horizon_for(gamma: float, tol: float = HORIZON_TOL) -> int:
    """The smallest H >= 1 with ``gamma^H < tol``."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if gamma == 0.0:
        return 1
    h = max(1, math.ceil(math.log(tol) / math.log(gamma)))
    while gamma**h >= tol:  # guard the float rounding of the logarithms, both ways
        h += 1
    while h > 1 and gamma ** (h - 1) < tol:
        h -= 1
    return h


def _require_physics(ds: PixelDataset) -> None:
    if "physics_state" not in ds.arrays:
        raise DatasetError(
            f"dataset {ds.meta.get('name', ds.path)!r} has no saved physics states (imported from V-D4RL?), "
            "so the simulator cannot restore its states; use the truncated dataset return "
            "(voc_rl.data.discounted_returns) instead, or collect the data with `voc-rl collect`"
        )


def _env_kwargs(ds: PixelDataset) -> dict[str, Any]:
    """The dataset's env kwargs, with state observations (nothing is rendered for DMC)."""
    return {**ds.meta.get("env_kwargs", {}), "frame_stack": 1, "obs_type": "state"}


def _state_env(env_id: str, kwargs: dict[str, Any]) -> Any:
    from voc_rl.envs import state_env

    return state_env(env_id, kwargs)


def _advance(env: Any, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """One agent step ignoring the time limit: ``(proprio, rewards, alive)``, ``rewards`` the own
    task's then those of the env's ``score_rewards``.

    When the env truncates, its physics state is restored at step 0, which restarts the env's step
    counter and leaves the physics where it was: the rollout goes on past the episode's time limit.
    """
    _, reward, terminated, truncated, info = env.step(action)
    if truncated and not terminated:
        env.set_physics_state(info["physics_state"], step=0)
    return info["proprio"], np.append(reward, info.get("task_rewards", ())), not terminated


def _flat_index(ds: PixelDataset, index: Any) -> np.ndarray:
    arr = np.asarray(index)
    if arr.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError("index is empty: pass at least one flat frame index")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"index must be integer flat frame indices, got dtype {arr.dtype}")
    n = len(ds.frames)
    bad = arr[(arr < 0) | (arr >= n)]
    if len(bad):
        raise ValueError(f"index holds {len(bad)} value(s) outside [0, {n}), e.g. {bad[:5].tolist()}")
    arr = arr.astype(np.int64)
    last = ds.arrays["step"][arr] == ds.ep_len[ds.arrays["episode"][arr]]
    if last.any():
        raise ValueError(
            f"index holds {int(last.sum())} episode-final frame(s), e.g. {arr[last][:5].tolist()}: an "
            "episode's last frame has no action a_t; use frames t < T of each episode"
        )
    return arr


def _check_gammas(gammas: Sequence[float]) -> np.ndarray:
    g = np.asarray(gammas, dtype=np.float64).ravel()
    if len(g) == 0:
        raise ValueError("gammas is empty: pass at least one discount factor in [0, 1)")
    bad = g[~((g >= 0.0) & (g < 1.0))]
    if len(bad):
        raise ValueError(f"every gamma must be in [0, 1), got {bad.tolist()}")
    return g


def _level(ds: PixelDataset, pid: int) -> str:
    recorded = ds.meta.get("policies") or {}
    if str(pid) not in recorded:
        raise DatasetError(
            f"dataset {ds.meta.get('name', ds.path)!r} records no behaviour policy for policy_id {pid} "
            f"(has {sorted(recorded)}); the simulator needs the policy that collected the episodes"
        )
    level = recorded[str(pid)].get("level")
    if POLICY_IDS.get(level) != pid:
        raise DatasetError(f"policy_id {pid} is recorded as level {level!r}, expected one of {POLICY_IDS}")
    return level


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=json_default))


def _resolve_policies(
    ds: PixelDataset, pids: np.ndarray, overrides: Mapping[str, Policy] | None
) -> dict[int, Policy]:
    """The behaviour policy of each policy_id used, checked against what the dataset recorded."""
    task = ds.meta.get("task") or ds.env_id.split("/")[-1].removesuffix("-v0")
    policies: dict[int, Policy] = {}
    for pid in sorted({int(p) for p in pids}):
        level = _level(ds, pid)
        if overrides is not None and level in overrides:
            policy = overrides[level]
        elif level == "file":
            raise ValueError(
                "these episodes were collected with a policy file; pass it as "
                "policies={'file': BehaviorPolicy.load(path)}"
            )
        else:
            policy = load_policy(task, level)
        recorded = ds.meta["policies"][str(pid)]
        have = _normalise({"level": level, **describe_policy(policy)})  # as collection recorded it
        if have != _normalise(recorded):
            raise ValueError(
                f"episodes with policy_id {pid} ({level}) were collected by {recorded}, but the policy "
                f"at hand is {have}: it changed since collection, so its values are not this dataset's; "
                f"pass the original with policies={{{level!r}: BehaviorPolicy.load(path)}}"
            )
        policies[pid] = policy
    return policies


def _policy_digest(policy: Policy) -> str:
    h = hashlib.sha256(json.dumps(_normalise(describe_policy(policy)), sort_keys=True).encode())
    h.update(str(policy.act_dim).encode())
    if isinstance(policy, BehaviorPolicy):
        for name, tensor in sorted(policy.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_key(
    ds: PixelDataset,
    index: np.ndarray,
    gammas: np.ndarray,
    rollouts: int,
    seed: int,
    deterministic: bool,
    policies: dict[int, Policy],
    actions: np.ndarray | None = None,
    tasks: tuple[str, ...] = (),
) -> str:
    payload: dict[str, Any] = {
        "format": GT_FORMAT,
        "horizon_tol": HORIZON_TOL,
        "hdf5_sha256": ds.meta["hdf5_sha256"],
        "gammas": gammas.tolist(),
        "rollouts": rollouts,
        "seed": seed,
        "deterministic": deterministic,
        "policies": {str(pid): _policy_digest(p) for pid, p in policies.items()},
    }
    if tasks:  # (a key without tasks is the one this had before tasks existed)
        payload["tasks"] = list(tasks)
    h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    h.update(index.astype("<i8").tobytes())
    if actions is not None:
        h.update(b"actions" + actions.astype("<f4").tobytes())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class _Config:
    env_id: str
    env_kwargs: dict[str, Any]
    policies: bytes  # pickled {policy_id: Policy}: plain pickle, so tensors never go to shared memory
    rollouts: int
    horizon: int
    deterministic: bool
    tasks: tuple[str, ...] = ()  # other tasks whose rewards score the same rollouts


class _Simulator:
    """``rollouts`` copies of the env stepped in lockstep, so that the policy acts on a batch."""

    def __init__(self, cfg: _Config):
        self.cfg = cfg
        self.policies: dict[int, Policy] = pickle.loads(cfg.policies)
        self.envs = [_state_env(cfg.env_id, cfg.env_kwargs) for _ in range(cfg.rollouts)]
        if cfg.tasks:
            for env in self.envs:
                env.score_rewards = [TASKS[t].reward for t in cfg.tasks]

    def rewards(self, physics_state: np.ndarray, action: np.ndarray, pid: int, seed: Any) -> np.ndarray:
        """Rewards (R, H, 1 + T) of ``R`` rollouts from a restored state: a_t, then the policy; the
        own task's, then each of the config's ``tasks``."""
        import torch

        rng = np.random.default_rng(seed)
        policy, horizon = self.policies[pid], self.cfg.horizon
        # A SAC policy acting with its mean action in deterministic physics: every rollout is the
        # same, so one is simulated (batched, rows could also differ in the last bit of a matmul).
        same = self.cfg.deterministic and isinstance(policy, BehaviorPolicy)
        r_count = 1 if same else self.cfg.rollouts
        rewards = np.zeros((r_count, horizon, 1 + len(self.cfg.tasks)))
        alive = np.ones(r_count, dtype=bool)
        proprio = []
        for env in self.envs[:r_count]:
            _, info = env.set_physics_state(physics_state, step=0)
            proprio.append(info["proprio"])
        obs = np.stack(proprio)  # (R, P)
        actions = np.broadcast_to(np.asarray(action, dtype=np.float32), (r_count, len(action)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic in every process, and fastest for one small batch
        try:
            for k in range(horizon):
                for r in np.flatnonzero(alive):  # a terminated rollout stays in its absorbing state
                    obs[r], rewards[r, k], alive[r] = _advance(self.envs[r], actions[r])
                if k + 1 < horizon and alive.any():
                    actions = policy.act(obs, rng, deterministic=self.cfg.deterministic)
        finally:
            torch.set_num_threads(threads)
        return np.broadcast_to(rewards, (self.cfg.rollouts, *rewards.shape[1:]))


_WORKER: _Simulator | None = None


def _init_worker(cfg: _Config) -> None:
    global _WORKER
    _WORKER = _Simulator(cfg)


def _worker_rewards(physics_state: np.ndarray, action: np.ndarray, pid: int, seed: Any) -> np.ndarray:
    assert _WORKER is not None, "worker was not initialised"
    return _WORKER.rewards(physics_state, action, pid, seed)


def _simulate(
    ds: PixelDataset,
    index: np.ndarray,
    gammas: np.ndarray,
    cfg: _Config,
    seed: int,
    processes: int,
    progress: bool,
    actions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted returns (G, N, R, 1 + T) of every rollout, for the own task and each of the config's
    ``tasks``, and the simulated first rewards of the own task (N,)."""
    n = len(index)
    disc = gammas[:, None] ** np.arange(cfg.horizon)[None, :]  # (G, H)
    returns = np.zeros((len(gammas), n, cfg.rollouts, 1 + len(cfg.tasks)))
    first = np.zeros(n)
    jobs = [
        (
            ds.arrays["physics_state"][i],
            a,
            int(ds.arrays["policy_id"][i]),
            [seed, int(i)],
        )
        for i, a in zip(index, actions, strict=True)
    ]

    def store(j: int, rewards: np.ndarray) -> None:
        for t in range(rewards.shape[2]):
            returns[:, j, :, t] = disc @ np.ascontiguousarray(rewards[:, :, t]).T  # (G, R), as BLAS sums it
        first[j] = rewards[0, 0, 0]

    with tqdm(total=n, unit="state", disable=not progress, desc="simulator Q") as bar:
        if processes <= 1:
            sim = _Simulator(cfg)
            for j, job in enumerate(jobs):
                store(j, _run(sim.rewards, index[j], job))
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(processes, n), mp_context=ctx, initializer=_init_worker, initargs=(cfg,)
            ) as pool:
                futures: dict[Future[np.ndarray], int] = {
                    pool.submit(_run, _worker_rewards, index[j], job): j for j, job in enumerate(jobs)
                }
                try:
                    for fut in as_completed(futures):
                        store(futures[fut], fut.result())
                        bar.update(1)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return returns, first


def _run(fn: Any, i: int, job: tuple[Any, ...]) -> np.ndarray:
    try:
        return fn(*job)
    except Exception as exc:  # name the state: a worker's traceback does not
        raise RuntimeError(f"rollouts from flat frame index {i} failed: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- public API


def simulator_q(
    ds: PixelDataset | str | Path,
    index: Sequence[int] | np.ndarray,
    gammas: Sequence[float],
    rollouts: int = 8,
    seed: int = 0,
    processes: int = 2,
    cache: bool = True,
    progress: bool = True,
    deterministic: bool = False,
    policies: Mapping[str, Policy] | None = None,
    actions: np.ndarray | None = None,
    tasks: Sequence[str] = (),
) -> GroundTruth:
    """Ground-truth Q(s_t, a_t) of the states at flat frame indices ``index``, for every gamma.

    Restores frame t's physics state, takes the dataset's a_t, then follows the episode's behaviour
    policy for H agent steps (H: ``max(gammas)^H < 1e-3``), past the episode's time limit;
    ``rollouts`` rollouts a state, averaged, with their standard error. ``deterministic`` makes the
    SAC policies act with their mean action (a different policy's value: the random one stays
    random). ``policies`` maps a level (``random``, ``medium``, ``expert``, ``file``) to the policy to
    use instead of the shipped one; needed for datasets collected with a policy file. Either way
    the policy must be the one the dataset records, or this raises. ``processes > 1`` runs states
    in parallel (results do not depend on it); ``cache`` reads and writes
    ``<dataset>/ground_truth/<key>.npz``. ``actions`` (N, action_dim) replaces the first action
    a_t of each state (to rank candidate actions): Q(s_t, actions[j]) then the behaviour policy.
    ``tasks``: other tasks of the dataset's domain (:data:`voc_rl.task_rewards.TASKS`) whose rewards
    score the same rollouts, each a Q of its own (``GroundTruth.at(gamma, task)``): the behaviour
    policy's value under another reward, from the same states and the same trajectories.
    """
    if not isinstance(ds, PixelDataset):
        ds = open_dataset(ds)
    if "reward_task" in ds.meta:
        raise ValueError(
            f"this view of {ds.path} carries {ds.meta['reward_task']!r}'s rewards; pass the dataset "
            "itself, with tasks=[...] for other tasks' Q"
        )
    _require_physics(ds)
    if rollouts < 1:
        raise ValueError(f"rollouts must be >= 1, got {rollouts}")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    idx = _flat_index(ds, index)
    if actions is not None:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (len(idx), ds.arrays["action"].shape[1]) or not np.isfinite(actions).all():
            raise ValueError(
                f"actions must be finite, of shape ({len(idx)}, {ds.arrays['action'].shape[1]}): one per "
                f"state; got {actions.shape}"
            )
        actions = np.clip(actions, -1.0, 1.0)
    g = _check_gammas(gammas)
    horizon = horizon_for(float(g.max()))
    used = _resolve_policies(ds, ds.arrays["policy_id"][idx], policies)
    own = ds.task
    extra = tuple(dict.fromkeys(t for t in ([tasks] if isinstance(tasks, str) else tasks) if t != own))
    if extra:
        check_tasks(ds, extra)

    key = _cache_key(ds, idx, g, rollouts, seed, deterministic, used, actions, extra)
    path = ds.path / "ground_truth" / f"{key}.npz"
    loaded = _load_cache(path, idx, g, extra) if cache else None
    if loaded is not None:
        q, stderr = loaded  # (1 + T, G, N)
    else:
        cfg = _Config(ds.env_id, _env_kwargs(ds), pickle.dumps(used), rollouts, horizon, deterministic, extra)
        if actions is None:
            unique, inverse = np.unique(idx, return_inverse=True)  # a repeated index is simulated once
            returns, first = _simulate(
                ds, unique, g, cfg, seed, processes, progress, ds.arrays["action"][unique]
            )
            _check_first_rewards(ds, unique, first)
        else:
            inverse = np.arange(len(idx))
            returns, _ = _simulate(ds, idx, g, cfg, seed, processes, progress, actions)
        returns = np.moveaxis(returns[:, inverse], -1, 0)  # (1 + T, G, N, R)
        q = returns.mean(axis=-1)
        stderr = (
            returns.std(axis=-1, ddof=1) / math.sqrt(rollouts) if rollouts > 1 else np.full_like(q, np.nan)
        )
        if cache:
            others = {"tasks": np.array(extra), "task_q": q[1:], "task_stderr": stderr[1:]} if extra else {}
            save_npz(
                {
                    "format": np.array(GT_FORMAT),
                    "index": idx,
                    "gammas": g,
                    "q": q[0],
                    "stderr": stderr[0],
                    "horizon": np.array(horizon),
                    "rollouts": np.array(rollouts),
                    "seed": np.array(seed),
                    "deterministic": np.array(deterministic),
                    **others,
                },
                path,
            )

    reward_max = float(ds.meta.get("reward_max", ds.meta.get("env_kwargs", {}).get("action_repeat", 1)))
    truncated = [discounted_returns(ds, float(gamma)) for gamma in g]
    return GroundTruth(
        index=idx,
        gammas=g,
        q=q[0],
        stderr=stderr[0],
        horizon=horizon,
        rollouts=rollouts,
        seed=seed,
        deterministic=deterministic,
        tail_bound=g**horizon * reward_max / (1.0 - g),
        truncated_return=np.stack([ret[idx] for ret, _ in truncated]),
        truncated_bound=np.stack([bound[idx] for _, bound in truncated]),
        cache_path=path if cache else None,
        task=own,
        task_q={t: (q[1 + k], stderr[1 + k]) for k, t in enumerate(extra)},
    )


def _load_cache(
    path: Path, index: np.ndarray, gammas: np.ndarray, tasks: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(q, stderr)``, each (1 + T, G, N): the own task's, then each of ``tasks``'."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            shape = (len(gammas), len(index))
            ok = (
                int(data["format"]) == GT_FORMAT
                and np.array_equal(data["index"], index)
                and np.array_equal(data["gammas"], gammas)
                and data["q"].shape == shape
                and (not tasks or data["tasks"].tolist() == list(tasks))
                and (not tasks or data["task_q"].shape[1:] == shape)
            )
            if ok:
                q, stderr = data["q"][None], data["stderr"][None]
                if tasks:
                    q = np.concatenate([q, data["task_q"]])
                    stderr = np.concatenate([stderr, data["task_stderr"]])
                return q, stderr
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ground-truth cache {path} is unreadable ({exc}); recomputing", stacklevel=3)
        return None
    warnings.warn(f"ground-truth cache {path} does not match this request; recomputing", stacklevel=3)
    return None


def _check_first_rewards(ds: PixelDataset, index: np.ndarray, first: np.ndarray) -> None:
    """r_t is deterministic given the restored state and a_t: it must match the recorded reward."""
    err = np.abs(first - ds.arrays["reward"][index].astype(np.float64))
    if err.max() > REWARD_CHECK_TOL:
        j = int(err.argmax())
        raise RuntimeError(
            f"the simulated reward of the dataset's action at flat index {int(index[j])} is {first[j]:.6g}, "
            f"the recorded one {float(ds.arrays['reward'][index[j]]):.6g}: restoring the physics state "
            "does not reproduce this dataset (a task whose state lives outside the physics, or another "
            "MuJoCo / dm_control version?), so rollouts from it would not be its ground truth"
        )


def replay_rewards(ds: PixelDataset | str | Path, episode: int, start: int = 0) -> np.ndarray:
    """Restore frame ``start`` of ``episode``, replay its recorded actions to the end; rewards (T - start,).

    A check that the simulator reproduces the dataset: compare with the recorded rewards. Keep
    replays to ~100 steps: restoring drops the solver's warm start, and chaotic tasks amplify that
    (see the module docstring), so longer replays of fast episodes drift apart.
    """
    if not isinstance(ds, PixelDataset):
        ds = open_dataset(ds)
    _require_physics(ds)
    if not 0 <= episode < ds.num_episodes:
        raise ValueError(f"episode must be in [0, {ds.num_episodes}), got {episode}")
    length = int(ds.ep_len[episode])
    if not 0 <= start < length:
        raise ValueError(f"start must be in [0, {length}) for episode {episode} ({length} transitions)")
    first = int(ds.ep_start[episode]) + start
    env = _state_env(ds.env_id, _env_kwargs(ds))
    try:
        env.set_physics_state(ds.arrays["physics_state"][first], step=0)
        rewards = np.zeros(length - start)
        for k, action in enumerate(ds.arrays["action"][first : first + length - start]):
            _, step_rewards, alive = _advance(env, action)
            rewards[k] = step_rewards[0]
            if not alive:
                rewards = rewards[: k + 1]  # the simulator terminated: what was left is not replayed
                break
    finally:
        env.close()
    return rewards


__all__ = ["GroundTruth", "horizon_for", "replay_rewards", "simulator_q"]
