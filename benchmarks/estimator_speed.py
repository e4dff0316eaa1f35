"""Speed of the VOC's Q estimators as agents and benchmarks call them: writes
results/estimator_speed.md and .csv.

Rows: ms per decision (``pool_q`` for one state, K candidate actions, a pool of P futures: what a
``voc-<tok>`` agent computes per step, tokenizer and prior not included), ``sample`` Q evaluations
per second (N = 32 futures, 16 states a call) and ``pool`` Q evaluations per second (K = 8, 64
futures, 4 states a call: the return-error benchmark's pool row), each with its ``floor``: what
the FLOPs alone cost at the measured rate of the model's own matrix products. ``--chunks`` adds the
throughput of dataset-wide scoring against the states per call. The token geometry is the agents'
(16 tokens per frame, vocabulary 512, a 3-frame context, 2-frame futures: 48 + 1 + 32 positions);
weights and tokens are random (the cost does not depend on their values). Each figure is the
fastest of ``--repeats`` calls after a warm-up: timings vary between calls, the minimum is the
stable statistic.

It calls only ``pool_q`` and ``sample_q``, so the same script times an older checkout of the code
(``PYTHONPATH=/path/to/old/checkout python benchmarks/estimator_speed.py --label before``). Rows are
merged into the CSV by (label, conditioning, device, dtype, threads, size, what), so runs with
other threads, labels or devices add to one table:

    python benchmarks/estimator_speed.py [--label 2026-12-04] [--threads 1] [--sizes tiny small base]
    python benchmarks/estimator_speed.py --device cuda --dtype bfloat16   # on a GPU machine
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from voc_rl import occupancy
from voc_rl.args import parse_args
from voc_rl.occupancy import CONDITIONINGS, OccupancyConfig, OccupancyModel, RewardModel
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.value import pool_futures, pool_q, sample_q

COLUMNS = [
    "label",
    "conditioning",
    "device",
    "dtype",
    "threads",
    "size",
    "what",
    "value",
    "floor",
    "unit",
    "date",
]
KEY = ("label", "conditioning", "device", "dtype", "threads", "size", "what")
GEMM_ROWS = 2048  # rows of the matrix products that time the machine's rate at the model's shapes
DECISIONS = ((4, 8), (8, 8), (8, 32))  # (K candidate actions, pool size)


@dataclasses.dataclass(frozen=True)
class Args:
    label: str = "2026-12-04"
    """names the code version timed (before/after...)"""
    sizes: tuple[str, ...] = ("tiny", "small", "base")
    """occupancy-model presets"""
    threads: int = 1
    """torch threads"""
    device: str = "cpu"
    """cpu or cuda"""
    dtype: str = dataclasses.field(default="float32", metadata={"choices": ("float32", "bfloat16")})
    """model dtype"""
    conditioning: str = dataclasses.field(default="film", metadata={"choices": CONDITIONINGS})
    """how the occupancy model takes the action (the agents' default: film)"""
    repeats: int = 9
    """timed calls per decision row (a third for Q/s)"""
    chunks: bool = False
    """also time dataset-wide scoring against the states per call (the chunk sizes of q_estimates
    and of the agents' extraction: ``sample`` and ``pool`` Q/s, ``awr`` states/s)"""
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


def token_flops(cfg: OccupancyConfig, attended: float) -> float:
    """Forward FLOPs of one token position: the blocks' matrix products, the output head and the
    attention to ``attended`` positions (layer norms, GELU and the like not counted)."""
    w = cfg.width
    return 2 * cfg.depth * (12 * w * w + 2 * attended * w) + 2 * cfg.vocab_size * w


def pool_flops(cfg: OccupancyConfig, k: int, pool: int) -> float:
    """FLOPs of ``pool_q`` for one state: the context once, ``ceil(pool / K)`` futures per action
    decoded a token at a time, then every future teacher-forced under every action."""
    n, m = cfg.n_context, cfg.n_target
    futures = k * -(-pool // k)
    prompt = n * token_flops(cfg, n / 2)
    decode = futures * (m * token_flops(cfg, n + m / 2))
    score = k * futures * (m * token_flops(cfg, n + m / 2))
    return prompt + decode + score


def matmul_rate(
    cfg: OccupancyConfig, device: torch.device, dtype: torch.dtype, sync: Callable[[], None]
) -> float:
    """FLOP/s of the model's own matrix products (its layers' shapes, GEMM_ROWS rows): the rate that
    bounds a teacher-forced pass from above."""
    w, total_flops, total_s = cfg.width, 0.0, 0.0
    for fan_in, fan_out in ((w, 3 * w), (w, w), (w, 4 * w), (4 * w, w), (w, cfg.vocab_size)):
        x = torch.randn(GEMM_ROWS, fan_in, device=device, dtype=dtype)
        weight = torch.randn(fan_out, fan_in, device=device, dtype=dtype)
        total_s += fastest(lambda x=x, weight=weight: torch.nn.functional.linear(x, weight), 20, sync)
        total_flops += 2 * GEMM_ROWS * fan_in * fan_out
    return total_flops / total_s


Setup = tuple[OccupancyConfig, OccupancyModel, RewardModel, torch.Generator, Callable[[], None]]


def setup(size: str, conditioning: str, device: torch.device, dtype: torch.dtype) -> Setup:
    """A preset's model and reward head in the agents' token geometry, random weights; a seeded
    generator and the device's synchronisation."""
    cfg = OccupancyConfig.preset(
        size, vocab_size=512, tokens_per_frame=16, action_dim=6, target_frames=2,
        action_conditioning=conditioning,
    )  # fmt: skip
    torch.manual_seed(0)
    model = OccupancyModel(cfg).eval().to(device=device, dtype=dtype)
    reward = RewardModel(cfg).eval().to(device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return cfg, model, reward, g, sync


def parity(model: OccupancyModel, cfg: OccupancyConfig, g: torch.Generator) -> float:
    """Largest difference of ``log_prob`` (nats per future) between ``model`` and a float32 CPU copy
    of it, on 16 states x 4 actions x 8 futures of random tokens: the device path computes the same
    function (float32 within ~1e-4; bfloat16 an approximation, reported)."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    ctx = torch.randint(cfg.vocab_size, (16, cfg.n_context), device=device, generator=g)
    acts = torch.rand(16, 4, cfg.action_dim, device=device, generator=g) * 2 - 1
    fut = torch.randint(cfg.vocab_size, (16, 8, cfg.n_target), device=device, generator=g)
    with torch.no_grad():
        here = model.log_prob(ctx, acts.to(dtype), fut).float().cpu()
        ref = copy.deepcopy(model).to("cpu", torch.float32).log_prob(ctx.cpu(), acts.cpu(), fut.cpu())
    return float((here - ref).abs().max())


def measure(
    size: str, conditioning: str, device: torch.device, dtype: torch.dtype, repeats: int
) -> list[tuple[str, float, float | None, str]]:
    """Rows (what, value, floor, unit): the floor is the value at the model's measured matrix-product
    rate if nothing but those FLOPs cost time (a lower bound of ms, an upper bound of Q/s)."""
    cfg, model, reward, g, sync = setup(size, conditioning, device, dtype)
    rate = matmul_rate(cfg, device, dtype, sync)

    def states(b: int) -> torch.Tensor:
        return torch.randint(cfg.vocab_size, (b, cfg.n_context), device=device, generator=g)

    def actions(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, cfg.action_dim, device=device, generator=g) * 2 - 1).to(dtype)

    rows = [("matrix products at the model's shapes", rate / 1e9, rate / 1e9, "GFLOP/s")]
    if (device.type, dtype) != ("cpu", torch.float32):
        rows.append(("log_prob: max abs. difference from CPU float32", parity(model, cfg, g), None, "nats"))
    for k, pool in DECISIONS:
        ctx, acts = states(1), actions(1, k)

        def decide(ctx: torch.Tensor = ctx, acts: torch.Tensor = acts, pool: int = pool) -> torch.Tensor:
            return pool_q(model, reward, ctx, acts, pool, generator=g)

        s = fastest(decide, repeats, sync)
        floor = 1000 * pool_flops(cfg, k, pool) / rate
        rows.append((f"decision: pool_q K={k}, pool {pool}", 1000 * s, floor, "ms"))
        if device.type == "cuda" and hasattr(occupancy, "CUDA_GRAPHS"):  # the same, decoded eagerly
            occupancy.CUDA_GRAPHS = False
            try:
                s = fastest(decide, repeats, sync)
            finally:
                occupancy.CUDA_GRAPHS = True
            rows.append((f"decision: pool_q K={k}, pool {pool}, no CUDA graphs", 1000 * s, floor, "ms"))
    ctx, act = states(16), actions(16)
    s = fastest(lambda: sample_q(model, reward, ctx, act, n=32, generator=g), max(2, repeats // 3), sync)
    flops = cfg.n_context * token_flops(cfg, cfg.n_context / 2) + 32 * cfg.n_target * token_flops(
        cfg, cfg.n_context + cfg.n_target / 2
    )
    rows.append(("sample (N=32): Q evaluations per second", 16 / s, rate / flops, "Q/s"))
    ctx, acts = states(4), actions(4, 8)
    s = fastest(lambda: pool_q(model, reward, ctx, acts, 64, generator=g), max(2, repeats // 3), sync)
    rows.append(("pool (K=8, 64): Q evaluations per second", 4 / s, rate / pool_flops(cfg, 8, 64), "Q/s"))
    return rows


def measure_chunks(
    size: str, conditioning: str, device: torch.device, dtype: torch.dtype
) -> list[tuple[str, float, float | None, str]]:
    """Throughput against states per call: ``sample`` (N = 32), ``pool`` (K = 8, 64) and the VOC
    agents' extraction scoring (``pool_futures``, the dataset action and 8 prior samples, pool 8)."""
    cfg, model, reward, g, sync = setup(size, conditioning, device, dtype)

    def inputs(b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = torch.randint(cfg.vocab_size, (b, cfg.n_context), device=device, generator=g)
        acts = torch.rand(b, k, cfg.action_dim, device=device, generator=g) * 2 - 1
        return ctx, acts.to(dtype)

    gpu = device.type != "cpu"  # a GPU fills with far more rows: time larger calls there
    few = 3 if gpu else 1  # timed calls: a GPU's second call of a shape captures its CUDA graph
    rows = []
    for b in (16, 64, 256, 1024) if gpu else (4, 8, 16, 32, 64):
        ctx, acts = inputs(b, 1)
        s = fastest(
            lambda ctx=ctx, act=acts[:, 0]: sample_q(model, reward, ctx, act, n=32, generator=g),
            few + 1,
            sync,
        )
        rows.append((f"sample (N=32), {b} states a call", b / s, None, "Q/s"))
    for b in (4, 16, 64) if gpu else (2, 4, 8, 16):
        ctx, acts = inputs(b, 8)
        s = fastest(lambda ctx=ctx, acts=acts: pool_q(model, reward, ctx, acts, 64, generator=g), few, sync)
        rows.append((f"pool (K=8, 64), {b} states a call", b / s, None, "Q/s"))
    for b in (64, 256, 1024) if gpu else (16, 64, 128):
        ctx, acts = inputs(b, 9)
        s = fastest(lambda ctx=ctx, acts=acts: pool_futures(model, ctx, acts, 8, generator=g), few, sync)
        rows.append((f"extraction scoring (K=9, pool 8), {b} states a call", b / s, None, "states/s"))
    return rows


def merge(path: Path, new: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of ``path`` (if any) with the rows of ``new`` replacing those of the same key."""
    old = list(csv.DictReader(path.open())) if path.exists() else []
    for r in old:  # rows from before these columns: the conditioning was "token", no floor
        r["conditioning"] = r.get("conditioning") or "token"
        r["floor"] = r.get("floor") or "-"
    keys = {tuple(str(r[c]) for c in KEY) for r in new}
    return [r for r in old if tuple(r[c] for c in KEY) not in keys] + new


def main(argv: list[str] | None = None) -> None:
    a = parse_args(Args, argv)
    torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    new = []
    for size in a.sizes:
        measured = measure(size, a.conditioning, device, dtype, a.repeats)
        if a.chunks:
            measured += measure_chunks(size, a.conditioning, device, dtype)
        for what, value, floor, unit in measured:
            bound = "-" if floor is None else round(floor, 2)
            shown = round(value, 2) if abs(value) >= 1 else float(f"{value:.3g}")  # parity rows: ~1e-5
            print(f"{a.label} {size:5s} {what:45s} {shown:>9} (floor {bound}) {unit}", flush=True)
            new.append({
                "label": a.label, "conditioning": a.conditioning, "device": a.device, "dtype": a.dtype,
                "threads": a.threads, "size": size, "what": what, "value": shown,
                "floor": bound, "unit": unit, "date": date,
            })  # fmt: skip
    a.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = a.out_dir / "estimator_speed.csv"
    rows = merge(csv_path, new)
    write_csv(csv_path, rows, COLUMNS)
    write_markdown(rows, a.out_dir, machine_line(threads=a.threads, uses_gpu=a.device != "cpu"))


def write_markdown(rows: list[dict[str, object]], out_dir: Path, machine: str) -> None:
    """results/estimator_speed.md: every row of the CSV, the last command and its machine."""
    lines = [
        "# VOC estimators: speed",
        "",
        f"Last command: `{command_line()}`  ",
        machine,
        f"Date (UTC) of the last run: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} (rows: their date).",
        "",
        "Agents' token geometry (48 context + 1 action + 32 target positions, vocabulary 512); random",
        "weights; the fastest of several calls. `label` names the code timed: `before` is the commit",
        "before issue [F] (every row of a pool recomputed its context; K x M prompts copied per chunk),",
        "`2026-12-02` one context computation per state, copied to its K x M rows; `2026-12-04` also",
        "reads it in place from 32 rows a context or 128 in all, draws tokens by inverse CDF and runs",
        "fewer operations per decoding step. `conditioning`: how the model takes the action (`film`,",
        "the agents' default since 2026-12-03, or `token`). `floor`: the value if only the matrix",
        "products and attention cost time, at the first row's measured rate of the model's own layer",
        "shapes (a lower bound of ms, an upper bound of Q/s). Timings on this 2-core virtual machine",
        "vary by up to 2x with what runs on the other core: compare rows measured side by side.",
        "`cpu` rows: the project's 2-core x86_64 virtual machines, torch 2.13.0+cpu (labels `before`,",
        "`2026-12-02`, `2026-12-04`: an Intel Xeon; `2026-12-04b`, the same code with each sampling",
        "call's uniform numbers drawn at once, an AMD EPYC with the other core idle). `cuda` rows:",
        "`bash benchmarks/cuda.sh` on one NVIDIA H200 (torch 2.11.0+cu130, 2026-12-04), float32 and",
        "bfloat16, with chunks of up to 1024 states; `log_prob: max abs. difference from CPU float32`",
        "compares the device's (or dtype's) log-density of 32-token futures with a float32 CPU copy",
        "of the same weights on the same tokens.",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    (out_dir / "estimator_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / 'estimator_speed.md'}")


if __name__ == "__main__":
    main()
