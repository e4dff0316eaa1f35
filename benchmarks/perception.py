"""What the pixel policy sees: behaviour cloning of a dataset's expert episodes from the frame stack
under variants of the encoder's recipe; writes results/perception.md and .csv.

The control benchmark's perception row (`pbc`, ``benchmarks/policy.py``) and the data's ceiling
(``benchmarks/state_bc.py``, the same episodes cloned from the recorded state) bracket the gap; this
benchmark measures the levers on it. Each variant is :class:`voc_rl.pixel_policy.PixelBCConfig`
with a few fields changed, trained by :func:`voc_rl.pixel_policy.train_pixel_bc` with weight 1 on
the expert's frames (so only its episodes are drawn). Per variant and seed it reports:

- returns: deterministic episodes (the mode) on env seeds 1000+, 500 agent steps, IQM and mean
  with rliable's stratified-bootstrap intervals over (seed, episode), and ``p_vs_base``: the
  probability of improvement over the ``base`` recipe on the same task, with its interval;
- ``action_nmse``: squared error of the mode over the actions' variance on the held-out expert episodes;
- ``r2_position`` / ``r2_velocity``: ridge probes (ridge chosen on a slice of the training rows)
  from the encoder's features to the recorded state's position and velocity parts, fit on the
  training expert frames and scored on the held-out expert episodes;
- ``train_min`` on one thread and ``ms_per_decision`` (batch 1).

    python benchmarks/perception.py [--tasks cheetah-run] [--variants base state-aux] [--seeds 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.args import parse_args
from voc_rl.benchmarks.policy import aggregate, verdict
from voc_rl.data.dataset import PixelDataset
from voc_rl.envs import state_parts
from voc_rl.parts import collect_or_open, fit_tokenizer
from voc_rl.pixel_policy import PixelBCConfig, PixelBCPolicy, train_pixel_bc
from voc_rl.pixel_trunk import init_from_tokenizer
from voc_rl.report import command_line, machine_line, markdown_table, write_csv
from voc_rl.selection import PixelPolicy, true_returns
from voc_rl.token_trunk import window_starts
from voc_rl.tokenizers import AGENT_TOKENS
from voc_rl.tokenizers.base import probe_r2_cv
from voc_rl.train_loop import Loop

# the recipe's fields each variant changes (PixelBCConfig's "small" preset otherwise)
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "state-aux": {"state_aux": 1.0},
    "no-shift": {"shift": 0},
    "wide": {"channels": 64},
    "stack-5": {"frame_stack": 5},
    "feature-64": {"feature_dim": 64},
    "vqvae": {"encoder": "vqvae"},
    "vqvae-init": {"encoder": "vqvae"},
}
# variants whose encoder starts from the agents' VQ-VAE tokenizer (trained on the task's dataset once,
# kept in <runs>/<task>/tokenizer): the shared backbone's layers before quantization
TOKENIZER_INIT = {"vqvae-init"}
COLUMNS = ["task", "variant", "fields", "seeds", "runs", "iqm", "iqm_ci", "mean", "mean_ci", "x_expert",
           "p_vs_base",
           "action_nmse", "r2_position", "r2_velocity", "steps", "train_min", "ms_per_decision"]  # fmt: skip
SEED_COLUMNS = ["task", "variant", "seed", "steps", "returns", "action_nmse", "r2_position", "r2_velocity",
                "train_min", "ms_per_decision"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("walker-walk", "cheetah-run")
    """tasks (their `mixed` datasets, collected if missing)"""
    variants: tuple[str, ...] = ("base", "state-aux")
    """variants of the encoder's recipe (see VARIANTS)"""
    level: str = "expert"
    """behaviour level whose episodes are cloned"""
    seeds: tuple[int, ...] = (0,)
    """training seeds"""
    episodes: int = 10
    """evaluation episodes per seed (env seeds 1000+)"""
    steps: int = 6_000
    """training steps per run"""
    tokenizer_steps: int | None = None
    """training steps of the vqvae tokenizer of TOKENIZER_INIT variants (None: its small preset's)"""
    data_root: Path = Path("datasets")
    """datasets root"""
    data_episodes: int = 90
    """episodes per dataset collected if missing"""
    runs: Path = Path("runs/perception")
    """run folders (TensorBoard, checkpoints; a finished run is read back, not retrained)"""
    out_dir: Path = Path("results")
    """folder of the tables"""
    rows_from: tuple[Path, ...] = ()
    """per-seed CSVs of other invocations (e.g. another variant on the other core) merged in"""


