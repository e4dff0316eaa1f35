"""Off-policy evaluation and policy selection from a pixel dataset alone.

A policy here is anything that acts: an object with ``predict(obs, deterministic)`` (a voc_rl agent,
a stable-baselines3 model) on the dataset's frame stacks, or a behaviour policy (``act(obs, rng)``)
on the recorded proprioceptive state. Its actions at every recorded frame are computed once
(:func:`policy_actions`, a table ``(N, K, A)``: K samples of a stochastic policy), and every
estimator reads that table, so a policy is evaluated without ever running it in the world.

Estimators of ``J(pi) = E_{s_0}[sum_t gamma^t r_t]``, all at the dataset's initial states (frame 0 of
every episode, the env's reset distribution):

- ``voc``: the occupancy model of pi, trained by one-step generative TD whose bootstrap reads pi's
  action at s_{t+1} (``n_step=1``), warm-started from the behaviour's Monte-Carlo model; then
  ``Q(s_0, pi(s_0)) = mean_i r(s_e^i) / (1 - gamma)`` from its samples (:func:`voc_rl.value.sample_q`).
- ``fqe``: fitted Q evaluation, the field's baseline (d3rlpy, DOPE): the TD critic on the same tokens
  with pi's next action, warm-started from the behaviour's (SARSA) critic, for the same steps.
- ``behaviour-q``: the behaviour's occupancy model, untouched, at (s_0, pi(s_0)): what the data say of
  pi's first action followed by the behaviour (the VOC before any TD step).
- ``behaviour-value``: the dataset's own discounted return from its initial states, one number for
  every policy (the naive baseline; it cannot rank).

:func:`true_returns` gives the simulator's discounted returns from fresh resets, the ground truth of
``benchmarks/policy_selection.py``; :func:`selection_metrics` the DOPE metrics (rank correlation,
regret@k, normalised absolute error).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.behavior import LEVELS, BehaviorPolicy, RandomPolicy, load_policy
from voc_rl.checkpoint import save_json
from voc_rl.critic import TDCritic, train_td_critic
from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.data.sampler import discounted_returns
from voc_rl.envs import make_env, state_env
from voc_rl.episodes import mean_interval
from voc_rl.evaluation import spearman
from voc_rl.occupancy import OccupancyModel, RewardModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.parts import SharedParts, fit_or_reuse
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop
from voc_rl.value import sample_q

METHODS = ("voc", "fqe", "behaviour-q", "behaviour-value")
FINETUNE_STEPS = 600  # TD steps per policy from the behaviour's models (results/policy_selection.md)
# EMA rate of the VOC fine-tune's target model: the critic's (0.05), not the occupancy model's 0.01, so
# that few steps move the bootstrap far (FQE keeps the critic's own rate)
FINETUNE_TARGET_RATE = 0.05
# FQE's steps per policy: the critic's default (CriticConfig.steps). A critic step costs about a
# sixtieth of a generative TD step (no sampling), so FQE gets more steps for less time than the VOC.
FQE_STEPS = 10_000


# ---------------------------------------------------------------------------------------------- policies
@dataclass
class StatePolicy:
    """A behaviour policy (``act(obs, rng, deterministic)``) on the proprioceptive state, optionally
    mixed with uniform actions: with probability ``epsilon`` an action is drawn from [-1, 1]."""

    base: Any
    deterministic: bool = False
    epsilon: float = 0.0
    name: str = "policy"
    observation: str = "state"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for a batch of states (B, obs_dim) -> (B, A)."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        action = np.asarray(self.base.act(batch, rng, self.deterministic), dtype=np.float32).reshape(
            len(batch), -1
        )
        if self.epsilon > 0:
            flip = rng.random(len(batch)) < self.epsilon
            action[flip] = rng.uniform(-1.0, 1.0, size=(int(flip.sum()), action.shape[1]))
        return action[0] if single else action


@dataclass
class PixelPolicy:
    """An object with ``predict(obs, deterministic=...)`` (voc_rl agents, stable-baselines3 models) on
    frame stacks ``(3 * frame_stack, H, W)``."""

    model: Any
    deterministic: bool = True
    frame_stack: int = 3
    name: str = "policy"
    observation: str = "pixels"

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.float32)


def policy_from_spec(spec: str, task: str) -> StatePolicy | PixelPolicy:
    """A policy from a short description: a shipped behaviour level of ``task`` (``expert``,
    ``medium``, ``random``; stochastic as they collected the data), ``LEVEL-det`` (its mean action),
    ``LEVEL~EPS`` (mixed with uniform actions with probability EPS), a behaviour-policy file
    (``.pt``, on the state) or a saved voc_rl agent (``.zip``, on pixels, deterministic)."""
    text = spec.strip()
    if text.endswith(".zip"):
        from voc_rl.registry import load_agent

        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"policy {spec!r}: no saved agent at {path}")
        agent = load_agent(path)
        stack = int(getattr(agent.config, "frame_stack", 3))
        return PixelPolicy(agent, True, stack, name=path.stem)
    level, eps = text, 0.0
    if "~" in text:
        level, _, tail = text.partition("~")
        try:
            eps = float(tail)
        except ValueError:
            raise ValueError(f"policy {spec!r}: the noise after '~' must be a number in [0, 1]") from None
    det = level.endswith("-det")
    level = level.removesuffix("-det")
    if level.endswith(".pt"):
        path = Path(level).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"policy {spec!r}: no behaviour-policy file at {path}")
        return StatePolicy(BehaviorPolicy.load(path), det, eps, name=text)
    if level not in LEVELS:
        raise ValueError(
            f"unknown policy {spec!r}: give a level ({', '.join(LEVELS)}, optionally with -det or ~EPS), "
            "a behaviour-policy .pt file or a saved agent's .zip"
        )
    return StatePolicy(load_policy(task, level), det, eps, name=text)


def _is_stochastic(policy: StatePolicy | PixelPolicy) -> bool:
    if isinstance(policy, PixelPolicy):
        return not policy.deterministic
    return policy.epsilon > 0 or isinstance(policy.base, RandomPolicy) or not policy.deterministic


def policy_actions(
    policy: StatePolicy | PixelPolicy, ds: PixelDataset, samples: int = 4, seed: int = 0, batch: int = 512
) -> np.ndarray:
    """The policy's actions at every recorded frame of ``ds``: (N, K, A) float32, K = ``samples`` for
    a stochastic policy and 1 for a deterministic one. State policies read ``ds``'s recorded
    ``proprio``; pixel policies its frame stacks."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    k = samples if _is_stochastic(policy) else 1
    rng = np.random.default_rng(seed)
    n, a_dim = len(ds.arrays["step"]), ds.arrays["action"].shape[1]
    if policy.observation == "state" and "proprio" not in ds.arrays:
        raise ValueError(
            f"{policy.name} acts on the proprioceptive state, which dataset {ds.meta.get('name')!r} did "
            "not record; collect it with `voc-rl collect`, or evaluate a policy that acts on pixels"
        )
    out = np.zeros((n, k, a_dim), np.float32)
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        if policy.observation == "state":
            obs = ds.arrays["proprio"][idx]
        else:
            obs = ds.stacks(idx, policy.frame_stack)  # type: ignore[union-attr]
        for j in range(k):
            act = policy.act(obs, rng)
            if act.shape != (len(idx), a_dim):
                raise ValueError(
                    f"{policy.name} returned actions of shape {act.shape}, expected {(len(idx), a_dim)}"
                )
            out[idx, j] = act
    if not np.isfinite(out).all():
        raise ValueError(f"{policy.name} returned non-finite actions on {ds.meta.get('name')!r}")
    return out


