"""Policy selection from offline data: writes results/policy_selection.md, .csv and .png.

For each dataset (walker-walk and cheetah-run ``mixed`` by default) and a set of policies with spread
returns (the shipped behaviour levels, stochastic as they collected the data and deterministic, and
the expert mixed with uniform actions at several rates), each estimator of
:mod:`voc_rl.selection` estimates every policy's discounted return from the dataset alone:

- ``voc``: the policy's occupancy model (one-step generative TD with its actions, warm-started
  from the behaviour's Monte-Carlo model), its sampled Q at the dataset's initial states;
- ``fqe``: fitted Q evaluation on the same tokens, warm-started from the behaviour's SARSA critic,
  for the same number of steps;
- ``behaviour-q``: the behaviour's occupancy model at (s_0, pi(s_0)), no policy-specific training;
- ``behaviour-value``: the dataset's discounted return from its initial states, for every policy.

Ground truth: each policy's discounted return in the simulator from ``--episodes`` fresh resets
(seeds 10,000+; the dataset used seeds below), with its standard error. Metrics per estimator and
seed (DOPE, arXiv 2103.16596): Spearman rank correlation, regret@1 and @3 over the spread of true
returns, and the mean absolute error over that spread; the cost per policy in CPU minutes.

    python benchmarks/policy_selection.py --data-root /work/data --runs /work/runs/selection
    python benchmarks/policy_selection.py --quick          # a tiny version in minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.checkpoint import save_json
from voc_rl.parts import SharedParts, collect_or_open
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.selection import (
    FINETUNE_STEPS,
    FINETUNE_TARGET_RATE,
    FQE_STEPS,
    METHODS,
    Evaluator,
    policy_actions,
    policy_from_spec,
    selection_metrics,
    true_returns,
)
from voc_rl.tokenizers.cache import token_view

POLICIES = (
    "random",
    "medium",
    "medium-det",
    "expert",
    "expert-det",
    "expert~0.25",
    "expert~0.5",
    "expert~0.75",
)
COLUMNS = ["dataset", "seed", "method", "policy", "estimate", "low", "high", "spread", "truth", "truth_se",
           "minutes"]  # fmt: skip
SUMMARY = ["dataset", "method", "seeds", "spearman", "regret@1", "regret@3", "abs_error", "min/policy"]


@dataclasses.dataclass(frozen=True)
class Args:
    datasets: tuple[str, ...] = ("walker-walk-mixed", "cheetah-run-mixed")
    """datasets as <task>-<kind>, collected if missing"""
    policies: tuple[str, ...] = POLICIES
    """the candidate policies (voc_rl.selection.policy_from_spec)"""
    methods: tuple[str, ...] = METHODS
    """estimators"""
    gamma: float = 0.99
    """discount of the returns estimated"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of the estimators (their behaviour models and fine-tunes)"""
    episodes: int = 90
    """episodes per dataset collected if missing"""
    truth_episodes: int = 30
    """simulator episodes per policy for its true return"""
    samples: int = 32
    """occupancy samples per initial state"""
    finetune_steps: int = FINETUNE_STEPS
    """generative TD steps per policy (voc)"""
    finetune_rate: float = FINETUNE_TARGET_RATE
    """EMA rate of the fine-tune's target model per step (voc)"""
    from_scratch: bool = False
    """voc: train each policy's occupancy model from a fresh one instead of the behaviour's"""
    fqe_steps: int = FQE_STEPS
    """TD steps per policy (fqe)"""
    tokenizer: str = "vqvae"
    """tokenizer backend (16 tokens per frame, the agents' geometry)"""
    tok_size: str = "small"
    """tokenizer size preset"""
    tok_steps: int | None = 1000
    """tokenizer training steps"""
    size: str = "small"
    """size preset of the occupancy models and critics"""
    occ_steps: int | None = 2000
    """steps of the behaviour's occupancy model (Monte-Carlo)"""
    critic_steps: int | None = 2000
    """steps of the behaviour's SARSA critic"""
    data_root: Path = Path("datasets")
    """datasets root"""
    runs: Path = Path("runs/policy_selection")
    """folder of the trained parts and the simulator's returns, reused by later runs"""
    out_dir: Path = Path("results")
    """folder of the tables and the plot"""
    rows_from: tuple[Path, ...] = ()
    """train and evaluate nothing: write the tables from these row CSVs (of runs on other datasets)"""
    note: str = ""
    """a line for the table's header"""
    quiet: bool = False
    """no progress bars"""
    quick: bool = False
    """tiny everything in a scratch folder: checks the pipeline in minutes"""


