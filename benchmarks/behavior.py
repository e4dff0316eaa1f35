"""Average returns of the shipped behaviour policies: writes results/behavior.md and .csv.

Each policy level (random, medium, expert) of each task runs ``--episodes`` episodes on the state
version of the env (the same physics the pixel datasets record), with sampled actions (as
collection uses them) and with the deterministic mean action. Seeds are fixed, so reruns agree.

    python benchmarks/behavior.py [--tasks cheetah-run walker-walk] [--episodes 10]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from voc_rl.args import parse_args
from voc_rl.behavior import LEVELS, BehaviorPolicy, evaluate, load_policy, shipped_policy_path

COLUMNS = ["task", "level", "mode", "episodes", "return_mean", "return_std", "train_steps", "file_kb"]


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("cheetah-run", "walker-walk")
    """tasks"""
    episodes: int = 10
    """episodes per policy level and mode"""
    out_dir: Path = Path("results")
    """folder of the table"""


def measure(tasks: Sequence[str], episodes: int) -> list[dict[str, object]]:
    rows = []
    for task in tasks:
        for level in LEVELS:
            policy = load_policy(task, level)
            meta = policy.meta if isinstance(policy, BehaviorPolicy) else {}
            path = shipped_policy_path(task, level)
            for mode in ("sampled", "deterministic"):
                if level == "random" and mode == "deterministic":
                    continue
                returns = evaluate(policy, task, episodes, seed=20_000, deterministic=mode == "deterministic")
                rows.append(
                    {
                        "task": task,
                        "level": level,
                        "mode": mode,
                        "episodes": episodes,
                        "return_mean": round(float(returns.mean()), 1),
                        "return_std": round(float(returns.std()), 1),
                        "train_steps": meta.get("train_steps", 0),
                        "file_kb": round(path.stat().st_size / 1024) if path.exists() else 0,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def write(rows: list[dict[str, object]], out_dir: Path, command: str, seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "behavior.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Behaviour policies: average episode return",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}  ",
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run time {seconds:.0f} s",
        "",
        "SAC (stable-baselines3, MLP 256x256, batch 256, state observations, action repeat 2) trained by",
        "`voc-rl behavior train`; `medium` is the snapshot whose sampled-action return is closest to half",
        "the `expert`'s, `expert` the best snapshot of the run (`voc-rl behavior ship`). Episodes are 500",
        "agent steps (1000 control steps); DMC rewards are in [0, 1] per control step, so returns are at",
        "most 1000. `sampled` is how datasets are collected.",
        "",
        "| task | level | mode | episodes | return | train steps | file KB |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['level']} | {r['mode']} | {r['episodes']} | "
            f"{r['return_mean']} ± {r['return_std']} | {r['train_steps']} | {r['file_kb']} |"
        )
    (out_dir / "behavior.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = measure(args.tasks, args.episodes)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    write(rows, args.out_dir, command, time.perf_counter() - start)
    print(f"wrote {args.out_dir / 'behavior.md'}")


if __name__ == "__main__":
    main()
