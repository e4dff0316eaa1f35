"""Learning curves of the occupancy objectives and the TD critic under equal wall-clock budgets:
writes results/learning_curve.md, .csv and .png.

One dataset (cheetah-run ``mixed`` by default, 100k transitions) and one 16-token tokenizer shared by
every method. Methods (each trained until the last of ``--eval-at`` minutes of training time on one
thread, measured as the process's CPU time so that runs sharing a machine stay comparable; the
evaluations are not counted):

- ``td1``: one-step generative TD (the published objective; ``n_step=1``);
- ``nstep10``: dataset futures up to 10 steps, bootstrapped beyond (``n_step=10``);
- ``mc``: dataset futures, bootstrapped only past an episode's end (``n_step=None``, the default);
- ``td-critic``: SARSA TD on the same tokens (``voc_rl.critic.train_td_critic``).

At each checkpoint (``--eval-at``, training minutes) the occupancy models are scored on held-out
episodes: the NLL per token of the Monte-Carlo future s_{t+k} beside the per-slot unigram of the
training tokens, the reward model's NMSE, and Q(s_t, a_t) against ``simulator_q`` (``--rollouts``
rollouts) on ``--n-states`` held-out states drawn equally from every behaviour level, by
``sample`` (N samples), ``density`` (self-normalised weights over M training states: a baseline that
degrades as the model sharpens) and ``pool`` (K candidate actions share a pool of the model's own
samples, weighted by the exact mixture density; the estimator of record). ``ess`` is the mean
effective sample size of the weights; ``top1`` is how often the estimator's best of the K candidate
actions (a_t and K - 1 actions of random training states) is the simulator's best.

CSV columns: task,dataset,gamma,method,estimator,step,seconds,nll_future,unigram_nll,action_info,reward_nmse,
nmse,spearman,ess,n_states,top1,ms_per_state. Each method writes ``--runs/<method>.csv`` as it goes;
the report merges whatever is there, so two invocations can run methods in parallel:

    python benchmarks/learning_curve.py --prepare --processes 2   # ground truth, cached
    python benchmarks/learning_curve.py --methods mc td1 &
    python benchmarks/learning_curve.py --methods nstep10 td-critic &
    python benchmarks/learning_curve.py --report-only      # merge, tables and plot
    python benchmarks/learning_curve.py --quick            # minutes, tiny sizes, for a smoke test
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.critic import CriticConfig, TDCritic, train_td_critic
from voc_rl.data import PixelDataset
from voc_rl.evaluation import nmse, spearman, states_by_level, states_of
from voc_rl.ground_truth import simulator_q
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel
from voc_rl.occupancy_train import train_occupancy, validate, validation_batch
from voc_rl.parts import SharedParts, collect_or_open
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop
from voc_rl.value import density_q, pool_q, sample_q

COLUMNS = [
    "task", "dataset", "gamma", "method", "estimator", "step", "seconds", "nll_future", "unigram_nll",
    "action_info", "reward_nmse", "nmse", "spearman", "ess", "n_states", "top1", "ms_per_state",
]  # fmt: skip
N_STEP = {"td1": 1, "nstep10": 10, "mc": None}
METHODS = (*N_STEP, "td-critic")


@dataclasses.dataclass(frozen=True)
class Args:
    data_root: Path = Path("datasets")
    """datasets root (a missing dataset is collected there)"""
    runs: Path = Path("runs/learning_curve")
    """folder of the fitted tokenizer and of each method's rows"""
    out_dir: Path = Path("results")
    """folder of the table and plot"""
    tokenizer: Path | None = None
    """a 16-token tokenizer.pt (default: fit one in --runs)"""
    task: str = "cheetah-run"
    """task"""
    dataset: str = "mixed"
    """behaviour dataset"""
    episodes: int = 200
    """episodes to collect when the dataset is missing"""
    gamma: float = 0.9
    """discount"""
    methods: tuple[str, ...] = dataclasses.field(default=METHODS, metadata={"choices": METHODS})
    """methods to train"""
    eval_at: tuple[float, ...] = (2.5, 5, 10, 15, 20)
    """checkpoints, in training minutes; training stops at the last"""
    n_states: int = 129
    """held-out states"""
    rollouts: int = 4
    """simulator rollouts per state and action"""
    actions: int = 8
    """K candidate actions per state (a_t first)"""
    samples: int = 32
    """N of sample"""
    pool_size: int = 32
    """pool shared by the K actions"""
    candidates: int = 256
    """M training states of density"""
    processes: int = 1
    """simulator processes"""
    seed: int = 0
    """training seed"""
    quick: bool = False
    """tiny sizes, seconds of training"""
    quiet: bool = False
    """no progress bars"""
    report_only: bool = False
    """train nothing: merge the rows in --runs into the table and plot"""
    note: str = ""
    """a line for the report (how the runs were made)"""
    prepare: bool = False
    """only the ground truth and tokens (cached), then exit"""


