"""Behaviour policies: SAC trained on a task's *state* observations, acting while pixels are recorded.

V-D4RL made its pixel datasets this way: a state-based SAC agent is ~40x cheaper to train than a
pixel one, and its actions are what the offline agents later learn from. Levels: ``random``
(uniform actions), ``medium`` (a snapshot of roughly half the expert's return) and ``expert`` (the
best snapshot we trained). Shipped policies live in ``voc_rl/policies/{task}__{level}.pt``, each a
few hundred KB, and load through the safe checkpoint path (no pickled code).

Training (``train_behavior``) checkpoints its full state atomically (networks, optimizers, entropy
coefficient, replay buffer, step count) and resumes where it stopped; every ``eval_every`` steps it
saves a snapshot of the actor with its measured return, the ladder that levels are picked from.
"""

from __future__ import annotations

import csv
import difflib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from voc_rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, save_npz
from voc_rl.envs import make_env
from voc_rl.paths import check_writable, user_path

LEVELS = ("random", "medium", "expert")
POLICY_DIR = Path(__file__).parent / "policies"
FORMAT = "voc_rl.behavior_policy/1"
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # as stable-baselines3's SAC actor


class Policy(Protocol):
    """What collection needs from a behaviour policy."""

    name: str
    act_dim: int

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray: ...


