"""Return-estimation error on held-out episodes: writes results/return_error.md, .csv and scatter plots.

For every task, dataset and tokenizer it trains (or reuses from ``--runs``) a tokenizer, a behaviour-
cloning prior, a one-step world model (gamma 0) and, per gamma and seed, an occupancy model and a
TD critic, all on the training episodes. On ``--n-states`` states of held-out episodes it compares
Q(s_t, a_t) estimates with the simulator ground truth (restore the physics state, take a_t, follow
the episode's behaviour policy until gamma^H < 1e-3, averaged over rollouts; its standard error is
reported):

- ``sample``: N occupancy samples; ``density``: self-normalised weights over M training states
  (uniform proposal); ``pool``: a pool shared by K candidate actions (a_t and K - 1 from the prior);
- ``mean``: the mean simulator Q of training states; ``td-critic``: SARSA fitted Q evaluation on the
  same tokens; ``wm-rollout-1x`` / ``-3x``: the gamma-0 model rolled out 1/(1-gamma) or 3/(1-gamma)
  steps with the reward model and the prior;
- ``paper-style``: VOC scored as the published code does (top-k 50, 100 samples) against its
  truncated target (the next min(1/(1-gamma), 10) rewards of the dataset), and against the simulator.

Occupancy models train with ``--n-step`` (default ``mc``: the dataset's futures, bootstrapped only
past an episode's end; ``1``: one-step generative TD) on 16-token tokenizers (``--tokens agent``, the
agents' geometry). ``reward_nmse`` is the reward model's held-out NMSE (r(s_{t+1}) against r_t at
the same states) on the rows that use it. Two diagnostics of whether a Q responds to the action:
``action_info`` on the occupancy model's rows (held-out NLL per token of the true future with another
row's action minus with the true one, nats; 0: the model ignores the action) and ``action_response``
on the ``pool`` and ``td-critic`` rows (mean Q(s, a_t) - Q(s, u) at the states, u a uniform action).

CSV columns: task,dataset,gamma,tokenizer,method,n_states,nmse,rmse,spearman,evals_per_s,ground_truth,
reward_nmse,action_info,action_response (means over seeds; ``return_error_seeds.csv`` has every seed,
the markdown mean +- std).

Parts are kept in ``--runs`` (:class:`voc_rl.parts.SharedParts`: a later run, or the policy benchmark's
``--from-return-error``, reuses them); the estimates are :func:`voc_rl.evaluation.q_estimates`.
``--quick`` shrinks everything into a scratch folder (options given beside it still apply):

    voc-rl bench return-error --quick                    # a tiny version in minutes
    python benchmarks/return_error.py --data-root datasets --tasks cheetah-run --gammas 0.9 0.99
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.evaluation import (
    METHODS,
    RESPONSE_METHODS,
    VOC_METHODS,
    Models,
    action_response,
    nmse,
    paper_target,
    q_estimates,
    reward_nmse,
    rmse,
    spearman,
    states_of,
)
from voc_rl.ground_truth import simulator_q
from voc_rl.occupancy_train import validate, validation_batch
from voc_rl.parts import SharedParts, collect_or_open
from voc_rl.report import command_line, machine_line, write_csv
from voc_rl.tokenizers.cache import token_view

COLUMNS = [
    "task", "dataset", "gamma", "tokenizer", "method", "n_states",
    "nmse", "rmse", "spearman", "evals_per_s", "ground_truth",
    "reward_nmse", "action_info", "action_response",
]  # fmt: skip
DIAGNOSTICS = ("reward_nmse", "action_info", "action_response")  # columns only some methods have
Plots = dict[tuple, list[tuple[str, np.ndarray, np.ndarray]]]  # (task, dataset, gamma, tokenizer) -> pairs
Save = Callable[[list[dict[str, Any]], Plots], None]  # writes the tables of the rows so far


def mc_or_int(text: str) -> int | None:
    """``--n-step``: ``mc`` (or ``none``) for Monte-Carlo futures, else an integer."""
    return None if text.lower() in ("mc", "none") else int(text)


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("cheetah-run", "walker-walk")
    """tasks of the table"""
    datasets: tuple[str, ...] = ("medium", "mixed")
    """behaviour datasets of each task"""
    gammas: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
    """discounts"""
    tokenizers: tuple[str, ...] = ("vqvae", "dino", "musik", "titok")
    """tokenizer backends"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of the occupancy models and critics"""
    n_states: int = 200
    """held-out states per dataset"""
    episodes: int = 200
    """episodes per dataset collected if missing"""
    rollouts: int = 8
    """simulator rollouts per state"""
    processes: int = os.cpu_count() or 1
    """simulator processes"""
    samples: int = 32
    """N of the sample estimator"""
    candidates: int = 256
    """M of the density estimator"""
    pool_actions: int = 8
    """K of the pool estimator"""
    pool_size: int = 64
    """futures in the pool shared by the K actions"""
    rollouts_wm: int = 4
    """world-model rollouts per state"""
    tok_size: str = "small"
    """tokenizer size preset"""
    tok_steps: int | None = None
    """tokenizer training steps (default: the preset's)"""
    occ_size: str = "small"
    """occupancy-model size preset"""
    occ_steps: int | None = None
    """occupancy-model training steps (default: the preset's)"""
    n_step: int | None = dataclasses.field(default=None, metadata={"type": mc_or_int, "metavar": "N|mc"})
    """horizon of the occupancy objective: mc (default) or N (1: one-step generative TD)"""
    tokens: str = dataclasses.field(default="agent", metadata={"choices": ("agent", "preset")})
    """tokens per frame: the agents' 16 or the tokenizer preset's (64 for vqvae)"""
    tok_state_aux: float = 0.0
    """the tokenizers' state_aux (codes that regress the recorded state in training); rows name it
    (tokenizer vqvae+state)"""
    critic_steps: int | None = None
    """TD-critic training steps (default: the preset's)"""
    bc_steps: int | None = None
    """behaviour-cloning prior training steps (default: the preset's)"""
    data_root: Path = Path("datasets")
    """datasets root (missing datasets are collected there)"""
    runs: Path = Path("runs/return_error")
    """folder of the trained parts, reused by later runs"""
    out_dir: Path = Path("results")
    """folder of the tables and plots"""
    skip: tuple[str, ...] = dataclasses.field(default=(), metadata={"nargs": "*", "choices": METHODS})
    """methods to leave out, e.g. wm-rollout-3x"""
    keep: bool = False
    """keep the rows of --out-dir's return_error_seeds.csv that this run does not redo (by task, dataset,
    gamma, tokenizer and seed)"""
    report_only: bool = False
    """train and evaluate nothing: rewrite the tables from --out-dir's return_error_seeds.csv"""
    note: str = ""
    """a line for the table's header (how the rows were made)"""
    quiet: bool = False
    """no progress bars"""
    quick: bool = False
    """tiny everything in a scratch folder: checks the pipeline in minutes"""


