"""Occupancy-model training on 1 and 2 processes (and a GPU): writes results/scaling.md and .csv.

Each configuration is a real run of :func:`voc_rl.occupancy_train.train_occupancy` (generative TD,
gamma 0.9, distillation target) launched by ``torchrun --standalone --nproc_per_node=N`` (gloo, one
thread per process; N = 1 is a plain single-process run), reading a token dataset of 100k
transitions from disk (memory-mapped, as token caches are). It measures steps/s after a warm-up,
samples/s over all processes (each process takes the config's batch per step, so N processes train
on N times the batch), and the peak RSS (``ru_maxrss``) of each training process. Tokens are
random, with TiTok's geometry (16 tokens per frame, vocabulary 512): the cost of a step does not
depend on their values. ``--dataset D --tokenizer T.pt`` reads a real token cache instead;
``--also-threads 2`` adds a single process on 2 threads (the other way to use a second core; on a
machine busy with other jobs, threads oversubscribe the cores and that row can be very slow).

    python benchmarks/scaling.py [--procs 1 2] [--steps 30] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from voc_rl.args import parse_args

COLUMNS = [
    "processes",
    "device",
    "threads_each",
    "batch_each",
    "steps_per_s",
    "samples_per_s",
    "speedup",
    "efficiency",
    "peak_rss_mb_training",
    "peak_rss_mb_with_eval",
    "peak_rss_mb_total",
]
TOKENS_PER_FRAME, VOCAB, ACTION_DIM, EPISODE_LEN = 16, 512, 6, 500
INTERNAL = {"help": argparse.SUPPRESS}  # options of the worker processes the script launches


@dataclasses.dataclass(frozen=True)
class Args:
    procs: tuple[int, ...] = (1, 2)
    """CPU process counts"""
    threads: int = 1
    """torch threads per CPU process"""
    also_threads: tuple[int, ...] = dataclasses.field(default=(), metadata={"nargs": "*"})
    """extra 1-process rows: thread counts"""
    size: str = "small"
    """occupancy-model preset"""
    steps: int = 30
    """timed steps per configuration"""
    warmup: int = 3
    """untimed steps first"""
    transitions: int = 100_000
    """size of the random token dataset"""
    dataset: Path | None = None
    """a dataset folder: train on its token cache instead"""
    tokenizer: Path | None = None
    """with --dataset: the tokenizer.pt whose tokens to read"""
    out_dir: Path = Path("results")
    """folder of the tables (a temporary folder with --quick)"""
    quick: bool = False
    """tiny preset, few steps, a temporary out-dir"""
    worker: bool = dataclasses.field(default=False, metadata=INTERNAL)
    """run as one training process of a configuration"""
    data: Path | None = dataclasses.field(default=None, metadata=INTERNAL)
    """the worker's token dataset"""
    result: str | None = dataclasses.field(default=None, metadata=INTERNAL)
    """the worker's result files: RESULT.rankN.json"""
    device: str = dataclasses.field(default="cpu", metadata=INTERNAL)
    """the worker's device"""

    def __post_init__(self) -> None:
        if (self.dataset is None) != (self.tokenizer is None):
            raise ValueError("--dataset and --tokenizer go together")


def quick() -> dict[str, Any]:
    """The ``--quick`` preset: the tiny occupancy model, few steps, into a temporary folder."""
    out_dir = Path(tempfile.mkdtemp(prefix="voc_rl_scaling_"))
    return {"size": "tiny", "steps": 5, "warmup": 2, "transitions": 5_000, "out_dir": out_dir}


