"""One occupancy model, every reward of a domain: writes results/many_rewards.md, .csv and .png.

For each dataset (walker-walk ``mixed``, cheetah-run ``mixed`` by default) and each task of its
domain (:data:`voc_rl.task_rewards.TASKS`: walker stand / walk / run; cheetah run / walk and the
off-support run-backward and flip), it compares on held-out states, against the simulator:

- ``sample`` and ``pool``: the VOC's Q from ONE occupancy model per (gamma, seed), trained once, with
  a reward head per task (the dataset's own head trains beside the model; each other task's head
  starts from it and fine-tunes alone on the relabelled rewards for ``transfer_steps``,
  ``voc_rl.parts.fit_reward_head``). Every task's Q comes
  from the same sampled futures and the same pool weights;
- ``td-critic``: a SARSA critic trained for that task alone, on the same tokens.

Ground truth: ``simulator_q(..., tasks=...)``: the behaviour policy's rollouts from the restored
states, each scored with every task's reward (the same states and trajectories for every task).
Datasets without a task's rewards are relabelled first (``voc-rl dataset relabel``).

Cost columns: training minutes of the shared occupancy model (with its own head), of each other
task's reward head, and of each task's critic (one thread; parts reused from ``--runs`` keep the
minutes recorded when they trained, in ``train_seconds.json``). ``head / critic`` is the marginal
cost of one more task for the VOC over that of one more critic.

    python benchmarks/many_rewards.py --data-root /work/data --gammas 0.99 --seeds 0 1
    python benchmarks/many_rewards.py --quick                 # a tiny version in minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import functools
import itertools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.checkpoint import save_json
from voc_rl.data.dataset import reward_manifest
from voc_rl.evaluation import Models, nmse, q_estimates, reward_nmse, rmse, spearman, states_of
from voc_rl.ground_truth import simulator_q
from voc_rl.parts import SharedParts, collect_or_open
from voc_rl.report import command_line, machine_line, write_csv
from voc_rl.task_rewards import TASKS, other_tasks, relabel
from voc_rl.tokenizers.cache import token_view
from voc_rl.value import stack_rewards

COLUMNS = [
    "dataset", "task", "on_support", "gamma", "method", "n_states", "nmse", "rmse", "spearman",
    "reward_nmse", "truth_std", "truth_stderr", "train_min",
]  # fmt: skip
VOC = ("sample", "pool")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Args:
    datasets: tuple[str, ...] = ("walker-walk-mixed", "cheetah-run-mixed")
    """datasets as <task>-<kind>, collected if missing; every task of their domain is scored"""
    tasks: tuple[str, ...] = ()
    """only these tasks (default: every task of each dataset's domain)"""
    gammas: tuple[float, ...] = (0.9, 0.99)
    """discounts"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of the occupancy models, heads and critics"""
    n_states: int = 99
    """held-out states per dataset"""
    episodes: int = 200
    """episodes per dataset collected if missing"""
    rollouts: int = 4
    """simulator rollouts per state"""
    processes: int = 1
    """simulator processes"""
    samples: int = 32
    """N of the sample estimator"""
    pool_actions: int = 8
    """K of the pool estimator"""
    pool_size: int = 64
    """futures in the pool shared by the K actions"""
    tokenizer: str = "vqvae"
    """tokenizer backend (16 tokens per frame, the agents' geometry)"""
    tok_size: str = "small"
    """tokenizer size preset"""
    tok_steps: int | None = 1000
    """tokenizer training steps"""
    size: str = "small"
    """size preset of the occupancy models, heads, prior and critics"""
    occ_steps: int | None = 1500
    """occupancy-model training steps (its own head trains as many; another task's head fine-tunes a
    tenth of them from it, at least 200)"""
    critic_steps: int | None = 4000
    """TD-critic training steps"""
    bc_steps: int | None = 1000
    """behaviour-cloning prior training steps (the pool's other candidate actions)"""
    data_root: Path = Path("datasets")
    """datasets root"""
    runs: Path = Path("runs/many_rewards")
    """folder of the trained parts, reused by later runs"""
    out_dir: Path = Path("results")
    """folder of the tables and the plot"""
    keep: bool = False
    """keep the rows of --out-dir's many_rewards_seeds.csv that this run does not redo (by dataset,
    gamma and seed)"""
    report_only: bool = False
    """train and evaluate nothing: rewrite the tables from --out-dir's many_rewards_seeds.csv"""
    note: str = ""
    """a line for the table's header"""
    quiet: bool = False
    """no progress bars"""
    quick: bool = False
    """tiny everything in a scratch folder: checks the pipeline in minutes"""


def quick() -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="voc_rl_many_rewards_quick_"))
    return {
        "datasets": ("walker-walk-mixed",),
        "gammas": (0.9,),
        "seeds": (0,),
        "n_states": 8,
        "episodes": 3,
        "rollouts": 2,
        "samples": 4,
        "pool_actions": 2,
        "pool_size": 4,
        "tokenizer": "titok",
        "tok_size": "tiny",
        "size": "tiny",
        **dict.fromkeys(("tok_steps", "occ_steps", "critic_steps", "bc_steps"), 20),
        "data_root": scratch / "datasets",
        "runs": scratch / "runs",
        "out_dir": scratch / "results",
    }


