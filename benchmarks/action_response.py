"""Does the occupancy model's Q respond to the action? Writes results/action_response.md and .csv.

Control needs a Q that ranks actions; a value model can be accurate on the dataset's actions and
still ignore the action. Per task (``mixed`` data, a 16-token vqvae shared by every model), for each
way the occupancy model reads the action (``--conditionings``: ``token``, one embedding token after
the context; ``every``, that token and an embedding added at every target position; ``film``, that
token and per-layer scales and shifts of the layer norms at the action's and targets' positions;
``:mlp`` after any of them embeds the action token by an MLP instead of a linear map, e.g.
``token:mlp``) and for the SARSA critic on the same tokens, on ``--states`` held-out states drawn
equally from every behaviour level:

- ``action_info``: held-out NLL per token of the true future with another row's action minus with
  the true one (nats/token; 0: the model ignores the action), beside ``nll_future`` and the per-slot
  ``unigram_nll`` (what ignoring the context too reaches);
- the action response: Q(s, a_t) - Q(s, u), u uniform in [-1, 1]^A, by behaviour level, for each
  model and for the simulator (restore s, take the action, then the behaviour policy; ``--rollouts``
  rollouts), and the model's response over the critic's and over the simulator's at expert states;
- ``q_nmse``: Q(s, a_t) against the simulator's, all levels.

The occupancy model's Q is the pool estimate (``--pool`` futures shared by a_t and u, weighted by
the exact mixture density: the estimator with the lowest-variance differences).

    python benchmarks/action_response.py --data-root datasets --tokenizer runs/x/bc/tokenizer/tokenizer.pt
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.critic import CriticConfig
from voc_rl.evaluation import nmse, states_by_level
from voc_rl.ground_truth import simulator_q
from voc_rl.occupancy import OccupancyConfig
from voc_rl.occupancy_train import validate, validation_batch
from voc_rl.parts import collect_or_open, fit_critic, fit_occupancy, fit_tokenizer
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.tokenizers import AGENT_TOKENS
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop
from voc_rl.value import pool_q

COLUMNS = (
    "task", "model", "train_min", "nll_future", "unigram_nll", "action_info", "reward_nmse", "q_nmse",
    "response_expert", "response_medium", "response_random", "vs_critic_expert", "vs_true_expert",
)  # fmt: skip
LEVELS = ("expert", "medium", "random")


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("cheetah-run", "walker-walk")
    """tasks"""
    dataset: str = "mixed"
    """behaviour dataset of each task"""
    collect_episodes: int = 200
    """episodes per dataset collected if missing"""
    tokenizer: tuple[Path, ...] = dataclasses.field(default=(), metadata={"nargs": "*"})
    """a tokenizer.pt per task (else trained)"""
    tokenizer_steps: int = 1000
    """training steps of a tokenizer trained here"""
    conditionings: tuple[str, ...] = ("token", "film")
    """how the occupancy model reads the action: token, every or film, each optionally with :mlp"""
    occupancy_steps: int = 3000
    """occupancy-model training steps"""
    critic_steps: int = 5000
    """TD-critic training steps"""
    gamma: float = 0.9
    """discount"""
    states: int = 240
    """held-out states per task, equally from every behaviour level"""
    rollouts: int = 4
    """simulator rollouts per state and action"""
    pool: int = 64
    """futures in the pool shared by a_t and the uniform action"""
    seed: int = 0
    """training seed"""
    size: str = "small"
    """size preset of the tokenizer, the occupancy models and the critic"""
    processes: int = 1
    """simulator processes"""
    data_root: Path = Path("datasets")
    """datasets root (missing datasets are collected there)"""
    runs: Path = Path("runs/action_response")
    """folder of the trained models"""
    out_dir: Path = Path("results")
    """folder of the table"""


def responses(q_data: np.ndarray, q_unif: np.ndarray, level: np.ndarray) -> dict[str, float]:
    return {
        f"response_{lv}": float((q_data - q_unif)[level == lv].mean()) for lv in LEVELS if (level == lv).any()
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start, rows = time.perf_counter(), []
    for i, task in enumerate(args.tasks):
        ds = collect_or_open(args.data_root, task, args.dataset, args.collect_episodes)
        run = args.runs / ds.meta["name"]
        if i < len(args.tokenizer):
            tok_path = args.tokenizer[i]
        else:
            fields = {**AGENT_TOKENS["vqvae"], "steps": args.tokenizer_steps}
            fit_tokenizer(ds, "vqvae", args.size, fields, loop=Loop(out=run / "tokenizer", seed=args.seed))
            tok_path = run / "tokenizer" / "tokenizer.pt"
        view = token_view(ds, tok_path)
        train_eps, val_eps = view.split(0.1, args.seed)
        idx = states_by_level(view, val_eps, args.states, seed=args.seed + 3)
        names = {int(k): v.get("level", k) for k, v in ds.meta.get("policies", {}).items()}
        level = np.array([names.get(int(i), "?") for i in view.arrays["policy_id"][idx]])
        rng = np.random.default_rng(args.seed)
        uniform = rng.uniform(-1, 1, (len(idx), view.arrays["action"].shape[1])).astype(np.float32)
        true_data = simulator_q(ds, idx, [args.gamma], rollouts=args.rollouts, processes=args.processes,
                                progress=False).at(args.gamma)[0]  # fmt: skip
        true_unif = simulator_q(ds, idx, [args.gamma], rollouts=args.rollouts, processes=args.processes,
                                progress=False, actions=uniform).at(args.gamma)[0]  # fmt: skip
        true = responses(true_data, true_unif, level)
        rows.append({"task": task, "model": "simulator", **true})
        ctx = torch.from_numpy(view.stacks(idx, 3).astype(np.int64))
        both = torch.stack(
            [torch.from_numpy(view.arrays["action"][idx]).float(), torch.from_numpy(uniform)], 1
        )

        t = time.perf_counter()
        config = CriticConfig.for_dataset(view, args.size, gamma=args.gamma, steps=args.critic_steps)
        critic = fit_critic(
            view, config, loop=Loop(out=run / f"critic_s{args.seed}", seed=args.seed, progress=False)
        )
        minutes = (time.perf_counter() - t) / 60
        q = critic.q_values(ctx, both).cpu().numpy()
        critic_row = {"task": task, "model": "td-critic", "train_min": round(minutes, 1),
                      "q_nmse": nmse(q[:, 0], true_data), **responses(q[:, 0], q[:, 1], level)}  # fmt: skip
        rows.append(critic_row)
        for spec in args.conditionings:
            cond, _, encoder = spec.partition(":")
            t = time.perf_counter()
            config = OccupancyConfig.for_dataset(
                view, args.size, gamma=args.gamma, target_frames=2, action_conditioning=cond,
                action_encoder=encoder or "linear", steps=args.occupancy_steps,
            )  # fmt: skip
            folder = run / f"occupancy_{spec.replace(':', '-')}_s{args.seed}"
            model, reward = fit_occupancy(view, config, loop=Loop(out=folder, seed=args.seed, progress=False))
            minutes = (time.perf_counter() - t) / 60
            val = validation_batch(view, val_eps, train_eps, config, args.seed + 1, model.device, size=512)
            metrics = validate(model, reward, val)
            gen = torch.Generator().manual_seed(args.seed)
            q = torch.cat([pool_q(model, reward, ctx[i : i + 16], both[i : i + 16], pool_size=args.pool,
                                  generator=gen) for i in range(0, len(idx), 16)]).numpy()  # fmt: skip
            rows.append({"task": task, "model": f"voc ({spec.replace(':', ', ')})",
                         "train_min": round(minutes, 1), **metrics, "q_nmse": nmse(q[:, 0], true_data),
                         **responses(q[:, 0], q[:, 1], level)})  # fmt: skip
        for r in rows:
            if r["task"] == task and "response_expert" in r and r["model"] != "simulator":
                r["vs_critic_expert"] = r["response_expert"] / critic_row["response_expert"]
                r["vs_true_expert"] = r["response_expert"] / true["response_expert"]
        write(rows, args, time.perf_counter() - start, len(idx))


def write(rows: list[dict[str, Any]], args: Args, seconds: float, states: int) -> None:
    out = [
        {c: (round(r[c], 3) if isinstance(r.get(c), float) else r.get(c, "-")) for c in COLUMNS} for r in rows
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "action_response.csv", out, COLUMNS)
    lines = [
        "# Does the occupancy model's Q respond to the action?",
        "",
        f"Command: `{command_line()}`  ",
        f"{machine_line(int(os.environ['OMP_NUM_THREADS']), False)}  ",
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min",
        "",
        f"{states} held-out states per task, equally from every behaviour level; gamma {args.gamma}; "
        f"occupancy models {args.occupancy_steps} steps, critic {args.critic_steps}; seed {args.seed}. "
        "response_<level>: mean Q(s, a_t) - Q(s, uniform action) (return units); vs_critic / vs_true: "
        "the expert-level response over the critic's / the simulator's; action_info: nats/token "
        "(held-out NLL of the true future with a shuffled action minus with the true one).",
        "",
        *markdown_table(out, COLUMNS),
    ]
    (args.out_dir / "action_response.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(out) - 2 :]), flush=True)


if __name__ == "__main__":
    main()
