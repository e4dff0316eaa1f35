"""Speed of the VOC's Q estimators as agents and benchmarks call them: writes
results/estimator_speed.md and .csv.

Rows: ms per decision (``pool_q`` for one state, K candidate actions, a pool of P futures: what a
``voc-<tok>`` agent computes per step, tokenizer and prior not included), ``sample`` Q evaluations
per second (N = 32 futures, 16 states a call) and ``pool`` Q evaluations per second (K = 8, 64
futures, 4 states a call: the return-error benchmark's pool row). The token geometry is the agents'
(16 tokens per frame, vocabulary 512, a 3-frame context, 2-frame futures: 48 + 1 + 32 positions);
weights and tokens are random (the cost does not depend on their values). Each figure is the
fastest of ``--repeats`` calls after a warm-up: timings vary between calls, the minimum is the
stable statistic.

It calls only ``pool_q`` and ``sample_q``, so the same script times an older checkout of the code
(``PYTHONPATH=/path/to/old/checkout python benchmarks/estimator_speed.py --label before``). Rows are
merged into the CSV by (label, device, dtype, threads, size, what), so runs with other threads,
labels or devices add to one table:

    python benchmarks/estimator_speed.py [--label after] [--threads 1] [--sizes tiny small base]
    python benchmarks/estimator_speed.py --device cuda --dtype bfloat16   # on a GPU machine
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from voc_rl.args import parse_args
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.value import pool_q, sample_q

COLUMNS = ["label", "device", "dtype", "threads", "size", "what", "value", "unit", "date"]
KEY = ("label", "device", "dtype", "threads", "size", "what")
DECISIONS = ((4, 8), (8, 8), (8, 32))  # (K candidate actions, pool size)


@dataclasses.dataclass(frozen=True)
class Args:
    label: str = "after"
    """names the code version timed (before/after...)"""
    sizes: tuple[str, ...] = ("tiny", "small", "base")
    """occupancy-model presets"""
    threads: int = 1
    """torch threads"""
    device: str = "cpu"
    """cpu or cuda"""
    dtype: str = dataclasses.field(default="float32", metadata={"choices": ("float32", "bfloat16")})
    """model dtype"""
    repeats: int = 9
    """timed calls per decision row (a third for Q/s)"""
    out_dir: Path = Path("results")
    """folder of the tables (rows are merged into its estimator_speed.csv)"""


def fastest(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    size: str, device: torch.device, dtype: torch.dtype, repeats: int
) -> list[tuple[str, float, str]]:
    cfg = OccupancyConfig.preset(size, vocab_size=512, tokens_per_frame=16, action_dim=6, target_frames=2)
    torch.manual_seed(0)
    model = OccupancyModel(cfg).eval().to(device=device, dtype=dtype)
    reward = RewardModel(cfg).eval().to(device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def states(b: int) -> torch.Tensor:
        return torch.randint(cfg.vocab_size, (b, cfg.n_context), device=device, generator=g)

    def actions(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, cfg.action_dim, device=device, generator=g) * 2 - 1).to(dtype)

    rows = []
    for k, pool in DECISIONS:
        ctx, acts = states(1), actions(1, k)

        def decide(ctx: torch.Tensor = ctx, acts: torch.Tensor = acts, pool: int = pool) -> torch.Tensor:
            return pool_q(model, reward, ctx, acts, pool, generator=g)

        s = fastest(decide, repeats, sync)
        rows.append((f"decision: pool_q K={k}, pool {pool}", 1000 * s, "ms"))
    ctx, act = states(16), actions(16)
    s = fastest(lambda: sample_q(model, reward, ctx, act, n=32, generator=g), max(1, repeats // 3), sync)
    rows.append(("sample (N=32): Q evaluations per second", 16 / s, "Q/s"))
    ctx, acts = states(4), actions(4, 8)
    s = fastest(lambda: pool_q(model, reward, ctx, acts, 64, generator=g), max(1, repeats // 3), sync)
    rows.append(("pool (K=8, 64): Q evaluations per second", 4 / s, "Q/s"))
    return rows


def merge(path: Path, new: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of ``path`` (if any) with the rows of ``new`` replacing those of the same key."""
    old = list(csv.DictReader(path.open())) if path.exists() else []
    keys = {tuple(str(r[c]) for c in KEY) for r in new}
    return [r for r in old if tuple(r[c] for c in KEY) not in keys] + new


def main(argv: list[str] | None = None) -> None:
    a = parse_args(Args, argv)
    torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    new = []
    for size in a.sizes:
        for what, value, unit in measure(size, device, dtype, a.repeats):
            print(f"{a.label} {size:5s} {what:45s} {value:9.2f} {unit}", flush=True)
            new.append({
                "label": a.label, "device": a.device, "dtype": a.dtype, "threads": a.threads, "size": size,
                "what": what, "value": round(value, 2), "unit": unit, "date": date,
            })  # fmt: skip
    a.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = a.out_dir / "estimator_speed.csv"
    rows = merge(csv_path, new)
    write_csv(csv_path, rows, COLUMNS)
    lines = [
        "# VOC estimators: speed",
        "",
        f"Last command: `{command_line()}`  ",
        machine_line(threads=a.threads, uses_gpu=a.device != "cpu"),
        f"Date (UTC) of the last run: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} (rows: their date).",
        "",
        "Agents' token geometry (48 context + 1 action + 32 target positions, vocabulary 512); random",
        "weights; the fastest of several calls. `label` names the code timed: `before` is the commit",
        "before issue [F] (every row of a pool recomputed its context; K x M prompts copied per chunk),",
        "`after` this code (one context computation per state, copied to its K x M rows).",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    (a.out_dir / "estimator_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out_dir / 'estimator_speed.md'}")


if __name__ == "__main__":
    main()