@dataclasses.dataclass
class Mode:
    """The policy's mode behind ``predict`` (what :class:`voc_rl.selection.PixelPolicy` calls), timed."""

    policy: PixelBCPolicy
    seconds: float = 0.0
    calls: int = 0

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        start = time.perf_counter()
        action = self.policy.mode(np.asarray(obs)[None])[0].cpu().numpy()
        self.seconds, self.calls = self.seconds + time.perf_counter() - start, self.calls + 1
        return action, None


@torch.no_grad()
def features(policy: PixelBCPolicy, ds: PixelDataset, index: np.ndarray) -> np.ndarray:
    policy.eval()
    stack = policy.config.frame_stack
    return np.concatenate([
        policy.encoder(torch.from_numpy(ds.stacks(index[i : i + 256], stack))).numpy()
        for i in range(0, len(index), 256)
    ])  # fmt: skip


def scores(policy: PixelBCPolicy, ds: PixelDataset, train_eps: np.ndarray, test_eps: np.ndarray, task: str
           ) -> dict[str, float]:  # fmt: skip
    """On the held-out episodes ``test_eps``: the mode's squared error over the actions' variance, and
    ridge-probe R^2 of the recorded state's parts from the encoder's features (fit on at most 4000
    evenly spaced frames of ``train_eps``); NaN where either set of episodes is empty."""
    if not len(train_eps) or not len(test_eps):
        return {"action_nmse": float("nan"), "r2_position": float("nan"), "r2_velocity": float("nan")}
    train = window_starts(ds, train_eps, False)
    train = train[np.linspace(0, len(train) - 1, min(len(train), 4000)).round().astype(int)]
    test = window_starts(ds, test_eps, False)
    x_train, x_test = features(policy, ds, train), features(policy, ds, test)
    action = ds.arrays["action"][test]
    mode = np.concatenate([policy.mode(ds.stacks(test[i : i + 256], policy.config.frame_stack)).numpy()
                           for i in range(0, len(test), 256)])  # fmt: skip
    out = {"action_nmse": float(((mode - action) ** 2).mean() / action.var(0).mean())}
    proprio = ds.arrays["proprio"]
    for part, cols in state_parts(task, proprio.shape[1]).items():
        r2, _ = probe_r2_cv(x_train, proprio[train][:, cols], x_test, proprio[test][:, cols])
        out[f"r2_{part}"] = float(np.mean(r2))
    return out


def run_one(args: Args, ds: PixelDataset, task: str, variant: str, seed: int) -> dict[str, Any]:
    expert = ds.level_episodes(args.level)
    weights = np.isin(ds.arrays["episode"], ds.arrays["episode"][ds.ep_start[expert]]).astype(np.float32)
    torch.manual_seed(seed)
    policy = PixelBCPolicy(PixelBCConfig.for_dataset(ds, steps=args.steps, **VARIANTS[variant]))
    if variant in TOKENIZER_INIT:
        loop = Loop(out=args.runs / task / "tokenizer", seed=0, progress=False, device="cpu")
        steps = {} if args.tokenizer_steps is None else {"steps": args.tokenizer_steps}
        tokenizer = fit_tokenizer(ds, "vqvae", "small", {**AGENT_TOKENS["vqvae"], **steps}, loop=loop)
        init_from_tokenizer(policy, tokenizer)
    folder = args.runs / task / f"{variant}-{args.steps}" / f"seed{seed}"
    start = time.perf_counter()
    if (folder / "bc.pt").is_file() and (folder / "train_min.txt").is_file():
        policy = PixelBCPolicy.load(folder / "bc.pt")
        train_min = float((folder / "train_min.txt").read_text())
    else:
        train_pixel_bc(policy, ds, loop=Loop(out=folder, seed=seed, progress=False, device="cpu"),
                                weights=weights)  # fmt: skip
        train_min = (time.perf_counter() - start) / 60
        (folder / "train_min.txt").write_text(f"{train_min:.2f}\n")
    policy = policy.cpu().eval()
    train_eps, val_eps = ds.split(0.1, seed)
    probed = scores(policy, ds, np.intersect1d(train_eps, expert), np.intersect1d(val_eps, expert), task)
    row = {"task": task, "variant": variant, "seed": seed, "steps": args.steps,
           "train_min": round(train_min, 1), **probed}  # fmt: skip
    row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    mode = Mode(policy)
    returns = true_returns(
        PixelPolicy(mode, True, policy.config.frame_stack), ds, 1.0, args.episodes, seed=1000
    )
    row["returns"] = " ".join(f"{r:.1f}" for r in returns)
    row["ms_per_decision"] = round(1000 * mode.seconds / max(mode.calls, 1), 2)
    print(row, flush=True)
    return row


