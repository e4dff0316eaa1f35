"""Control from offline pixel data, with intervals that can tell agents apart: every agent's returns
over seeds x episodes, aggregated with rliable; writes results/policy.md, .csv, _seeds.csv,
_episodes.csv, .png (and policy_top1.csv with ``--top1-states``).

For each task, dataset and training seed, agents are trained on the dataset's training episodes:
all of a seed read one tokenizer (trained first, by ``bc``), and an extraction agent (``pbc``,
``voc-<tokenizer>``, ``*-awr``, ``*-qwr``, ``*-qbc``) trains only its extracted prior in the folder of
the agents it shares a prior and a scorer with (:func:`folder_of`: ``bc``, ``voc-<tokenizer>``,
``td-critic``). Or they are assembled from the
parts of a return-error run (``--from-return-error RUNS``). Each agent plays ``--episodes``
deterministic evaluation episodes (env seeds 1000, 1001, ...; the same for every agent and seed) in
``--processes`` worker processes; ``--sampled AGENT`` adds that agent with ``deterministic=False``.

Aggregates (per task and dataset): the interquartile mean (IQM) and the mean of the returns with
95% stratified-bootstrap intervals (rliable; a run is one (seed, episode) return, so the intervals
cover episode-to-episode and seed-to-seed variation as sampled; the per-seed table shows the
latter), and the probability of improvement over ``bc`` (P(X > Y) over pairs of returns) with its
interval: "better"/"worse" when that interval excludes 0.5, else "within noise". Cost columns:
training minutes (the shared tokenizer, the parts the agent reuses and its own; 0 where parts came
from ``--from-return-error``) and milliseconds per decision. Results are rewritten after every
seed; a rerun with the same ``--runs`` reuses the trained agents (where their config is unchanged)
and the episodes recorded beside them.

Other tasks of a dataset's domain (``--reward-tasks walker-stand walker-run``; the dataset relabelled
for them, ``voc-rl dataset relabel``): every agent is trained again with ``task=<that task>`` in the
same folders, so it reuses the seed's tokenizer, prior and occupancy model and adds only what the
task needs (a reward head, a critic for that task, the extracted prior), and plays in that task's
env; its rows read ``dataset`` as ``<kind> (<dataset's task> data)``. One-step improvement cannot
leave the behaviour's support: a task no behaviour policy of the data does is out of reach.

Top-1 agreement (``--top1-states N``): on N held-out states, K candidates (the prior's mode and K - 1
samples) are ranked by the simulator (restore the state, take the candidate, follow the behaviour
policy; common random numbers) and by each agent's scores: how often the agent's best is the
simulator's best (chance 1/K).

Agents trained with different settings (``--set``; a baseline's ``critic_steps``, the VOC agent's
``occupancy_steps``) live in separate runs; ``--merge DIR...`` makes one table of those runs' out-dirs
(their episodes and costs, the commands that wrote them; ``DIR:AGENT,...`` takes only those agents of
DIR). Every table also gives the best agent by
IQM against each other one (probability of improvement with its interval), not only against ``bc``.

    python benchmarks/policy.py --data-root datasets                       # the full grid
    python benchmarks/policy.py --tasks cheetah-run --agents bc td-critic-awr --seeds 0 --episodes 5
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import multiprocessing
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import voc_rl
from voc_rl.agents import Agent
from voc_rl.args import field_assignments, parse_args
from voc_rl.checkpoint import save_json
from voc_rl.data.dataset import PixelDataset, reward_manifest
from voc_rl.data.storage import dataset_dir
from voc_rl.episodes import play_episode
from voc_rl.evaluation import states_of
from voc_rl.ground_truth import simulator_q
from voc_rl.parts import SharedParts, collect_or_open, fit_tokenizer
from voc_rl.registry import EXTRACTION_KINDS, REGISTRY, AgentConfig, agent_spec
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.task_rewards import TASKS, relabel
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop, trained_seconds

COLUMNS = (
    "task", "dataset", "agent", "runs", "iqm", "iqm_ci", "mean", "mean_ci", "x_expert", "score_10",
    "p_better_than_bc",
    "p_ci", "vs_bc", "train_min", "ms_per_decision",
)  # fmt: skip
SEED_COLUMNS = ("task", "dataset", "agent", "seed", "episodes", "return_mean", "return_std", "train_min",
                "ms_per_decision", "weight_share")  # fmt: skip
EPISODE_COLUMNS = ("task", "dataset", "agent", "seed", "episode", "return", "decisions", "seconds")
BEST_COLUMNS = ("task", "dataset", "best", "other", "p_best_better", "p_ci", "verdict")
BEHAVIOUR_COLUMNS = ("task", "dataset", "level", "episodes", "return_mean", "return_std")
TOP1 = ("task", "dataset", "agent", "seed", "states", "candidates", "top1_agreement", "chance")
SAMPLED = " (sampled)"
REPS = 2000  # bootstrap resamples


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("cheetah-run", "walker-walk")
    """tasks"""
    datasets: tuple[str, ...] = ("mixed",)
    """behaviour datasets of each task"""
    agents: tuple[str, ...] = (
        "bc",
        "pbc",
        "td-critic",
        "td-critic-awr",
        "td-critic-qwr",
        "voc-vqvae",
        "voc-vqvae-awr",
        "voc-vqvae-qwr",
    )
    """registered agents"""
    sampled: tuple[str, ...] = dataclasses.field(default=("bc",), metadata={"nargs": "*"})
    """agents also evaluated with deterministic=False"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """training seeds"""
    episodes: int = 10
    """evaluation episodes per agent and seed"""
    gamma: float = 0.9
    """discount of the agents"""
    size: str = "small"
    """size preset of the agents"""
    set: tuple[str, ...] = dataclasses.field(default=(), metadata={"nargs": "*", "metavar": "FIELD=VALUE"})
    """agent config overrides (numbers), e.g. occupancy_steps=3000 state_aux=1.0"""
    reward_tasks: tuple[str, ...] = dataclasses.field(default=(), metadata={"nargs": "*"})
    """other tasks of each dataset's domain to act for (voc_rl.task_rewards.TASKS), beside its own"""
    top1_states: int = 0
    """held-out states of the top-1 agreement table (0: none)"""
    top1_rollouts: int = 4
    """simulator rollouts per candidate of the top-1 table"""
    processes: int = os.cpu_count() or 1
    """episode worker processes"""
    collect_episodes: int = 200
    """episodes per dataset collected if missing"""
    data_root: Path = Path("datasets")
    """datasets root (missing datasets are collected there)"""
    runs: Path = Path("runs/policy")
    """folder of the trained agents, reused by a rerun"""
    from_return_error: Path | None = None
    """assemble agents from this return-error --runs folder"""
    baseline_tokenizer: str = "titok"
    """tokens of bc/td-critic/wm-rollout with --from-return-error"""
    out_dir: Path = Path("results")
    """folder of the tables and plot"""
    note: str = ""
    """a line for the report (how the run was made)"""
    merge: tuple[Path, ...] = dataclasses.field(default=(), metadata={"nargs": "*", "metavar": "DIR"})
    """train nothing: one table from these earlier --out-dir folders' episodes (agents trained with
    different --set), with the datasets' behaviour rows from --data-root; DIR:AGENT,... keeps only
    those agents of DIR"""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sampled) - set(self.agents))
        if unknown:
            raise ValueError(f"--sampled {unknown}: not among --agents")
        unknown = sorted(set(self.reward_tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"--reward-tasks {unknown}: unknown; known: {', '.join(TASKS)}")
        if self.reward_tasks and self.from_return_error:
            raise ValueError("--reward-tasks trains agents; it does not combine with --from-return-error")
        self.agent_overrides  # noqa: B018 (checks every --set)

    @property
    def agent_overrides(self) -> dict[str, Any]:
        """``--set`` as agent config fields: each value a JSON number (with a point: a float) or a JSON
        object (``pixel_kwargs={"channels": 16}``)."""
        return field_assignments(self.set, "--set", objects=True)


# ---------------------------------------------------------------------- agents
def folder_of(name: str) -> str:
    """The run folder (in the seed's shared folder) an agent trains in, that of the agents it shares
    a prior or a scorer with: pbc, pbc-67 -> bc; x-awr, x-qwr, x-qbc, x-select -> x; voc-vqvae (qbc)
    -> voc-vqvae."""
    if agent_spec(name).config.extraction == "pbc":
        return "bc"
    for suffix in [f"-{how}" for how, _ in EXTRACTION_KINDS] + ["-select"]:
        if name.endswith(suffix) and name.removesuffix(suffix) in REGISTRY:
            return name.removesuffix(suffix)
    return name


def base_of(name: str) -> str:
    """The agent without extraction of that folder (td-critic, voc-vqvae-select, bc): trained first
    where an extraction agent starts from its BC prior."""
    folder = folder_of(name)
    for base in (folder, f"{folder}-select"):
        if base in REGISTRY and agent_spec(base).config.extraction == "none":
            return base
    return folder


PARTS = ("tokenizer", "prior", "occupancy", "critic")  # as SharedParts names them; agents' <part>_steps


def from_return_error(name: str, ds: PixelDataset, seed: int, args: Args) -> Agent:
    """An agent assembled from the parts a return-error run left in ``--from-return-error`` (same
    split; its defaults: tokenizers at the agents' 16 tokens, Monte-Carlo occupancy models). Steps set
    with ``--set <part>_steps=N`` find the parts that run trained with ``--<part>-steps N``."""
    overrides = args.agent_overrides
    steps = {part: overrides[f"{part}_steps"] for part in PARTS if overrides.get(f"{part}_steps")}
    shared = SharedParts(args.from_return_error, tok_size=args.size, size=args.size, steps=steps)
    spec = agent_spec(name)
    backend = spec.config.tokenizer if name.startswith("voc-") else args.baseline_tokenizer
    tokenizer = shared.checkpoint("tokenizer", ds, backend=backend)
    if not tokenizer.exists():
        raise FileNotFoundError(f"{tokenizer} does not exist: no return-error run of {backend} tokens here")
    view = token_view(ds, tokenizer)
    parts = {"tokenizer": tokenizer, "prior": shared.checkpoint("prior", view)}
    if spec.kind == "voc":
        parts["occupancy"] = shared.checkpoint("occupancy", view, gamma=args.gamma, seed=seed)
    elif spec.kind == "wm-rollout":
        parts["occupancy"] = shared.checkpoint("occupancy", view, gamma=0.0, seed=0)
    elif spec.kind == "td-critic":
        parts["critic"] = shared.checkpoint("critic", view, gamma=args.gamma, seed=seed)
    agent = voc_rl.make_agent(
        name,
        size=args.size,
        seed=seed,
        **{
            "tokenizer": backend,
            "gamma": args.gamma,
            "target_frames": 0,
            "policy_input": "tokens",
            **args.agent_overrides,
        },
    )  # a return-error run's priors read tokens; make_agent adds the agents' token fields
    return agent.load_parts(ds.task, **parts)


class Trainer:
    """Trains (or reuses) the agents of one dataset and seed in ``runs/{dataset}__{tokens}__s{seed}``,
    each saved as ``{agent}.zip`` there, with the seconds each one's training took in
    ``train_seconds.json`` (so that a rerun reports the cost of the run that trained it)."""

    def __init__(self, ds: PixelDataset, seed: int, args: Args):
        self.ds, self.seed, self.args = ds, seed, args

    def folder(self, agent: Agent) -> Path:
        return self.args.runs / f"{self.ds.meta['name']}__{agent.config.tokenizer}__s{self.seed}"

    def make(self, name: str, **fields: Any) -> Agent:
        return voc_rl.make_agent(name, size=self.args.size, seed=self.seed, gamma=self.args.gamma,
                                 **self.args.agent_overrides, **fields)  # fmt: skip

    def _seconds(self, shared: Path) -> dict[str, float]:
        path = shared / "train_seconds.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _learn(self, agent: Agent, shared: Path, label: str, tokenizer: Path | None) -> Path:
        """``shared/{label}.zip``: trained in ``shared/{folder_of(name)}`` unless it is there already with
        this config (a retrained agent's recorded episodes are deleted); ``label`` is the agent's
        name, with ``@task`` for another task."""
        name = label.split("@")[0]
        zipped = shared / f"{label}.zip"
        if not (zipped.exists() and same_config(zipped, agent)):
            for old in shared.glob(f"{label}.*episodes.json"):
                old.unlink()
            folder = shared / folder_of(name)
            before, earlier, start = checkpoints(folder), part_seconds(folder), time.perf_counter()
            agent.learn(self.ds, run_dir=folder, tokenizer=tokenizer, progress=False)
            seconds = self._seconds(shared)
            if checkpoints(folder) != before or label not in seconds:  # it trained a part
                seconds[label] = round(time.perf_counter() - start + resumed_seconds(earlier, folder), 1)
                save_json(seconds, shared / "train_seconds.json", indent=1)
            agent.save(zipped)
        return zipped

    def train(self, name: str, task: str = "") -> tuple[Path, float]:
        """The agent's saved zip and its training minutes (the shared tokenizer where it reads tokens,
        reused parts and its own); ``task``: another task of the domain it acts for (saved as
        ``{name}@{task}``)."""
        agent = self.make(name, **({"task": task} if task else {}))
        shared = self.folder(agent)
        shared.mkdir(parents=True, exist_ok=True)
        tokenizer = self.tokenizer(agent, shared) if agent.reads_tokens() else None
        base = self.make(base_of(name))  # trained first where the agent starts from its BC prior
        extends = base_of(name) != name and agent._needs_behaviour_prior()  # (%BC needs no BC prior)
        extends &= base.config.policy_input == agent.config.policy_input  # (not a token one for pixels)
        shares = self.share_prior(agent, shared, folder_of(name))
        if extends:
            self._learn(base, shared, base_of(name), tokenizer)
        label = f"{name}@{task}" if task else name
        zipped = self._learn(agent, shared, label, tokenizer)
        seconds = self._seconds(shared)
        used = {label} | ({base_of(name)} if extends else set()) | ({"tokenizer"} if tokenizer else set())
        used |= {"bc"} if shares else set()
        return zipped, round(sum(seconds.get(n, 0.0) for n in used) / 60, 1)

    def share_prior(self, agent: Agent, shared: Path, folder: str) -> bool:
        """Seeds ``shared/{folder}`` with ``bc``'s finished pixel BC prior where ``agent`` trains the
        same one (same config, seed and data: the same weights), so the seed's agents fit it once;
        their ``train_min`` then counts ``bc``'s minutes. True where the agent uses ``bc``'s prior."""
        if folder == "bc" or not agent._needs_behaviour_prior() or agent.config.policy_input != "pixels":
            return False
        source, target = shared / "bc" / "pixel-prior", shared / folder / "pixel-prior"
        if target.exists():
            return (target / ".from-bc").exists()
        bc, zipped = self.make("bc"), shared / "bc.zip"  # bc.zip: its prior finished
        same = [getattr(bc.config, f) == getattr(agent.config, f) for f in ("size", "seed", "prior_steps")]
        if not (source.is_dir() and zipped.exists() and same_config(zipped, bc) and all(same)):
            return False
        shutil.copytree(source, target)
        (target / ".from-bc").touch()
        return True

    def tokenizer(self, agent: Agent, shared: Path) -> Path:
        """The tokenizer every token-reading agent of the seed reads, fitted once in ``shared/tokenizer``."""
        c, out = agent.config, shared / "tokenizer"
        fields = {**c.tokenizer_kwargs, **({"steps": c.tokenizer_steps} if c.tokenizer_steps else {})}
        start, earlier = time.perf_counter(), trained_seconds(out)
        fit_tokenizer(
            self.ds, c.tokenizer, c.size, fields, loop=Loop(out=out, seed=self.seed, progress=False)
        )
        seconds = self._seconds(shared)
        if "tokenizer" not in seconds:
            seconds["tokenizer"] = round(time.perf_counter() - start + earlier, 1)
            save_json(seconds, shared / "train_seconds.json", indent=1)
        return out / "tokenizer.pt"


def weight_shares(zipped: Path) -> str:
    """An extracted agent's share of the extraction weight on each behaviour level of its dataset
    (``random 0.30 / medium 0.35 / expert 0.35``), from its saved ``extraction_info``; else ``-``."""
    with zipfile.ZipFile(zipped) as z:
        info = json.loads(z.read("agent.json")).get("extraction_info", {})
    shares = {k.removeprefix("weight_"): v for k, v in info.items() if k.startswith("weight_")}
    return " / ".join(f"{level} {v:.2f}" for level, v in shares.items()) or "-"


def checkpoints(folder: Path) -> dict[Path, int]:
    """The parts' checkpoints in an agent's folder and their modification times."""
    return {p: p.stat().st_mtime_ns for p in folder.glob("*/*.pt") if p.name != "train_state.pt"}


def part_seconds(folder: Path) -> dict[Path, float]:
    """The training seconds each part in an agent's folder has recorded (its ``train_state.pt``); a
    prior copied from ``bc``'s is left out (it is ``bc``'s cost)."""
    states = [p for p in folder.glob("*/train_state.pt") if not (p.parent / ".from-bc").exists()]
    return {p.parent: trained_seconds(p.parent) for p in states}


def resumed_seconds(before: dict[Path, float], folder: Path) -> float:
    """The seconds that interrupted calls spent on the parts this call trained on (those of ``before``,
    :func:`part_seconds` taken before the call, whose seconds grew), so that a resumed agent's cost
    counts them. A part finished before the call is not charged again: the ``bc`` prior in the
    folder a ``pbc`` agent shares (it uses none), the base an ``-awr`` agent extends (charged as the base)."""
    after = part_seconds(folder)
    return sum(seconds for part, seconds in before.items() if after.get(part, seconds) != seconds)


def same_config(zipped: Path, agent: Agent) -> bool:
    """Was ``zipped`` saved with ``agent``'s config? (Fields added since it was saved take their
    defaults, as ``Agent.load`` gives them.)"""
    with zipfile.ZipFile(zipped) as z:
        saved = json.loads(z.read("agent.json"))["config"]
    saved.pop("kind", None)  # (files of older versions)
    saved.setdefault("policy_input", "tokens")  # (saved before policies read pixels)
    try:
        return AgentConfig(**saved) == agent.config
    except (TypeError, ValueError):
        return False


def assembled(name: str, ds: PixelDataset, seed: int, args: Args) -> tuple[Path, float]:
    """``--from-return-error``: the assembled agent saved for the workers (no training cost here)."""
    folder = args.runs / f"{ds.meta['name']}__assembled__s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{name}.*episodes.json"):  # the parts may have changed since
        old.unlink()
    return from_return_error(name, ds, seed, args).save(folder / f"{name}.zip"), 0.0


