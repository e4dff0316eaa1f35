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
the same states) on the rows that use it.

CSV columns: task,dataset,gamma,tokenizer,method,n_states,nmse,rmse,spearman,evals_per_s,ground_truth,
reward_nmse (means over seeds; ``return_error_seeds.csv`` has every seed, the markdown mean +- std).

    voc-rl bench return-error --quick                    # a tiny version in minutes
    python benchmarks/return_error.py --data-root datasets --tasks cheetah-run --gammas 0.9 0.99
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import csv
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.critic import CriticConfig, TDCritic, train_td_critic
from voc_rl.data import PixelDataset, open_dataset
from voc_rl.data.collect import collect
from voc_rl.ground_truth import simulator_q
from voc_rl.occupancy import OccupancyConfig, OccupancyModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.paths import resolve_args
from voc_rl.prior import BCConfig, BCPolicy, train_bc
from voc_rl.registry import AGENT_TOKENS
from voc_rl.report import command_line, machine_line, write_csv
from voc_rl.tokenizers import Tokenizer, make_tokenizer
from voc_rl.tokenizers.cache import token_view
from voc_rl.tokenizers.train import fit
from voc_rl.value import density_q, pool_q, rollout_q, sample_q

COLUMNS = [
    "task", "dataset", "gamma", "tokenizer", "method", "n_states",
    "nmse", "rmse", "spearman", "evals_per_s", "ground_truth", "reward_nmse",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- metrics
def nmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(((pred - true) ** 2).mean() / max(true.var(), 1e-12))


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (pred, true)]
    # a constant has no ranks (np.ptp, not std: the std of a constant float array can be 1e-16)
    return float(np.corrcoef(*ranks)[0, 1]) if np.ptp(pred) > 0 and np.ptp(true) > 0 else float("nan")


def paper_target(ds: PixelDataset, index: np.ndarray, gamma: float) -> np.ndarray:
    """The published code's target: the next min(1/(1-gamma), 10) dataset rewards, discounted."""
    steps = min(round(1 / (1 - gamma)), 10)
    ep = ds.arrays["episode"][index]
    end = ds.ep_start[ep] + ds.ep_len[ep]  # reward of frame i exists for i < end
    out = np.zeros(len(index))
    for k in range(steps):
        i = index + k
        out += np.where(i < end, gamma**k * ds.arrays["reward"][np.minimum(i, end - 1)], 0.0)
    return out


# ---------------------------------------------------------------------------------------------- data
def dataset_for(task: str, kind: str, args: argparse.Namespace) -> PixelDataset:
    name = f"{task}-{kind}" + ("-quick" if args.quick else "")
    path = args.data_root / "voc_rl" / f"{name}-v0"
    if not path.exists():
        collect(task, kind, episodes=args.episodes, out=args.data_root, name=name, progress=not args.quiet)
    return open_dataset(path)