def table_key(table: np.ndarray) -> str:
    """A short digest of an action table: the policy's identity on this dataset (its run folders)."""
    return hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()[:12]


def true_returns(
    policy: StatePolicy | PixelPolicy, ds: PixelDataset, gamma: float, episodes: int = 30, seed: int = 10_000
) -> np.ndarray:
    """Discounted returns (episodes,) of ``policy`` in the simulator, from resets with seeds seed,
    seed + 1, ... (the dataset's initial-state distribution; its episodes used seeds below 10,000),
    on the dataset's env (its action repeat and time limit)."""
    rng = np.random.default_rng(seed)
    kwargs = dict(ds.meta.get("env_kwargs", {}))
    if policy.observation == "state":
        env = state_env(ds.task, kwargs)
    else:
        env = make_env(ds.task, **{**kwargs, "frame_stack": policy.frame_stack})  # type: ignore[union-attr]
    out = np.zeros(episodes)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, t = False, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs, rng))
            out[ep] += gamma**t * float(reward)
            t += 1
            done = terminated or truncated
    env.close()
    return out


# ---------------------------------------------------------------------------------------------- estimators
@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of one policy's discounted return."""

    policy: str
    method: str
    value: float  # the mean over initial states
    low: float  # 95% bootstrap interval over the initial states (the estimate's own noise)
    high: float
    spread: float  # std of the per-state estimates
    n_states: int
    samples: int  # occupancy samples per state (effective sample size per state; 1 for a critic)
    seconds: float  # training and estimation, this policy only


