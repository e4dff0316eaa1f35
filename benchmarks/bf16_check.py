"""Is bfloat16 exact enough for a VOC agent's decisions? Writes results/bf16_check.md.

Loads a trained ``voc-<tok>`` agent, takes ``--states`` real token contexts from a token array of
its dataset (``tokens.npy`` under the dataset's ``tokens/`` folder), draws 8 candidate actions per
state from its prior, and scores them with ``pool_q`` (pool 8) in float32 and in a bfloat16 copy of
the occupancy and reward models, on the same seeds. Reports the log-density difference, the Q
difference against the spread of Q across a state's candidates, how often the best candidate
agrees, and ms per decision of each:

    python benchmarks/bf16_check.py --agent quickstart/agent.zip \\
        --tokens quickstart/datasets/voc_rl/cheetah-run-quickstart-v0/tokens/<hash>/tokens.npy
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

import voc_rl
from voc_rl.args import parse_args
from voc_rl.report import command_line, machine_line
from voc_rl.value import pool_q


@dataclasses.dataclass(frozen=True)
class Args:
    agent: Path
    """a saved voc-<tok> agent (.zip)"""
    tokens: Path
    """(frames, tokens per frame) array of its data"""
    states: int = 32
    """token contexts compared"""
    device: str = "cpu"
    """where both copies run (cuda: the table is written as bf16_check_cuda.md)"""
    out_dir: Path = Path("results")
    """folder of the table"""


def main(argv: list[str] | None = None) -> None:
    a = parse_args(Args, argv)
    torch.set_num_threads(1)
    agent = voc_rl.load_agent(a.agent)
    device = torch.device(a.device)
    occ, rew, prior = agent.occupancy.to(device), agent.reward.to(device), agent.prior.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    c = occ.config
    tok = np.load(a.tokens)
    if tok.ndim != 2 or tok.shape[1] != c.tokens_per_frame:
        raise SystemExit(f"{a.tokens}: expected (frames, {c.tokens_per_frame}) tokens, got {tok.shape}")
    idx = np.random.default_rng(0).choice(np.arange(c.frame_stack, len(tok)), a.states, replace=False)
    # consecutive frames of the array (a few stacks may straddle two episodes: fine for a precision check)
    ctx = np.stack([tok[i - c.frame_stack + 1 : i + 1].reshape(-1) for i in idx]).astype(np.int64)
    ctx = torch.from_numpy(ctx).to(device)
    acts = prior.sample(ctx, 8, torch.Generator(device).manual_seed(0)).float()
    half = copy.deepcopy(occ).to(torch.bfloat16), copy.deepcopy(rew).to(torch.bfloat16)
    fut = occ.sample(ctx, acts[:, 0], n=8, generator=torch.Generator(device).manual_seed(1))
    diff = (occ.log_prob(ctx, acts, fut) - half[0].log_prob(ctx, acts, fut)).abs().float().cpu()
    q, ms = {}, {}
    for name, (o, r) in {"float32": (occ, rew), "bfloat16": half}.items():
        pool_q(o, r, ctx[:1], acts[:1], 8)  # warm-up (a GPU's first call loads its kernels)
        sync()
        start = time.perf_counter()
        q[name] = torch.cat([
            pool_q(o, r, ctx[i : i + 1], acts[i : i + 1], 8, generator=torch.Generator(device).manual_seed(i))
            for i in range(len(ctx))
        ]).float().cpu()  # fmt: skip
        sync()
        ms[name] = 1000 * (time.perf_counter() - start) / len(ctx)
    q32, q16 = q["float32"], q["bfloat16"]
    lines = [
        "# bfloat16 against float32 for VOC decisions",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=1, uses_gpu=device.type != "cpu"),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}",
        "",
        f"Model: {occ}; {len(ctx)} states, 8 prior candidates each, `pool_q` pool 8, the same seeds; "
        f"device {device.type}.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| mean / max abs. log-density difference, nats | {diff.mean():.3f} / {diff.max():.3f} |",
        f"| Q std across states | {q32.mean(1).std():.3f} |",
        f"| mean spread of Q across a state's candidates (std) | {q32.std(1).mean():.3f} |",
        f"| mean abs. Q difference, bf16 - fp32 | {(q32 - q16).abs().mean():.3f} |",
        f"| best candidate the same | {(q32.argmax(1) == q16.argmax(1)).float().mean():.2f} |",
        f"| ms per decision, float32 / bfloat16 | {ms['float32']:.1f} / {ms['bfloat16']:.1f} |",
    ]
    a.out_dir.mkdir(parents=True, exist_ok=True)
    name = "bf16_check.md" if device.type == "cpu" else f"bf16_check_{device.type}.md"
    (a.out_dir / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