def write_token_dataset(folder: Path, transitions: int, seed: int = 0) -> None:
    """Random tokens of ``transitions // 500`` episodes of 500 steps: tokens.npy (memory-mapped by the
    workers) and arrays.npz, the two files a token cache and a dataset cache hold."""
    episodes = max(transitions // EPISODE_LEN, 2)
    n = episodes * (EPISODE_LEN + 1)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.lib.format.open_memmap(folder / "tokens.npy", "w+", np.int16, (n, TOKENS_PER_FRAME))
    tokens[:] = rng.integers(0, VOCAB, size=tokens.shape, dtype=np.int16)
    tokens.flush()
    step = np.tile(np.arange(EPISODE_LEN + 1), episodes)
    last = step == EPISODE_LEN
    np.savez(
        folder / "arrays.npz",
        action=np.where(last[:, None], 0, rng.uniform(-1, 1, (n, ACTION_DIM))).astype(np.float32),
        reward=np.where(last, 0, rng.uniform(0, 1, n)).astype(np.float32),
        episode=np.repeat(np.arange(episodes), EPISODE_LEN + 1),
        step=step,
        is_terminal=np.zeros(n, bool),
        policy_id=np.zeros(n, np.int64),
    )


def open_token_dataset(folder: Path) -> Any:
    from voc_rl.data.dataset import TokenView

    with np.load(folder / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    starts = np.flatnonzero(arrays["step"] == 0)
    lengths = np.diff(np.append(starts, len(arrays["step"]))) - 1
    meta = {
        "name": "random-tokens",
        "tokens": {"vocab_size": VOCAB, "tokens_per_frame": TOKENS_PER_FRAME, "backend": "random", "key": ""},
    }
    frames = np.load(folder / "tokens.npy", mmap_mode="r")
    return TokenView(folder, meta, frames, arrays, starts, lengths)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: Args) -> None:
    """One training process (one rank under torchrun): time the steps, report the peak RSS."""
    import torch

    from voc_rl import distributed
    from voc_rl.occupancy import OccupancyConfig, OccupancyModel
    from voc_rl.occupancy_train import train_occupancy
    from voc_rl.train_loop import Loop

    torch.set_num_threads(args.threads)
    if args.dataset:
        from voc_rl.data import open_dataset
        from voc_rl.tokenizers.cache import token_view

        ds = token_view(open_dataset(args.dataset), args.tokenizer, progress=False)
    else:
        assert args.data is not None, "--worker needs --data"
        ds = open_token_dataset(args.data)
    config = OccupancyConfig.for_dataset(ds, args.size, gamma=0.9, variant="distill")
    torch.manual_seed(0)
    model = OccupancyModel(config)
    stamps: list[float] = []
    rss_training = 0.0

    def callback(step: int, logs: dict[str, float]) -> None:
        nonlocal rss_training
        stamps.append(time.perf_counter())
        rss_training = peak_rss_mb()

    loop = Loop(device=args.device, progress=False, callback=callback, log_every=10**9)
    train_occupancy(model, ds, steps=args.warmup + args.steps, loop=loop)
    seconds = stamps[-1] - stamps[args.warmup - 1]
    result = {
        "rank": distributed.rank(),
        "world": distributed.world_size(),
        "steps_per_s": args.steps / seconds,
        "batch": config.batch_size,
        "peak_rss_mb_training": rss_training,
        "peak_rss_mb": peak_rss_mb(),  # and the held-out evaluation at the end of the run
        "transitions": ds.num_transitions,
    }
    if args.device == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(f"{args.result}.rank{distributed.rank()}.json").write_text(json.dumps(result))
    distributed.destroy()


def launch(args: Args, procs: int, threads: int, device: str, data: Path, tmp: Path) -> dict[str, Any]:
    result = tmp / f"{device}{procs}x{threads}"
    script = [str(Path(__file__).resolve()), "--worker", "--data", str(data), "--result", str(result)]
    script += ["--threads", str(threads), "--size", args.size, "--device", device]
    script += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.dataset:
        script += ["--dataset", str(args.dataset), "--tokenizer", str(args.tokenizer)]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd += script
    else:
        cmd = [sys.executable, *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{procs} x {device}, {threads} thread(s) each", flush=True)
    subprocess.run(cmd, check=True, env=env)
    ranks = [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in range(procs)]
    rss = [r["peak_rss_mb"] for r in ranks]
    steps = ranks[0]["steps_per_s"]  # the ranks step together
    row = {
        "processes": procs,
        "device": device,
        "threads_each": threads if device == "cpu" else "-",
        "batch_each": ranks[0]["batch"],
        "steps_per_s": round(steps, 3),
        "samples_per_s": round(steps * ranks[0]["batch"] * procs, 1),
        "peak_rss_mb_training": round(max(r["peak_rss_mb_training"] for r in ranks)),
        "peak_rss_mb_with_eval": round(max(rss)),
        "peak_rss_mb_total": round(sum(rss)),
        "transitions": ranks[0]["transitions"],
    }
    if "gpu_peak_mb" in ranks[0]:
        row["gpu_peak_mb"] = round(ranks[0]["gpu_peak_mb"])
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=quick)
    if args.worker:
        worker(args)
        return
    import torch

    from voc_rl.report import command_line, machine_line, markdown_table, write_csv

    start, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="voc_rl_scaling_") as tmp_name:
        tmp = Path(tmp_name)
        if not args.dataset:
            write_token_dataset(tmp / "tokens", args.transitions)
        data = tmp / "tokens"
        rows = [launch(args, n, args.threads, "cpu", data, tmp) for n in args.procs]
        rows += [launch(args, 1, t, "cpu", data, tmp) for t in args.also_threads if t != args.threads]
        if torch.cuda.is_available():
            rows.append(launch(args, 1, 1, "cuda", data, tmp))
    base = next((r for r in rows if r["processes"] == 1 and r["threads_each"] == args.threads), None)
    for r in rows:
        if base is not None and r["device"] == "cpu":
            r["speedup"] = round(r["samples_per_s"] / base["samples_per_s"], 2)
            r["efficiency"] = round(r["speedup"] / (r["processes"] * r["threads_each"] / args.threads), 2)
        else:
            r["speedup"] = r["efficiency"] = "-"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    columns = COLUMNS + (["gpu_peak_mb"] if any("gpu_peak_mb" in r for r in rows) else [])
    write_csv(args.out_dir / "scaling.csv", rows, columns)
    minutes = (time.perf_counter() - start) / 60
    source = (
        f"the token cache of {args.dataset} ({rows[0]['transitions']} transitions)"
        if args.dataset
        else f"random tokens on disk, {rows[0]['transitions']} transitions "
        f"({TOKENS_PER_FRAME} tokens/frame, vocabulary {VOCAB}, {ACTION_DIM}-d actions)"
    )
    lines = [
        "# Occupancy model: training on several processes",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=args.threads, uses_gpu=torch.cuda.is_available()),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {minutes:.1f} min"
        + ("  \n**--quick: tiny preset, figures not meaningful**" if args.quick else ""),
        "",
        f"Occupancy-model preset `{args.size}`, gamma 0.9 with the distillation target, frame stack 3",
        f"as context and target. Data: {source}.",
        "",
        "N > 1 processes are `torchrun --standalone --nproc_per_node=N` (gloo); 1 process is a plain run.",
        "Gradients are averaged over processes each step, so N processes train on N times the batch:",
        "samples/s is the throughput; speedup is relative to 1 process on",
        f"{args.threads} thread(s), efficiency is speedup per core used. {args.steps} timed steps after",
        f"{args.warmup} untimed. Peak RSS is `ru_maxrss` of a training process (the largest over ranks)",
        "after its last training step, and after the held-out evaluation that ends a run (256 windows",
        "scored by `log_prob`), which sets the peak; the total adds up the processes (the torchrun",
        "agent is not counted). The token file is memory-mapped: its pages count once touched.",
        "",
        f"Load average (1 min) when the run started: {load:.2f} on {os.cpu_count()} cores"
        + (
            ": other jobs shared the machine, which lowers every figure and the 2-process one most."
            if load > 0.5
            else "."
        ),
        "",
        *markdown_table(rows, columns),
    ]
    (args.out_dir / "scaling.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out_dir / 'scaling.md'}")


if __name__ == "__main__":
    main()