def summarise(seed_rows: list[dict[str, Any]], data_return: dict[str, float]) -> list[dict[str, Any]]:
    def returns_of(rows: list[dict[str, Any]]) -> np.ndarray:
        return np.concatenate([np.array(str(r["returns"]).split(), float) for r in rows])

    rows = []
    for task, variant, steps in dict.fromkeys((r["task"], r["variant"], int(r["steps"])) for r in seed_rows):
        mine = [r for r in seed_rows if (r["task"], r["variant"], int(r["steps"])) == (task, variant, steps)]
        base = [r for r in seed_rows if (r["task"], r["variant"], int(r["steps"])) == (task, "base", steps)]
        returns = returns_of(mine)
        against = {"base": returns_of(base)} if base and variant != "base" else {}
        s = aggregate({variant: returns, **against}, reference="base")[variant]
        p = f"{s['p']:.2f} [{s['p_lo']:.2f}, {s['p_hi']:.2f}] {verdict(s)}" if "p" in s else "-"
        mean = {k: float(np.nanmean([float(r[k]) for r in mine])) for k in
                ("action_nmse", "r2_position", "r2_velocity", "train_min", "ms_per_decision")}  # fmt: skip
        rows.append({
            "task": task, "variant": variant, "seeds": len(mine), "runs": len(returns),
            "fields": ", ".join(f"{k}={v}" for k, v in VARIANTS[variant].items()) or "(the recipe)",
            "iqm": round(s["iqm"], 1), "iqm_ci": f"[{s['iqm_lo']:.1f}, {s['iqm_hi']:.1f}]",
            "mean": round(s["mean"], 1), "mean_ci": f"[{s['mean_lo']:.1f}, {s['mean_hi']:.1f}]",
            "x_expert": round(s["iqm"] / data_return[task], 2),
            "p_vs_base": p, "action_nmse": round(mean["action_nmse"], 3),
            "r2_position": round(mean["r2_position"], 3), "r2_velocity": round(mean["r2_velocity"], 3),
            "steps": steps, "train_min": round(mean["train_min"], 1),
            "ms_per_decision": round(mean["ms_per_decision"], 2),
        })  # fmt: skip
    return rows


def write(args: Args, seed_rows: list[dict[str, Any]], data_return: dict[str, float], seconds: float) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarise(seed_rows, data_return)
    write_csv(args.out_dir / "perception.csv", rows, COLUMNS)
    write_csv(args.out_dir / "perception_seeds.csv", seed_rows, SEED_COLUMNS)
    expert = ", ".join(f"{t} {r:.1f}" for t, r in data_return.items())
    lines = [
        "# What the pixel policy sees: cloning the expert's episodes under variants of the encoder",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=1, uses_gpu=False),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds / 60:.0f} min",
        "",
        "The pixel policy (`PixelBCConfig`, the `small` preset: 3 frames of 64 px, convs 32-64-64,",
        f"random shifts of 4 px, batch 128, Adam 3e-4) cloned from the `{args.level}` episodes of each",
        "task's `mixed` dataset for `steps` steps, with `fields` changed. Deterministic episodes",
        "(the mode) on env seeds 1000+; IQM and mean with 95% stratified-bootstrap intervals (rliable)",
        f"over (seed, episode); `x_expert`: IQM / the cloned episodes' mean recorded return ({expert});",
        "`p_vs_base`: the probability that an episode of the variant returns more than one of `base` on",
        "the same task at the same steps, with its interval (better or worse where it excludes 0.5).",
        "`vqvae`: the VQ-VAE tokenizer's encoder (its layers before quantization) on each frame, fresh;",
        "`vqvae-init`: the same initialised from the agents' vqvae tokenizer trained on the dataset.",
        "`action_nmse`: held-out error of the mode over the actions' variance; `r2_*`: ridge probes from the",
        "encoder's features to the recorded state's positions and velocities, scored on held-out expert",
        "episodes; `train_min`: one thread. The same episodes cloned from the state: `results/state_bc.md`.",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        "## Per seed",
        "",
        *markdown_table(seed_rows, SEED_COLUMNS),
    ]
    (args.out_dir / "perception.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(Args, argv, prog=prog)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    seed_rows = [row for path in args.rows_from for row in csv.DictReader(path.open())]
    datasets = {t: collect_or_open(args.data_root, t, "mixed", args.data_episodes, f"{t}-mixed")
                for t in dict.fromkeys([*args.tasks, *(r["task"] for r in seed_rows)])}  # fmt: skip
    data_return = {
        t: float(ds.episode_returns()[ds.level_episodes(args.level)].mean()) for t, ds in datasets.items()
    }
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                seed_rows.append(run_one(args, datasets[task], task, variant, seed))
                write(args, seed_rows, data_return, time.perf_counter() - start)
    write(args, seed_rows, data_return, time.perf_counter() - start)
    print(f"wrote {args.out_dir / 'perception.md'}")


if __name__ == "__main__":
    main()
