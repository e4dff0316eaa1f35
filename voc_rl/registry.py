"""The agent registry: ``voc_rl.make_agent("voc-dino")``, in the manner of gymnasium's and timm's.

A module-level dict maps an id to a frozen :class:`AgentSpec` (id, a lazy ``"module:Class"`` entry
point, a frozen :class:`AgentConfig`). ``make_agent(id, size, **overrides)`` applies
``dataclasses.replace``; an unknown id suggests the closest ones; ``register`` adds your own (and
warns when it replaces one); ``list_agents("voc-*")`` lists them.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voc_rl.tokenizers import AGENT_TOKENS
from voc_rl.typed import check_fields, check_known

SIZES = ("tiny", "small", "base")
EXTRACTIONS = ("none", "awr", "qwr", "qbc", "pbc")
POLICY_INPUTS = ("pixels", "tokens")


@dataclass(frozen=True)
class AgentConfig:
    """Everything that defines an agent before it sees data (the parts' own configs follow from it
    and the dataset's token geometry at ``learn``)."""

    tokenizer: str = "dino"
    """Tokenizer backend (``voc_rl.list_tokenizers()``)."""
    size: str = "small"
    """Size preset of every part: ``tiny`` (tests, CPU seconds), ``small``, ``base``."""
    gamma: float = 0.9
    """Discount of the behaviour value the agent improves on."""
    candidates: int = 8
    """K: actions proposed per decision by the behaviour prior (its mode and K - 1 samples)."""
    pool_size: int = 8
    """voc: futures sampled per decision from the mixture over the K candidates, shared by all."""
    target_frames: int = 2
    """voc: frames of a sampled future state (0: the whole stack). Two let the reward model see
    velocities (cheetah's reward is its speed) at 2/3 of the whole stack's scoring cost."""
    temperature: float = 1.0
    """``deterministic=False``: candidates are drawn with probability softmax(z / temperature),
    z the standardised Q estimates; ``deterministic=True`` takes the best."""
    horizon_factor: float = 1.0
    """wm-rollout: rolls ``ceil(horizon_factor / (1 - gamma))`` model steps."""
    rollouts: int = 1
    """wm-rollout: model rollouts per candidate."""
    extraction: str = "none"
    """The prior's improvement step after the scorer is trained: ``none`` (plain BC), ``awr``
    (advantage-weighted regression with the agent's own Q: weights exp(A / beta) clipped at
    ``awr_clip``, A = Q(s, a_t) - mean Q of ``awr_samples`` BC samples, beta = ``awr_temperature``
    x std(A); td-critic scores every training transition, voc scores ``awr_states`` of them and
    distils that into a token Q network which scores the rest), ``qwr`` (the same with one constant
    baseline, the mean Q of the data: weights exp((Q(s, a_t) - mean Q) / beta), which favours the
    transitions of high value, whatever the action's own effect), ``qbc`` (%BC ranked by the agent's
    own Q: the top ``pbc_fraction`` of training episodes by the mean Q(s_t, a_t) of their transitions,
    scored as for ``qwr``; whole episodes, so the getting-up frames of a good episode are kept) or
    ``pbc`` (%BC: the top ``pbc_fraction`` of training episodes by their recorded return)."""
    awr_samples: int = 8
    """awr: BC prior samples per state whose mean Q is the baseline V(s)."""
    awr_temperature: float = 1.0
    """awr: beta in units of the advantages' standard deviation."""
    awr_clip: float = 20.0
    """awr: largest weight."""
    awr_states: int = 2048
    """awr, voc: training states the occupancy model scores (pool_q over the dataset action and the
    prior samples) for the distilled Q network."""
    distill_steps: int = 2000
    """awr, voc: training steps of the distilled Q network (capped by `learn`'s `steps`)."""
    pbc_fraction: float = 0.33
    """pbc, qbc: fraction of the training episodes kept, by return (pbc) or by estimated Q (qbc)."""
    policy_input: str = "pixels"
    """What the policy (the prior, and every prior extracted from it) and the agent's own critics
    read: ``pixels``, the raw frame stack through a conv encoder trained end to end with random
    shifts (``voc_rl.pixel_policy``), or ``tokens``, the tokenizer's codes through the token trunk
    (``voc_rl.prior``). The occupancy model reads tokens either way. An agent that reads no tokens
    (bc, %bc, iql, td3bc on pixels) has no tokenizer."""
    state_aux: float = 0.0
    """Weight of an auxiliary target of the pixel encoders (the pixel policy's, and IQL's and
    TD3+BC's critics'): a linear head regresses the proprioceptive state the dataset recorded from
    the encoder's features, in training only; the agent still acts from pixels. Ignored (0) where
    the dataset records no state (V-D4RL files); 0 turns it off."""
    tokenizer_steps: int | None = None
    """Training steps of the tokenizer (None: its size preset's)."""
    occupancy_steps: int | None = None
    """Training steps of the occupancy model (None: its size preset's)."""
    prior_steps: int | None = None
    """Training steps of the behaviour-cloning prior (None: its size preset's)."""
    critic_steps: int | None = None
    """Training steps of the TD critic (None: its size preset's)."""
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Tokenizer config fields over its size preset (e.g. ``{"patch_size": 16}``: 16 tokens/frame;
    ``{"state_aux": 1.0}``: codes that regress the recorded state). ``make_agent`` puts the ones it
    is given over the registered agent's."""
    occupancy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Occupancy-model config fields over its size preset (e.g. ``{"depth": 2, "n_step": 1}``)."""
    pixel_kwargs: dict[str, Any] = field(default_factory=dict)
    """Config fields of the pixel models (the pixel policy, every policy extracted from it, and IQL's
    and TD3+BC's critic and actor) over their size preset (``voc_rl.pixel_trunk.PixelModelConfig``,
    e.g. ``{"channels": 16, "batch_size": 64}``: a 4.6x cheaper step on a CPU)."""
    task: str = ""
    """The task the agent acts for and scores by default (``""``: its dataset's own). Another task
    of the dataset's domain needs the dataset relabelled for it (``voc-rl dataset relabel``): a voc
    agent then trains a reward head for it on its one occupancy model, a td-critic trains its critic
    on that task's rewards, ``pbc`` keeps the episodes of highest return under it; an extraction
    improves the prior for it."""
    tasks: tuple[str, ...] = ()
    """voc, wm-rollout: more tasks of the domain to train a reward head for, beside the dataset's own
    and ``task``: one occupancy model, a head per task. ``agent.q_values(..., task=...)`` scores any
    of them; ``agent.set_task(name)`` acts for another (agents without extraction)."""
    seed: int = 0
    """Seeds training and the agent's own sampling (``agent.seed(n)`` re-seeds the latter)."""
    device: str = "auto"
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``..."""

    def __post_init__(self) -> None:
        check_fields(self)
        if not all(self.tasks):
            raise ValueError(f"tasks must be a list of task names, got {self.tasks!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {SIZES}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        for name in ("candidates", "pool_size", "rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.target_frames < 0:
            raise ValueError(f"target_frames must be >= 0, got {self.target_frames}")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"unknown extraction {self.extraction!r}; choose from {EXTRACTIONS}")
        if self.awr_samples < 1 or self.awr_temperature <= 0 or self.awr_clip <= 1:
            raise ValueError("need awr_samples >= 1, awr_temperature > 0 and awr_clip > 1")
        if self.awr_states < 2 or self.distill_steps < 1:
            raise ValueError("need awr_states >= 2 and distill_steps >= 1")
        if self.policy_input not in POLICY_INPUTS:
            raise ValueError(f"unknown policy_input {self.policy_input!r}; choose from {POLICY_INPUTS}")
        if not self.state_aux >= 0:
            raise ValueError(f"state_aux must be >= 0, got {self.state_aux}")
        if not 0.0 < self.pbc_fraction <= 1.0:
            raise ValueError(f"pbc_fraction must be in (0, 1], got {self.pbc_fraction}")
        if self.temperature <= 0 or self.horizon_factor <= 0:
            raise ValueError("temperature and horizon_factor must be > 0")
        for name in ("tokenizer_steps", "occupancy_steps", "prior_steps", "critic_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.pixel_kwargs:
            from voc_rl.pixel_trunk import PixelModelConfig

            owned = {"action_dim", "image_size", "state_dim", "state_aux", "steps"}  # the data's or a field's
            known = {f.name for f in dataclasses.fields(PixelModelConfig)} - owned
            unknown = sorted(set(self.pixel_kwargs) - known)
            if unknown:
                raise ValueError(f"pixel_kwargs {unknown}: not a pixel model field this can set (steps: "
                                 "prior_steps / critic_steps; state_aux: its own field); fields: "
                                 f"{sorted(known)}")  # fmt: skip


@dataclass(frozen=True)
class AgentSpec:
    id: str
    entry_point: str  # "module:Class", imported at make time
    config: AgentConfig
    description: str = ""

    @property
    def kind(self) -> str:
        """How the agent scores candidate actions, from its class (``Agent.kind``): ``voc``,
        ``wm-rollout``, ``td-critic`` or ``bc`` (imports the class)."""
        return load_class(self.entry_point).kind


REGISTRY: dict[str, AgentSpec] = {}


def register(
    id: str, entry_point: str, config: AgentConfig | None = None, description: str = "", **fields: Any
) -> AgentSpec:
    """Add an agent id (``fields`` override ``config``); warns when it replaces an existing id."""
    if id in REGISTRY:
        warnings.warn(f"agent {id!r} was already registered; overwriting it", stacklevel=2)
    config = dataclasses.replace(config or AgentConfig(), **fields)
    spec = REGISTRY[id] = AgentSpec(id, entry_point, config, description)
    return spec


def agent_spec(name: str) -> AgentSpec:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown agent {name!r}{hint} Registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def load_class(entry_point: str) -> type:
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_agent(name: str, size: str = "small", **overrides: Any) -> Any:
    """A fresh (untrained) agent: the registered config at preset ``size``, fields overridden.
    ``tokenizer_kwargs`` go over the registered agent's (its 16 tokens a frame stay unless set), or
    over the agents' fields of another ``tokenizer`` backend (``AGENT_TOKENS``)."""
    spec = agent_spec(name)
    check_known(AgentConfig, overrides)
    backend = overrides.get("tokenizer", spec.config.tokenizer)
    base = spec.config.tokenizer_kwargs if backend == spec.config.tokenizer else AGENT_TOKENS.get(backend, {})
    overrides["tokenizer_kwargs"] = {**base, **(overrides.get("tokenizer_kwargs") or {})}
    config = dataclasses.replace(spec.config, size=size, **overrides)
    return load_class(spec.entry_point)(config, name=spec.id)


def list_agents(pattern: str = "*") -> list[str]:
    """Registered agent ids matching a shell-style ``pattern`` (``"voc-*"``)."""
    return sorted(i for i in REGISTRY if fnmatch.fnmatch(i, pattern))


def load_agent(path: str | Path) -> Any:
    """Restore any agent saved with ``agent.save(path)`` (see :meth:`voc_rl.agents.Agent.load`)."""
    from voc_rl.agents.base import Agent

    return Agent.load(path)


# Agents read 16 tokens per 64 px frame (voc_rl.tokenizers.AGENT_TOKENS). ``voc-<tokenizer>`` is the
# VOC agent that measures best in control (results/pixel_policy/): a pixel policy cloned from the
# episodes its occupancy model values most (qbc). The selection agents (voc-*-select, td-critic,
# wm-rollout) score their prior's candidates on tokens and keep the token prior (the main job's
# return-error table); the other extraction agents and the baselines act with a pixel policy.
_ENTRY = "voc_rl.agents.agents:"
EXTRACTION_KINDS = (
    ("awr", "advantage-weighted regression"),
    ("qwr", "Q-weighted regression"),
    ("qbc", "cloning the top third of episodes by mean Q"),
)
RENAMED = {f"voc-{b}": f"voc-{b}-select" for b in AGENT_TOKENS}
"""Names whose agent changed: an agent saved under the old name (the selection agent, before
``voc-<tokenizer>`` named the qbc agent) loads under the new one."""
_TOKENS = {"policy_input": "tokens"}
for _backend, _kwargs in AGENT_TOKENS.items():
    register(
        f"voc-{_backend}", _ENTRY + "VOCAgent",
        AgentConfig(tokenizer=_backend, tokenizer_kwargs=_kwargs, extraction="qbc", candidates=1),
        f"the VOC agent: a pixel policy cloned from the top third of episodes by the {_backend} occupancy "
        "model's mean Q (qbc extraction); acts with its mode",
    )  # fmt: skip
    register(
        f"voc-{_backend}-select",
        _ENTRY + "VOCAgent",
        AgentConfig(tokenizer=_backend, tokenizer_kwargs=_kwargs, **_TOKENS),
        f"video occupancy model on {_backend} tokens; acts by pool-estimated Q over prior candidates",
    )
    for _how, _what in EXTRACTION_KINDS[:2]:
        register(
            f"voc-{_backend}-{_how}", _ENTRY + "VOCAgent",
            AgentConfig(tokenizer=_backend, tokenizer_kwargs=_kwargs, extraction=_how, candidates=1),
            f"pixel policy extracted by {_what} with the {_backend} occupancy model's Q "
            "(distilled into a token Q network); acts with its mode",
        )  # fmt: skip
_BASE = AgentConfig(tokenizer="vqvae", tokenizer_kwargs=AGENT_TOKENS["vqvae"])
register("bc", _ENTRY + "BCAgent", _BASE, "behaviour cloning from pixels (conv encoder, random shifts)")
register("bc-tokens", _ENTRY + "BCAgent", _BASE, "behaviour cloning on the tokenizer's codes", **_TOKENS)
register(
    "td-critic", _ENTRY + "TDCriticAgent", _BASE, "SARSA Q network on tokens scoring the prior's candidates",
    **_TOKENS,
)  # fmt: skip
register(
    "pbc",
    _ENTRY + "BCAgent",
    _BASE,
    "%BC from pixels: behaviour cloning on the top third of episodes by return",
    extraction="pbc",
)
register(
    "pbc-67",
    _ENTRY + "BCAgent",
    _BASE,
    "%BC from pixels on the top two thirds of episodes by return (mixed data: without the random policy's)",
    extraction="pbc",
    pbc_fraction=0.67,
)
for _how, _what in EXTRACTION_KINDS:
    register(
        f"td-critic-{_how}", _ENTRY + "TDCriticAgent", _BASE,
        f"pixel policy extracted by {_what} with a SARSA critic's Q on tokens; acts with its mode",
        extraction=_how, candidates=1,
    )  # fmt: skip
register(
    "wm-rollout",
    _ENTRY + "WMRolloutAgent",
    _BASE,
    "gamma-0 occupancy model as a one-step world model, rolled out 1/(1-gamma) steps",
    **_TOKENS,
)
register("iql", _ENTRY + "IQLAgent", _BASE, "IQL from pixels: expectile V, twin Q, AWR actor", candidates=1)
register(
    "td3bc", _ENTRY + "TD3BCAgent", _BASE, "TD3+BC (DrQ+BC) from pixels: critic-gradient actor, BC term",
    candidates=1,
)  # fmt: skip