def _estimate(
    name: str, method: str, per_state: np.ndarray, samples: int, seconds: float, seed: int
) -> Estimate:
    low, high = mean_interval(per_state, reps=2000, seed=seed)
    return Estimate(
        name,
        method,
        float(per_state.mean()),
        low,
        high,
        float(per_state.std()),
        len(per_state),
        samples,
        seconds,
    )


@dataclass
class Evaluator:
    """The behaviour's models of one token dataset, and the policy-specific fine-tunes made from them.

    ``parts`` keeps the tokenizer, the behaviour's Monte-Carlo occupancy model and its SARSA critic
    (:class:`voc_rl.parts.SharedParts`); a policy's fine-tunes get their own run folders under
    ``parts.root``, named by the digest of its action table, so an interrupted run resumes and two
    policies never share one.
    """

    view: TokenView
    parts: SharedParts
    gamma: float = 0.99
    seed: int = 0
    steps: int = FINETUNE_STEPS
    samples: int = 32
    device: str = "cpu"
    target_rate: float = FINETUNE_TARGET_RATE
    fqe_steps: int = FQE_STEPS
    warm_start: bool = True
    """voc: fine-tune the behaviour's occupancy model (False: train the policy's from a fresh one, the
    comparison that chose the fine-tune)"""

    def __post_init__(self) -> None:
        self.starts = self.view.ep_start.copy()  # frame 0 of every episode: the initial states

    @functools.cached_property
    def _behaviour(self) -> tuple[OccupancyModel, RewardModel]:
        return self.parts.occupancy(self.view, self.gamma, self.seed)

    @property
    def occupancy(self) -> OccupancyModel:
        """The behaviour's Monte-Carlo occupancy model (trained or loaded on first use)."""
        return self._behaviour[0]

    @property
    def reward(self) -> RewardModel:
        return self._behaviour[1]

    @functools.cached_property
    def critic(self) -> TDCritic:
        """The behaviour's SARSA critic (trained or loaded on first use: only FQE reads it)."""
        return self.parts.critic(self.view, self.gamma, self.seed)

    @functools.cached_property
    def context(self) -> torch.Tensor:
        """The token stacks of the initial states."""
        ctx = self.view.stacks(self.starts, self.occupancy.config.frame_stack).astype(np.int64)
        return torch.from_numpy(ctx).to(self.device)

    def _folder(self, method: str, key: str, config: Any) -> Path:
        """A policy's run folder, named by its action table and the ``config`` it trains."""
        tag = f"g{self.gamma}_s{self.seed}_steps{config.steps}_rate{config.target_rate}"
        scratch = "_scratch" if method == "voc" and not self.warm_start else ""
        return self.parts.root / f"{self.view.meta['name']}__ope_{method}_{key}_{tag}{scratch}"

    def _first_actions(self, table: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(table[self.starts, 0]).to(self.device)

    def behaviour_value(self, name: str = "any policy") -> Estimate:
        returns, _ = discounted_returns(self.view, self.gamma)
        return _estimate(name, "behaviour-value", returns[self.starts], 1, 0.0, self.seed)

    def behaviour_q(self, name: str, table: np.ndarray) -> Estimate:
        start = time.perf_counter()
        q = self._sample_q(self.occupancy, self.reward, table)
        return _estimate(name, "behaviour-q", q, self.samples, time.perf_counter() - start, self.seed)

    def _sample_q(self, occ: OccupancyModel, reward: RewardModel, table: np.ndarray) -> np.ndarray:
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        act, out = self._first_actions(table), []
        for s in range(0, len(act), 64):
            out.append(
                sample_q(occ, reward, self.context[s : s + 64], act[s : s + 64], n=self.samples, generator=g)
            )
        return torch.cat(out).double().cpu().numpy()

    def _fit(self, part: str, config: Any, out: Path, load: Any, train: Any) -> tuple[Any, float]:
        """A policy's model: reused from ``out`` when trained to ``config``'s steps, else ``train(loop)``
        there (resuming an interrupted run); and its training seconds, summed over the calls that trained
        it, in ``out/train_seconds.json``."""
        record = out / "train_seconds.json"
        spent = json.loads(record.read_text()) if record.exists() else {"seconds": 0.0, "done": False}
        start = time.perf_counter()
        loop = Loop(out=out, seed=self.seed, device=self.device, progress=False)
        model = fit_or_reuse(part, config, loop, load, lambda: train(loop))
        if not spent.get("done", True):
            seconds = spent["seconds"] + time.perf_counter() - start
            spent = {"seconds": seconds, "done": model.step >= config.steps}
            save_json(spent, record)
        return model, float(spent["seconds"])

    def voc(self, name: str, table: np.ndarray) -> Estimate:
        """The occupancy model of the policy whose action table is ``table``, by one-step generative
        TD from the behaviour's model, and its Q at the initial states."""
        config = dataclasses.replace(
            self.occupancy.config, n_step=1, steps=self.steps, target_rate=self.target_rate
        )
        out = self._folder("voc", table_key(table), config)

        def train(loop: Loop) -> OccupancyModel:
            model = OccupancyModel(config)
            if self.warm_start:
                model.load_state_dict(self.occupancy.state_dict())
            train_occupancy(model, self.view, self.steps, loop=loop, reward=copy.deepcopy(self.reward),
                            next_actions=table)  # fmt: skip
            return model

        model, seconds = self._fit("occupancy", config, out, lambda p: OccupancyModel.load(p)[0], train)
        start = time.perf_counter()
        q = self._sample_q(model.to(self.device).eval(), self.reward, table)
        return _estimate(name, "voc", q, self.samples, seconds + time.perf_counter() - start, self.seed)

    def fqe(self, name: str, table: np.ndarray) -> Estimate:
        """Fitted Q evaluation of the policy on the same tokens, from the behaviour's critic."""
        config = dataclasses.replace(self.critic.config, steps=self.fqe_steps)
        out = self._folder("fqe", table_key(table), config)

        def train(loop: Loop) -> TDCritic:
            critic = TDCritic(config)
            critic.load_state_dict(self.critic.state_dict())
            train_td_critic(critic, self.view, self.fqe_steps, loop=loop, next_actions=table)
            return critic

        critic, seconds = self._fit("critic", config, out, TDCritic.load, train)
        start = time.perf_counter()
        with torch.no_grad():
            q = critic.to(self.device).eval().q_values(self.context, self._first_actions(table))
        q = q.double().cpu().numpy()
        return _estimate(name, "fqe", q, 1, seconds + time.perf_counter() - start, self.seed)

    def estimate(self, name: str, table: np.ndarray, methods: Sequence[str] = METHODS) -> list[Estimate]:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; known: {', '.join(METHODS)}")
        run = {
            "voc": lambda: self.voc(name, table),
            "fqe": lambda: self.fqe(name, table),
            "behaviour-q": lambda: self.behaviour_q(name, table),
            "behaviour-value": lambda: self.behaviour_value(name),
        }
        return [run[m]() for m in methods]


# ---------------------------------------------------------------------------------------------- metrics
def selection_metrics(
    estimates: Sequence[float], truth: Sequence[float], ks: Sequence[int] = (1, 3)
) -> dict[str, float]:
    """DOPE's metrics of one estimator over a set of policies: Spearman rank correlation of the
    estimates with the true returns; regret@k, the gap between the best true return and the best
    among the k policies the estimates rank highest, over the spread (max - min) of true returns;
    and the mean absolute error over that spread."""
    est, true = np.asarray(estimates, float), np.asarray(truth, float)
    if est.shape != true.shape or len(est) < 2:
        raise ValueError(
            f"need one estimate per policy for at least 2 policies, got {est.shape} and {true.shape}"
        )
    spread = float(true.max() - true.min()) or 1.0
    order = np.argsort(-est, kind="stable")
    out = {"spearman": spearman(est, true) if np.ptp(est) > 0 else float("nan")}
    for k in ks:
        out[f"regret@{k}"] = float(true.max() - true[order[: min(k, len(est))]].max()) / spread
    out["abs_error"] = float(np.abs(est - true).mean()) / spread
    return out


# ---------------------------------------------------------------------------------------------- API
BEHAVIOUR_STEPS = {"tokenizer": 1000, "occupancy": 2000, "critic": 2000}  # the shared models' steps


def as_policy(policy: Any, task: str, name: str | None = None) -> StatePolicy | PixelPolicy:
    """A :class:`StatePolicy` or :class:`PixelPolicy` from a spec string (:func:`policy_from_spec`),
    an object with ``predict`` (pixels, deterministic) or one with ``act(obs, rng, deterministic)``
    (a behaviour policy on the state, stochastic)."""
    if isinstance(policy, StatePolicy | PixelPolicy):
        return policy
    if isinstance(policy, str | Path):
        return policy_from_spec(str(policy), task)
    label = name or getattr(policy, "name", None) or type(policy).__name__
    if hasattr(policy, "predict"):
        stack = int(getattr(getattr(policy, "config", None), "frame_stack", 3))
        return PixelPolicy(policy, True, stack, name=label)
    if hasattr(policy, "act"):
        return StatePolicy(policy, name=label)
    raise TypeError(
        f"{label}: a policy needs predict(obs, deterministic) (pixels) or act(obs, rng, deterministic) "
        "(the proprioceptive state), or a spec such as 'expert', 'medium-det', 'expert~0.3' or a .zip"
    )


def select_policies(
    policies: Mapping[str, Any] | Sequence[Any],
    dataset: PixelDataset | str | Path,
    *,
    runs: str | Path = "runs/select",
    method: str = "voc",
    gamma: float = 0.99,
    seed: int = 0,
    steps: int = FINETUNE_STEPS,
    fqe_steps: int = FQE_STEPS,
    samples: int = 32,
    tokenizer: str = "vqvae",
    size: str = "small",
    behaviour_steps: Mapping[str, int] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[Estimate]:
    """Estimate each policy's discounted return from ``dataset`` alone with ``method`` (one of
    :data:`METHODS`) and return the estimates best first.

    ``policies``: ``{name: policy}`` or a list (named by their specs or their ``name``); a policy is a
    spec string, a saved agent's path, or an object (:func:`as_policy`). The behaviour's models (a
    tokenizer, the Monte-Carlo occupancy model, the SARSA critic; :data:`BEHAVIOUR_STEPS`) train once
    in ``runs`` and are reused; each policy's fine-tune gets its own folder there, named by its
    actions on the dataset, and is reused when the same policy is asked for again. ``size``: the
    preset of the tokenizer and the models ("tiny" for tests).
    """
    from voc_rl.data.dataset import open_dataset
    from voc_rl.paths import user_path

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    ds = dataset if isinstance(dataset, PixelDataset) else open_dataset(dataset)
    items = list(policies.items()) if isinstance(policies, Mapping) else [(None, p) for p in policies]
    if not items:
        raise ValueError("no policies to evaluate: give at least one")
    named = {}
    for label, p in items:
        pol = as_policy(p, ds.task, label)
        key = label or pol.name
        if key in named:
            raise ValueError(f"two policies are named {key!r}: name them with a mapping {{name: policy}}")
        named[key] = pol
    steps_of = dict(BEHAVIOUR_STEPS if behaviour_steps is None else behaviour_steps)
    parts = SharedParts(user_path(runs), size, size, steps=steps_of, progress=progress)
    view = token_view(ds, parts.tokenizer(ds, tokenizer), progress=progress)
    ev = Evaluator(view, parts, gamma, seed, steps, samples, device, fqe_steps=fqe_steps)
    estimates = [
        ev.estimate(key, policy_actions(pol, ds, seed=seed), [method])[0] for key, pol in named.items()
    ]
    return sorted(estimates, key=lambda e: -e.value)


def estimate_return(policy: Any, dataset: PixelDataset | str | Path, **kwargs: Any) -> Estimate:
    """One policy's estimated discounted return from ``dataset`` alone; ``kwargs`` as
    :func:`select_policies`."""
    return select_policies([policy], dataset, **kwargs)[0]