# ---------------------------------------------------------------------- episodes
_LOADED: dict[str, Agent] = {}


def _episode(zipped: str, task: str, seed: int, deterministic: bool) -> tuple[float, int, float]:
    """In a worker process: one evaluation episode of the agent saved at ``zipped``."""
    torch.set_num_threads(1)
    if zipped not in _LOADED:
        _LOADED.clear()
        _LOADED[zipped] = Agent.load(zipped, device="cpu")
    return play_episode(_LOADED[zipped], task, seed, deterministic=deterministic)


def episodes_of(
    pool: ProcessPoolExecutor, zipped: Path, task: str, episodes: int, deterministic: bool
) -> list[list[float]]:
    """[return, decisions, seconds deciding] of ``episodes`` episodes on env seeds 1000 + e, run by the
    workers; recorded beside the agent's zip, so that a rerun plays only the episodes it lacks."""
    record = zipped.with_name(f"{zipped.stem}.{'' if deterministic else 'sampled.'}episodes.json")
    played = json.loads(record.read_text()) if record.exists() else []
    if len(played) < episodes:
        jobs = [pool.submit(_episode, str(zipped), task, 1000 + e, deterministic)
                for e in range(len(played), episodes)]  # fmt: skip
        played += [list(j.result()) for j in jobs]
        save_json(played, record, indent=None)
    return played[:episodes]


