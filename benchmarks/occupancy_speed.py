"""Occupancy-model speed on this machine: writes results/occupancy_speed.md and .csv.

For each tokenizer's token geometry (tokens per frame and vocabulary of its preset; a frame stack of
3 as context and as target) it measures, in one run: generative-TD training steps/s and tokens/s
(one-step TD and Monte-Carlo futures at gamma 0.9, and gamma 0, the one-step world model), ms per occupancy
sample with and without the KV cache, and candidate states scored per second by ``log_prob`` (for
one context, and for a pool shared by 16 candidate actions as agents use it). Weights and tokens
are random: the cost of these operations does not depend on their values. The report checks two
targets: the KV cache >= 10x faster than recompute; scoring a candidate >= 20x cheaper than sampling
one.

    python benchmarks/occupancy_speed.py [--tokenizers vqvae titok] [--threads 2] [--quick]
    python benchmarks/occupancy_speed.py --device cuda   # writes occupancy_speed_cuda.md and .csv
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from voc_rl.args import parse_args
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, td_loss
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.tokenizers import make_tokenizer
from voc_rl.utils import make_target

COLUMNS = ["tokenizer", "size", "what", "value", "unit"]


@dataclasses.dataclass(frozen=True)
class Args:
    tokenizers: tuple[str, ...] = ("vqvae", "titok")
    """token geometries to measure (dino and musik small share vqvae's: 64 tokens/frame, vocab 512)"""
    size: str = "small"
    """occupancy-model preset"""
    threads: int = os.cpu_count() or 1
    """torch threads"""
    out_dir: Path = Path("results")
    """folder of the tables (a temporary folder with --quick)"""
    quick: bool = False
    """tiny presets, one repeat (figures not meaningful)"""
    device: str = "cpu"
    """cpu or cuda (float32; another device writes occupancy_speed_<device>.md and .csv)"""


def quick() -> dict[str, Any]:
    """The ``--quick`` preset: the tiny occupancy model, into a temporary folder."""
    return {"size": "tiny", "out_dir": Path(tempfile.mkdtemp(prefix="voc_rl_occ_speed_"))}


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (``sync`` waits for the device)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(backend: str, size: str, quick: bool, device: torch.device) -> list[dict[str, object]]:
    tok_size = "tiny" if quick else "small"
    tok = make_tokenizer(backend, size=tok_size)  # musik's default action size is DMC's 6
    cfg = OccupancyConfig.preset(
        size, vocab_size=tok.vocab_size, tokens_per_frame=tok.tokens_per_frame, action_dim=6, gamma=0.9
    )
    model = OccupancyModel(cfg).to(device)
    target = make_target(model)
    g = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    rows: list[dict[str, object]] = []

    def row(what: str, value: float, unit: str) -> None:
        rows.append(
            {"tokenizer": backend, "size": size, "what": what, "value": round(value, 3), "unit": unit}
        )
        print(f"{backend:6s} {what:34s} {value:12.3f} {unit}", flush=True)

    def tokens(b: int, n: int) -> torch.Tensor:
        return torch.randint(cfg.vocab_size, (b, n), generator=g, device=device)

    def actions(b: int) -> torch.Tensor:
        return torch.rand(b, cfg.action_dim, generator=g, device=device) * 2 - 1

    reps = 1 if quick else 3
    row("tokens per state (context, target)", cfg.n_context, "tokens")
    row("sequence length", cfg.n_context + 1 + cfg.n_target, "tokens")
    row("parameters", sum(p.numel() for p in model.parameters()) / 1e6, "M")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = cfg.batch_size
    # rows bootstrapped from the EMA target: 1-step TD at gamma 0.9 about 90%; Monte-Carlo dataset
    # futures only past the record's end (about 5% on 500-step episodes); gamma 0 none
    for name, fraction in (("1-step TD, gamma 0.9", 0.9), ("Monte-Carlo, gamma 0.9", 0.05), ("gamma 0", 0.0)):
        batch = (
            tokens(b, cfg.n_context),
            actions(b),
            tokens(b, cfg.n_context),
            torch.rand(b, generator=g, device=device) < fraction,
            actions(b),
        )

        def step(batch: tuple = batch) -> None:
            loss, _ = td_loss(model, target, *batch)
            opt.zero_grad()
            loss.backward()
            opt.step()

        seconds = timed(step, reps + 2, sync)
        row(f"train steps/s ({name}, batch {b})", 1 / seconds, "steps/s")
        row(f"train tokens/s ({name})", b * (cfg.n_context + 1 + cfg.n_target) / seconds, "tokens/s")
    model.eval()
    n_ctx, per = 8, 4  # 8 contexts x 4 samples each = 32 sequences per call
    ctx, act = tokens(n_ctx, cfg.n_context), actions(n_ctx)
    cached = timed(lambda: model.sample(ctx, act, n=per, generator=g), reps, sync) / (n_ctx * per)
    row("sample, KV cache", 1000 * cached, "ms/sample")
    recompute = timed(lambda: model.sample(ctx, act, n=per, use_cache=False, generator=g), 1, sync) / (
        n_ctx * per
    )
    row("sample, full recompute", 1000 * recompute, "ms/sample")
    row("KV-cache speed-up", recompute / cached, "x")
    m = 512
    cands = tokens(m, cfg.n_target)
    score = timed(lambda: model.log_prob(ctx[:1], act[:1], cands), reps, sync) / m
    row(f"log_prob, 1 context x {m} candidates", 1 / score, "candidates/s")
    row("log_prob, per candidate", 1000 * score, "ms/candidate")
    row("sample / score cost ratio", cached / score, "x")
    k, pool = 16, 256
    pool_cands, pool_ctx, pool_act = tokens(pool, cfg.n_target), ctx[:1].expand(k, -1), actions(k)
    pooled = timed(lambda: model.log_prob(pool_ctx, pool_act, pool_cands), 1, sync)
    row(f"log_prob pool, {k} actions x {pool} shared", k * pool / pooled, "candidates/s")
    row("pool: ms per decision (scoring only)", 1000 * pooled, "ms")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=quick)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    device = torch.device(args.device)
    rows = [r for backend in args.tokenizers for r in measure(backend, args.size, args.quick, device)]
    name = "occupancy_speed" if device.type == "cpu" else f"occupancy_speed_{device.type}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / f"{name}.csv", rows, COLUMNS)
    minutes = (time.perf_counter() - start) / 60
    verdicts = []
    for backend in args.tokenizers:
        by = {r["what"]: float(r["value"]) for r in rows if r["tokenizer"] == backend}
        kv, ratio = by["KV-cache speed-up"], by["sample / score cost ratio"]
        kv_ok, ratio_ok = ("met" if kv >= 10 else "not met"), ("met" if ratio >= 20 else "not met")
        verdicts.append(
            f"- {backend}: KV cache {kv:.1f}x over recompute ({kv_ok}, target 10x); "
            f"scoring a candidate {ratio:.0f}x cheaper than sampling one ({ratio_ok}, target 20x)."
        )
    lines = [
        "# Occupancy model: speed",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=args.threads, uses_gpu=device.type != "cpu"),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {minutes:.1f} min"
        + ("  \n**--quick: tiny presets, figures not meaningful**" if args.quick else ""),
        "",
        f"Occupancy model preset `{args.size}`; context and target are 3-frame stacks of each tokenizer's",
        "tokens (its preset's tokens per frame and vocabulary); random weights and tokens. Samples: 8",
        "contexts x 4 samples per call, temperature 1, no top-k. Training steps include sampling the",
        "target model for the bootstrapped fraction of the batch (gamma 0.9, distillation target).",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        "## Targets",
        "",
        *verdicts,
    ]
    (args.out_dir / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out_dir / name}.md")


if __name__ == "__main__":
    main()