def quick() -> dict[str, Any]:
    """The ``--quick`` preset: one task, tiny data, models and steps, in a new scratch folder."""
    scratch = Path(tempfile.mkdtemp(prefix="voc_rl_return_quick_"))
    return {
        "tasks": Args.tasks[:1],
        "datasets": ("mixed",),
        "gammas": (0.8, 0.9),
        "tokenizers": ("titok",),
        "seeds": (0,),
        "n_states": 16,
        "episodes": 3,
        "rollouts": 2,
        "samples": 4,
        "candidates": 32,
        "pool_size": 16,
        "rollouts_wm": 1,
        "tok_size": "tiny",
        "occ_size": "tiny",
        **dict.fromkeys(("tok_steps", "occ_steps", "critic_steps", "bc_steps"), 20),
        "data_root": scratch / "datasets",
        "runs": scratch / "runs",
        "out_dir": scratch / "results",
    }


# ---------------------------------------------------------------------------------------------- the table
def run(args: Args, save: Save) -> tuple[list[dict[str, Any]], Plots]:
    """Per-seed rows of metrics, and (method, predicted, true) of the first seed for the plots;
    ``save`` writes the tables after every seed (a long run leaves results)."""
    rows: list[dict[str, Any]] = []
    plots: Plots = {}
    for task in args.tasks:
        for kind in args.datasets:
            evaluate_dataset(task, kind, args, rows, plots, save)
    return rows, plots


def shared_parts(args: Args) -> SharedParts:
    steps = {"tokenizer": args.tok_steps, "prior": args.bc_steps, "occupancy": args.occ_steps,
             "critic": args.critic_steps}  # fmt: skip
    return SharedParts(
        args.runs, args.tok_size, args.occ_size, agent_tokens=args.tokens == "agent", n_step=args.n_step,
        steps={part: n for part, n in steps.items() if n}, progress=not args.quiet,
        tokenizer_fields={"state_aux": args.tok_state_aux} if args.tok_state_aux else {},
    )  # fmt: skip


def row_tokenizer(args: Args, backend: str) -> str:
    """The ``tokenizer`` of a row: the backend, ``+state`` with ``--tok-state-aux``."""
    return backend + ("+state" if args.tok_state_aux else "")


