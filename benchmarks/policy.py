"""Control from offline pixel data: every agent's evaluation return, decision latency, and how often
its chosen candidate is the simulator's best; writes results/policy.md, policy.csv, policy_top1.csv.

For each task, dataset and seed, agents are trained on the dataset's training episodes (sharing
the tokenizer and the behaviour prior when they use the same tokens), or assembled from the parts
of a return-error run (``--from-return-error RUNS``: its tokenizer, BC prior, occupancy models and
TD critic, trained on the same split). Each agent plays ``--episodes`` evaluation episodes with
``predict(deterministic=True)`` on env seeds 1000, 1001, ...; score = return / 10 as the published
pixel benchmark reports. The behaviour policies' own returns (recorded in the dataset) are rows too.

Top-1 agreement: on ``--top1-states`` states of held-out episodes, K candidates (the prior's mode
and K - 1 samples) are ranked by the simulator (restore the state, take the candidate, follow the
behaviour policy; common random numbers across candidates) and by each agent's scores; the
agreement is how often the agent's best is the simulator's best (chance 1/K).

    python benchmarks/policy.py --data-root datasets                       # the full grid
    python benchmarks/policy.py --tasks cheetah-run --datasets mixed --agents bc voc-titok --seeds 0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import voc_rl
from voc_rl.agents import Agent
from voc_rl.agents.base import play_episode
from voc_rl.data.dataset import PixelDataset
from voc_rl.evaluation import states_of
from voc_rl.ground_truth import simulator_q
from voc_rl.parts import SharedParts, collect_or_open
from voc_rl.paths import resolve_args
from voc_rl.registry import AGENT_TOKENS, agent_spec
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.tokenizers.cache import token_view

COLUMNS = (
    "task",
    "dataset",
    "agent",
    "seed",
    "episodes",
    "return_mean",
    "return_std",
    "score",
    "ms_per_decision",
)
TOP1 = ("task", "dataset", "agent", "seed", "states", "candidates", "top1_agreement", "chance")


def from_return_error(name: str, ds: PixelDataset, seed: int, args: argparse.Namespace) -> Agent:
    """An agent assembled from the parts a return-error run left in ``--from-return-error`` (same
    split; its defaults: tokenizers at the agents' 16 tokens, Monte-Carlo occupancy models)."""
    shared = SharedParts(args.from_return_error, tok_size=args.size, size=args.size)
    spec = agent_spec(name)
    backend = spec.config.tokenizer if name.startswith("voc-") else args.baseline_tokenizer
    tokenizer = shared.checkpoint("tokenizer", ds, backend=backend)
    if not tokenizer.exists():
        raise FileNotFoundError(f"{tokenizer} does not exist: no return-error run of {backend} tokens here")
    view = token_view(ds, tokenizer)
    parts = {"tokenizer": tokenizer, "prior": shared.checkpoint("prior", view)}
    if spec.config.kind == "voc":
        parts["occupancy"] = shared.checkpoint("occupancy", view, gamma=args.gamma, seed=seed)
    elif spec.config.kind == "wm-rollout":
        parts["occupancy"] = shared.checkpoint("occupancy", view, gamma=0.0, seed=0)
    elif spec.config.kind == "td-critic":
        parts["critic"] = shared.checkpoint("critic", view, gamma=args.gamma, seed=seed)
    agent = voc_rl.make_agent(
        name, size=args.size, seed=seed, tokenizer=backend, tokenizer_kwargs=AGENT_TOKENS[backend],
        gamma=args.gamma, target_frames=0, **args.agent_overrides,
    )  # fmt: skip
    return agent.load_parts(ds.meta.get("task", ds.env_id), **parts)


def trained(name: str, ds: PixelDataset, seed: int, args: argparse.Namespace) -> Agent:
    agent = voc_rl.make_agent(name, size=args.size, seed=seed, gamma=args.gamma, **args.agent_overrides)
    c = agent.config
    shared = (
        args.runs / f"{ds.meta['name']}__{c.tokenizer}__s{seed}"
    )  # parts shared by agents on these tokens
    return agent.learn(ds, run_dir=shared / name, tokenizer=_shared_tokenizer(agent, ds, shared))


def _shared_tokenizer(agent: Agent, ds: PixelDataset, shared: Path) -> Path:
    """The tokenizer of a bc agent trained first in ``shared/bc`` (with the agent's tokenizer
    fields and the agent's steps, so that ``--agents bc`` later reuses that folder): every agent
    reads its tokens."""
    path = shared / "bc" / "tokenizer" / "tokenizer.pt"
    if not path.exists():
        c = agent.config
        bc = voc_rl.make_agent(
            "bc", size=c.size, seed=c.seed, tokenizer=c.tokenizer, tokenizer_kwargs=c.tokenizer_kwargs,
            tokenizer_steps=c.tokenizer_steps, prior_steps=c.prior_steps,
        )  # fmt: skip
        bc.learn(ds, run_dir=shared / "bc")
    return path


def evaluate(agent: Agent, task: str, episodes: int) -> tuple[list[float], float]:
    """Returns of ``episodes`` deterministic episodes, and milliseconds per decision."""
    returns, spent, decisions = [], 0.0, 0
    for e in range(episodes):
        total, n, seconds = play_episode(agent, task, 1000 + e)
        spent, decisions = spent + seconds, decisions + n
        returns.append(total)
        print(f"  {agent.name} episode {e}: return {total:.1f}", flush=True)
    return returns, 1000 * spent / max(decisions, 1)


def top1(agents: dict[str, Agent], ds: PixelDataset, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Agreement of each agent's best candidate with the simulator's best (chance 1 / K)."""
    _, val_eps = ds.split(0.1, seed)
    idx = states_of(ds, val_eps, args.top1_states, seed=seed + 11)
    first = next(iter(agents.values()))
    first.seed(seed)
    obs = ds.stacks(idx, first.prior.config.frame_stack)  # (N, 3F, H, W)
    with torch.no_grad():
        context, _ = first._context(obs)
        cands = first._candidates(context)  # (N, K, A), shared by every agent
    k = cands.shape[1]
    truth = simulator_q(
        ds, np.repeat(idx, k), [args.gamma], rollouts=args.top1_rollouts, processes=args.processes,
        actions=cands.reshape(-1, cands.shape[2]).cpu().numpy(),
    ).at(args.gamma)[0].reshape(len(idx), k)  # fmt: skip
    best = truth.argmax(1)
    out = {}
    for name, agent in agents.items():
        if agent.config.kind == "bc":
            choice = np.zeros(len(idx), dtype=int)  # bc acts with the prior's mode: candidate 0
        else:
            agent.seed(seed)
            choice = agent.q_values(obs, cands.cpu().numpy()).argmax(1)
        out[name] = float((choice == best).mean())
    return out


def returns_row(agent: str, seed: Any, returns: Any, ms: Any) -> dict[str, Any]:
    r = np.asarray(returns, dtype=np.float64)
    return {"agent": agent, "seed": seed, "episodes": len(r), "return_mean": round(float(r.mean()), 1),
            "return_std": round(float(r.std()), 1), "score": round(float(r.mean()) / 10, 1),
            "ms_per_decision": ms}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["cheetah-run", "walker-walk"])
    p.add_argument("--datasets", nargs="+", default=["medium", "mixed"])
    p.add_argument("--agents", nargs="+", default=["bc", "td-critic", "wm-rollout", "voc-vqvae", "voc-dino",
                                                   "voc-musik", "voc-titok"])  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--episodes-for", nargs="*", default=[], metavar="AGENT=N",
                   help="fewer episodes for slow agents, e.g. wm-rollout=2")  # fmt: skip
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--size", default="small")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="agent config overrides (int)")
    p.add_argument("--top1-states", type=int, default=20)
    p.add_argument("--top1-rollouts", type=int, default=4)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--collect-episodes", type=int, default=200)
    p.add_argument("--data-root", type=Path, default=Path("datasets"))
    p.add_argument("--runs", type=Path, default=Path("runs/policy"))
    p.add_argument(
        "--from-return-error", type=Path, help="assemble agents from this return-error --runs folder"
    )
    p.add_argument(
        "--baseline-tokenizer",
        default="titok",
        help="tokens of bc/td-critic/wm-rollout with --from-return-error",
    )
    p.add_argument("--out-dir", type=Path, default=Path("results"))
    p.add_argument("--note", default="")
    args = resolve_args(p.parse_args(argv), "data_root", "runs", "from_return_error", "out_dir")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    args.agent_overrides = {k: int(v) for k, v in (s.split("=") for s in args.set)}
    episodes_for = {k: int(v) for k, v in (s.split("=") for s in args.episodes_for)}
    start = time.perf_counter()
    rows, agreement = [], []
    for task in args.tasks:
        for kind in args.datasets:
            ds = collect_or_open(args.data_root, task, kind, args.collect_episodes)
            ids, returns = ds.arrays["policy_id"][ds.ep_start], ds.episode_returns()
            for pid, desc in sorted(ds.meta.get("policies", {}).items()):
                r = returns[ids == int(pid)]
                if len(r):
                    name = f"behaviour ({desc.get('level', pid)})"
                    rows.append({"task": task, "dataset": kind, **returns_row(name, "-", r, "-")})
            for seed in args.seeds:
                make = from_return_error if args.from_return_error else trained
                agents = {name: make(name, ds, seed, args) for name in args.agents}
                for name, agent in agents.items():
                    rets, ms = evaluate(agent, task, episodes_for.get(name, args.episodes))
                    rows.append(
                        {"task": task, "dataset": kind, **returns_row(name, seed, rets, round(ms, 1))}
                    )
                    print(rows[-1], flush=True)
                if args.top1_states:
                    k = next(iter(agents.values())).config.candidates
                    for name, rate in top1(agents, ds, seed, args).items():
                        agreement.append(
                            {"task": task, "dataset": kind, "agent": name, "seed": seed,
                             "states": args.top1_states, "candidates": k, "top1_agreement": round(rate, 3),
                             "chance": round(1 / k, 3)}
                        )  # fmt: skip
    write(rows, agreement, args, time.perf_counter() - start)


def write(
    rows: list[dict[str, Any]], agreement: list[dict[str, Any]], args: argparse.Namespace, seconds: float
) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "policy.csv", rows, COLUMNS)
    if agreement:
        write_csv(args.out_dir / "policy_top1.csv", agreement, TOP1)
    lines = [
        "# Control from offline pixel data",
        "",
        f"Command: `{command_line(hide=['--note'])}`  ",
        f"{machine_line(int(os.environ['OMP_NUM_THREADS']), False)}  ",
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min",
        *([f"  \n{args.note}"] if args.note else []),
        "",
        "Deterministic evaluation episodes (500 agent steps, env seeds 1000+); score = return / 10.",
        "Behaviour rows: the dataset's own episodes of each policy.",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    if agreement:
        lines += [
            "",
            "## Top-1 agreement with the simulator's best candidate",
            "",
            *markdown_table(agreement, TOP1),
        ]
    (args.out_dir / "policy.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out_dir / 'policy.md'}")


if __name__ == "__main__":
    main()