def states_of(ds: PixelDataset, episodes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` flat indices of frames with an action (t < T) in ``episodes``, sorted."""
    frames = np.concatenate([ds.ep_start[e] + np.arange(ds.ep_len[e]) for e in episodes])
    return np.sort(np.random.default_rng(seed).choice(frames, size=min(n, len(frames)), replace=False))


# ---------------------------------------------------------------------------------------------- models
def tokenizer_for(ds: PixelDataset, backend: str, args: argparse.Namespace) -> Path:
    tokens = "" if args.tokens == "preset" else "_16"
    out = args.runs / f"{ds.meta['name']}__tok_{backend}_{args.tok_size}{tokens}"
    ckpt = out / "tokenizer.pt"
    extra: dict[str, Any] = {"action_dim": int(ds.arrays["action"].shape[1])} if backend == "musik" else {}
    if args.tokens == "agent":  # the agents' geometry: 16 tokens per 64 px frame
        extra.update(AGENT_TOKENS[backend])
    if args.tok_steps:
        extra["steps"] = args.tok_steps
    tok = make_tokenizer(backend, size=args.tok_size, **extra)
    if not ckpt.exists() or Tokenizer.load(ckpt).step < tok.config.steps:
        fit(tok, ds, seed=0, out=out, progress=not args.quiet)
    return ckpt


def occupancy_for(view: PixelDataset, gamma: float, seed: int, args: argparse.Namespace, **fields: Any):
    steps = {"steps": args.occ_steps} if args.occ_steps else {}
    fields = {"n_step": args.n_step, **fields}
    config = OccupancyConfig.for_dataset(view, args.occ_size, gamma=gamma, **steps, **fields)
    horizon = "mc" if config.n_step is None else config.n_step
    key = view.meta["tokens"]["key"][:8]
    name = f"{view.meta['name']}__{config.tokenizer}_{key}__occ_g{gamma}_n{horizon}_s{seed}_{args.occ_size}"
    out = args.runs / name
    if (out / "occupancy.pt").exists():
        model, reward = OccupancyModel.load(out / "occupancy.pt", n_step=config.n_step)
        if model.step >= config.steps:
            return model, reward
    torch.manual_seed(seed)
    model = OccupancyModel(config)
    _, reward = train_occupancy(model, view, seed=seed, out=out, progress=not args.quiet)
    return model.eval(), reward


def critic_for(view: PixelDataset, gamma: float, seed: int, args: argparse.Namespace) -> TDCritic:
    steps = {"steps": args.critic_steps} if args.critic_steps else {}
    config = CriticConfig.for_dataset(view, args.occ_size, gamma=gamma, **steps)
    torch.manual_seed(seed)
    critic = TDCritic(config)
    out = args.runs / f"{view.meta['name']}__{view.meta['tokens']['backend']}__critic_g{gamma}_s{seed}"
    train_td_critic(critic, view, seed=seed, out=out, progress=not args.quiet)
    return critic.eval()


def prior_for(view: PixelDataset, args: argparse.Namespace) -> BCPolicy:
    steps = {"steps": args.bc_steps} if args.bc_steps else {}
    torch.manual_seed(0)
    policy = BCPolicy(BCConfig.for_dataset(view, args.occ_size, **steps))
    out = args.runs / f"{view.meta['name']}__{view.meta['tokens']['backend']}__bc"
    train_bc(policy, view, seed=0, out=out, progress=not args.quiet)
    return policy.eval()


# ---------------------------------------------------------------------------------------------- evaluation
VOC_METHODS = ("sample", "density", "pool", "paper-style")  # the rows that read the reward model


@torch.no_grad()
def reward_nmse(view: PixelDataset, idx: np.ndarray, occ: OccupancyModel, reward: Any) -> float:
    """Held-out NMSE of the reward model: r(s_{t+1}) against the dataset's r_t at the states ``idx``."""
    c = occ.config
    tokens = torch.from_numpy(view.stacks(idx + 1, c.frame_stack)[:, -c.n_target :].astype(np.int64))
    return nmse(reward(tokens).numpy().astype(np.float64), view.arrays["reward"][idx].astype(np.float64))


def timed(fn: Callable[[], torch.Tensor | np.ndarray], n: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    pred = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return pred.astype(np.float64), n / (time.perf_counter() - start)


def batched(fn: Callable[[slice], torch.Tensor], n: int, size: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)])


def estimates(
    view: PixelDataset,
    idx: np.ndarray,
    train_idx: np.ndarray,
    gamma: float,
    seed: int,
    models: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, tuple[np.ndarray, float]]:
    """{method: (predictions (n,), Q evaluations per second)} for the states ``idx``."""
    occ, reward = models["occ"], models["reward"]
    c = occ.config
    ctx = torch.from_numpy(view.stacks(idx, c.frame_stack).astype(np.int64))
    act = torch.from_numpy(view.arrays["action"][idx])
    n, g = len(idx), torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    cand_idx = rng.choice(train_idx, size=min(args.candidates, len(train_idx)), replace=False)
    cands = torch.from_numpy(view.stacks(cand_idx, c.frame_stack)[:, -c.n_target :].astype(np.int64))
    prior: BCPolicy = models["prior"]
    world, world_reward, critic = models["world"], models["world_reward"], models["critic"]

    def by_sampling(s: slice) -> torch.Tensor:
        return sample_q(occ, reward, ctx[s], act[s], n=args.samples, generator=g)

    def by_density(s: slice) -> torch.Tensor:
        return density_q(occ, reward, ctx[s], act[s], cands)

    def pooled(s: slice) -> torch.Tensor:
        others = prior.sample(ctx[s], args.pool_actions - 1, generator=g)  # (b, K-1, A)
        actions = torch.cat([act[s][:, None], others], dim=1)
        return pool_q(occ, reward, ctx[s], actions, pool_size=args.pool_size, generator=g)[:, 0]

    def paper_style(s: slice) -> torch.Tensor:
        return sample_q(occ, reward, ctx[s], act[s], n=100, top_k=50, generator=g)

    def policy(tokens: torch.Tensor) -> torch.Tensor:
        return prior.sample(tokens, 1, generator=g)[:, 0]

    def world_model(horizon: int) -> Callable[[slice], torch.Tensor]:
        def fn(s: slice) -> torch.Tensor:
            return rollout_q(
                world, world_reward, policy, ctx[s], act[s], gamma, horizon, n=args.rollouts_wm, generator=g
            )

        return fn

    methods: dict[str, tuple[Callable[[slice], torch.Tensor], int]] = {
        "sample": (by_sampling, 16),
        "density": (by_density, 16),
        "pool": (pooled, 8),
        "paper-style": (paper_style, 8),
        "td-critic": (lambda s: critic.q_values(ctx[s], act[s]), 256),
        "wm-rollout-1x": (world_model(math.ceil(1 / (1 - gamma))), 32),
        "wm-rollout-3x": (world_model(math.ceil(3 / (1 - gamma))), 32),
    }
    out = {
        name: timed(lambda fn=fn, size=size: batched(fn, n, size), n)
        for name, (fn, size) in methods.items()
        if name not in args.skip
    }
    out["mean"] = timed(lambda: np.full(n, models["train_mean"]), n)
    return out


Plots = dict[tuple, list[tuple[str, np.ndarray, np.ndarray]]]  # (task, dataset, gamma, tokenizer) -> pairs


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Plots]:
    """Per-seed rows of metrics, and (method, predicted, true) of the first seed for the plots."""
    rows: list[dict[str, Any]] = []
    plots: Plots = {}
    for task in args.tasks:
        for kind in args.datasets:
            evaluate_dataset(task, kind, args, rows, plots)
    return rows, plots


def evaluate_dataset(task: str, kind: str, args: argparse.Namespace, rows: list, plots: Plots) -> None:
    ds = dataset_for(task, kind, args)
    train_eps, val_eps = ds.split(0.1, 0)
    idx = states_of(ds, val_eps, args.n_states, seed=1)
    train_idx = states_of(ds, train_eps, 10**9, seed=2)
    mean_idx = states_of(ds, train_eps, max(args.n_states // 2, 8), seed=3)
    sim = {"rollouts": args.rollouts, "processes": args.processes, "progress": not args.quiet}
    truth, train_truth = (
        simulator_q(ds, idx, args.gammas, **sim),
        simulator_q(ds, mean_idx, args.gammas, **sim),
    )
    for backend in args.tokenizers:
        view = token_view(ds, tokenizer_for(ds, backend, args), progress=not args.quiet)
        world, world_reward = occupancy_for(view, 0.0, 0, args)
        prior = prior_for(view, args)
        for gamma in args.gammas:
            q_true, q_err = truth.at(gamma)
            targets = {"simulator": q_true, "paper-truncated": paper_target(ds, idx, gamma)}
            for seed in args.seeds:
                occ, reward = occupancy_for(view, gamma, seed, args)
                r_nmse = reward_nmse(view, idx, occ, reward)
                models = {
                    "occ": occ,
                    "reward": reward,
                    "world": world,
                    "world_reward": world_reward,
                    "prior": prior,
                    "critic": critic_for(view, gamma, seed, args),
                    "train_mean": float(train_truth.at(gamma)[0].mean()),
                }
                for method, (pred, rate) in estimates(
                    view, idx, train_idx, gamma, seed, models, args
                ).items():
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
                                "rmse": float(np.sqrt(((pred - true) ** 2).mean())),
                                "spearman": spearman(pred, true),
                                "evals_per_s": rate,
                                "ground_truth": truth_name,
                                "truth_stderr": float(np.mean(q_err)),
                                "truth_std": float(true.std()),
                                "reward_nmse": r_nmse if method in VOC_METHODS else "",
                            }
                        )
                        print(f"{task} {kind} gamma {gamma} {backend} {method} seed {seed} vs {truth_name}: "
                              f"NMSE {rows[-1]['nmse']:.3f}", flush=True)  # fmt: skip
                write(
                    rows, plots, args, time.perf_counter() - args.start, partial=True
                )  # a long run leaves results


# ---------------------------------------------------------------------------------------------- output
KEYS = ("task", "dataset", "gamma", "tokenizer", "method", "ground_truth")


def kept_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of an earlier run in ``--out-dir`` for (task, dataset, gamma, tokenizer) not redone now."""
    path = args.out_dir / "return_error_seeds.csv"
    if not path.exists():
        return []
    redo = {
        (t, d, g, k) for t in args.tasks for d in args.datasets for g in args.gammas for k in args.tokenizers
    }
    out = []
    with path.open() as f:
        for r in csv.DictReader(f):
            text = ("task", "dataset", "tokenizer", "method", "ground_truth")
            row: dict[str, Any] = {k: (v if k in text or v == "" else float(v)) for k, v in r.items()}
            row["n_states"], row["seed"] = int(row["n_states"]), int(row["seed"])
            if (row["task"], row["dataset"], row["gamma"], row["tokenizer"]) not in redo:
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
        rewards = [r["reward_nmse"] for r in rs if r.get("reward_nmse", "") != ""]
        agg["reward_nmse"] = float(np.mean(rewards)) if rewards else ""
        out.append(agg)
    return out


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def write(
    rows: list[dict[str, Any]], plots: Plots, args: argparse.Namespace, seconds: float, partial: bool = False
) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = [*getattr(args, "kept", []), *rows]
    agg = aggregate(rows)
    write_csv(args.out_dir / "return_error.csv", agg, COLUMNS)
    write_csv(args.out_dir / "return_error_seeds.csv", rows, [*COLUMNS, "seed", "truth_stderr", "truth_std"])
    scatter(plots, args)
    head = (
        "| task | dataset | gamma | tokenizer | method | ground truth | NMSE | RMSE | Spearman | Q evals/s "
        "| reward NMSE "
    )
    head += "| seeds |"
    lines = [
        "# Return-estimation error on held-out episodes",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min"
        + ("  \n**--quick: tiny data, models and steps; figures not meaningful**" if args.quick else "")
        + ("  \n**partial: the run is still going; rows so far**" if partial else "")
        + (
            f"  \n{len(args.kept)} per-seed rows kept from an earlier run (`--keep`): its command is in the "
            "git history of this file"
            if getattr(args, "kept", [])
            else ""
        ),
        "",
        f"States: {args.n_states} per dataset from held-out episodes. Ground truth `simulator`: "
        f"{args.rollouts} rollouts per state of the episode's behaviour policy from the restored physics "
        "state until gamma^H < 1e-3, past the time limit (mean standard error per table row below). "
        "`paper-truncated`: the next min(1/(1-gamma), 10) dataset rewards, the published code's target. "
        "NMSE = MSE / Var(true); mean +- std over seeds.",
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
            f"{'' if r['reward_nmse'] == '' else fmt(r['reward_nmse'])} | {r['seeds']} |"
        )
    (args.out_dir / "return_error.md").write_text("\n".join(lines) + "\n")


def scatter(plots: Plots, args: argparse.Namespace) -> None:
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
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=["cheetah-run", "walker-walk"])
    p.add_argument("--datasets", nargs="+", default=["medium", "mixed"])
    p.add_argument("--gammas", nargs="+", type=float, default=[0.8, 0.9, 0.95, 0.99])
    p.add_argument("--tokenizers", nargs="+", default=["vqvae", "dino", "musik", "titok"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-states", type=int, default=200)
    p.add_argument("--episodes", type=int, default=200, help="episodes per dataset collected if missing")
    p.add_argument("--rollouts", type=int, default=8, help="simulator rollouts per state")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--samples", type=int, default=32, help="N of the sample estimator")
    p.add_argument("--candidates", type=int, default=256, help="M of the density estimator")
    p.add_argument("--pool-actions", type=int, default=8, help="K of the pool estimator")
    p.add_argument("--pool-size", type=int, default=64)
    p.add_argument("--rollouts-wm", type=int, default=4, help="world-model rollouts per state")
    p.add_argument("--tok-size", default="small")
    p.add_argument("--tok-steps", type=int)
    p.add_argument("--occ-size", default="small")
    p.add_argument("--occ-steps", type=int)
    p.add_argument(
        "--n-step",
        type=lambda t: None if t.lower() in ("mc", "none") else int(t),
        default=None,
        help="horizon of the occupancy objective: mc (default) or N (1: one-step generative TD)",
    )
    p.add_argument(
        "--tokens",
        choices=("agent", "preset"),
        default="agent",
        help="tokens per frame: the agents' 16 (default) or the tokenizer preset's (64 for vqvae)",
    )
    p.add_argument("--critic-steps", type=int)
    p.add_argument("--bc-steps", type=int)
    p.add_argument("--data-root", type=Path, default=Path("datasets"))
    p.add_argument("--runs", type=Path, default=Path("runs/return_error"))
    p.add_argument("--out-dir", type=Path, default=Path("results"))
    p.add_argument("--skip", nargs="*", default=[], help="methods to leave out, e.g. wm-rollout-3x")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows of --out-dir's return_error_seeds.csv that this run does not redo",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny everything: checks the pipeline in minutes")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.quick:
        scratch = Path(tempfile.mkdtemp(prefix="voc_rl_return_quick_"))
        args.tasks, args.datasets, args.gammas = args.tasks[:1], ["mixed"], [0.8, 0.9]
        args.tokenizers, args.seeds = ["titok"], [0]
        args.n_states, args.episodes, args.rollouts, args.samples, args.candidates = 16, 3, 2, 4, 32
        args.pool_size, args.rollouts_wm = 16, 1
        args.tok_size, args.occ_size = "tiny", "tiny"
        args.tok_steps = args.occ_steps = args.critic_steps = args.bc_steps = 20
        args.data_root, args.runs = scratch / "datasets", scratch / "runs"
        if args.out_dir == Path("results"):
            args.out_dir = scratch / "results"
    resolve_args(args, "data_root", "runs", "out_dir")
    args.start = time.perf_counter()
    args.kept = kept_rows(args) if args.keep else []
    rows, plots = run(args)
    write(rows, plots, args, time.perf_counter() - args.start)
    print(f"wrote {args.out_dir / 'return_error.md'}")


if __name__ == "__main__":
    main()