def quick() -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="voc_rl_selection_quick_"))
    return {
        "datasets": ("cheetah-run-mixed",),
        "policies": ("random", "medium", "expert-det"),
        "seeds": (0,),
        "episodes": 3,
        "truth_episodes": 2,
        "samples": 4,
        "finetune_steps": 20,
        "fqe_steps": 20,
        "tokenizer": "titok",
        "tok_size": "tiny",
        "size": "tiny",
        **dict.fromkeys(("tok_steps", "occ_steps", "critic_steps"), 20),
        "data_root": scratch / "datasets",
        "runs": scratch / "runs",
        "out_dir": scratch / "results",
    }


def truths(args: Args, ds: Any, name: str) -> dict[str, tuple[float, float]]:
    """{policy: (mean, standard error)} of the simulator's discounted returns, cached in --runs."""
    path = args.runs / f"truth_{name}_g{args.gamma}_n{args.truth_episodes}.json"
    cache: dict[str, list[float]] = json.loads(path.read_text()) if path.exists() else {}
    for spec in args.policies:
        if spec not in cache:
            returns = true_returns(policy_from_spec(spec, ds.task), ds, args.gamma, args.truth_episodes)
            cache[spec] = [float(returns.mean()), float(returns.std(ddof=1) / np.sqrt(len(returns)))]
            path.parent.mkdir(parents=True, exist_ok=True)
            save_json(cache, path, indent=1)
            if not args.quiet:
                print(f"{name} {spec}: true discounted return {cache[spec][0]:.2f} +- {cache[spec][1]:.2f}")
    return {s: (v[0], v[1]) for s, v in cache.items()}


def run(args: Args) -> list[dict[str, Any]]:
    steps = {"tokenizer": args.tok_steps, "occupancy": args.occ_steps, "critic": args.critic_steps}
    parts = SharedParts(args.runs, args.tok_size, args.size, steps={p: n for p, n in steps.items() if n},
                        progress=not args.quiet)  # fmt: skip
    rows: list[dict[str, Any]] = []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        task, kind = name.rsplit("-", 1)
        folder = name + ("-quick" if args.quick else "")
        ds = collect_or_open(args.data_root, task, kind, args.episodes, folder, progress=not args.quiet)
        truth = truths(args, ds, name)
        view = token_view(ds, parts.tokenizer(ds, args.tokenizer), progress=not args.quiet)
        tables = {spec: policy_actions(policy_from_spec(spec, task), ds) for spec in args.policies}
        for seed in args.seeds:
            ev = Evaluator(view, parts, args.gamma, seed, args.finetune_steps, args.samples,
                           target_rate=args.finetune_rate, fqe_steps=args.fqe_steps,
                           warm_start=not args.from_scratch)  # fmt: skip
            for spec in args.policies:
                for e in ev.estimate(spec, tables[spec], args.methods):
                    true, se = truth[spec]
                    rows.append({
                        "dataset": name, "seed": seed, "method": e.method, "policy": spec,
                        "estimate": round(e.value, 3), "low": round(e.low, 3), "high": round(e.high, 3),
                        "spread": round(e.spread, 3), "truth": round(true, 3), "truth_se": round(se, 3),
                        "minutes": round(e.seconds / 60, 2),
                    })  # fmt: skip
                    if not args.quiet:
                        print(f"{name} s{seed} {e.method:15s} {spec:12s} {e.value:8.2f} (true {true:.2f})")
                write_csv(args.out_dir / "policy_selection_rows.csv", rows, COLUMNS)  # partial results
    return rows


