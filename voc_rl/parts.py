"""Fit or reuse the parts an agent is made of, for a dataset and a config: the tokenizer, the
behaviour prior, the occupancy model (with its reward model), the reward heads of other tasks and
the TD critic; and the dataset.

Whatever needs a trained part goes through here: an agent's ``learn`` (each part in a subfolder of
the agent's run folder), the return-error and policy benchmarks (parts shared in one folder and
named by what they are, :class:`SharedParts`), the main job and the learning-curve benchmark. (The
CLI's ``fit`` commands and the benchmarks that time training call the trainers themselves.)

Each ``fit_*`` function takes a part's config and a :class:`~voc_rl.train_loop.Loop` whose ``out``
is the folder it trains in. It reuses the checkpoint in ``out`` when that was trained for the
config's steps with the same config; otherwise it trains there, and a run that stopped part way
resumes exactly from ``out/train_state.pt`` (the trainers' own resume, which refuses a folder of
another config). ``out=None`` trains in memory. What trains is ``model``, a model in hand (an
agent's part, on a second ``learn``), or else a new one made after ``torch.manual_seed(loop.seed)``.
The part comes back in eval mode on ``loop.device``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from voc_rl.checkpoint import CheckpointError
from voc_rl.critic import CriticConfig, TDCritic, train_td_critic
from voc_rl.data.collect import collect
from voc_rl.data.dataset import PixelDataset, TokenView, open_dataset
from voc_rl.data.storage import dataset_dir
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel, load_reward_heads
from voc_rl.occupancy_train import train_occupancy, train_reward_head, transfer_steps
from voc_rl.offline_rl import ActorCriticConfig, PixelCritic, make_actor, train_actor_critic
from voc_rl.paths import PathLike, user_path
from voc_rl.pixel_policy import PixelBCConfig, PixelBCPolicy, train_pixel_bc
from voc_rl.prior import BCConfig, BCPolicy, train_bc
from voc_rl.tokenizers import AGENT_TOKENS, Tokenizer, get_backend
from voc_rl.tokenizers.train import fit
from voc_rl.train_loop import Loop, trained_seed
from voc_rl.utils import resolve_device

CHECKPOINT = {  # the file of each part in its run folder, as its trainer writes it
    "tokenizer": "tokenizer.pt",
    "prior": "bc.pt",
    "occupancy": "occupancy.pt",
    "critic": "critic.pt",
    "reward": "reward.pt",
}


def collect_or_open(
    root: PathLike,
    task: str,
    kind: str,
    episodes: int,
    name: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PixelDataset:
    """The dataset ``root/voc_rl/{name}-v0`` (``name`` defaults to ``{task}-{kind}``), collected first
    (``episodes`` episodes of the ``kind`` policy, see :func:`voc_rl.data.collect.collect`) if missing."""
    name = name or f"{task}-{kind}"
    path = dataset_dir(user_path(root), name)
    if not path.exists():
        collect(task, kind, episodes=episodes, out=root, name=name, seed=seed, progress=progress)
    return open_dataset(path)


# ---------------------------------------------------------------------------------------------- parts
M = TypeVar("M")


def fit_or_reuse(part: str, config: Any, loop: Loop, load: Callable[[Path], M], train: Callable[[], M]) -> M:
    """What every ``fit_*`` does: ``load`` the checkpoint of ``part`` in ``loop.out`` when it was
    trained for ``config``'s steps with ``config`` and ``loop.seed``, else ``train()`` (in ``loop.out``,
    resuming a run stopped there; :func:`~voc_rl.train_loop.train` refuses a run of another seed)."""
    ckpt = None if loop.out is None else loop.out / CHECKPOINT[part]
    if ckpt is not None and ckpt.exists() and trained_seed(ckpt.parent) in (None, loop.seed):
        loaded = load(ckpt)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # the occupancy model and its reward model
        if model.step >= config.steps and model.config == config:
            return loaded
    return train()


def _new(cls: Callable[[Any], M], config: Any, seed: int) -> M:
    torch.manual_seed(seed)
    return cls(config)


def fit_tokenizer(
    ds: PixelDataset,
    backend: str,
    size: str = "small",
    fields: Mapping[str, Any] | None = None,
    *,
    model: Tokenizer | None = None,
    loop: Loop | None = None,
) -> Tokenizer:
    """The tokenizer ``backend`` of preset ``size`` for ``ds``, from the backend's ``config_for(ds)``
    and ``fields`` (:meth:`~voc_rl.tokenizers.Tokenizer.config_for`). ``loop.out`` ends up with its
    checkpoint even for a tokenizer that trains no steps (quantized DINO)."""
    loop = loop or Loop()
    cls, out, device = get_backend(backend), loop.out, resolve_device(loop.device)
    config = cls.config_for(ds, size, **(fields or {}))

    def train() -> Tokenizer:
        tok = (model or _new(cls, config, loop.seed)).to(device)
        fit(tok, ds, loop=loop)
        if out is not None and not (out / CHECKPOINT["tokenizer"]).exists():  # in hand, needing no steps
            tok.save(out / CHECKPOINT["tokenizer"])
        return tok

    return fit_or_reuse("tokenizer", config, loop, lambda p: Tokenizer.load(p, backend=backend), train).to(
        device
    )


def fit_prior(
    view: TokenView,
    config: BCConfig,
    *,
    model: BCPolicy | None = None,
    weights: np.ndarray | Callable[[], np.ndarray] | None = None,
    loop: Loop | None = None,
) -> BCPolicy:
    """The behaviour prior of ``config`` on the token dataset ``view``; with ``weights`` (per frame,
    or a function computing them, called only when the prior must train) the extracted prior
    (:func:`voc_rl.prior.train_bc`). A folder holds one or the other: the checkpoint does not record
    the weights."""

    def trainer(new: BCPolicy, ds: PixelDataset, loop: Loop) -> Any:
        w = weights() if callable(weights) else weights
        return train_bc(new, ds, loop=loop, weights=w)

    return _fit_token_model("prior", BCPolicy, trainer, view, config, model, loop or Loop())


def fit_pixel_prior(
    ds: PixelDataset,
    config: PixelBCConfig,
    *,
    model: PixelBCPolicy | None = None,
    weights: np.ndarray | Callable[[], np.ndarray] | None = None,
    loop: Loop | None = None,
) -> PixelBCPolicy:
    """The pixel prior of ``config`` on the pixel dataset ``ds`` (:func:`voc_rl.pixel_policy.train_pixel_bc`);
    ``weights`` as for :func:`fit_prior`."""

    def trainer(new: PixelBCPolicy, ds: PixelDataset, loop: Loop) -> Any:
        w = weights() if callable(weights) else weights
        return train_pixel_bc(new, ds, loop=loop, weights=w)

    return _fit_token_model("prior", PixelBCPolicy, trainer, ds, config, model, loop or Loop())


def fit_actor_critic(
    ds: PixelDataset,
    config: ActorCriticConfig,
    *,
    critic: PixelCritic | None = None,
    loop: Loop | None = None,
) -> tuple[PixelCritic, PixelBCPolicy]:
    """IQL's or TD3+BC's critic and actor (``config.algo``) on the pixel dataset ``ds``
    (:func:`voc_rl.offline_rl.train_actor_critic`); the folder holds ``critic.pt`` and ``actor.pt``."""
    loop = loop or Loop()

    def train() -> tuple[PixelCritic, PixelBCPolicy]:
        new = critic or _new(PixelCritic, config, loop.seed)
        actor = make_actor(new)
        train_actor_critic(new, actor, ds, loop=loop)
        return new, actor

    def load(path: Path) -> tuple[PixelCritic, PixelBCPolicy]:
        return PixelCritic.load(path), PixelBCPolicy.load(path.parent / "actor.pt")

    got_critic, actor = fit_or_reuse("critic", config, loop, load, train)
    device = resolve_device(loop.device)
    return got_critic.to(device).eval(), actor.to(device).eval()


def fit_critic(
    view: TokenView, config: CriticConfig, *, model: TDCritic | None = None, loop: Loop | None = None
) -> TDCritic:
    """The TD critic of ``config`` on the token dataset ``view``."""

    def trainer(new: TDCritic, ds: PixelDataset, loop: Loop) -> Any:
        return train_td_critic(new, ds, loop=loop)

    return _fit_token_model("critic", TDCritic, trainer, view, config, model, loop or Loop())


def _fit_token_model(
    part: str, cls: Any, trainer: Callable[..., Any], view: TokenView, config: Any, model: Any, loop: Loop
) -> Any:
    """The priors and the critics: models trained by ``trainer(model, view, loop)`` on a token view (or,
    for the pixel models, on the pixel dataset)."""

    def train() -> Any:
        new = model or _new(cls, config, loop.seed)
        trainer(new, view, loop)
        return new

    return fit_or_reuse(part, config, loop, cls.load, train).to(resolve_device(loop.device)).eval()


def fit_occupancy(
    view: TokenView,
    config: OccupancyConfig,
    *,
    model: OccupancyModel | None = None,
    reward: RewardModel | None = None,
    tokenizer: Tokenizer | None = None,
    loop: Loop | None = None,
) -> tuple[OccupancyModel, RewardModel]:
    """The occupancy model of ``config`` on the token dataset ``view`` and its reward model
    (``reward`` continues one in hand; ``tokenizer`` decodes samples for TensorBoard)."""
    loop = loop or Loop()

    def train() -> tuple[OccupancyModel, RewardModel]:
        occ = model or _new(OccupancyModel, config, loop.seed)
        _, trained_reward = train_occupancy(occ, view, loop=loop, tokenizer=tokenizer, reward=reward)
        return occ, trained_reward

    occ, trained_reward = fit_or_reuse("occupancy", config, loop, OccupancyModel.load, train)
    device = resolve_device(loop.device)
    return occ.to(device).eval(), trained_reward.to(device).eval()


def fit_reward_head(
    view: TokenView, task: str, config: OccupancyConfig, *, model: RewardModel | None = None,
    init: RewardModel | None = None, loop: Loop | None = None,
) -> RewardModel:  # fmt: skip
    """The reward head of ``task`` (the dataset's own or another relabelled task of its domain) for
    occupancy models of ``config`` on ``view``, trained alone on ``view.for_task(task)``.

    ``init``: the head of another task of the domain (the one trained with the occupancy model) to
    start from. Every task's head reads the same state features (pose, height, velocity), so a
    warm-started head needs :func:`~voc_rl.occupancy_train.transfer_steps` steps, not ``config.steps``:
    on walker-walk it reached held-out reward NMSE 0.028 / 0.044 (stand / run) in 200 steps against
    0.020 / 0.040 for 1500 steps from scratch, at a seventh of the cost (measured 2026-12-04)."""
    loop = loop or Loop()
    data = view.for_task(task)

    def train() -> RewardModel:
        head = model
        if head is None and init is not None:
            if init.config != config:
                raise ValueError(f"the head to start {task!r} from was made for another occupancy config")
            head = copy.deepcopy(init).train()
            head.step = 0
        head = head or _new(RewardModel, config, loop.seed)
        train_reward_head(head, data, steps=transfer_steps(config) if init is not None else None, loop=loop)
        return head

    def load(path: Path) -> RewardModel:
        heads = load_reward_heads(path)
        if task not in heads:
            raise CheckpointError(f"{path} holds the reward heads of {sorted(heads)}, not {task!r}")
        return heads[task]

    return fit_or_reuse("reward", config, loop, load, train).to(resolve_device(loop.device)).eval()


# ---------------------------------------------------------------------------------------------- shared
@dataclass(frozen=True)
class SharedParts:
    """Parts kept in one folder, ``root``, each in a subfolder named by what it is (:meth:`folder`):
    the return-error benchmark trains them there, the policy benchmark assembles agents from them,
    and a later run reuses them.

    ``tok_size`` and ``size`` are the presets of the tokenizers and of the token models; with
    ``agent_tokens`` a tokenizer has the agents' geometry (16 tokens per frame,
    :data:`voc_rl.tokenizers.AGENT_TOKENS`) instead of its preset's; ``n_step`` is the occupancy
    models' horizon (None: Monte-Carlo); ``steps`` overrides the presets' steps per part;
    ``tokenizer_fields`` are more tokenizer config fields (``{"state_aux": 1.0}``), named in the
    tokenizer's folder, and the token key then names the prior's and the critics' folders too.
    """

    root: Path
    tok_size: str = "small"
    size: str = "small"
    agent_tokens: bool = True
    n_step: int | None = None
    steps: Mapping[str, int] = field(default_factory=dict)
    progress: bool = True
    tokenizer_fields: Mapping[str, Any] = field(default_factory=dict)

    def folder(
        self, part: str, ds: PixelDataset, backend: str | None = None, gamma: float = 0.0, seed: int = 0,
        task: str | None = None,
    ) -> Path:  # fmt: skip
        """The run folder of ``part`` on ``ds`` (a pixel dataset and a ``backend`` for the tokenizer,
        the token view for the others): the one place these names are made. The prior's and the
        critic's names predate the size and the tokenizer key that the occupancy models' carry. A part
        whose steps are overridden (``steps``) ends in ``_steps<N>``, so that another step count gets
        its own folder rather than meeting the resume guard of this one. A critic of another ``task``
        than the dataset's own, and a reward head (``reward``, beside its occupancy model's folder),
        carry the task's name."""
        name = ds.meta["name"]
        tag = "" if part == "reward" else self._tag(part)  # a head trains its occupancy config's steps
        if part == "tokenizer":
            fields = "".join(f"_{k}{v}" for k, v in sorted(self.tokenizer_fields.items()))
            return (
                self.root
                / f"{name}__tok_{backend}_{self.tok_size}{'_16' if self.agent_tokens else ''}{fields}{tag}"
            )
        tokens = ds.tokens
        horizon = "mc" if self.n_step is None else self.n_step
        other = "" if task in (None, ds.meta.get("task")) else f"_{task}"
        occupancy = f"{name}__{tokens['backend']}_{tokens['key'][:8]}__occ_g{gamma}_n{horizon}_s{seed}"
        occupancy += f"_{self.size}"
        keyed = f"_{tokens['key'][:8]}" if self.tokenizer_fields else ""  # older names have no key
        names = {
            "prior": f"{name}__{tokens['backend']}{keyed}__bc",
            "critic": f"{name}__{tokens['backend']}{keyed}__critic_g{gamma}_s{seed}{other}",
            "occupancy": occupancy,
            "reward": f"{occupancy}{self._tag('occupancy')}__reward_{task}",
        }
        return self.root / (names[part] + tag)

    def _tag(self, part: str) -> str:
        return f"_steps{self.steps[part]}" if self.steps.get(part) else ""

    def checkpoint(self, part: str, ds: PixelDataset, **where: Any) -> Path:
        """The checkpoint of ``part`` in :meth:`folder` (``where``: its ``backend``, ``gamma``, ``seed``)."""
        return self.folder(part, ds, **where) / CHECKPOINT[part]

    def _steps(self, part: str) -> dict[str, int]:
        return {"steps": self.steps[part]} if self.steps.get(part) else {}

    def tokenizer(self, ds: PixelDataset, backend: str) -> Path:
        """The checkpoint of the ``backend`` tokenizer of the pixel dataset ``ds``, fitted if needed."""
        fields = {**(AGENT_TOKENS[backend] if self.agent_tokens else {}), **self.tokenizer_fields,
                  **self._steps("tokenizer")}  # fmt: skip
        out = self.folder("tokenizer", ds, backend)
        fit_tokenizer(ds, backend, self.tok_size, fields, loop=Loop(out=out, progress=self.progress))
        return out / CHECKPOINT["tokenizer"]

    def prior(self, view: TokenView) -> BCPolicy:
        config = BCConfig.for_dataset(view, self.size, **self._steps("prior"))
        return fit_prior(view, config, loop=Loop(out=self.folder("prior", view), progress=self.progress))

    def occupancy(self, view: TokenView, gamma: float, seed: int) -> tuple[OccupancyModel, RewardModel]:
        config = OccupancyConfig.for_dataset(
            view, self.size, gamma=gamma, n_step=self.n_step, **self._steps("occupancy")
        )
        out = self.folder("occupancy", view, gamma=gamma, seed=seed)
        return fit_occupancy(view, config, loop=Loop(out=out, seed=seed, progress=self.progress))

    def reward_head(
        self, view: TokenView, gamma: float, seed: int, task: str, own: RewardModel | None = None
    ) -> RewardModel:
        """The reward head of ``task`` for the occupancy model of (``gamma``, ``seed``), started from
        that model's own head ``own`` (trained with it; loaded by :meth:`occupancy` if not given)."""
        config = OccupancyConfig.for_dataset(
            view, self.size, gamma=gamma, n_step=self.n_step, **self._steps("occupancy")
        )
        out = self.folder("reward", view, gamma=gamma, seed=seed, task=task)
        if own is None:
            _, own = self.occupancy(view, gamma, seed)
        loop = Loop(out=out, seed=seed, progress=self.progress)
        return fit_reward_head(view, task, config, init=own, loop=loop)

    def critic(self, view: TokenView, gamma: float, seed: int, task: str | None = None) -> TDCritic:
        """The critic of (``gamma``, ``seed``), of the dataset's own task or another ``task``."""
        config = CriticConfig.for_dataset(view, self.size, gamma=gamma, **self._steps("critic"))
        out = self.folder("critic", view, gamma=gamma, seed=seed, task=task)
        data = view if task is None else view.for_task(task)
        return fit_critic(data, config, loop=Loop(out=out, seed=seed, progress=self.progress))
