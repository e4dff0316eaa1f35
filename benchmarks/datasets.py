"""Dataset benchmarks: collection speed, size on disk, peak RAM and window-sampler throughput.

Per image size: times ``collect`` (random policy; the shipped ``medium`` one if any) on a short run
into a temp folder; collects (or reuses) the full random dataset ``bench-<task>-random-<size>px``
(``--full-episodes``) under ``--data-root`` and measures its HDF5 and cache sizes; measures peak RAM
of fresh subprocesses that build the cache from scratch, or open it and sample; times
:class:`WindowSampler` warm.
Writes ``<out-dir>/datasets.csv`` (``what,size,value,unit,note``) and ``<out-dir>/datasets.md``.

    python benchmarks/datasets.py [--sizes 64 84] [--data-root DIR] [--note TEXT]
    python benchmarks/datasets.py --quick      # a smoke run in a temporary folder
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy is imported

import argparse
import contextlib
import csv
import dataclasses
import datetime
import functools
import json
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from importlib.metadata import version
from pathlib import Path
from typing import Any

from voc_rl.args import parse_args
from voc_rl.behavior import shipped_policy_path
from voc_rl.data.collect import collect
from voc_rl.data.dataset import open_dataset
from voc_rl.data.sampler import WindowSampler
from voc_rl.data.storage import DatasetError, dataset_dir

BATCH, GAMMA, FRAME_STACK = 256, 0.9, 3
MIN_WINDOWS_64, MAX_RAM_RATIO = 20_000.0, 2.0
DEFAULT_ROOT = Path("/work/voc_runs/datasets")
Row = tuple[str, int, float | None, str, str]  # what, size, value, unit, note


@dataclasses.dataclass(frozen=True)
class Args:
    task: str = "cheetah-run"
    """task"""
    sizes: tuple[int, ...] = (64,)
    """image sizes"""
    collect_episodes: int = 10
    """episodes for the timed short run"""
    full_episodes: int = 200
    """episodes of the full dataset (collected once, then reused)"""
    warmup: int = 50
    """untimed sampler batches first"""
    batches: int = 100
    """sampler batches per timed repeat"""
    repeats: int = 5
    """timed repeats of the sampler (the median is kept)"""
    mem_batches: int = 200
    """batches sampled by the process whose peak RAM is measured"""
    data_root: Path = DEFAULT_ROOT
    """datasets root (a temporary folder with --quick)"""
    out_dir: Path = Path("results")
    """folder of the tables (a temporary folder with --quick)"""
    note: str = ""
    """free text for the markdown, e.g. what else was running"""
    quick: bool = False
    """tiny smoke run; figures are not meaningful"""
    child: tuple[str, ...] | None = dataclasses.field(
        default=None, metadata={"nargs": 2, "metavar": ("MODE", "PATH"), "help": argparse.SUPPRESS}
    )
    """internal: build the cache of PATH (MODE build) or open and sample it (sample), in a fresh process"""


def quick() -> dict[str, Any]:
    """The ``--quick`` preset: few episodes and batches, in a temporary folder (its datasets/ removed
    at the end)."""
    tmp = Path(tempfile.mkdtemp(prefix="voc-bench-quick-"))
    return {
        "collect_episodes": 2,
        "full_episodes": 20,
        "warmup": 5,
        "batches": 10,
        "mem_batches": 20,
        "data_root": tmp / "datasets",
        "out_dir": tmp / "results",
    }


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def peak_mb() -> float:
    """Peak RSS in MiB: ``VmHWM``, as Linux keeps ``ru_maxrss`` across fork + exec (the parent's leaks in)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:")) / 1024  # kB


def child(mode: str, path: Path, batches: int) -> None:
    """Run in a fresh process: build the cache (``build``) or open it and sample (``sample``)."""
    base, start = peak_mb(), time.perf_counter()
    ds = open_dataset(path)
    seconds = time.perf_counter() - start
    if mode == "sample":
        sampler = WindowSampler(ds, frame_stack=FRAME_STACK, seed=1)
        for _ in range(batches):
            sampler.sample(BATCH, GAMMA)
    print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "seconds": seconds}))