def evaluate_dataset(task: str, kind: str, args: Args, rows: list, plots: Plots, save: Save) -> None:
    name = f"{task}-{kind}" + ("-quick" if args.quick else "")
    ds = collect_or_open(args.data_root, task, kind, args.episodes, name, progress=not args.quiet)
    train_eps, val_eps = ds.split(0.1, 0)
    idx = states_of(ds, val_eps, args.n_states, seed=1)
    train_idx = states_of(ds, train_eps, 10**9, seed=2)
    mean_idx = states_of(ds, train_eps, max(args.n_states // 2, 8), seed=3)
    sim = {"rollouts": args.rollouts, "processes": args.processes, "progress": not args.quiet}
    truth, train_truth = (
        simulator_q(ds, idx, args.gammas, **sim),
        simulator_q(ds, mean_idx, args.gammas, **sim),
    )
    parts = shared_parts(args)
    methods = [m for m in METHODS if m not in args.skip]
    for tokenizer in args.tokenizers:
        view = token_view(ds, parts.tokenizer(ds, tokenizer), progress=not args.quiet)
        backend = row_tokenizer(args, tokenizer)
        world, world_reward = parts.occupancy(view, 0.0, 0)
        prior = parts.prior(view)
        for gamma in args.gammas:
            q_true, q_err = truth.at(gamma)
            targets = {"simulator": q_true, "paper-truncated": paper_target(ds, idx, gamma)}
            for seed in args.seeds:
                occ, reward = parts.occupancy(view, gamma, seed)
                r_nmse = reward_nmse(view, idx, occ, reward)
                val = validation_batch(view, val_eps, train_eps, occ.config, seed + 1, occ.device, size=512)
                info = validate(occ, reward, val)["action_info"]
                models = Models(
                    occ, reward, prior, parts.critic(view, gamma, seed), world, world_reward,
                    train_mean=float(train_truth.at(gamma)[0].mean()),
                )  # fmt: skip
                candidates = np.random.default_rng(seed).choice(
                    train_idx, size=min(args.candidates, len(train_idx)), replace=False
                )
                estimates = q_estimates(
                    view, idx, gamma, models, methods, candidates=candidates, samples=args.samples,
                    pool_actions=args.pool_actions, pool_size=args.pool_size, rollouts=args.rollouts_wm,
                    seed=seed,
                )  # fmt: skip
                response = action_response(
                    view, idx, models, [m for m in RESPONSE_METHODS if m in methods],
                    pool_size=args.pool_size, seed=seed,
                )  # fmt: skip
                for method, (pred, rate) in estimates.items():
                    if seed == args.seeds[0]:
                        plots.setdefault((task, kind, gamma, backend), []).append((method, pred, q_true))
                    for truth_name in ["simulator"] + (
                        ["paper-truncated"] if method == "paper-style" else []
                    ):
                        true = targets[truth_name]
                        rows.append(
                            {
                                "task": task,
                                "dataset": kind,
                                "gamma": gamma,
                                "tokenizer": backend,
                                "method": method,
                                "n_states": len(idx),
                                "seed": seed,
                                "nmse": nmse(pred, true),
                                "rmse": rmse(pred, true),
                                "spearman": spearman(pred, true),
                                "evals_per_s": rate,
                                "ground_truth": truth_name,
                                "truth_stderr": float(np.mean(q_err)),
                                "truth_std": float(true.std()),
                                "reward_nmse": r_nmse if method in VOC_METHODS else "",
                                "action_info": info if method in VOC_METHODS else "",
                                "action_response": response.get(method, ""),
                            }
                        )
                        print(f"{task} {kind} gamma {gamma} {backend} {method} seed {seed} vs {truth_name}: "
                              f"NMSE {rows[-1]['nmse']:.3f}", flush=True)  # fmt: skip
                save(rows, plots)


# ---------------------------------------------------------------------------------------------- output
KEYS = ("task", "dataset", "gamma", "tokenizer", "method", "ground_truth")


def kept_rows(args: Args) -> list[dict[str, Any]]:
    """Rows of an earlier run in ``--out-dir`` for (task, dataset, gamma, tokenizer, seed) not redone now
    (all of them with ``--report-only``)."""
    path = args.out_dir / "return_error_seeds.csv"
    if not path.exists():
        return []
    grid = (
        args.tasks,
        args.datasets,
        args.gammas,
        [row_tokenizer(args, t) for t in args.tokenizers],
        args.seeds,
    )
    redo = set() if args.report_only else set(itertools.product(*grid))
    out = []
    with path.open() as f:
        for r in csv.DictReader(f):
            text = ("task", "dataset", "tokenizer", "method", "ground_truth")
            row: dict[str, Any] = {k: (v if k in text or v == "" else float(v)) for k, v in r.items()}
            row["n_states"], row["seed"] = int(row["n_states"]), int(row["seed"])
            if (row["task"], row["dataset"], row["gamma"], row["tokenizer"], row["seed"]) not in redo:
                out.append(row)
    return out


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        agg: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        agg["n_states"] = rs[0]["n_states"]
        agg["seeds"] = len(rs)
        for m in ("nmse", "rmse", "spearman", "evals_per_s"):
            vals = np.array([r[m] for r in rs], dtype=np.float64)
            agg[m], agg[f"{m}_std"] = float(vals.mean()), float(vals.std())
        agg["truth_stderr"], agg["truth_std"] = rs[0]["truth_stderr"], rs[0]["truth_std"]
        for m in DIAGNOSTICS:  # rows of earlier versions may lack them
            vals = [r[m] for r in rs if r.get(m, "") != ""]
            agg[m] = float(np.mean(vals)) if vals else ""
        out.append(agg)
    return out


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def write(
    rows: list[dict[str, Any]], plots: Plots, args: Args, seconds: float, kept: int = 0, partial: bool = False
) -> None:
    """The tables of ``rows`` (the first ``kept`` of them from an earlier run) and the plots."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    write_csv(args.out_dir / "return_error.csv", agg, COLUMNS)
    write_csv(args.out_dir / "return_error_seeds.csv", rows, [*COLUMNS, "seed", "truth_stderr", "truth_std"])
    scatter(plots, args)
    head = (
        "| task | dataset | gamma | tokenizer | method | ground truth | NMSE | RMSE | Spearman | Q evals/s "
        "| reward NMSE | action info | action response "
    )
    head += "| seeds |"
    lines = [
        "# Return-estimation error on held-out episodes",
        "",
        f"Command: `{command_line(hide=('--note',))}`  ",
        machine_line(),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min"
        + ("  \n**--quick: tiny data, models and steps; figures not meaningful**" if args.quick else "")
        + ("  \n**partial: the run is still going; rows so far**" if partial else "")
        + (
            f"  \n{kept} per-seed rows kept from earlier runs (`--keep`): their commands are in "
            "the git history of this file"
            if kept and not args.note
            else ""
        )
        + (f"  \n{args.note}" if args.note else ""),
        "",
        f"States: {args.n_states} per dataset from held-out episodes. Ground truth `simulator`: "
        f"{args.rollouts} rollouts per state of the episode's behaviour policy from the restored physics "
        "state until gamma^H < 1e-3, past the time limit (mean standard error per table row below). "
        "`paper-truncated`: the next min(1/(1-gamma), 10) dataset rewards, the published code's target. "
        "NMSE = MSE / Var(true); mean +- std over seeds. Action info: nats/token of the true future that "
        "the true action explains over another row's; action response: mean Q(s, a_t) - Q(s, uniform "
        "action) of the pool estimate and the critic (empty: not measured by that run).",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in agg:
        lines.append(
            f"| {r['task']} | {r['dataset']} | {r['gamma']} | {r['tokenizer']} | {r['method']} | "
            f"{r['ground_truth']} (se {fmt(r['truth_stderr'], 2)}) | "
            f"{fmt(r['nmse'])} +- {fmt(r['nmse_std'], 2)} | "
            f"{fmt(r['rmse'])} | {fmt(r['spearman'])} | {fmt(r['evals_per_s'])} | "
            + "".join(f"{'' if r[m] == '' else fmt(r[m])} | " for m in DIAGNOSTICS)
            + f"{r['seeds']} |"
        )
    (args.out_dir / "return_error.md").write_text("\n".join(lines) + "\n")


def scatter(plots: Plots, args: Args) -> None:
    """One figure per (task, dataset, gamma, tokenizer): predicted against simulator Q, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for (task, kind, gamma, backend), pairs in plots.items():
        fig, axes = plt.subplots(1, len(pairs), figsize=(3 * len(pairs), 3), squeeze=False)
        for ax, (method, pred, true) in zip(axes[0], pairs, strict=True):
            ax.scatter(true, pred, s=6)
            lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(method, fontsize=9)
            ax.set_xlabel("true Q")
        axes[0][0].set_ylabel("predicted Q")
        fig.suptitle(f"{task} {kind} gamma {gamma} {backend}", fontsize=10)
        fig.tight_layout()
        fig.savefig(args.out_dir / f"return_error_{task}_{kind}_g{gamma}_{backend}.png", dpi=80)
        plt.close(fig)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(Args, argv, quick=quick, prog=prog)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = time.perf_counter()
    kept = kept_rows(args) if args.keep or args.report_only else []

    def save(rows: list[dict[str, Any]], plots: Plots, partial: bool = True) -> None:
        write([*kept, *rows], plots, args, time.perf_counter() - start, kept=len(kept), partial=partial)

    rows, plots = ([], {}) if args.report_only else run(args, save)
    save(rows, plots, partial=False)
    print(f"wrote {args.out_dir / 'return_error.md'}")


if __name__ == "__main__":
    main()