QUICK = {
    "episodes": 6,
    "n_states": 6,
    "rollouts": 1,
    "eval_at": (0.02, 0.04),
    "candidates": 16,
    "samples": 4,
    "pool_size": 4,
    "actions": 2,
}


# ---------------------------------------------------------------------------------------------- data
def tokenizer_for(ds: PixelDataset, args: Args) -> Path:
    """One 16-token VQ-VAE (``downsample=4``: a 4x4 grid of codes per 64px frame) for every method."""
    if args.tokenizer is not None:
        return args.tokenizer
    size, steps = ("tiny", 30) if args.quick else ("small", 1000)
    return SharedParts(args.runs, tok_size=size, steps={"tokenizer": steps}).tokenizer(ds, "vqvae")


class Bench:
    """The held-out states, their simulator Q (and that of K candidate actions each), token stacks."""

    def __init__(self, args: Args):
        self.args = args
        name = f"{args.task}-{args.dataset}" + ("-quick" if args.quick else "")
        ds = collect_or_open(args.data_root, args.task, args.dataset, args.episodes, name)
        self.ds = ds
        self.view = token_view(ds, tokenizer_for(ds, args))
        self.train_eps, self.val_eps = ds.split(0.1, 0)  # the split every trainer uses (seed 0)
        self.idx = states_by_level(ds, self.val_eps, args.n_states, seed=1)
        rng = np.random.default_rng(2)
        train_frames = states_of(ds, self.train_eps, 10**9, seed=3)
        others = ds.arrays["action"][rng.choice(train_frames, (len(self.idx), args.actions - 1))]
        self.actions = np.concatenate([ds.arrays["action"][self.idx][:, None], others], 1)  # (n, K, A)
        sim = {"rollouts": args.rollouts, "processes": args.processes, "progress": not args.quiet}
        self.q_true, q_err = simulator_q(ds, self.idx, [args.gamma], **sim).at(args.gamma)
        self.truth_stderr = float(np.mean(q_err))
        flat = simulator_q(
            ds,
            np.repeat(self.idx, args.actions),
            [args.gamma],
            actions=self.actions.reshape(-1, self.actions.shape[-1]),
            **sim,
        ).at(args.gamma)[0]
        self.q_cands = flat.reshape(len(self.idx), args.actions)  # (n, K)
        self.cand_idx = rng.choice(train_frames, size=min(args.candidates, len(train_frames)), replace=False)

    def context(self, frame_stack: int) -> torch.Tensor:
        return torch.from_numpy(self.view.stacks(self.idx, frame_stack).astype(np.int64))

    def row(self, method: str, estimator: str, step: int, seconds: float, **values: Any) -> dict[str, Any]:
        a = self.args
        base = {"task": a.task, "dataset": a.dataset, "gamma": a.gamma, "method": method}
        return {**base, "estimator": estimator, "step": step, "seconds": round(seconds, 1),
                "n_states": len(self.idx), **values}  # fmt: skip

    def scores(self, pred: np.ndarray, cands: np.ndarray | None) -> dict[str, Any]:
        top1 = "" if cands is None else float(np.mean(cands.argmax(1) == self.q_cands.argmax(1)))
        return {"nmse": nmse(pred, self.q_true), "spearman": spearman(pred, self.q_true), "top1": top1}


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_occupancy(
    bench: Bench, model: OccupancyModel, reward: RewardModel, val: dict[str, torch.Tensor], seed: int
) -> list[tuple[str, dict[str, Any]]]:
    """(estimator, values) rows for one checkpoint of an occupancy model."""
    a, c = bench.args, model.config
    model.eval()
    reward.eval()
    metrics = validate(model, reward, val)
    common = {k: metrics[k] for k in ("nll_future", "unigram_nll", "action_info", "reward_nmse")}
    ctx = bench.context(c.frame_stack)
    act, acts = torch.from_numpy(bench.actions[:, 0]), torch.from_numpy(bench.actions)
    cands = bench.view.stacks(bench.cand_idx, c.frame_stack)[:, -c.n_target :]
    cands = torch.from_numpy(cands.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    n = len(bench.idx)

    def by_chunks(fn: Callable[[slice], Any]) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """(Q, ESS or None, ms per state) of ``fn`` over the states, 16 at a time."""
        start = time.process_time()
        parts = [fn(slice(i, i + 16)) for i in range(0, n, 16)]
        ms = 1000 * (time.process_time() - start) / n
        if isinstance(parts[0], tuple):
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), ms
        return torch.cat(parts), None, ms

    q, _, ms = by_chunks(lambda s: sample_q(model, reward, ctx[s], act[s], n=a.samples, generator=g))
    out = [("sample", {**bench.scores(q.numpy(), None), "ess": a.samples, "ms_per_state": ms})]
    q, ess, ms = by_chunks(lambda s: density_q(model, reward, ctx[s], act[s], cands, return_ess=True))
    out.append(("density", {**bench.scores(q.numpy(), None), "ess": float(ess.mean()), "ms_per_state": ms}))
    q, ess, ms = by_chunks(
        lambda s: pool_q(model, reward, ctx[s], acts[s], a.pool_size, generator=g, return_ess=True)
    )
    q = q.numpy()  # (n, K): a_t first
    out.append(("pool", {**bench.scores(q[:, 0], q), "ess": float(ess[:, 0].mean()), "ms_per_state": ms}))
    model.train()
    reward.train()
    return [(name, {**common, **values}) for name, values in out]


