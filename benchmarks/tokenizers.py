"""Tokenizer quality on held-out episodes: writes results/tokenizers.md and .csv.

For every backend, variant and task it trains a tokenizer with ``fit`` on the training episodes of a
dataset (episodes split by seed) and measures on the held-out ones: codebook usage, PSNR (where a
decoder exists), the linear-probe R^2 from the token embeddings of a 3-frame stack to the
proprioceptive state (all of it, its positions and its velocities), encode throughput and tokens per
frame. Tokens are the agents' (16 a frame, ``AGENT_TOKENS``) unless ``--preset-tokens``; a variant
sets config fields on every backend (``state_aux=1.0``: the codes regress the recorded state in
training). Targets checked: usage >= 50%, probe R^2 >= 0.85 on each task at <= 32 tokens a frame.

    python benchmarks/tokenizers.py --data-root datasets [--steps 1000] [--variants - state_aux=1.0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import field_assignments, parse_args
from voc_rl.data.dataset import PixelDataset
from voc_rl.envs import state_parts
from voc_rl.parts import collect_or_open
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.tokenizers import AGENT_TOKENS, make_tokenizer
from voc_rl.tokenizers.train import fit, state_probe_bounds
from voc_rl.train_loop import Loop

COLUMNS = [
    "backend",
    "fields",
    "size",
    "task",
    "tokens_per_frame",
    "vocab",
    "steps",
    "usage",
    "psnr",
    "probe_r2",
    "r2_position",
    "r2_velocity",
    "encode_fps",
    "fit_minutes",
]
TARGET_R2, TARGET_TOKENS = 0.85, 32  # issue 35: tokens that keep the state, at the agents' size
BOUND = "recorded state"  # the rows of the probe on the recorded positions instead of codes


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("cheetah-run", "walker-walk")
    """tasks (each one's mixed dataset)"""
    backends: tuple[str, ...] = dataclasses.field(
        default=("vqvae", "dino", "musik", "titok"), metadata={"nargs": "*"}
    )
    """tokenizer backends (none: only the rows of the probe on the recorded state)"""
    size: str = "small"
    """tokenizer size preset"""
    preset_tokens: bool = False
    """the size preset's tokens a frame (64 for the grids) instead of the agents' 16"""
    variants: tuple[str, ...] = ("-",)
    """config fields set on every backend, one variant each: FIELD=NUMBER[,FIELD=NUMBER...]; - none"""
    steps: int | None = None
    """training steps (default: the preset's)"""
    data_root: Path = Path("datasets")
    """datasets root (missing datasets are collected there)"""
    runs: Path = Path("runs/tokenizers")
    """fit outputs (resumable; a finished row is reused)"""
    out_dir: Path = Path("results")
    """folder of the tables"""
    seed: int = 0
    """training seed"""
    quick: bool = False
    """tiny preset, 3-episode datasets, 20 steps, in a scratch folder"""
    quiet: bool = False
    """no progress bars"""
    note: str = ""
    """a line for the report (e.g. how the rows were run)"""
    rows_from: tuple[Path, ...] = ()
    """tokenizers.csv of earlier invocations whose rows join this table (this invocation's win)"""


def quick() -> dict[str, Any]:
    """The ``--quick`` preset: tiny tokenizers and steps, in a new scratch folder."""
    scratch = Path(tempfile.mkdtemp(prefix="voc_rl_tok_quick_"))
    return {
        "size": "tiny",
        "steps": 20,
        "data_root": scratch / "datasets",
        "runs": scratch / "runs",
        "out_dir": scratch / "results",
    }


def variant_fields(variant: str) -> dict[str, float]:
    """``state_aux=1.0,vocab_size=1024`` -> its fields (numbers); ``-`` -> none."""
    return {} if variant == "-" else field_assignments(variant.split(","), "--variants")


def run(args: Args) -> list[dict[str, object]]:
    rows = []
    variants = {v: variant_fields(v) for v in args.variants}  # checked before any work
    for task in args.tasks:
        name = f"{task}-mixed" + ("-quick" if args.quick else "")  # tiny with --quick
        ds = collect_or_open(args.data_root, task, "mixed", 3 if args.quick else 200, name)
        groups = state_parts(task, ds.arrays["proprio"].shape[1]) if "proprio" in ds.arrays else None
        if groups is not None:
            rows += bound_rows(args, ds, task, groups)
        for backend, (variant, fields) in ((b, v) for b in args.backends for v in variants.items()):
            tokens = {} if args.preset_tokens else AGENT_TOKENS[backend]
            steps = {"steps": args.steps} if args.steps else {}
            tok = make_tokenizer(backend, args.size, ds, **tokens, **fields, **steps)
            tag = ("__preset" if args.preset_tokens else "__agent") + "".join(
                f"__{k}={v}" for k, v in sorted(fields.items())
            )
            out = args.runs / f"{task}__{backend}__{args.size}{tag}"
            row_file = out / f"row_{tok.config.steps}.json"
            if row_file.exists():  # finished by an earlier (or parallel) invocation: reuse its row
                rows.append(json.loads(row_file.read_text()))
                print(f"reused {row_file}")
                continue
            report = fit(
                tok, ds, loop=Loop(out=out, seed=args.seed, progress=not args.quiet), probe_groups=groups
            )
            m = report.metrics
            rows.append(
                {
                    "backend": backend,
                    "fields": variant,
                    "size": args.size,
                    "task": task,
                    "steps": tok.config.steps,
                    "tokens_per_frame": tok.tokens_per_frame,
                    "vocab": tok.vocab_size,
                    "usage": round(m["usage"], 3),
                    "psnr": round(m["psnr"], 2) if "psnr" in m else "",
                    "probe_r2": round(m.get("probe_r2", float("nan")), 3),
                    "r2_position": round(m.get("probe_r2_position", float("nan")), 3),
                    "r2_velocity": round(m.get("probe_r2_velocity", float("nan")), 3),
                    "encode_fps": round(m["encode_fps"]),
                    "fit_minutes": round(report.total_seconds / 60, 1),  # with the calls it resumed
                }
            )
            row_file.write_text(json.dumps(rows[-1]))
            print(rows[-1], flush=True)
    return rows


def bound_rows(
    args: Args, ds: PixelDataset, task: str, groups: dict[str, np.ndarray]
) -> list[dict[str, object]]:
    """The probe of codes that keep the positions exactly and nothing else (``state_probe_bounds``): rows
    of ``BOUND`` beside the tokenizers', on the split ``fit`` uses; reused from the runs folder."""
    cache = args.runs / f"{task}__{BOUND}__seed{args.seed}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    train_eps, val_eps = ds.split(0.1, args.seed)  # fit's split
    steps, start = 100 if args.quick else 3000, time.perf_counter()
    bounds = state_probe_bounds(ds, val_eps, train_eps, groups, seed=args.seed, mlp_steps=steps)
    minutes = round((time.perf_counter() - start) / 60, 1)
    rows: list[dict[str, object]] = [
        {
            **dict.fromkeys(COLUMNS, "-"),
            "backend": BOUND,
            "fields": fields,
            "task": task,
            "steps": mlp_steps,
            "probe_r2": round(b["probe_r2"], 3),
            "r2_position": round(b["probe_r2_position"], 3),
            "r2_velocity": round(b["probe_r2_velocity"], 3),
            "fit_minutes": minutes,
        }
        for fields, b, mlp_steps in (
            ("positions, linear probe", bounds["linear"], "-"),
            ("positions, MLP", bounds["mlp"], steps),
        )
    ]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows


def verdicts(rows: list[dict[str, object]]) -> list[str]:
    lines = []
    bounds = {(r["task"], r["fields"]): r for r in rows if r["backend"] == BOUND}
    rows = [r for r in rows if r["backend"] != BOUND]
    worst_usage = min(float(r["usage"]) for r in rows)
    lines.append(
        f"- Codebook usage >= 50%: {'met' if worst_usage >= 0.5 else 'not met'} (lowest {worst_usage:.0%})."
    )
    for task in sorted({r["task"] for r in rows}):
        small = [r for r in rows if r["task"] == task and int(r["tokens_per_frame"]) <= TARGET_TOKENS]
        if not small:
            lines.append(f"- {task}: no row at <= {TARGET_TOKENS} tokens a frame.")
            continue
        best = max(small, key=lambda r: float(r["probe_r2"]))
        met = "met" if float(best["probe_r2"]) >= TARGET_R2 else "not met"
        lines.append(
            f"- {task}, probe R^2 >= {TARGET_R2} at <= {TARGET_TOKENS} tokens a frame: {met} (best "
            f"{best['backend']} {best.get('fields', '-')}: {best['probe_r2']}, positions "
            f"{best.get('r2_position', '')}, velocities {best.get('r2_velocity', '')})."
        )
        linear, mlp = (bounds.get((task, f"positions, {how}")) for how in ("linear probe", "MLP"))
        if linear and mlp:
            lines.append(
                f"  Codes of the exact positions alone would give this probe {linear['probe_r2']} "
                f"(velocities {linear['r2_velocity']}); the stack holds velocities an MLP reads to "
                f"{mlp['r2_velocity']}."
            )
    return lines


def write(rows: list[dict[str, object]], args: Args, seconds: float) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "tokenizers.csv", rows, COLUMNS)
    steps = ", ".join(sorted({f"{r['backend']} {r['steps']}" for r in rows if r["backend"] != BOUND}))
    lines = [
        "# Tokenizers: quality on held-out episodes",
        "",
        f"Command: `{command_line(hide=['--note'])}`  ",  # the note is printed below, not inside it
        machine_line(),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; "
        f"this invocation {seconds / 60:.0f} min "
        "(fit_minutes per row; rows finished by earlier invocations are reused from the runs folder)  ",
        f"Training steps per backend: {steps}"
        + ("  \n**--quick: tiny data and steps, figures not meaningful**" if args.quick else ""),
        "",
        *([args.note, ""] if args.note else []),
        "Datasets: the task's `mixed` dataset (random / medium / expert thirds), 10% of episodes held out.",
        "Tokens: "
        + ("each size preset's" if args.preset_tokens else "the agents' (`AGENT_TOKENS`: 16 a frame)")
        + "; `fields`: config set on the backend (`state_aux=1.0`: in training, a linear head regresses the",
        "recorded state from a frame's quantized vectors; `-`: none).",
        "usage = fraction of codes used on held-out frames; probe_r2 = ridge regression from the token",
        "embeddings of a 3-frame stack to the proprioceptive state (position and velocity), R^2 averaged",
        "over state dimensions (r2_position, r2_velocity: over those columns); fit on 4000 training-episode",
        "frames, ridge chosen on a held-back slice, scored on 2000 held-out frames. Rows `recorded state`:",
        "the same probe on the same frames from the recorded positions of the stack instead of codes (the",
        "bound for codes that keep each frame's positions exactly and nothing else), and a 2x256 MLP from",
        "them fit on every training frame (what the stack holds of the velocities at all).",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        "## Targets",
        "",
        *verdicts(rows),
    ]
    (args.out_dir / "tokenizers.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=quick)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = time.perf_counter()
    rows = run(args)
    key = ("task", "backend", "fields", "size", "steps", "tokens_per_frame")
    mine = {tuple(str(r[k]) for k in key) for r in rows}
    earlier = [r for path in args.rows_from for r in csv.DictReader(path.open())]
    earlier = [r for r in earlier if tuple(r.get(k, "") for k in key) not in mine]
    write([*earlier, *rows], args, time.perf_counter() - start)
    print(f"wrote {args.out_dir / 'tokenizers.md'}")


if __name__ == "__main__":
    main()