class Timings:
    """Training seconds per part folder, kept in ``<runs>/train_seconds.json``: a part reused from an
    earlier run keeps the seconds it took when it trained."""

    def __init__(self, runs: Path):
        self.path = runs / "train_seconds.json"
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def fit(self, folder: Path, make: Callable[[], T]) -> tuple[T, float | None]:
        """``make()``'s part (trained in ``folder``) and its training seconds: None where the folder
        existed and was not timed here (trained by another tool, or resumed part way)."""
        existed, start = folder.exists(), time.perf_counter()
        part = make()
        if not existed:
            seconds = round(time.perf_counter() - start, 1)
            # another run on the same --runs may have written since: merge, then replace atomically
            on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
            self.seconds = {**self.seconds, **on_disk, folder.name: seconds}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_json(self.seconds, self.path, indent=1)
        return part, self.seconds.get(folder.name)


def run(args: Args, save: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    steps = {"tokenizer": args.tok_steps, "prior": args.bc_steps, "occupancy": args.occ_steps,
             "critic": args.critic_steps}  # fmt: skip
    parts = SharedParts(args.runs, args.tok_size, args.size, steps={p: n for p, n in steps.items() if n},
                        progress=not args.quiet)  # fmt: skip
    timings = Timings(args.runs)
    for name in args.datasets:
        evaluate_dataset(name, args, parts, timings, rows, save)
    return rows


def evaluate_dataset(
    name: str, args: Args, parts: SharedParts, timings: Timings, rows: list, save: Callable
) -> None:
    own, kind = name.rsplit("-", 1)
    folder = name + ("-quick" if args.quick else "")
    ds = collect_or_open(args.data_root, own, kind, args.episodes, folder, progress=not args.quiet)
    tasks = [t for t in [own, *other_tasks(ds)] if not args.tasks or t in args.tasks]
    missing = [t for t in tasks if t != own and t not in reward_manifest(ds)["tasks"]]
    if missing:
        relabel(ds, missing, progress=not args.quiet)
    _, val_eps = ds.split(0.1, 0)
    idx = states_of(ds, val_eps, args.n_states, seed=1)  # the return-error benchmark's states
    sim = {"processes": args.processes, "tasks": tasks, "progress": not args.quiet}
    truth = simulator_q(ds, idx, args.gammas, args.rollouts, **sim)
    view = token_view(ds, parts.tokenizer(ds, args.tokenizer), progress=not args.quiet)
    prior = parts.prior(view)
    for gamma, seed in itertools.product(args.gammas, args.seeds):
        at = {"gamma": gamma, "seed": seed}
        (occ, own_head), occ_s = timings.fit(
            parts.folder("occupancy", view, **at), functools.partial(parts.occupancy, view, gamma, seed)
        )
        heads, head_s, critics, critic_s = {own: own_head}, {}, {}, {}
        for task in tasks[1:]:
            heads[task], head_s[task] = timings.fit(
                parts.folder("reward", view, **at, task=task),
                functools.partial(parts.reward_head, view, gamma, seed, task, own_head),
            )
        for task in tasks:
            critics[task], critic_s[task] = timings.fit(
                parts.folder("critic", view, **at, task=task),
                functools.partial(parts.critic, view, gamma, seed, None if task == own else task),
            )
        models = Models(occ, stack_rewards([heads[t] for t in tasks]), prior)
        voc = q_estimates(
            view, idx, gamma, models, VOC, samples=args.samples, pool_actions=args.pool_actions,
            pool_size=args.pool_size, seed=seed,
        )  # fmt: skip
        for k, task in enumerate(tasks):
            data = view.for_task(task)
            critic_q = q_estimates(data, idx, gamma, Models(critic=critics[task]), ["td-critic"])
            q_true, q_err = truth.at(gamma, task)
            head_nmse = reward_nmse(data, idx, occ, heads[task])
            preds = {m: voc[m][0][:, k] for m in VOC} | {"td-critic": critic_q["td-critic"][0]}
            for method, pred in preds.items():
                seconds = occ_s if method in VOC else critic_s[task]
                rows.append({
                    "dataset": name, "task": task, "on_support": TASKS[task].on_support, "gamma": gamma,
                    "method": method, "seed": seed, "n_states": len(idx), "nmse": nmse(pred, q_true),
                    "rmse": rmse(pred, q_true), "spearman": spearman(pred, q_true),
                    "reward_nmse": head_nmse if method in VOC else "",
                    "truth_std": float(q_true.std()), "truth_stderr": float(np.mean(q_err)),
                    "train_min": _minutes(seconds), "head_min": _minutes(head_s.get(task)),
                })  # fmt: skip
                print(f"{name} {task} gamma {gamma} seed {seed} {method}: NMSE {rows[-1]['nmse']:.3f}")
        save(rows)


def _minutes(seconds: float | None) -> float | str:
    return "" if seconds is None else seconds / 60


# ---------------------------------------------------------------------------------------------- output
KEYS = ("dataset", "task", "on_support", "gamma", "method")
SEED_COLUMNS = [*COLUMNS, "seed", "head_min"]


def kept_rows(args: Args) -> list[dict[str, Any]]:
    path = args.out_dir / "many_rewards_seeds.csv"
    if not path.exists():
        return []
    grid = itertools.product(args.datasets, args.gammas, args.seeds)
    redo = set() if args.report_only else set(grid)
    out = []
    with path.open() as f:
        for r in csv.DictReader(f):
            text = ("dataset", "task", "method", "on_support")
            row: dict[str, Any] = {k: (v if k in text or v == "" else float(v)) for k, v in r.items()}
            row["on_support"] = r["on_support"] == "True"
            row["seed"], row["n_states"] = int(row["seed"]), int(row["n_states"])
            if (row["dataset"], row["gamma"], row["seed"]) not in redo:
                out.append(row)
    return out


def mean(rows: list[dict[str, Any]], key: str) -> float | str:
    vals = [r[key] for r in rows if r.get(key, "") != ""]
    return float(np.mean(vals)) if vals else ""


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        agg: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        agg["n_states"], agg["seeds"] = rs[0]["n_states"], len(rs)
        for m in (*COLUMNS[6:], "head_min"):
            agg[m] = mean(rs, m)
        agg["nmse_std"] = float(np.std([r["nmse"] for r in rs]))
        out.append(agg)
    # the VOC's NMSE over the task's own critic's, at the same (dataset, task, gamma)
    critic = {(a["dataset"], a["task"], a["gamma"]): a["nmse"] for a in out if a["method"] == "td-critic"}
    for a in out:
        c = critic.get((a["dataset"], a["task"], a["gamma"]))
        a["vs_critic"] = a["nmse"] / c if c and a["method"] in VOC else ""
    return out


def fmt(x: float | str, digits: int = 3) -> str:
    return x if isinstance(x, str) else f"{x:.{digits}g}"


def costs(agg: list[dict[str, Any]]) -> list[str]:
    """Per dataset: minutes of the occupancy model, of a reward head and of a critic, and the ratio."""
    lines = []
    for name in dict.fromkeys(a["dataset"] for a in agg):
        rs = [a for a in agg if a["dataset"] == name]
        occ = [a["train_min"] for a in rs if a["method"] == "sample" and a["train_min"] != ""]
        head = [a["head_min"] for a in rs if a["method"] == "sample" and a["head_min"] != ""]
        critic = [a["train_min"] for a in rs if a["method"] == "td-critic" and a["train_min"] != ""]
        if occ and head and critic:
            h, c = float(np.mean(head)), float(np.mean(critic))
            lines.append(
                f"- {name}: occupancy model (with its own task's head) {np.mean(occ):.1f} min; one more "
                f"task: a reward head {60 * h:.1f} s, a critic {60 * c:.1f} s: **head / critic "
                + (f"{h / c:.3f}**" if c > 0 else "n/a** (a critic timed at 0 s)")
            )
    return lines


def write(rows: list[dict[str, Any]], args: Args, seconds: float, kept: int, partial: bool) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    write_csv(
        args.out_dir / "many_rewards.csv", agg, [*COLUMNS, "seeds", "nmse_std", "vs_critic", "head_min"]
    )
    write_csv(args.out_dir / "many_rewards_seeds.csv", rows, SEED_COLUMNS)
    plot(agg, args)
    head = ("| dataset | task | support | gamma | method | NMSE | vs own critic | Spearman | reward NMSE "
            "| true Q std (se) | train min | seeds |")  # fmt: skip
    lines = [
        "# One occupancy model, every reward of a domain",
        "",
        f"Command: `{command_line(hide=('--note',))}`  ",
        machine_line(),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min"
        + ("  \n**--quick: tiny data, models and steps; figures not meaningful**" if args.quick else "")
        + ("  \n**partial: the run is still going; rows so far**" if partial else "")
        + (f"  \n{kept} per-seed rows kept from earlier runs (`--keep`)" if kept else "")
        + (f"  \n{args.note}" if args.note else ""),
        "",
        f"{args.n_states} held-out states per dataset (the return-error benchmark's). Ground truth: "
        f"{args.rollouts} simulator rollouts per state of the behaviour policy, every task's reward summed "
        "on the same rollouts. `sample` / `pool`: one occupancy model per (gamma, seed) with one reward head "
        "per task (another task's head starts from the one trained with the model and fine-tunes for a tenth "
        "of its steps, at least 200); `td-critic`: a SARSA critic trained for that task alone. "
        "NMSE = MSE / Var(true Q), mean over seeds; `vs own critic`: the VOC's NMSE over that task's "
        "critic's (<= 1.5 is the target on every on-support task at gamma 0.99); reward NMSE: the task's "
        "head on the same states' r_t. `off` support: no behaviour policy of the data does the task (its "
        "Q is near 0 everywhere).",
        "",
        "## Cost of one more task",
        "",
        *(costs(agg) or ["- (not measured: parts reused from runs that did not time them)"]),
        "",
        "## Q estimation per task",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for a in agg:
        lines.append(
            f"| {a['dataset']} | {a['task']} | {'on' if a['on_support'] else 'off'} | {a['gamma']} "
            f"| {a['method']} | {fmt(a['nmse'])} +- {fmt(a['nmse_std'], 2)} | {fmt(a['vs_critic'], 2)} "
            f"| {fmt(a['spearman'])} "
            f"| {fmt(a['reward_nmse'])} | {fmt(a['truth_std'])} ({fmt(a['truth_stderr'], 2)}) "
            f"| {fmt(a['train_min'], 2)} | {a['seeds']} |"
        )
    (args.out_dir / "many_rewards.md").write_text("\n".join(lines) + "\n")


def plot(agg: list[dict[str, Any]], args: Args) -> None:
    """NMSE per task, VOC (sample, pool) beside each task's critic, one panel per (dataset, gamma)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((a["dataset"], a["gamma"]) for a in agg))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    methods = ("sample", "pool", "td-critic")
    for ax, (name, gamma) in zip(axes[0], panels, strict=True):
        rs = [a for a in agg if (a["dataset"], a["gamma"]) == (name, gamma)]
        tasks = list(dict.fromkeys(a["task"] for a in rs))
        for j, method in enumerate(methods):
            nmse_of = {a["task"]: a["nmse"] for a in rs if a["method"] == method}
            vals = [nmse_of.get(t, np.nan) for t in tasks]
            ax.bar(np.arange(len(tasks)) + (j - 1) * 0.27, vals, width=0.27, label=method)
        labels = [t.split("-", 1)[1] + ("" if TASKS[t].on_support else "\n(off)") for t in tasks]
        ax.set_xticks(np.arange(len(tasks)), labels, fontsize=8)
        ax.set_title(f"{name}, gamma {gamma}", fontsize=9)
        ax.set_ylabel("NMSE vs simulator")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out_dir / "many_rewards.png", dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(Args, argv, quick=quick, prog=prog)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = time.perf_counter()
    kept = kept_rows(args) if args.keep or args.report_only else []

    def save(rows: list[dict[str, Any]], partial: bool = True) -> None:
        write([*kept, *rows], args, time.perf_counter() - start, len(kept), partial)

    rows = [] if args.report_only else run(args, save)
    save(rows, partial=False)
    print(f"wrote {args.out_dir / 'many_rewards.md'}")


if __name__ == "__main__":
    main()