class BehaviorPolicy(nn.Module):
    """SAC's squashed-Gaussian actor on state observations (layer names as in stable-baselines3)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), name: str = "sac"):
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(last, act_dim)
        self.log_std = nn.Linear(last, act_dim)
        self.obs_dim, self.act_dim, self.hidden, self.name = obs_dim, act_dim, tuple(hidden), name
        self.meta: dict[str, Any] = {}

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.latent_pi(obs)  # (B, hidden)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)  # (B, A) each

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1] for one observation (obs_dim,) or a batch (B, obs_dim); float32."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"{self.name} expects state observations of size {self.obs_dim}, got {obs.shape}"
            )
        mean, log_std = self(torch.from_numpy(np.atleast_2d(obs)))
        pre = mean.numpy()
        if not deterministic:  # numpy noise, so that a seeded rng makes collection reproducible
            pre = pre + np.exp(log_std.numpy()) * rng.standard_normal(pre.shape).astype(np.float32)
        action = np.tanh(pre).astype(np.float32)
        return action[0] if obs.ndim == 1 else action

    @classmethod
    def from_sb3(cls, model: Any, name: str = "sac", meta: dict[str, Any] | None = None) -> BehaviorPolicy:
        """Copy the actor of a stable-baselines3 SAC model (MlpPolicy, no gSDE)."""
        actor = model.actor
        hidden = tuple(m.out_features for m in actor.latent_pi if isinstance(m, nn.Linear))
        policy = cls(actor.features_dim, actor.mu.out_features, hidden, name)
        state = {k: v for k, v in actor.state_dict().items() if not k.startswith("features_extractor")}
        policy.load_state_dict(state)
        policy.meta = dict(meta or {})
        return policy

    def save(self, path: str | Path) -> Path:
        config = {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden": list(self.hidden),
            "name": self.name,
        }
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return save_checkpoint(
            {"format": FORMAT, "config": config, "meta": self.meta, "state_dict": state}, path
        )

    @classmethod
    def load(cls, path: str | Path) -> BehaviorPolicy:
        ckpt = load_checkpoint(path, required=("format", "config", "state_dict"))
        if ckpt["format"] != FORMAT:
            raise CheckpointError(f"{path} has format {ckpt['format']!r}, expected {FORMAT!r}")
        cfg = ckpt["config"]
        policy = cls(cfg["obs_dim"], cfg["act_dim"], tuple(cfg["hidden"]), cfg["name"])
        try:
            policy.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not match its config {cfg}: {exc}") from exc
        policy.meta = dict(ckpt.get("meta", {}))
        return policy


@dataclass
class RandomPolicy:
    """Uniform actions in [-1, 1]."""

    act_dim: int
    name: str = "random"

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        shape = (self.act_dim,) if np.ndim(obs) == 1 else (len(obs), self.act_dim)
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def shipped_policy_path(task: str, level: str) -> Path:
    return POLICY_DIR / f"{task}__{level}.pt"


def load_policy(task: str, level: str) -> Policy:
    """A behaviour policy by task and level: ``random`` for any task, shipped files for the rest."""
    if level not in LEVELS:
        close = difflib.get_close_matches(level, LEVELS, n=1)
        raise ValueError(
            f"unknown policy level {level!r}; choose from {LEVELS}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if level == "random":
        env = make_env(task, obs_type="state")
        return RandomPolicy(int(env.action_space.shape[0]))
    path = shipped_policy_path(task, level)
    if not path.exists():
        have = sorted({p.name.split("__")[0] for p in POLICY_DIR.glob("*.pt")})
        raise FileNotFoundError(
            f"no shipped {level} policy for {task!r} (shipped for: {', '.join(have) or 'none'}); "
            f"train one with `voc-rl behavior train --task {task}` and pass its file with --policy-file"
        )
    return BehaviorPolicy.load(path)


def evaluate(policy: Policy, task: str, episodes: int, seed: int, deterministic: bool = False) -> np.ndarray:
    """Episode returns of ``policy`` on the state version of ``task`` (seeds seed, seed+1, ...)."""
    env = make_env(task, obs_type="state")
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs, rng, deterministic))
            returns[ep] += reward
            done = terminated or truncated
    env.close()
    return returns


# ---------------------------------------------------------------------------------------------- training


def _sac(task: str, seed: int, buffer_size: int, learning_starts: int, run_dir: Path) -> Any:
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(make_env(task, obs_type="state"))
    return SAC(
        "MlpPolicy",
        env,
        seed=seed,
        buffer_size=buffer_size,
        batch_size=256,
        learning_starts=learning_starts,
        policy_kwargs={"net_arch": [256, 256]},
        tensorboard_log=str(run_dir / "tb"),
        device="cpu",
        verbose=0,
    )


_BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _save_state(model: Any, run_dir: Path, ladder: list[dict[str, Any]]) -> None:
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    save_npz({f: getattr(buf, f)[:n] for f in _BUFFER_FIELDS}, run_dir / "replay.npz")
    state = {
        "format": "voc_rl.sac_train_state/1",
        "policy": model.policy.state_dict(),
        "actor_optimizer": model.actor.optimizer.state_dict(),
        "critic_optimizer": model.critic.optimizer.state_dict(),
        "ent_coef_optimizer": model.ent_coef_optimizer.state_dict(),
        "log_ent_coef": model.log_ent_coef.detach().clone(),
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "episode_num": model._episode_num,
        "buffer_pos": buf.pos,
        "buffer_full": buf.full,
        "ladder": ladder,
        "torch_rng": torch.get_rng_state(),
    }
    save_checkpoint(state, run_dir / "train_state.pt")


def _load_state(model: Any, run_dir: Path) -> list[dict[str, Any]]:
    state = load_checkpoint(run_dir / "train_state.pt", required=("policy", "num_timesteps", "ladder"))
    model.policy.load_state_dict(state["policy"])
    model.actor.optimizer.load_state_dict(state["actor_optimizer"])
    model.critic.optimizer.load_state_dict(state["critic_optimizer"])
    model.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
    with torch.no_grad():
        model.log_ent_coef.copy_(state["log_ent_coef"])
    model.num_timesteps, model._n_updates = state["num_timesteps"], state["n_updates"]
    model._episode_num = state["episode_num"]
    torch.set_rng_state(state["torch_rng"])
    buf = model.replay_buffer
    with np.load(run_dir / "replay.npz", allow_pickle=False) as data:
        for f in _BUFFER_FIELDS:
            arr = data[f]
            getattr(buf, f)[: len(arr)] = arr
    buf.pos, buf.full = state["buffer_pos"], state["buffer_full"]
    return list(state["ladder"])


def train_behavior(
    task: str,
    run_dir: str | Path,
    total_steps: int = 300_000,
    seed: int = 0,
    eval_every: int = 10_000,
    eval_episodes: int = 5,
    checkpoint_every: int = 20_000,
    learning_starts: int = 5_000,
) -> list[dict[str, Any]]:
    """Train SAC on ``task``'s state observations; resumable; returns the ladder of snapshots.

    The ladder (also ``run_dir/ladder.csv``) lists every snapshot with its deterministic and
    stochastic mean return over ``eval_episodes`` episodes on fixed seeds.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    run_dir = check_writable(run_dir, "run folder")
    (run_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    model = _sac(task, seed, total_steps, learning_starts, run_dir)
    ladder: list[dict[str, Any]] = []
    if (run_dir / "train_state.pt").exists():
        ladder = _load_state(model, run_dir)
        print(f"[{task}] resumed at step {model.num_timesteps} from {run_dir}", flush=True)
    start_steps, start_time = model.num_timesteps, time.perf_counter()

    def snapshot(step: int) -> None:
        meta = {
            "task": task,
            "train_steps": step,
            "seed": seed,
            "algorithm": "stable-baselines3 SAC (state obs)",
        }
        policy = BehaviorPolicy.from_sb3(model, name=f"{task}@{step}", meta=meta)
        det = evaluate(policy, task, eval_episodes, seed=10_000, deterministic=True)
        sto = evaluate(policy, task, eval_episodes, seed=10_000, deterministic=False)
        policy.meta.update(
            eval_return_deterministic=float(det.mean()), eval_return_stochastic=float(sto.mean())
        )
        path = policy.save(run_dir / "snapshots" / f"step_{step:07d}.pt")
        ladder.append(
            {
                "step": step,
                "return_det": float(det.mean()),
                "return_sto": float(sto.mean()),
                "path": path.name,
            }
        )
        with open(run_dir / "ladder.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(ladder[0]))
            writer.writeheader()
            writer.writerows(ladder)
        model.logger.record("eval/return_deterministic", float(det.mean()))
        model.logger.record("eval/return_stochastic", float(sto.mean()))
        rate = (step - start_steps) / (time.perf_counter() - start_time + 1e-9)
        print(
            f"[{task}] step {step}: return det {det.mean():.1f} sto {sto.mean():.1f} ({rate:.0f} steps/s)",
            flush=True,
        )

    class Hooks(BaseCallback):
        def _on_step(self) -> bool:
            step = self.model.num_timesteps
            if step % eval_every == 0:
                snapshot(step)
            if step % checkpoint_every == 0:
                _save_state(self.model, run_dir, ladder)
            return True

    remaining = total_steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=Hooks(), reset_num_timesteps=start_steps == 0, tb_log_name="sac")
        _save_state(model, run_dir, ladder)
    return ladder


def select_levels(
    run_dir: str | Path, task: str | None = None, episodes: int = 0, top: int = 3
) -> dict[str, Path]:
    """Pick the ``expert`` and ``medium`` snapshots of a training run from its ladder.

    Returns are the sampled-action ones, since collection samples actions: ``expert`` is the best
    snapshot, ``medium`` the earlier one whose return is closest to half of the expert's. The
    ladder's returns come from few episodes; with ``task`` and ``episodes`` > 0, the ``top``
    candidates for each level are evaluated again over ``episodes`` episodes before choosing.
    """
    run_dir = user_path(run_dir)
    ladder_file = run_dir / "ladder.csv"
    if not ladder_file.exists():
        raise FileNotFoundError(f"{ladder_file} does not exist: train with `voc-rl behavior train` first")
    with open(ladder_file) as f:
        rows = [
            {**r, "step": int(r["step"]), "return_sto": float(r["return_sto"])} for r in csv.DictReader(f)
        ]
    if len(rows) < 2:
        raise ValueError(
            f"{ladder_file} has {len(rows)} snapshot(s); need at least 2 to pick medium and expert"
        )

    def rescore(candidates: list[dict[str, Any]]) -> None:
        if task is None or episodes <= 0:
            return
        for r in candidates:
            policy = BehaviorPolicy.load(run_dir / "snapshots" / r["path"])
            r["return_sto"] = float(evaluate(policy, task, episodes, seed=30_000).mean())

    rescore(sorted(rows, key=lambda r: -r["return_sto"])[:top])
    expert = max(rows, key=lambda r: r["return_sto"])
    earlier = [r for r in rows if r["step"] < expert["step"]] or rows
    rescore(sorted(earlier, key=lambda r: abs(r["return_sto"] - expert["return_sto"] / 2))[:top])
    medium = min(earlier, key=lambda r: abs(r["return_sto"] - expert["return_sto"] / 2))
    return {
        "medium": run_dir / "snapshots" / medium["path"],
        "expert": run_dir / "snapshots" / expert["path"],
    }


def ship_levels(
    task: str, run_dir: str | Path, out_dir: str | Path = POLICY_DIR, episodes: int = 10
) -> dict[str, Path]:
    """Copy the selected snapshots to ``out_dir/{task}__{level}.pt`` with their level recorded."""
    shipped = {}
    for level, snap in select_levels(run_dir, task, episodes).items():
        policy = BehaviorPolicy.load(snap)
        policy.name = f"{task}-{level}"
        policy.meta.update(level=level, snapshot=snap.name)
        shipped[level] = policy.save(user_path(out_dir) / f"{task}__{level}.pt")
    return shipped