def read_rows(paths: tuple[Path, ...]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        with open(path) as f:
            for r in csv.DictReader(f):
                numbers = {k: float(r[k]) for k in COLUMNS[4:]}
                rows.append({**r, **numbers, "seed": int(r["seed"])})
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["dataset"], r["method"]) for r in rows}, key=lambda k: (k[0], METHODS.index(k[1])))
    for dataset, method in keys:
        mine = [r for r in rows if (r["dataset"], r["method"]) == (dataset, method)]
        seeds = sorted({r["seed"] for r in mine})
        per_seed = []
        for seed in seeds:
            these = [r for r in mine if r["seed"] == seed]
            per_seed.append(selection_metrics([r["estimate"] for r in these], [r["truth"] for r in these]))
        n_policies = len({r["policy"] for r in mine})

        def avg(key: str, ms: list[dict[str, float]] = per_seed) -> str:
            vals = [m[key] for m in ms]
            if any(np.isnan(vals)):
                return "n/a"
            return f"{np.mean(vals):.2f}" + (
                f" ({', '.join(f'{v:.2f}' for v in vals)})" if len(vals) > 1 else ""
            )

        out.append({
            "dataset": dataset, "method": method, "seeds": len(seeds), "spearman": avg("spearman"),
            "regret@1": avg("regret@1"), "regret@3": avg("regret@3"), "abs_error": avg("abs_error"),
            "min/policy": f"{sum(r['minutes'] for r in mine) / max(1, len(seeds) * n_policies):.1f}",
        })  # fmt: skip
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == dataset]
        lo = min(min(r["truth"], r["estimate"]) for r in mine)
        hi = max(max(r["truth"], r["estimate"]) for r in mine)
        ax.plot([lo, hi], [lo, hi], color="0.7", lw=1)
        for method in methods:
            these = [r for r in mine if r["method"] == method]
            ax.scatter([r["truth"] for r in these], [r["estimate"] for r in these], s=18, label=method)
        ax.set(title=dataset, xlabel="true discounted return (simulator)", ylabel="estimate")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(args: Args, rows: list[dict[str, Any]], seconds: float) -> None:
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "policy_selection.csv", rows, COLUMNS)
    (out / "policy_selection_rows.csv").unlink(missing_ok=True)
    plot(rows, out / "policy_selection.png")
    summary = summarise(rows)
    lines = [
        "# Policy selection from offline data (off-policy evaluation)",
        "",
        f"Command: `{command_line(['--note'])}`  ",
        f"Date (UTC): {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}; "
        + (
            "tables rewritten from --rows-from  " if args.rows_from else f"whole run {seconds / 60:.0f} min  "
        ),
        machine_line(torch.get_num_threads()),
        *([f"Note: {args.note}  "] if args.note else []),
        "",
        f"Discounted return at gamma {args.gamma} from the dataset's initial states; {len(args.policies)} "
        f"policies per dataset; truth: {args.truth_episodes} simulator episodes per policy. Metrics "
        "(DOPE): Spearman rank correlation with the true returns, regret@k over the spread of true "
        "returns, mean absolute error over that spread; the mean over seeds, each seed in brackets. "
        "`min/policy`: training and estimation minutes per policy on one thread (the behaviour's "
        "shared models not included).",
        "",
        *markdown_table(summary, SUMMARY),
        "",
        "## Every policy",
        "",
        *markdown_table(rows, COLUMNS),
        "",
    ]
    (out / "policy_selection.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(Args, argv, quick=quick, prog=prog)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = time.perf_counter()
    rows = read_rows(args.rows_from) if args.rows_from else run(args)
    write(args, rows, time.perf_counter() - start)
    print((args.out_dir / "policy_selection.md").read_text())


if __name__ == "__main__":
    main()
