"""The registered agents: VOC (pool-estimated Q), the gamma-0 world-model rollout, the TD critic, BC,
and the field's offline actor-critics from pixels (IQL, TD3+BC).

The first four share the behaviour-cloning prior of :class:`~voc_rl.agents.base.Agent` and its
candidate proposal (and, where they read tokens, the tokenizer); they differ only in how they score
the candidates. The actor-critics train their actor with their critic instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.agents.base import Agent, PartFitting, State
from voc_rl.checkpoint import CheckpointError, save_npz
from voc_rl.critic import CriticConfig, TDCritic, distill_q
from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.occupancy import (
    OccupancyConfig,
    OccupancyModel,
    RewardModel,
    load_reward_heads,
    save_reward_heads,
)
from voc_rl.offline_rl import ActorCriticConfig, PixelCritic
from voc_rl.parts import fit_actor_critic, fit_critic, fit_occupancy, fit_reward_head
from voc_rl.token_trunk import token_batch
from voc_rl.value import pool_futures, pool_q, pool_value, rollout_q

VOC_SCORE_BATCH = 64  # states whose candidates the occupancy model scores at once in extraction


class BCAgent(Agent):
    """Behaviour cloning: acts with the prior (its mode when deterministic); it has no Q values."""

    kind = "bc"
    scorer_reads_tokens = False

    @torch.no_grad()
    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ):
        obs, single = self._context(observation)
        if deterministic:
            action = self.prior.mode(self._prior_in(obs))
        else:
            action = self.prior.sample(self._prior_in(obs), 1, self.generator)[:, 0]
        action = action.cpu().numpy()
        return (action[0] if single else action), None

    def _fit_scorer(self, view: TokenView, fit: PartFitting) -> None:
        pass  # the prior is all it has


class _OccupancyAgent(Agent):
    """An agent whose scorer is an occupancy model and its reward model (gamma from ``gamma_of``);
    with another ``task`` or ``tasks`` in its config, a reward head per task on the same model (the
    ``heads`` part)."""

    parts = ("tokenizer", "prior", "occupancy")

    def __init__(self, config: Any, name: str | None = None):
        super().__init__(config, name)
        self.occupancy: OccupancyModel | None = None
        self.reward: RewardModel | None = None  # the dataset's own task's
        self.heads: dict[str, RewardModel] = {}  # every other task's
        if config.task or config.tasks:
            self.parts = (*type(self).parts, "heads")

    def known_tasks(self) -> list[str]:
        """The dataset's own task (its head trains with the model), the config's ``task`` and ``tasks``."""
        c, own = self.config, [] if self.task is None else [self.task]
        return list(dict.fromkeys([*own, *([c.task] if c.task else []), *c.tasks]))

    def reward_for(self, task: str | None = None) -> RewardModel:
        """The reward head of ``task`` (one of :meth:`known_tasks`; None: the acting task)."""
        task = self._check_task(task)
        return self.reward if task == self.task else self.heads[task]

    def gamma_of(self) -> float:
        return self.config.gamma

    def target_frames_of(self) -> int:
        return self.config.target_frames

    def _fit_scorer(self, view: TokenView, fit: PartFitting) -> None:
        c = self.config
        config = OccupancyConfig.for_dataset(
            view, c.size, gamma=self.gamma_of(), target_frames=self.target_frames_of(),
            **{**c.occupancy_kwargs, **fit.cap(c.occupancy_steps)},
        )  # fmt: skip
        self.occupancy, self.reward = fit_occupancy(
            view, config, model=self.occupancy, reward=self.reward, tokenizer=self.tokenizer,
            loop=fit.loop("occupancy"),
        )  # fmt: skip
        for task in self.known_tasks()[1:]:  # the dataset's own task's head trained with the model
            self.heads[task] = fit_reward_head(
                view, task, config, model=self.heads.get(task), init=self.reward,
                loop=fit.loop(f"reward-{task}"),
            )  # fmt: skip

    def _save_part(self, part: str, path: Path) -> None:
        if part == "occupancy":
            self.occupancy.save(path, reward=self.reward)
        elif part == "heads":
            save_reward_heads(path, self.heads, self.occupancy.config)
        else:
            super()._save_part(part, path)

    def _load_part(self, part: str, path: Path) -> None:
        if part == "occupancy":
            model, reward = OccupancyModel.load(path)
            if reward is None:
                raise CheckpointError(f"{path} has no reward model; the agent needs one")
            self.occupancy, self.reward = model.to(self.device).eval(), reward.to(self.device).eval()
        elif part == "heads":
            heads = load_reward_heads(path, self.occupancy.config)
            self.heads = {task: head.to(self.device) for task, head in heads.items()}
        else:
            super()._load_part(part, path)

    def _check_parts(self, path: Path) -> None:
        super()._check_parts(path)
        missing = [t for t in self.known_tasks()[1:] if t not in self.heads]
        if missing:
            raise CheckpointError(f"{path} has no reward head of {missing}, which the agent's config names")
        occ = self.occupancy.config
        if occ.target_frames != (self.target_frames_of() or occ.frame_stack):
            raise CheckpointError(
                f"{path}: the occupancy model predicts {occ.target_frames} frame(s), the agent's config "
                f"says target_frames={self.config.target_frames} (0 is the whole stack)"
            )
        if occ.gamma != self.gamma_of() or occ.vocab_size != self.tokenizer.vocab_size:
            raise CheckpointError(
                f"{path}: the occupancy model (gamma {occ.gamma}, vocab {occ.vocab_size}) does not match "
                f"the agent (gamma {self.gamma_of()}, vocab {self.tokenizer.vocab_size})"
            )


class VOCAgent(_OccupancyAgent):
    """Scores K candidates with one pool of ``pool_size`` sampled futures shared by all (``pool_q``).

    Its ``awr`` extraction scores ``awr_states`` training states (dataset action and prior samples
    on one pool each), distils those estimates into a token Q network (:func:`voc_rl.critic.distill_q`)
    and takes every transition's advantage from that network: the occupancy model's Q, amortised.
    """

    kind = "voc"

    def _awr_estimates(
        self, view: TokenView, index: np.ndarray, fit: PartFitting
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        c = self.config
        rng = np.random.default_rng(c.seed + 7)
        subset = np.sort(rng.choice(index, min(c.awr_states, len(index)), replace=False))
        pools, reused = self._awr_pools(view, subset, fit)
        obs = token_batch(view, subset, self.frame_stack, self.device, False)["obs"]
        reward, gamma, n = self.reward_for(None), self.occupancy.config.gamma, VOC_SCORE_BATCH
        q = torch.cat([
            pool_value(reward, pools["pool"][i : i + n], pools["weights"][i : i + n], gamma)
            for i in range(0, len(subset), n)
        ])  # fmt: skip
        config = CriticConfig.for_dataset(view, c.size, gamma=c.gamma)
        torch.manual_seed(c.seed)
        net = TDCritic(config).to(self.device)
        with torch.enable_grad():
            steps = fit.cap(c.distill_steps)["steps"]
            info = distill_q(net, obs, pools["actions"], q, steps, c.seed)
        self.seed(c.seed + 11)  # every transition's prior samples: the same whether pools were reused or not
        batches = self._score_batches(view, index, 1024, lambda s, a: net.q_values(s.tokens, a), fit.pixels)
        q_all = torch.cat([qb for _, qb in batches])
        summary = {"scored_states": len(subset), "pools_reused": int(reused), **info}
        return q_all[:, 0].cpu().numpy(), q_all[:, 1:].cpu().numpy(), summary

    def _awr_pools(
        self, view: TokenView, subset: np.ndarray, fit: PartFitting
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """The scored states' candidate actions (S, K, A) [the dataset action and prior samples], their
        pools of futures (S, M, n_target) and weights (S, K, M): none of it depends on the reward, so
        it is kept beside the occupancy model (``<run>/occupancy/awr-pools``) and an agent of another
        task of the same run, with the same models and settings, turns it into its task's Q with its
        own head instead of sampling again. Also whether it was reused."""
        c = self.config
        ident = {
            "states": hashlib.sha256(subset.astype(np.int64).tobytes()).hexdigest(),
            "tokens": view.meta["tokens"].get("key"), "occupancy": dataclasses.asdict(self.occupancy.config),
            "occupancy_step": int(getattr(self.occupancy, "step", 0)),
            "prior": self.prior and dataclasses.asdict(self.prior.config),  # none: qbc, qwr score no samples
            "prior_step": int(getattr(self.prior, "step", 0)),
            "pool_size": c.pool_size, "awr_samples": c.awr_samples, "seed": c.seed,
        }  # fmt: skip
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = fit.run / "occupancy" / "awr-pools" / f"{key}.npz"
        names = ("actions", "pool", "weights")
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    kept = {k: torch.as_tensor(f[k]).to(self.device) for k in names}
                kept["pool"] = kept["pool"].long()
                return kept, True
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # cut off or corrupt: score again and replace it
        got: dict[str, list[torch.Tensor]] = {k: [] for k in names}

        def score(state: State, actions: torch.Tensor) -> torch.Tensor:
            pool, w = pool_futures(self.occupancy, state.tokens, actions, c.pool_size, self.generator)
            got["pool"].append(pool)
            got["weights"].append(w)
            return w

        for b, _ in self._score_batches(view, subset, VOC_SCORE_BATCH, score, fit.pixels):
            got["actions"].append(b["actions"])
        pools = {k: torch.cat(v) for k, v in got.items()}
        small = np.int16 if self.occupancy.config.vocab_size <= np.iinfo(np.int16).max else np.int32
        arrays = {k: v.cpu().numpy() for k, v in pools.items()}
        save_npz({**arrays, "pool": arrays["pool"].astype(small)}, path)
        return pools, False

    def _score(self, state: State, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return pool_q(
            self.occupancy,
            self.reward_for(task),
            state.tokens,
            actions,
            pool_size=self.config.pool_size,
            generator=self.generator,
        )


class WMRolloutAgent(_OccupancyAgent):
    """A gamma-0 occupancy model as a one-step world model, rolled out ``horizon_factor / (1 - gamma)``
    steps with the reward model, following the prior: the compounding-error baseline."""

    kind = "wm-rollout"

    def __init__(self, config: Any, name: str | None = None):
        if config.policy_input != "tokens":
            raise ValueError(
                "a wm-rollout agent rolls its prior out in token space: it needs policy_input='tokens'"
            )
        super().__init__(config, name)

    def gamma_of(self) -> float:
        return 0.0

    def target_frames_of(self) -> int:
        return 0  # a rollout feeds each predicted stack back as the next context

    def _score(self, state: State, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        c, context = self.config, state.tokens
        b, k, a = actions.shape
        horizon = math.ceil(c.horizon_factor / (1 - c.gamma))

        def policy(tokens: torch.Tensor) -> torch.Tensor:
            return self.prior.sample(tokens, 1, self.generator)[:, 0]

        q = rollout_q(
            self.occupancy, self.reward_for(task), policy, context.repeat_interleave(k, 0),
            actions.reshape(b * k, a), c.gamma, horizon, n=c.rollouts, generator=self.generator,
        )  # fmt: skip
        return q.reshape(b, k)


class TDCriticAgent(Agent):
    """Scores the candidates with a SARSA-trained Q network on the same tokens."""

    kind = "td-critic"

    parts = ("tokenizer", "prior", "critic")

    def __init__(self, config: Any, name: str | None = None):
        super().__init__(config, name)
        self.critic: TDCritic | None = None

    def _fit_scorer(self, view: TokenView, fit: PartFitting) -> None:
        c = self.config
        config = CriticConfig.for_dataset(view, c.size, gamma=c.gamma, **fit.cap(c.critic_steps))
        data = view.for_task(self.acting_task)  # the task it learns: its own, or the config's task
        loop = fit.loop("critic" + self._task_suffix())
        self.critic = fit_critic(data, config, model=self.critic, loop=loop)

    def _load_part(self, part: str, path: Path) -> None:
        if part == "critic":
            self.critic = TDCritic.load(path).to(self.device).eval()
        else:
            super()._load_part(part, path)

    def _check_parts(self, path: Path) -> None:
        super()._check_parts(path)
        if self.critic.config.gamma != self.config.gamma:
            raise CheckpointError(
                f"{path}: the critic has gamma {self.critic.config.gamma}, the agent {self.config.gamma}"
            )

    def _score(self, state: State, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self.critic.q_values(state.tokens, actions)  # its one task (q_values checked the name)


class ActorCriticAgent(Agent):
    """An offline actor-critic from pixels (:mod:`voc_rl.offline_rl`): the critic (twin Q, and V for
    IQL) trains the shared pixel encoder, the actor reads it; the actor is the agent's prior and acts
    with its mode (``candidates=1``; more are scored by the min of the twin Q). No tokenizer, no BC
    prior: the actor is its own extraction."""

    parts = ("prior", "critic")
    scorer_reads_tokens = False

    def __init__(self, config: Any, name: str | None = None):
        if config.policy_input != "pixels" or config.extraction != "none":
            raise ValueError(
                f"a {self.kind} agent reads pixels and trains its own actor: it needs policy_input='pixels' "
                f"and extraction='none', got {config.policy_input!r} and {config.extraction!r}"
            )
        super().__init__(config, name)
        self.critic: PixelCritic | None = None

    def _needs_behaviour_prior(self) -> bool:
        return False

    def _fit_scorer(self, view: PixelDataset, fit: PartFitting) -> None:
        c = self.config
        config = ActorCriticConfig.for_dataset(
            fit.pixels,
            c.size,
            **{
                **c.pixel_kwargs,
                "algo": self.kind,
                "gamma": c.gamma,
                **self._state_aux(fit.pixels),
                **fit.cap(c.critic_steps),
            },
        )
        data = fit.pixels.for_task(self.acting_task)  # the task it learns: its own, or the config's task
        loop = fit.loop(self.kind + self._task_suffix())
        self.critic, self.prior = fit_actor_critic(data, config, critic=self.critic, loop=loop)

    def _load_part(self, part: str, path: Path) -> None:
        if part == "critic":
            self.critic = PixelCritic.load(path).to(self.device).eval()
        else:
            super()._load_part(part, path)

    def _check_parts(self, path: Path) -> None:
        super()._check_parts(path)
        cc = self.critic.config
        if (cc.algo, cc.gamma) != (self.kind, self.config.gamma):
            raise CheckpointError(
                f"{path}: the critic is {cc.algo} at gamma {cc.gamma}, "
                f"the agent {self.kind} at {self.config.gamma}"
            )

    def _score(self, state: State, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self.critic.q_values(state.pixels, actions)


class IQLAgent(ActorCriticAgent):
    """Implicit Q-learning (expectile V, AWR actor) from pixels."""

    kind = "iql"


class TD3BCAgent(ActorCriticAgent):
    """TD3+BC (DrQ+BC) from pixels: a deterministic actor with the critic's gradient and a BC term."""

    kind = "td3bc"
