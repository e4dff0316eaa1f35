"""Training speed of the pixel trunk's trainers: milliseconds a step of the pixel prior (``bc``, with
and without the state target), IQL and TD3+BC at the ``small`` preset (batch 128, 64 px, 3 frames)
on one torch thread, through the real trainers (sampling, augmentation, losses, optimiser steps).

Each trainer runs ``--warmup`` + ``--steps`` steps on the dataset's training episodes; the step time
is the median interval between the loop's per-step callbacks after the warm-up (so held-out
evaluation and checkpoints are left out). Rows are appended to ``<out-dir>/pixel_speed.csv`` with the
code's commit, so a change is measured against the code before it on the same machine
(``--label``), and ``pixel_speed.md`` is rewritten from all rows.

    python benchmarks/pixel_speed.py --data PATH [--trainers bc bc-state iql td3bc] [--steps 40]
        [--channels 32] [--batch 128]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import datetime
import statistics
import subprocess
import time
from pathlib import Path

import torch

from voc_rl.args import parse_args
from voc_rl.data.dataset import PixelDataset
from voc_rl.offline_rl import ActorCriticConfig, PixelCritic, make_actor, train_actor_critic
from voc_rl.pixel_policy import PixelBCConfig, PixelBCPolicy, train_pixel_bc
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.train_loop import Loop

TRAINERS = ("bc", "bc-state", "iql", "td3bc")
COLUMNS = ["date", "commit", "label", "trainer", "dataset", "channels", "batch", "steps", "ms_per_step",
           "min_per_6k"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Args:
    data: str = ""
    """a pixel dataset folder that records the state (e.g. one `voc-rl collect` wrote)"""
    trainers: tuple[str, ...] = TRAINERS
    """which trainers to time"""
    channels: int = 32
    """the encoder's first conv's channels (the ``small`` preset's; the next two have twice as many)"""
    batch: int = 128
    """batch size (the ``small`` preset's)"""
    steps: int = 40
    """timed steps of each"""
    warmup: int = 5
    """steps before the timing starts"""
    label: str = ""
    """what the rows measure (e.g. the change under test)"""
    out_dir: str = "results"
    """where pixel_speed.csv (appended) and pixel_speed.md go"""


def commit() -> str:
    """The code's short commit, with ``+`` where the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "voc_rl"], capture_output=True, text=True, check=True
        )
        return head.stdout.strip() + ("+" if dirty.stdout else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def time_steps(trainer: str, ds: PixelDataset, steps: int, warmup: int, **fields: int) -> float:
    """Median seconds between consecutive steps of ``trainer`` (its config ``fields`` over the small
    preset) after ``warmup`` steps."""
    stamps: list[float] = []

    def callback(step: int, logs: dict[str, float]) -> bool:
        stamps.append(time.perf_counter())
        return True

    loop = Loop(device="cpu", progress=False, callback=callback, eval_every=10**9, log_every=10**9)
    total = steps + warmup
    if trainer.startswith("bc"):
        aux = {"state_aux": 1.0} if trainer == "bc-state" else {}
        train_pixel_bc(PixelBCPolicy(PixelBCConfig.for_dataset(ds, **aux, **fields)), ds, total, loop)
    else:
        critic = PixelCritic(ActorCriticConfig.for_dataset(ds, algo=trainer, **fields))
        train_actor_critic(critic, make_actor(critic), ds, total, loop)
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    return statistics.median(gaps)


def write_report(out: Path, rows: list[dict[str, str]]) -> None:
    """``pixel_speed.md`` in ``out`` from every row measured so far."""
    intro = (__doc__ or "").split("\n\n")[:2]
    lines = ["# Training speed of the pixel trainers", "", f"Last command: `{command_line()}`  ",
             machine_line(threads=1, uses_gpu=False), "", *(p.replace("\n", " ") + "\n" for p in intro),
             "min_per_6k: minutes for 6,000 steps at that rate (the control benchmark's cheap settings).", "",
             *markdown_table(rows, COLUMNS), ""]  # fmt: skip
    (out / "pixel_speed.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    unknown = set(args.trainers) - set(TRAINERS)
    if unknown:
        raise SystemExit(f"unknown trainers {sorted(unknown)}; choose from {', '.join(TRAINERS)}")
    if not args.data:
        raise SystemExit("give --data, a pixel dataset folder (`voc-rl collect` writes one)")
    torch.set_num_threads(1)
    ds = PixelDataset.open(args.data)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pixel_speed.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [{"channels": "32", **row} for row in csv.DictReader(f)]  # (rows before the column)
    date, code = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"), commit()
    for trainer in args.trainers:
        seconds = time_steps(trainer, ds, args.steps, args.warmup, channels=args.channels,
                             batch_size=args.batch)  # fmt: skip
        rows.append({"date": date, "commit": code, "label": args.label, "trainer": trainer,
                     "dataset": Path(ds.path).name, "channels": args.channels, "batch": args.batch,
                     "steps": args.steps,
                     "ms_per_step": f"{1000 * seconds:.0f}",
                     "min_per_6k": f"{6000 * seconds / 60:.1f}"})  # fmt: skip
        print(f"{trainer}: {1000 * seconds:.0f} ms a step", flush=True)
        write_csv(path, rows, COLUMNS)
    write_report(out, rows)


if __name__ == "__main__":
    main()