def run_child(mode: str, path: Path, batches: int = 0) -> dict[str, float]:
    """Run :func:`child` in a fresh process; for ``build``, move a ``bench-*`` dataset's cache aside first."""
    cache, aside = path / "cache", path / f".cache-old-{os.getpid()}"
    if mode == "build":
        if cache.is_symlink() or not path.name.startswith("bench-"):
            raise RuntimeError(f"refusing to delete {cache}: not a plain cache of a benchmark dataset")
        if cache.exists():
            cache.rename(aside)
    cmd = [sys.executable, __file__, "--child", mode, str(path), "--batches", str(batches)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"{mode} child failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    except BaseException:
        if aside.exists():
            shutil.rmtree(cache, ignore_errors=True)
            aside.rename(cache)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def collect_rows(args: Args, size: int) -> list[Row]:
    """Agent steps (one rendered frame each) per second, wall clock, HDF5 writing included."""
    rows: list[Row] = []
    for policy in ("random", "medium"):
        if policy != "random" and not shipped_policy_path(args.task, policy).exists():
            rows.append(("collect", size, None, "frames/s", f"policy {policy}: skipped, no shipped policy"))
            continue
        with tempfile.TemporaryDirectory(prefix="voc-bench-") as tmp:
            kw = {"episodes": args.collect_episodes, "out": tmp, "size": size, "progress": False}
            sec = timeit.timeit(functools.partial(collect, args.task, policy, **kw), number=1)
        note = f"policy {policy}, {args.collect_episodes} episodes x 500 steps"
        rows.append(("collect", size, args.collect_episodes * 500 / sec, "frames/s", note))
    path = dataset_dir(args.data_root, name := f"bench-{args.task}-random-{size}px")
    with contextlib.suppress(DatasetError):  # reuse the full dataset if it is there and sound
        if path.exists() and open_dataset(path).num_episodes == args.full_episodes:
            return rows
    kw = {"episodes": args.full_episodes, "out": args.data_root, "size": size, "name": name}
    sec = timeit.timeit(functools.partial(collect, args.task, "random", overwrite=True, **kw), number=1)
    note = f"policy random, {args.full_episodes} episodes: the full dataset"
    return [*rows, ("collect", size, args.full_episodes * 500 / sec, "frames/s", note)]


def bench_size(args: Args, size: int) -> list[Row]:
    rows = collect_rows(args, size)
    path = dataset_dir(args.data_root, f"bench-{args.task}-random-{size}px")
    ds = open_dataset(path)
    per_100k = 1e5 / ds.num_transitions / 1e6  # bytes -> MB per 100k transitions
    hdf5 = (path / "data" / "main_data.hdf5").stat().st_size
    cache = sum(p.stat().st_size for p in (path / "cache").rglob("*") if p.is_file())
    raw = ds.frames.size  # N_frames * 3 * H * W bytes
    rows += [
        ("disk_hdf5", size, hdf5 * per_100k, "MB/100k", f"Minari HDF5, lossless; {len(ds.frames)} frames"),
        ("disk_cache", size, cache * per_100k, "MB/100k", "frames.npy + arrays.npz"),
        ("raw_frames", size, raw * per_100k, "MB/100k", "N_frames * 3 * H * W, for reference"),
    ]
    build, sample = run_child("build", path), run_child("sample", path, args.mem_batches)
    for what, res in (("build", build), ("sample", sample)):
        how = "building the cache" if what == "build" else f"open + {args.mem_batches} batches of {BATCH}"
        note = f"{how}; fresh process, {res['base_mb']:.0f} MiB of it after imports"
        rows.append((f"peak_rss_{what}", size, res["peak_mb"], "MiB", note))
        note = f"{(res['peak_mb'] - res['base_mb']) * 2**20 / raw:.2f}x without the imports"
        rows.append((f"ram_ratio_{what}", size, res["peak_mb"] * 2**20 / raw, "x raw", note))
    rows.append(("cache_build", size, build["seconds"], "s", "from scratch, incl. sha256 of the HDF5"))
    opens = timeit.repeat(lambda: open_dataset(path), number=1, repeat=5)
    rows.append(("open_cached", size, 1e3 * statistics.median(opens), "ms", "median of 5, warm page cache"))
    draw = functools.partial(WindowSampler(ds, frame_stack=FRAME_STACK, seed=0).sample, BATCH, GAMMA)
    timeit.timeit(draw, number=args.warmup)  # touches the pages first
    rates = [args.batches * BATCH / t for t in timeit.repeat(draw, number=args.batches, repeat=args.repeats)]
    note = (
        f"batch {BATCH}, gamma {GAMMA}, frame_stack {FRAME_STACK}; {args.warmup} warm-up batches, median of"
        f" {args.repeats} x {args.batches} batches (min {min(rates):.0f}, max {max(rates):.0f})"
    )
    return [*rows, ("sampler", size, statistics.median(rates), "windows/s", note)]


def write_results(args: Args, rows: list[Row], wall_s: float) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / "datasets.csv", "w", newline="") as f:
        csv_rows = [(w, s, "" if v is None else f"{v:.6g}", u, n) for w, s, v, u, n in rows]
        csv.writer(f).writerows([("what", "size", "value", "unit", "note"), *csv_rows])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "unknown")
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("voc-rl", "numpy", "h5py", "minari", "mujoco"))
    met = {True: "**met**", False: "**NOT met**"}
    w64 = [v for w, s, v, _, _ in rows if (w, s) == ("sampler", 64) and v is not None]
    ratios = {(w.removeprefix("ram_ratio_"), s): v for w, s, v, _, _ in rows if w.startswith("ram_ratio")}
    ok = max(ratios.values()) <= MAX_RAM_RATIO
    text = ", ".join(f"{w} {s} px {r:.2f}x" for (w, s), r in ratios.items())
    goals = [
        f"- At least {MIN_WINDOWS_64:.0f} windows/s at 64 px: {met[v >= MIN_WINDOWS_64]} ({v:.0f}/s)."
        for v in w64
    ]
    goals.append(f"- Peak RAM at most ~{MAX_RAM_RATIO:.0f}x the raw frame bytes: {met[ok]} ({text}).")
    lines = [
        f"# Datasets: collection, size, RAM and sampling ({args.task})",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`"
        + " (quick run: figures not meaningful)" * args.quick,
        "",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable; Python {platform.python_version()}",
        f"- {pkgs}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}",
        *([f"- Note: {args.note} (machine shared at the time: speeds are lower bounds)."] * bool(args.note)),
        f"- Data root: `{args.data_root}`. Whole run: {wall_s:.0f} s.",
        "",
        "Frames/s = agent steps (action repeat 2, one rendered frame each) per second of wall clock, HDF5"
        " writing included. MB are 10^6 bytes, scaled to 100k transitions. Peak RAM is the peak RSS (`VmHWM`)"
        " of a fresh process, imports included; resident memmapped pages count.",
        "",
        "| what | size | value | unit | note |",
        "|---|---:|---:|---|---|",
        *(f"| {w} | {s} | {fmt(v)} | {u} | {n} |" for w, s, v, u, n in rows),
        "",
        "## Targets",
        "",
        *goals,
    ]
    (args.out_dir / "datasets.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, quick=quick)
    if args.child:  # internal: "build" or "sample", in a fresh process
        return child(args.child[0], Path(args.child[1]), args.batches)
    start, rows = time.perf_counter(), []
    for size in args.sizes:
        rows += (new := bench_size(args, size))
        print("\n".join(f"{w:>18} {s:>4} px: {fmt(v)} {u}" for w, s, v, u, _ in new))
    write_results(args, rows, time.perf_counter() - start)
    if args.quick and args.data_root.parent.name.startswith("voc-bench-quick-"):
        shutil.rmtree(args.data_root)
    print(f"wrote {args.out_dir / 'datasets.csv'} and {args.out_dir / 'datasets.md'}")


if __name__ == "__main__":
    main()