def evaluate_critic(bench: Bench, critic: TDCritic) -> list[tuple[str, dict[str, Any]]]:
    critic.eval()
    ctx = bench.context(critic.config.frame_stack)
    start = time.process_time()
    q = critic.q_values(ctx, torch.from_numpy(bench.actions)).detach().numpy()
    ms = 1000 * (time.process_time() - start) / len(bench.idx)
    critic.train()
    return [("critic", {**bench.scores(q[:, 0], q), "ms_per_state": ms})]


# ---------------------------------------------------------------------------------------------- training
class Clock:
    """Training time (evaluations excluded), checkpoints at ``eval_at`` minutes, stop at the last.

    The time is this process's CPU time (``time.process_time``): with one torch thread it equals the
    wall-clock of an idle core, and it stays fair when several runs share a machine's cores."""

    def __init__(self, eval_at: Sequence[float], evaluate: Callable[[int, float], None]):
        self.eval_at, self.evaluate = [60 * m for m in eval_at], evaluate
        self.spent, self.tic = 0.0, time.process_time()

    def __call__(self, step: int, logs: dict[str, float]) -> bool:
        self.spent += time.process_time() - self.tic
        if self.eval_at and self.spent >= self.eval_at[0]:
            self.eval_at.pop(0)
            self.evaluate(step, self.spent)
        self.tic = time.process_time()
        return bool(self.eval_at)  # False: stop after the last checkpoint


def train_method(bench: Bench, method: str, args: Args) -> None:
    path = args.runs / f"{method}.csv"
    rows: list[dict[str, Any]] = []

    def record(step: int, seconds: float, results: list[tuple[str, dict[str, Any]]]) -> None:
        for estimator, values in results:
            rows.append(bench.row(method, estimator, step, seconds, **values))
            print(
                f"{method} {estimator} step {step} ({seconds / 60:.1f} min): NMSE {values['nmse']:.3f}",
                flush=True,
            )
        write_csv(path, rows, COLUMNS)
        report(args)

    torch.manual_seed(args.seed)
    huge = 10**7  # steps: the run stops on the clock; the learning rate stays near constant
    size = "tiny" if args.quick else "small"
    if method == "td-critic":
        critic = TDCritic(CriticConfig.for_dataset(bench.view, size, gamma=args.gamma, steps=huge))
        clock = Clock(args.eval_at, lambda step, s: record(step, s, evaluate_critic(bench, critic)))
        train_td_critic(
            critic,
            bench.view,
            loop=Loop(seed=args.seed, device="cpu", progress=False, callback=clock, eval_every=huge),
        )
        return
    config = OccupancyConfig.for_dataset(
        bench.view, size, gamma=args.gamma, n_step=N_STEP[method], target_frames=2, steps=huge
    )
    model, reward = OccupancyModel(config), RewardModel(config)
    val = validation_batch(
        bench.view, bench.val_eps, bench.train_eps, config, args.seed + 1, torch.device("cpu"), size=512
    )
    clock = Clock(
        args.eval_at,
        lambda step, s: record(step, s, evaluate_occupancy(bench, model, reward, val, args.seed)),
    )
    loop = Loop(seed=args.seed, device="cpu", progress=False, callback=clock, eval_every=huge)
    train_occupancy(model, bench.view, loop=loop, reward=reward)


