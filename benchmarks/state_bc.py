"""The data's ceiling for imitation: behaviour cloning of a dataset's expert episodes on the
proprioceptive state it records, no pixels; writes results/state_bc.md and .csv.

The control benchmark's perception row (`pbc` from pixels, ``benchmarks/policy.py``) clones the same
episodes from the frame stack. Where this state policy reaches the expert's return and the pixel one
does not, the gap is perception (what the encoder recovers from 64-pixel frames), not the data (how
many episodes, whether they show recoveries). An MLP (256 x 256, ReLU, tanh output) regresses the
recorded action from the standardised state by MSE (Adam 3e-4, batch 256); episodes are 500 agent
steps on env seeds 1000+, deterministic, as in the control benchmark; IQM and mean with rliable's
stratified-bootstrap intervals over (seed, episode).

    python benchmarks/state_bc.py [--tasks walker-walk cheetah-run] [--seeds 0 1 2] [--episodes 10]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.benchmarks.policy import aggregate
from voc_rl.data.dataset import PixelDataset
from voc_rl.parts import collect_or_open
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.selection import StatePolicy, true_returns

COLUMNS = ["task", "dataset", "level", "transitions", "seeds", "runs", "iqm", "iqm_ci", "mean", "mean_ci",
           "data_return", "x_expert", "score_10", "train_s"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("walker-walk", "cheetah-run")
    """tasks (their `mixed` datasets, collected if missing)"""
    kind: str = "mixed"
    """dataset kind"""
    level: str = "expert"
    """behaviour level whose episodes are cloned"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """training seeds"""
    episodes: int = 10
    """evaluation episodes per seed (env seeds 1000+)"""
    steps: int = 10_000
    """training steps"""
    data_root: Path = Path("datasets")
    """datasets root"""
    data_episodes: int = 90
    """episodes per dataset collected if missing"""
    out_dir: Path = Path("results")
    """folder of the tables"""


def level_transitions(ds: PixelDataset, level: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(states, actions) of the episodes of behaviour ``level`` (each frame with the action taken
    there: an episode's last frame has none), and those episodes' mean recorded return."""
    episodes = ds.level_episodes(level)
    keep = np.isin(ds.arrays["episode"], ds.arrays["episode"][ds.ep_start[episodes]])
    keep[ds.ep_start + ds.ep_len] = False
    return ds.arrays["proprio"][keep], ds.arrays["action"][keep], float(ds.episode_returns()[episodes].mean())


def clone(states: np.ndarray, actions: np.ndarray, steps: int, seed: int) -> torch.nn.Module:
    """An MLP policy on standardised states fitted to ``actions`` by MSE."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(states), torch.from_numpy(actions)
    policy = torch.nn.Sequential(
        Standardise(x.mean(0), x.std(0) + 1e-6), torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, y.shape[1]), torch.nn.Tanh(),
    )  # fmt: skip
    opt = torch.optim.Adam(policy.parameters(), 3e-4)
    for _ in range(steps):
        i = torch.randint(len(x), (256,))
        loss = ((policy(x[i]) - y[i]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


class Standardise(torch.nn.Module):
    def __init__(self, mu: torch.Tensor, sd: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("sd", sd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sd


@dataclasses.dataclass
class Cloned:
    """The cloned MLP as a behaviour policy (``act``) for :class:`voc_rl.selection.StatePolicy`."""

    net: torch.nn.Module

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def play(policy: torch.nn.Module, ds: PixelDataset, episodes: int) -> np.ndarray:
    """Undiscounted returns of ``episodes`` episodes on env seeds 1000+ (the control benchmark's)."""
    return true_returns(StatePolicy(Cloned(policy), deterministic=True), ds, 1.0, episodes, seed=1000)


def run(args: Args) -> list[dict[str, Any]]:
    rows = []
    for task in args.tasks:
        ds = collect_or_open(args.data_root, task, args.kind, args.data_episodes, f"{task}-{args.kind}")
        states, actions, data_return = level_transitions(ds, args.level)
        returns, seconds = [], 0.0
        for seed in args.seeds:
            start = time.perf_counter()
            policy = clone(states, actions, args.steps, seed)
            seconds += time.perf_counter() - start
            returns.append(play(policy, ds, args.episodes))
            print(f"{task} seed {seed}: {np.round(returns[-1]).astype(int).tolist()}", flush=True)
        s = aggregate({"state-bc": np.concatenate(returns)})["state-bc"]
        rows.append({
            "task": task, "dataset": args.kind, "level": args.level, "transitions": len(states),
            "seeds": len(args.seeds), "runs": len(args.seeds) * args.episodes,
            "iqm": round(s["iqm"], 1), "iqm_ci": f"[{s['iqm_lo']:.1f}, {s['iqm_hi']:.1f}]",
            "mean": round(s["mean"], 1), "mean_ci": f"[{s['mean_lo']:.1f}, {s['mean_hi']:.1f}]",
            "data_return": round(data_return, 1), "x_expert": round(s["iqm"] / data_return, 2),
            "score_10": round(s["iqm"] / 10, 1), "train_s": round(seconds / len(args.seeds)),
        })  # fmt: skip
    return rows


def write(args: Args, rows: list[dict[str, Any]], seconds: float) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "state_bc.csv", rows, COLUMNS)
    lines = [
        "# The data's ceiling for imitation: behaviour cloning on the recorded state",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=1, uses_gpu=False),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min",
        "",
        f"BC of the `{args.level}` episodes of each task's `{args.kind}` dataset on the proprioceptive state",
        f"the dataset records (no pixels): MLP 256 x 256, MSE, Adam 3e-4, batch 256, {args.steps} steps.",
        "Deterministic episodes on env seeds 1000+; IQM and mean with 95% stratified-bootstrap intervals",
        "(rliable) over (seed, episode). `data_return`: the mean recorded return of the cloned episodes;",
        "`x_expert`: IQM / data_return; `score_10`: IQM / 10 (the V-D4RL scale); `train_s`: seconds per",
        "seed on one thread. The pixel policy cloned from the same episodes is the control benchmark's",
        "`pbc` row (`results/policy.md`): where it falls short of this row, perception limits it.",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    (args.out_dir / "state_bc.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(Args, argv, prog=prog)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = run(args)
    write(args, rows, time.perf_counter() - start)
    print(f"wrote {args.out_dir / 'state_bc.md'}")


if __name__ == "__main__":
    main()