# ---------------------------------------------------------------------- statistics
def aggregate(returns: dict[str, np.ndarray], reference: str = "bc") -> dict[str, dict[str, float]]:
    """IQM and mean with 95% stratified-bootstrap intervals per agent (``returns[agent]``: (runs,)
    returns of one task), and the probability of improvement over ``reference`` where it is there; the
    bootstrap is seeded, so the same returns give the same table."""
    from rliable import library as rly
    from rliable import metrics

    scores = {a: np.asarray(r, np.float64)[:, None] for a, r in returns.items()}  # (runs, 1 task)

    def both(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    with _seeded_numpy():
        point, interval = rly.get_interval_estimates(scores, both, reps=REPS)
    out = {
        a: {"iqm": point[a][0], "iqm_lo": interval[a][0, 0], "iqm_hi": interval[a][1, 0],
            "mean": point[a][1], "mean_lo": interval[a][0, 1], "mean_hi": interval[a][1, 1]}
        for a in scores
    }  # fmt: skip
    if reference in returns:
        for a, p in improvement(
            {a: (r, returns[reference]) for a, r in returns.items() if a != reference}
        ).items():
            out[a] |= p
    return out


def improvement(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """P(X > Y) over pairs of returns with its 95% bootstrap interval, for each ``name: (x, y)``."""
    from rliable import library as rly
    from rliable import metrics

    if not pairs:
        return {}
    scores = {
        k: (np.asarray(x, np.float64)[:, None], np.asarray(y, np.float64)[:, None])
        for k, (x, y) in pairs.items()
    }
    with _seeded_numpy():
        p, p_ci = rly.get_interval_estimates(scores, metrics.probability_of_improvement, reps=REPS)
    return {k: {"p": float(p[k]), "p_lo": float(p_ci[k][0, 0]), "p_hi": float(p_ci[k][1, 0])} for k in pairs}


@contextlib.contextmanager
def _seeded_numpy() -> Iterator[None]:
    """rliable resamples with numpy's global generator: seeded here only, so a table is reproducible."""
    saved = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(saved)


def verdict(stats: dict[str, float]) -> str:
    if "p" not in stats:
        return "-"
    if stats["p_lo"] > 0.5:
        return "better"
    return "worse" if stats["p_hi"] < 0.5 else "within noise"


# ---------------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = time.perf_counter()
    state = Results(args)
    if args.merge:
        state.merge(args.merge)
        state.write(0.0)
        return
    context = multiprocessing.get_context("spawn")  # MuJoCo's renderer does not survive a fork
    with ProcessPoolExecutor(args.processes, mp_context=context) as pool:
        for task in args.tasks:
            for kind in args.datasets:
                ds = collect_or_open(args.data_root, task, kind, args.collect_episodes)
                state.behaviour(task, kind, ds)
                others = [t for t in args.reward_tasks if t != task and TASKS[t].domain == TASKS[task].domain]
                missing = [t for t in others if t not in reward_manifest(ds)["tasks"]]
                if missing:
                    relabel(ds, missing, progress=False)
                for seed in args.seeds:
                    trainer = Trainer(ds, seed, args)
                    for target, name in itertools.product(["", *others], args.agents):
                        if target:
                            zipped, minutes = trainer.train(name, target)
                        elif args.from_return_error:
                            zipped, minutes = assembled(name, ds, seed, args)
                        else:
                            zipped, minutes = trainer.train(name)
                        where = (target, f"{kind} ({task} data)") if target else (task, kind)
                        for deterministic in (True, False) if name in args.sampled else (True,):
                            label = name if deterministic else name + SAMPLED
                            played = episodes_of(pool, zipped, where[0], args.episodes, deterministic)
                            state.add(*where, label, seed, played, minutes, weight_shares(zipped))
                    state.write(time.perf_counter() - start)  # (the bootstrap takes seconds an agent)
                    if args.top1_states:
                        state.top1 += top1_rows(task, kind, ds, seed, args, trainer)
                        state.write(time.perf_counter() - start)


def top1_rows(
    task: str, kind: str, ds: PixelDataset, seed: int, args: Args, trainer: Trainer
) -> list[dict[str, Any]]:
    """Agreement of each agent's best candidate with the simulator's best (chance 1 / K)."""
    agents = {name: Agent.load(trainer.train(name)[0]) for name in args.agents}
    _, val_eps = ds.split(0.1, seed)
    idx = states_of(ds, val_eps, args.top1_states, seed=seed + 11)
    first = agents[args.agents[0]]
    first.seed(seed)
    obs = ds.stacks(idx, first.prior.config.frame_stack)  # (N, 3F, H, W)
    with torch.no_grad():
        context, _ = first._context(obs)
        cands = first._candidates(context)  # (N, K, A), shared by every agent
    k = cands.shape[1]
    truth = simulator_q(
        ds, np.repeat(idx, k), [args.gamma], rollouts=args.top1_rollouts, processes=args.processes,
        actions=cands.reshape(-1, cands.shape[2]).cpu().numpy(),
    ).at(args.gamma)[0].reshape(len(idx), k)  # fmt: skip
    best, rows = truth.argmax(1), []
    for name, agent in agents.items():
        if agent.kind == "bc":
            choice = np.zeros(len(idx), dtype=int)  # bc acts with the prior's mode: candidate 0
        else:
            agent.seed(seed)
            choice = agent.q_values(obs, cands.cpu().numpy()).argmax(1)
        rows.append({"task": task, "dataset": kind, "agent": name, "seed": seed, "states": args.top1_states,
                     "candidates": k, "top1_agreement": round(float((choice == best).mean()), 3),
                     "chance": round(1 / k, 3)})  # fmt: skip
    return rows


def merge_source(entry: Path) -> tuple[Path, set[str] | None]:
    """A ``--merge`` entry: ``DIR`` (all its agents) or ``DIR:AGENT,...`` (only those agents' rows)."""
    if entry.is_dir() or ":" not in entry.name:
        return entry, None
    folder, _, names = str(entry).rpartition(":")
    return Path(folder), {n for n in names.split(",") if n}


class Results:
    """Every episode of the run (``policy_episodes.csv``) and the tables made from them."""

    def __init__(self, args: Args):
        self.args = args
        self.episodes: list[dict[str, Any]] = []
        self.behaviour_rows: list[dict[str, Any]] = []
        self.cost: dict[tuple[str, str, str, int], float] = {}
        self.shares: dict[tuple[str, str, str, int], str] = {}
        self.top1: list[dict[str, Any]] = []
        self.sources: list[str] = []  # (--merge) each source folder and the command that wrote it

    def merge(self, folders: tuple[Path, ...]) -> None:
        """The episodes, costs and weight shares of earlier runs' ``--out-dir`` folders."""
        seen: dict[tuple[str, ...], Path] = {}
        for entry in folders:
            folder, keep = merge_source(entry)
            files = [folder / f for f in ("policy_episodes.csv", "policy_seeds.csv", "policy.md")]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"--merge: {', '.join(missing)} missing; pass folders a run of "
                                        "benchmarks/policy.py wrote (its --out-dir)")  # fmt: skip
            with files[1].open() as f:
                rows = list(csv.DictReader(f))
            absent = sorted((keep or set()) - {r["agent"] for r in rows})
            if absent:
                raise ValueError(f"--merge: {folder} has no rows of {', '.join(absent)}; it has "
                                 f"{', '.join(sorted({r['agent'] for r in rows}))}")  # fmt: skip
            for r in rows:
                if keep is None or r["agent"] in keep:
                    key = (r["task"], r["dataset"], r["agent"], r["seed"])
                    if key in seen:
                        raise ValueError(f"--merge: {' '.join(key)} is in both {seen[key]} and {folder}; "
                                         "keep one with DIR:AGENT,...")  # fmt: skip
                    seen[key] = folder
                    if r["train_min"] != "-":
                        self.cost[(*key[:3], int(key[3]))] = float(r["train_min"])
                    self.shares[(*key[:3], int(key[3]))] = r["weight_share"]
            with files[0].open() as f:
                for r in csv.DictReader(f):
                    if keep is None or r["agent"] in keep:
                        self.episodes.append(r | {"seed": int(r["seed"]), "episode": int(r["episode"])})
            command = next(
                (line for line in files[2].read_text().splitlines() if line.startswith("Command:")), ""
            )
            only = f" ({', '.join(sorted(keep))} only)" if keep else ""
            self.sources.append(f"`{folder.name}`{only}: {command.removeprefix('Command:').strip()}")
        for task, kind in dict.fromkeys((r["task"], r["dataset"]) for r in self.episodes):
            if " (" not in kind:  # (another task's rows act on this task's data)
                self.behaviour(
                    task, kind, PixelDataset.open(dataset_dir(self.args.data_root, f"{task}-{kind}"))
                )

    def add(
        self,
        task: str,
        kind: str,
        agent: str,
        seed: int,
        played: list[list[float]],
        minutes: float,
        shares: str = "-",
    ) -> None:
        for e, (ret, decisions, seconds) in enumerate(played):
            self.episodes.append({"task": task, "dataset": kind, "agent": agent, "seed": seed, "episode": e,
                                  "return": round(ret, 2), "decisions": int(decisions),
                                  "seconds": round(seconds, 3)})  # fmt: skip
        self.cost[(task, kind, agent, seed)] = minutes
        self.shares[(task, kind, agent, seed)] = shares
        print(f"{task} {kind} {agent} seed {seed}: " + " ".join(f"{r[0]:.0f}" for r in played), flush=True)

    def behaviour(self, task: str, kind: str, ds: PixelDataset) -> None:
        ids, returns = ds.arrays["policy_id"][ds.ep_start], ds.episode_returns()
        for pid, desc in sorted(ds.meta.get("policies", {}).items()):
            r = returns[ids == int(pid)]
            if len(r):
                self.behaviour_rows.append({"task": task, "dataset": kind, "level": desc.get("level", pid),
                                            "episodes": len(r), "return_mean": round(float(r.mean()), 1),
                                            "return_std": round(float(r.std()), 1)})  # fmt: skip

    def per_seed(self) -> list[dict[str, Any]]:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in self.episodes:
            groups.setdefault((r["task"], r["dataset"], r["agent"], r["seed"]), []).append(r)
        rows = []
        for key, eps in groups.items():
            ret = np.array([float(r["return"]) for r in eps])
            ms = 1000 * sum(float(r["seconds"]) for r in eps) / max(sum(int(r["decisions"]) for r in eps), 1)
            rows.append(dict(zip(SEED_COLUMNS[:4], key, strict=True)) | {
                "episodes": len(ret), "return_mean": round(float(ret.mean()), 1),
                "return_std": round(float(ret.std()), 1), "train_min": self.cost.get(key, "-"),
                "ms_per_decision": round(ms, 1), "weight_share": self.shares.get(key, "-")})  # fmt: skip
        return rows

    def table(self, seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for task, kind in dict.fromkeys((r["task"], r["dataset"]) for r in seeds):
            mine = [r for r in self.episodes if (r["task"], r["dataset"]) == (task, kind)]
            returns: dict[str, list[float]] = {}
            for r in mine:
                returns.setdefault(r["agent"], []).append(float(r["return"]))
            stats = aggregate({a: np.array(v) for a, v in returns.items()})
            expert = [b["return_mean"] for b in self.behaviour_rows
                      if (b["task"], b["dataset"], b["level"]) == (task, kind, "expert")]  # fmt: skip
            for agent, s in stats.items():
                cost = [r for r in seeds if (r["task"], r["dataset"], r["agent"]) == (task, kind, agent)]
                minutes = [r["train_min"] for r in cost if r["train_min"] != "-"]
                rows.append({
                    "task": task, "dataset": kind, "agent": agent, "runs": len(returns[agent]),
                    "iqm": round(s["iqm"], 1), "iqm_ci": f"[{s['iqm_lo']:.1f}, {s['iqm_hi']:.1f}]",
                    "mean": round(s["mean"], 1), "mean_ci": f"[{s['mean_lo']:.1f}, {s['mean_hi']:.1f}]",
                    "x_expert": round(s["iqm"] / expert[0], 2) if expert else "-",
                    "score_10": round(s["iqm"] / 10, 1),
                    "p_better_than_bc": round(s["p"], 2) if "p" in s else "-",
                    "p_ci": f"[{s['p_lo']:.2f}, {s['p_hi']:.2f}]" if "p" in s else "-",
                    "vs_bc": verdict(s),
                    "train_min": round(float(np.mean(minutes)), 1) if minutes else "-",
                    "ms_per_decision": round(float(np.mean([r["ms_per_decision"] for r in cost])), 1),
                })  # fmt: skip
        return rows

    def against_best(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per task and dataset, P(best > other) for the agent of the highest IQM and every other one,
        with its interval and verdict (the table's P(> bc) answers only for ``bc``)."""
        out = []
        for task, kind in dict.fromkeys((r["task"], r["dataset"]) for r in rows):
            mine = [r for r in rows if (r["task"], r["dataset"]) == (task, kind)]
            best = max(mine, key=lambda r: r["iqm"])["agent"]
            returns: dict[str, list[float]] = {}
            for r in self.episodes:
                if (r["task"], r["dataset"]) == (task, kind):
                    returns.setdefault(r["agent"], []).append(float(r["return"]))
            p = improvement({a: (returns[best], v) for a, v in returns.items() if a != best})
            out += [{"task": task, "dataset": kind, "best": best, "other": a,
                     "p_best_better": round(s["p"], 2), "p_ci": f"[{s['p_lo']:.2f}, {s['p_hi']:.2f}]",
                     "verdict": verdict(s)}
                    for a, s in p.items()]  # fmt: skip
        return out

    def write(self, seconds: float) -> None:
        out = self.args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "policy_episodes.csv", self.episodes, EPISODE_COLUMNS)
        seeds = self.per_seed()
        rows = self.table(seeds)
        write_csv(out / "policy.csv", rows, COLUMNS)
        write_csv(out / "policy_seeds.csv", seeds, SEED_COLUMNS)
        if self.top1:
            write_csv(out / "policy_top1.csv", self.top1, TOP1)
        a, trained = self.args, sorted({r["seed"] for r in self.episodes})
        last = 999 + max((r["episode"] + 1 for r in self.episodes), default=a.episodes)  # (env seed)
        lines = [
            "# Control from offline pixel data",
            "",
            f"Command: `{command_line(hide=['--note'])}`  ",
            f"{machine_line(int(os.environ['OMP_NUM_THREADS']), False)}  ",
            f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; "
            + (
                "tables merged, no episode played"
                if self.sources
                else f"run {seconds / 60:.0f} min (episodes in {a.processes} processes)"
            ),
            *([f"  \n{a.note}"] if a.note else []),
            *(
                ["", "Merged from these runs (folder: command):", "", *(f"- {s}" for s in self.sources)]
                if self.sources
                else []
            ),
            "",
            f"Deterministic evaluation episodes (500 agent steps, env seeds 1000-{last}) of "
            f"agents trained with seeds {trained}; `(sampled)`: `deterministic=False`. IQM and mean "
            f"of the returns with 95% stratified-bootstrap intervals ({REPS} resamples, rliable) over the "
            "runs (seed, episode); p_better_than_bc: probability of improvement over bc with its interval; "
            "vs_bc: better/worse where that interval excludes 0.5, else within noise. x_expert: the IQM over "
            "the mean return of the dataset's expert episodes (below); score_10: the IQM / 10, the V-D4RL "
            "scale (their figures are on other data: 84 px, other behaviour policies). train_min: the "
            "shared tokenizer, the reused parts and the agent's own; ms_per_decision: one env, batch 1.",
            "",
            *markdown_table(rows, COLUMNS),
            "",
            "## The best agent by IQM against each other (probability of improvement)",
            "",
            *markdown_table(self.against_best(rows), BEST_COLUMNS),
            "",
            "## Per seed",
            "",
            *markdown_table(seeds, SEED_COLUMNS),
            "",
            "## The datasets' behaviour policies (their recorded episodes)",
            "",
            *markdown_table(self.behaviour_rows, BEHAVIOUR_COLUMNS),
        ]
        if self.top1:
            lines += ["", "## Top-1 agreement with the simulator's best candidate", "",
                      *markdown_table(self.top1, TOP1)]  # fmt: skip
        (out / "policy.md").write_text("\n".join(lines) + "\n")
        plot(rows, out / "policy.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """IQM with its 95% interval per agent, one panel per task and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["task"], r["dataset"]) for r in rows))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.5 * len(rows) / len(panels) + 1.5),
                             squeeze=False)  # fmt: skip
    for ax, (task, kind) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if (r["task"], r["dataset"]) == (task, kind)]
        lo = [r["iqm"] - float(r["iqm_ci"].strip("[]").split(",")[0]) for r in mine]
        hi = [float(r["iqm_ci"].strip("[]").split(",")[1]) - r["iqm"] for r in mine]
        y = np.arange(len(mine))
        ax.errorbar([r["iqm"] for r in mine], y, xerr=[lo, hi], fmt="o", capsize=3)
        ax.set_yticks(y, [r["agent"] for r in mine])
        ax.invert_yaxis()
        ax.set_xlabel("IQM return (95% CI)")
        ax.set_title(f"{task} {kind}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