# ---------------------------------------------------------------------------------------------- report
def report(args: Args) -> None:
    rows: list[dict[str, Any]] = []
    for method in METHODS:
        path = args.runs / f"{method}.csv"
        if path.exists():
            with open(path) as f:
                rows += list(csv.DictReader(f))
    if not rows:
        return
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "learning_curve.csv", rows, COLUMNS)

    def fmt(value: str, digits: int = 3) -> str:
        try:
            return f"{float(value):.{digits}f}"
        except ValueError:
            return value

    three = ("nll_future", "unigram_nll", "action_info", "reward_nmse", "nmse", "spearman", "top1")
    table = [
        {
            **r,
            **{k: fmt(r[k]) for k in three},
            "ess": fmt(r["ess"], 1),
            "ms_per_state": fmt(r["ms_per_state"], 1),
        }
        for r in rows
    ]
    cols = ["method", "estimator", "step", "seconds", "nll_future", "unigram_nll", "action_info",
            "reward_nmse", "nmse", "spearman", "ess", "top1", "ms_per_state"]  # fmt: skip
    r0 = rows[0]
    lines = [
        "# Learning curves: occupancy objectives against the TD critic, equal training time",
        "",
        f"Command: `{command_line(hide=('--note',))}`"
        + (" (merges the rows that each method's run wrote to `--runs`)" if args.report_only else "")
        + "  ",
        *([f"Runs: {args.note}  "] if args.note else []),
        machine_line(threads=1, uses_gpu=False),
        f"Date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}  ",
        f"Dataset: {r0['task']} `{r0['dataset']}`; gamma {r0['gamma']}; {r0['n_states']} held-out states "
        f"(equal thirds of the behaviour levels), simulator Q with {args.rollouts} rollouts.",
        "",
        "`seconds` is training time on one thread: the process's CPU time, which equals wall-clock on an",
        "idle core and stays fair on a shared machine (evaluations excluded). `nll_future`: held-out",
        "NLL per token of the true discounted future s_{t+k}; `unigram_nll`: the same tokens under the",
        "per-slot unigram of the training tokens (a model that ignores the context). `action_info`: the",
        "NLL with another row's action minus with the true one (nats/token; 0 ignores the action).",
        "`nmse`: MSE / Var of",
        "the simulator Q (1.0 = predicting the mean). `ess`: mean effective sample size of the",
        "importance weights (`sample`: N). `top1`: the best of K candidate actions agrees with the",
        "simulator's best. `ms_per_state`: evaluation CPU time per state.",
        "",
        *markdown_table(table, cols),
        "",
    ]
    (out / "learning_curve.md").write_text("\n".join(lines))
    plot(rows, out / "learning_curve.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for r in rows:
        series.setdefault((r["method"], r["estimator"]), []).append(
            (float(r["seconds"]), float(r["nmse"]), float(r["nll_future"] or "nan"))
        )
    for (method, estimator), pts in sorted(series.items()):
        pts.sort()
        x = [p[0] / 60 for p in pts]
        ax.plot(x, [p[1] for p in pts], marker="o", label=f"{method} / {estimator}")
        if estimator == "sample":
            ax2.plot(x, [p[2] for p in pts], marker="o", label=method)
    unigram = [float(r["unigram_nll"]) for r in rows if r["unigram_nll"]]
    if unigram:
        ax2.axhline(unigram[0], color="gray", ls="--", label="per-slot unigram")
    ax.axhline(1.0, color="gray", ls=":", lw=1)
    ax.set(xlabel="training minutes (one thread, CPU time)", ylabel="Q NMSE vs simulator", yscale="log")
    ax2.set(xlabel="training minutes (one thread, CPU time)", ylabel="held-out NLL/token of the future")
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=QUICK)
    torch.set_num_threads(1)
    args.runs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        bench = Bench(args)
        if args.prepare:
            return
        for method in args.methods:
            train_method(bench, method, args)
    report(args)


if __name__ == "__main__":
    main()
