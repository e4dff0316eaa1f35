"""The agent contract: train every part from a pixel dataset, act, score, save and load.

An agent is a tokenizer, a behaviour-cloning prior on its tokens, and (in subclasses) a scorer of
candidate actions. To act it proposes K candidates (the prior's mode and K - 1 samples), scores
them with ``_score`` and takes the best (``deterministic=True``) or draws one from a softmax over
the standardised scores: one-step policy improvement over the behaviour value. The API follows
stable-baselines3, so ``evaluate_policy(agent, env)`` works.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from voc_rl.agents.extraction import PolicyExtraction
from voc_rl.agents.state import PartFitting, State
from voc_rl.checkpoint import Callback, CheckpointError, atomic_write, package_versions
from voc_rl.data.dataset import PixelDataset, TokenView, open_dataset
from voc_rl.parts import CHECKPOINT, fit_pixel_prior, fit_prior, fit_tokenizer
from voc_rl.paths import check_writable, user_path
from voc_rl.pixel_policy import PixelBCConfig, PixelBCPolicy
from voc_rl.prior import BCConfig, BCPolicy
from voc_rl.registry import REGISTRY, RENAMED, AgentConfig, load_class
from voc_rl.run_folder import check_same_run, locked
from voc_rl.tokenizers import Tokenizer
from voc_rl.tokenizers.cache import token_view
from voc_rl.utils import resolve_device

FORMAT = "voc_rl.agent/1"


class Agent(PolicyExtraction):
    """Base class; subclasses set ``kind`` and ``parts`` and implement ``_fit_scorer`` and ``_score``."""

    kind: ClassVar[str] = ""
    """How the agent scores candidate actions: ``voc`` (occupancy model, pool estimator),
    ``wm-rollout`` (gamma-0 model rolled out), ``td-critic`` (SARSA Q network) or ``bc`` (no scoring:
    the prior). ``voc_rl.registry.AgentSpec.kind`` reads it."""
    parts: ClassVar[tuple[str, ...]] = ("tokenizer", "prior")
    scorer_reads_tokens: ClassVar[bool] = True
    """Does the scorer read tokens (the occupancy model, a token critic)? An agent that reads none, its
    policy included (``policy_input="pixels"``), has no tokenizer part."""

    def __init__(self, config: AgentConfig, name: str | None = None):
        if config.extraction in ("awr", "qwr", "qbc") and self.kind == "bc":
            raise ValueError(
                f"extraction={config.extraction!r} needs a Q: a {self.kind} agent has none "
                "(use pbc, or a td-critic or voc agent)"
            )
        if config.tasks and "occupancy" not in self.parts:
            raise ValueError(
                f"tasks={list(config.tasks)}: only an occupancy-model agent (voc, wm-rollout) keeps a "
                f"reward head per task; a {self.kind} agent learns one task: set task= instead"
            )
        self.config, self.name = config, name or type(self).__name__
        if not self.reads_tokens():
            self.parts = tuple(p for p in self.parts if p != "tokenizer")
        self.device = resolve_device(config.device)
        self.tokenizer: Tokenizer | None = None
        self.prior: BCPolicy | PixelBCPolicy | None = None
        self.frame_stack = 3  # frames the policy reads: ``learn`` sets it, extraction scores with it
        self.task: str | None = None  # the dataset's task, which it was trained on
        self._acting: str | None = None  # set_task's choice
        self.run_dir: Path | None = None
        self.extraction_info: dict[str, float] = {}  # beta, ESS fraction, ..., weight share by level
        self.seed(config.seed)

    def reads_tokens(self) -> bool:
        """Does any part read the tokenizer's codes (a policy on ``tokens``, or the scorer)?"""
        return self.config.policy_input == "tokens" or self.scorer_reads_tokens

    def _needs_behaviour_prior(self) -> bool:
        """Is a plain BC prior trained before the scorer? Its samples are the candidates, the advantage
        baseline of ``awr`` and the wm-rollout's policy; %BC, the extractions that score only the
        dataset's actions (``qbc``, ``qwr``) and the actor-critic agents do without."""
        return self.config.extraction in ("none", "awr") or self.kind == "wm-rollout"

    @property
    def acting_task(self) -> str | None:
        """The task the agent acts for: ``set_task``'s, else the config's ``task``, else its dataset's."""
        return self._acting or self.config.task or self.task

    def known_tasks(self) -> list[str]:
        """The tasks whose Q the agent can give: the one it learned (an occupancy-model agent: more)."""
        task = self.config.task or self.task
        return [] if task is None else [task]

    def set_task(self, task: str) -> Agent:
        """Act for another of :meth:`known_tasks` (a voc agent trained with ``tasks=[...]``): candidates
        are then scored with that task's reward head. Refused for an agent whose prior was extracted
        for one task (train one with ``task=...``: the shared parts are reused from its run folder)."""
        self._check_task(task)
        if self.config.extraction != "none" and task != (self.config.task or self.task):
            raise ValueError(
                f"{self.name}'s prior was extracted ({self.config.extraction}) for "
                f"{self.config.task or self.task!r}; train an agent with task={task!r} to act for it"
            )
        self._acting = task
        return self

    def _check_task(self, task: str | None) -> str:
        """``task`` (None: the acting task), which must be one of :meth:`known_tasks`."""
        task = task or self.acting_task
        if task not in self.known_tasks():
            raise ValueError(f"{self.name} has no Q for task {task!r}; it knows {self.known_tasks()}")
        return task

    def seed(self, seed: int) -> None:
        """Re-seed the agent's own sampling (candidates, pools): same seed, same actions."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    # ------------------------------------------------------------------ training
    def learn(
        self,
        dataset: PixelDataset | str | Path,
        steps: int | None = None,
        callback: Callback | None = None,
        tokenizer: str | Path | None = None,
        run_dir: str | Path | None = None,
        runs: str | Path = "runs",
        progress: bool = True,
    ) -> Agent:
        """Train every part on ``dataset``'s training episodes (its held-out split is kept out).

        ``steps`` caps each part's training steps (default: the config's, else the size preset's);
        ``callback(step, logs)`` runs after every step of every part, ``False`` stops that part.
        ``tokenizer`` (a ``tokenizer.pt``) skips tokenizer training. Logs, checkpoints and the
        config go to ``run_dir`` (default ``runs/{task}__{agent}__{seed}__{time}``); calling
        ``learn`` again with the same ``run_dir`` resumes every part where it stopped.
        """
        ds = dataset if isinstance(dataset, PixelDataset) else open_dataset(dataset)
        if isinstance(ds, TokenView):
            raise ValueError("learn takes a pixel dataset, not a token view: pass the dataset itself")
        task = ds.task
        if self.task is not None and task != self.task:
            raise ValueError(f"this agent was trained on {self.task!r}; {ds.path} holds {task!r}")
        self.task, c = task, self.config
        others = [t for t in (c.task, *c.tasks) if t and t != task]
        if others:
            from voc_rl.task_rewards import check_tasks

            check_tasks(ds, others)
            for other in others:
                ds.task_reward(other)  # relabelled? (else: the relabel command to run)
        name = f"{task}__{self.name}__{c.seed}__{int(time.time())}"
        run = check_writable(user_path(run_dir) if run_dir else user_path(runs) / name, "run folder")
        check_same_run(run, {"seed": c.seed, "dataset": ds.path.name, "task": task})
        with locked(run):
            return self._learn_in(run, ds, task, steps, callback, tokenizer, progress)

    def _learn_in(
        self, run: Path, ds: PixelDataset, task: str, steps: int | None, callback: Callback | None,
        tokenizer: str | Path | None, progress: bool,
    ) -> Agent:  # fmt: skip
        """:meth:`learn` in the run folder ``run``, which this process holds."""
        c = self.config
        self.run_dir = run
        (run / "config.json").write_text(
            json.dumps({"agent": self.name, "task": task, "dataset": str(ds.path), **self._config_json()})
        )
        fit = PartFitting(run, c.seed, self.device, progress, steps, callback, ds)
        view: PixelDataset = ds
        if self.reads_tokens():
            if tokenizer is not None:
                self.tokenizer = Tokenizer.load(tokenizer, backend=c.tokenizer).to(self.device)
                tok_ckpt = user_path(tokenizer)
            else:
                fields = {**c.tokenizer_kwargs, **fit.cap(c.tokenizer_steps)}
                self.tokenizer = fit_tokenizer(
                    ds, c.tokenizer, c.size, fields=fields, model=self.tokenizer, loop=fit.loop("tokenizer")
                )
                tok_ckpt = run / "tokenizer" / CHECKPOINT["tokenizer"]
            view = token_view(ds, tok_ckpt, progress=progress)
        pixels = c.policy_input == "pixels"
        if pixels:
            config: Any = PixelBCConfig.for_dataset(
                ds, c.size, **{**c.pixel_kwargs, **self._state_aux(ds), **fit.cap(c.prior_steps)}
            )
            fit_policy = functools.partial(fit_pixel_prior, ds, config)
        else:
            config = BCConfig.for_dataset(view, c.size, **fit.cap(c.prior_steps))
            fit_policy = functools.partial(fit_prior, view, config)
        self.frame_stack = config.frame_stack
        if self._needs_behaviour_prior():
            bc = (
                None if c.extraction != "none" else self.prior
            )  # with extraction, self.prior is the extracted
            self.prior = fit_policy(model=bc, loop=fit.loop("pixel-prior" if pixels else "prior"))
        self._fit_scorer(view, fit)
        if c.extraction != "none":
            self._extract(view, fit, fit_policy)
        return self

    def _state_aux(self, ds: PixelDataset) -> dict[str, float]:
        """The pixel encoders' ``state_aux`` field where the dataset records the state, else none."""
        return {"state_aux": self.config.state_aux} if "proprio" in ds.arrays else {}

    def load_parts(self, task: str, **paths: str | Path) -> Agent:
        """Use separately trained parts instead of ``learn``: a checkpoint path per part (``tokenizer``,
        ``prior``, and ``occupancy`` or ``critic``), e.g. those of a return-error benchmark run."""
        if set(paths) != set(self.parts):
            raise ValueError(f"{self.name} takes exactly the parts {list(self.parts)}; got {sorted(paths)}")
        for part in self.parts:
            self._load_part(part, user_path(paths[part]))
        self.task = task
        self._check_parts(user_path(paths[self.parts[-1]]))
        return self

    def _task_suffix(self) -> str:
        """A part trained for another task than the dataset's own has its own folder: ``-<task>``."""
        return "" if self.acting_task == self.task else f"-{self.acting_task}"

    def _fit_scorer(self, view: PixelDataset, fit: PartFitting) -> None:
        """Fit (or reuse) the scorer's parts on the token dataset ``view`` as ``fit`` says."""
        raise NotImplementedError(f"{type(self).__name__}._fit_scorer(view, fit) is not implemented")

    # ------------------------------------------------------------------ acting
    def _context(self, obs: Any, tokens: bool = True) -> tuple[State, bool]:
        """Stacked uint8 frames (3F, H, W) or (B, 3F, H, W) -> the :class:`State` (pixels, and token
        ids (B, F*T) where the agent reads tokens and ``tokens``), batched?"""
        if self.prior is None or (self.reads_tokens() and self.tokenizer is None):
            raise RuntimeError(f"{self.name} is not trained: call learn(dataset) or Agent.load(path) first")
        x = torch.as_tensor(np.asarray(obs))
        single = x.ndim == 3
        x = x[None] if single else x
        frames = self.prior.config.frame_stack
        size = (
            self.tokenizer.config.image_size if self.tokenizer is not None else self.prior.config.image_size
        )
        if x.ndim != 4 or tuple(x.shape[1:]) != (3 * frames, size, size):
            raise ValueError(
                f"obs must be stacked frames of shape ({3 * frames}, {size}, {size}) or a batch of "
                f"them, as voc_rl envs give (frame_stack={frames}, size={size}); got {tuple(x.shape)}"
            )
        if x.dtype != torch.uint8:
            raise TypeError(f"obs must be uint8 pixels, got {x.dtype}")
        ids = None
        if tokens and self.reads_tokens():
            ids = self.tokenizer.encode(x.reshape(len(x), frames, 3, size, size)).to(self.device)  # (B, F*T)
        return State(x.to(self.device), ids), single

    def _prior_in(self, state: State) -> torch.Tensor:
        """What the prior reads of ``state``: its pixels or its tokens."""
        return state.pixels if isinstance(self.prior, PixelBCPolicy) else state.tokens

    def _candidates(self, state: State) -> torch.Tensor:
        """(B, K, A): the prior's mode, then K - 1 samples."""
        obs = self._prior_in(state)
        mode = self.prior.mode(obs)[:, None]
        if self.config.candidates == 1:
            return mode
        return torch.cat([mode, self.prior.sample(obs, self.config.candidates - 1, self.generator)], 1)

    def _score(self, state: State, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """(B, K) Q estimates of ``actions`` (B, K, A) in the states ``state`` (a :class:`State` of B),
        for ``task`` (None: the acting task)."""
        raise NotImplementedError(
            f"{self.name} has no value model: _score(state, actions) -> (B, K) is not implemented; "
            "use a voc-*, td-critic or wm-rollout agent for Q values"
        )

    @torch.no_grad()
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """Action(s) for an observation or a batch of them, and ``None`` (no recurrent state)."""
        scored = self.config.candidates > 1 or not isinstance(self.prior, PixelBCPolicy)
        state, single = self._context(observation, tokens=scored)  # a pixel policy's mode needs no tokens
        candidates = self._candidates(state)  # (B, K, A)
        if candidates.shape[1] == 1:  # the extracted prior's mode: nothing to score
            action = candidates[:, 0].cpu().numpy()
            return (action[0] if single else action), None
        q = self._score(state, candidates)  # (B, K)
        if deterministic:
            pick = q.argmax(1)
        else:
            z = (q - q.mean(1, keepdim=True)) / (q.std(1, keepdim=True, unbiased=False) + 1e-8)
            probs = torch.softmax(z / self.config.temperature, 1)
            pick = torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        action = candidates[torch.arange(len(q), device=q.device), pick].cpu().numpy()
        return (action[0] if single else action), None

    @torch.no_grad()
    def q_values(self, observation: Any, actions: Any, task: str | None = None) -> np.ndarray:
        """Q(s, a): obs (3F, H, W) with actions (K, A) -> (K,); or a batch (B, ...) with (B, K, A).
        ``task``: one of :meth:`known_tasks` (default: the acting task)."""
        task = self._check_task(task)
        state, single = self._context(observation)
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        a = a[None] if single else a
        dim = self.prior.config.action_dim
        if a.ndim != 3 or a.shape[0] != len(state) or a.shape[2] != dim or a.shape[1] < 1:
            raise ValueError(
                f"actions must be (K, {dim}) for one observation or (B, K, {dim}) for a batch of B, K >= 1; "
                f"got {tuple(np.shape(actions))} for {len(state)} observation(s)"
            )
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        q = self._score(state, a.clamp(-1, 1), task).cpu().numpy()
        return q[0] if single else q

    @torch.no_grad()
    def value(self, observation: Any) -> np.ndarray | float:
        """V(s) = mean of Q over the K prior candidates (the behaviour value's estimate)."""
        state, single = self._context(observation)
        v = self._score(state, self._candidates(state)).mean(1).cpu().numpy()
        return float(v[0]) if single else v

    # ------------------------------------------------------------------ saving
    def _config_json(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config)}

    def _save_part(self, part: str, path: Path) -> None:
        getattr(self, part).save(path)

    def _load_part(self, part: str, path: Path) -> None:
        prior = PixelBCPolicy if self.config.policy_input == "pixels" else BCPolicy
        loaded = {"tokenizer": Tokenizer, "prior": prior}[part].load(path)
        setattr(self, part, loaded.to(self.device).eval())

    def save(self, path: str | Path) -> Path:
        """One ``.zip``: ``agent.json`` (name, config, task, versions) and each part's checkpoint."""
        missing = [p for p in self.parts if getattr(self, p) is None]
        if missing:
            raise RuntimeError(f"{self.name} has no trained {missing}: call learn(dataset) before save")
        path = user_path(path)
        path = path if path.suffix == ".zip" else path.with_suffix(".zip")
        meta = {
            "format": FORMAT,
            "agent": self.name,
            "entry_point": f"{type(self).__module__}:{type(self).__name__}",
            "task": self.task,
            "parts": list(self.parts),
            "versions": package_versions(),
            "extraction_info": self.extraction_info,
            **self._config_json(),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for part in self.parts:
                self._save_part(part, Path(tmp) / f"{part}.pt")

            def write(out: str) -> None:
                with zipfile.ZipFile(out, "w") as z:
                    z.writestr("agent.json", json.dumps(meta, indent=1))
                    for part in self.parts:
                        z.write(Path(tmp) / f"{part}.pt", f"{part}.pt")

            return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Agent:
        """Restore an agent from :meth:`save` (weights-only loading; nothing in the file runs)."""
        path = user_path(path)
        if not path.is_file():
            raise CheckpointError(f"agent file {path} does not exist")
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is not an agent .zip (truncated or corrupt?)")
        with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
            try:
                meta = json.loads(z.read("agent.json"))
            except zipfile.BadZipFile as exc:
                raise CheckpointError(f"{path} is corrupt ({exc}): save or copy the agent again") from exc
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"{path} has no readable agent.json: not a voc_rl agent") from exc
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
                raise CheckpointError(f"{path} has format {got!r}, expected {FORMAT!r}")
            missing = [k for k in ("agent", "entry_point", "task", "config") if k not in meta]
            if missing:
                raise CheckpointError(f"{path}: agent.json lacks {missing}; the file is incomplete or edited")
            entry = meta["entry_point"]
            known = {s.entry_point for s in REGISTRY.values()}
            if entry not in known and not entry.startswith("voc_rl.agents."):
                raise CheckpointError(f"{path} names the class {entry!r}, which is not a voc_rl agent")
            try:
                agent_cls = load_class(entry)
            except (ImportError, AttributeError, ValueError) as exc:
                raise CheckpointError(
                    f"{path} names the class {entry!r}, which this voc_rl lacks: {exc}"
                ) from exc
            if not (isinstance(agent_cls, type) and issubclass(agent_cls, Agent)):
                raise CheckpointError(f"{path} names {entry!r}, which is not a voc_rl agent class")
            if not issubclass(agent_cls, cls):
                raise CheckpointError(
                    f"{path} holds a {meta['agent']!r} agent ({agent_cls.__name__}), not a {cls.__name__}; "
                    "load it with voc_rl.load_agent(path)"
                )
            fields = {f.name for f in dataclasses.fields(AgentConfig)}
            if isinstance(meta["config"], dict):  # files saved before policies read pixels: token priors
                meta["config"].setdefault("policy_input", "tokens")
            if isinstance(meta["config"], dict) and "kind" in meta["config"]:  # an older file
                saved = meta["config"].pop("kind")
                if saved != agent_cls.kind:
                    raise CheckpointError(f"{path} is a {saved!r} agent saved as a {agent_cls.kind!r} class")
            if not isinstance(meta["config"], dict) or set(meta["config"]) - fields:
                unknown = sorted(set(meta["config"]) - fields) if isinstance(meta["config"], dict) else "?"
                raise CheckpointError(f"{path}: config fields {unknown} are unknown to this voc_rl version")
            try:
                config = AgentConfig(**{**meta["config"], **({"device": device} if device else {})})
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: its agent config is invalid: {exc}") from exc
            name = meta["agent"]
            if name in RENAMED and config.extraction == "none":  # saved before the name moved on
                name = RENAMED[name]
            agent = agent_cls(config, name=name)
            agent.task = meta["task"]
            agent.extraction_info = dict(meta.get("extraction_info", {}))
            for part in agent.parts:
                try:
                    z.extract(f"{part}.pt", tmp)
                except KeyError as exc:
                    raise CheckpointError(f"{path} lacks {part}.pt: incomplete agent file") from exc
                except zipfile.BadZipFile as exc:
                    raise CheckpointError(f"{path} is corrupt ({exc}): save or copy the agent again") from exc
                agent._load_part(part, Path(tmp) / f"{part}.pt")
        agent._check_parts(path)
        return agent

    def _check_parts(self, path: Path) -> None:
        """The parts must fit each other and the config (a hand-edited zip can break that)."""
        tok, prior = self.tokenizer, self.prior
        if tok is None:  # an agent that reads no tokens
            return
        if tok.backend != self.config.tokenizer:
            raise CheckpointError(
                f"{path}: tokenizer is {tok.backend!r}, config says {self.config.tokenizer!r}"
            )
        if isinstance(prior, BCPolicy) and (prior.config.vocab_size, prior.config.tokens_per_frame) != (
            tok.vocab_size,
            tok.tokens_per_frame,
        ):
            raise CheckpointError(f"{path}: the prior's token geometry does not match the tokenizer's")

    def __repr__(self) -> str:
        state = f"trained on {self.task}" if self.prior is not None else "untrained"
        return f"{type(self).__name__}({self.name!r}, {state}, {self.config})"
