"""The README's main job: collect a small dataset with the shipped behaviour policies, fit an agent
(``voc-vqvae-select`` at the small size, with short training: the selection agent, whose token prior
and occupancy model train in minutes; ``voc-vqvae``, the agent that acts best, adds a 15k-step pixel
policy), print a return-error table on held-out
episodes against the simulator (the VOC estimators beside a TD critic on the same tokens and the
training mean, with each model's response to the action), run an evaluation episode, and leave a
TensorBoard run.

Everything lands in ``--out`` (default ``quickstart/``): ``datasets/``, ``runs/`` (TensorBoard),
``agent.zip`` (reused by the next run unless ``--retrain``), ``return_error.md``,
``learning_curve.png`` (the occupancy model's held-out NLL of the future against the per-slot
unigram, and the reward model's NMSE, by step), ``futures.png`` (held-out states beside their true
and sampled futures, :mod:`voc_rl.imagine`) and ``<task>.gif`` (the evaluation episode as the agent
saw it). The last lines say how long each phase took.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from voc_rl.critic import CriticConfig
from voc_rl.data.dataset import PixelDataset
from voc_rl.envs import make_env
from voc_rl.episodes import play_episode
from voc_rl.evaluation import (
    RESPONSE_METHODS,
    Models,
    action_response,
    nmse,
    q_estimates,
    rmse,
    spearman,
    states_of,
)
from voc_rl.ground_truth import simulator_q
from voc_rl.imagine import imagine
from voc_rl.occupancy_train import validate, validation_batch
from voc_rl.parts import CHECKPOINT, collect_or_open, fit_critic
from voc_rl.paths import check_writable, user_path
from voc_rl.registry import load_agent, make_agent
from voc_rl.report import markdown_table
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop

# Short training for a first look in minutes on 2 CPU cores (the presets train for hours). The
# default agent is voc-vqvae-select: its convolutional tokenizer trains several times faster per step than
# DINO's ViT self-distillation, which in so few steps uses few of its codes. A 2-layer occupancy
# model takes half the time per step, and in the same time estimates Q better than the 4-layer
# preset on this dataset (lr 1e-3, Monte-Carlo objective).
QUICK_STEPS = {"tokenizer_steps": 300, "prior_steps": 600, "occupancy_steps": 1000, "critic_steps": 1000}
QUICK = {**QUICK_STEPS, "occupancy_kwargs": {"depth": 2}}


@dataclass
class MainJobReport:
    table: list[dict[str, Any]]
    truth: str
    episode_return: float
    ms_per_decision: float
    behaviour_returns: dict[str, float]
    run_dir: Path | None
    gif: Path
    plot: Path | None
    futures: Path | None  # held-out states, their true and sampled futures (decoding tokenizers)
    phases: dict[str, float]  # seconds per phase
    seconds: float


TABLE = ("method", "nmse", "rmse", "spearman", "Q evals/s", "action response")


def agent_token_view(agent: Any, ds: PixelDataset) -> PixelDataset:
    """``ds`` in the tokens of ``agent``'s tokenizer: the checkpoint its training wrote, or (an agent
    loaded from a zip) a temporary copy, so the quick start keeps no second tokenizer file."""
    trained = None if agent.run_dir is None else agent.run_dir / "tokenizer" / CHECKPOINT["tokenizer"]
    if trained is not None and trained.exists():
        return token_view(ds, trained, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        return token_view(ds, agent.tokenizer.save(Path(tmp) / "tokenizer.pt"), progress=False)


def return_error_table(
    agent: Any,
    ds: PixelDataset,
    out: Path,
    n_states: int = 32,
    rollouts: int = 4,
    seed: int = 0,
    critic_steps: int = QUICK_STEPS["critic_steps"],
    phases: dict[str, float] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """VOC's estimators, a TD critic on the same tokens, and the training mean against simulator Q on
    states of held-out episodes (the split is stratified by behaviour level, so every level is there
    in proportion). ``phases`` collects the seconds of each step.

    Whether the Q estimates respond to the action: the ``action response`` column (mean Q(s, a_t) -
    Q(s, u) for a uniform action u, of the pool estimate and the critic) and the occupancy model's
    action information (held-out NLL per token of the true future with another row's action minus
    with the true one), both also logged to TensorBoard (``eval/``) with every method's NMSE."""
    phases = {} if phases is None else phases
    tic = time.perf_counter()
    gamma, c = agent.config.gamma, agent.config
    train_eps, val_eps = ds.split(0.1, c.seed)  # the split every part trained on
    idx = states_of(ds, val_eps, n_states, seed=seed + 1)
    mean_idx = states_of(ds, train_eps, n_states // 2, seed=seed + 2)
    sim = {"rollouts": rollouts, "processes": 2, "progress": True}
    q_true, q_err = simulator_q(ds, idx, [gamma], **sim).at(gamma)
    train_mean = float(simulator_q(ds, mean_idx, [gamma], **sim).at(gamma)[0].mean())
    phases["simulator ground truth"] = time.perf_counter() - tic
    tic = time.perf_counter()
    view = agent_token_view(agent, ds)
    config = CriticConfig.for_dataset(view, "small", gamma=gamma, steps=critic_steps)
    critic_run = None if agent.run_dir is None else agent.run_dir / "critic"
    critic = fit_critic(view, config, loop=Loop(out=critic_run, seed=c.seed, device=agent.device))
    phases["td-critic"] = time.perf_counter() - tic
    tic = time.perf_counter()
    common = {"td-critic": f"td-critic ({critic_steps} steps)", "mean": "mean (of training states)"}
    if agent.occupancy.config.gamma == gamma:  # a VOC: its occupancy model's estimators
        labels = {
            "sample": "sample (N=32)",
            "pool": f"pool (K={c.candidates}, {c.pool_size})",
            "density": "density over 256 dataset states (baseline)",
            **common,
        }
        models = Models(agent.occupancy, agent.reward, agent.prior, critic, train_mean=train_mean)
    else:  # a one-step (gamma 0) world model: its Q is the agent's own rollout
        horizon = math.ceil(c.horizon_factor / (1 - gamma))
        labels = {"wm-rollout-1x": f"wm-rollout ({horizon} model steps)", **common}
        models = Models(prior=agent.prior, critic=critic, world=agent.occupancy, world_reward=agent.reward,
                        train_mean=train_mean)  # fmt: skip
    estimates = q_estimates(
        view, idx, gamma, models, list(labels), candidates=states_of(view, train_eps, 256, seed=seed + 3),
        samples=32, pool_actions=c.candidates, pool_size=c.pool_size, rollouts=c.rollouts, seed=seed,
        chunk=len(idx), device=agent.device,
    )  # fmt: skip
    scored = [m for m in RESPONSE_METHODS if m in labels]
    response = action_response(view, idx, models, scored, pool_size=64, seed=seed, device=agent.device)
    val = validation_batch(view, val_eps, train_eps, agent.occupancy.config, seed + 1, agent.device, 512)
    info = validate(agent.occupancy, agent.reward, val)["action_info"]
    rows = [
        {
            "method": labels[method],
            "nmse": round(nmse(pred, q_true), 3),
            "rmse": round(rmse(pred, q_true), 2),
            "spearman": "–" if np.ptp(pred) == 0 else round(spearman(pred, q_true), 3),  # a constant
            "Q evals/s": round(rate, 1),
            "action response": round(response[method], 3) if method in response else "–",
        }
        for method, (pred, rate) in estimates.items()
    ]
    phases["Q estimates"] = time.perf_counter() - tic
    if agent.run_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(agent.run_dir / "evaluation" / "tb")) as writer:
            step = agent.occupancy.step
            writer.add_scalar("eval/action_info", info, step)
            for method, value in response.items():
                writer.add_scalar(f"eval/action_response_{method}", value, step)
            for method, (pred, _) in estimates.items():
                writer.add_scalar(f"eval/q_nmse_{method}", nmse(pred, q_true), step)
    levels = ds.arrays["policy_id"][idx]
    names = {str(k): v.get("level", k) for k, v in ds.meta.get("policies", {}).items()}
    mix = ", ".join(f"{names.get(str(p), p)} {int((levels == p).sum())}" for p in np.unique(levels))
    truth = (
        f"simulator Q (gamma {gamma}) of {len(idx)} states of {len(val_eps)} held-out episodes ({mix}): "
        f"std {q_true.std():.2f}, stderr {np.mean(q_err):.2f} ({rollouts} rollouts); action response: "
        f"mean Q(s, a_t) - Q(s, uniform action); the occupancy model's (gamma "
        f"{agent.occupancy.config.gamma}) action information {info:.4f} nats/token"
    )
    return rows, truth


def learning_curve_plot(run_dir: Path | None, path: Path) -> Path | None:
    """The occupancy model's held-out curves from its TensorBoard log, as a PNG (None without a log)."""
    if run_dir is None or not (run_dir / "occupancy" / "tb").exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "occupancy" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if "val/nll_future" not in tags:
        return None

    def series(tag: str) -> tuple[list[int], list[float]]:
        points = events.Scalars(tag) if tag in tags else []
        return [p.step for p in points], [p.value for p in points]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax.plot(*series("val/nll_future"), marker="o", label="occupancy model")
    ax.plot(*series("val/unigram_nll"), ls="--", color="gray", label="per-slot unigram")
    ax.set(xlabel="step", ylabel="held-out NLL / token of s_{t+k}", title="the future")
    ax2.plot(*series("val/reward_nmse"), marker="o", color="C1")
    ax2.axhline(1.0, ls=":", color="gray")
    ax2.set(xlabel="step", ylabel="held-out NMSE", title="reward model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_gif(frames: list[np.ndarray], path: str | Path) -> Path:
    """An episode's frames (H, W, 3) as an animated GIF at ``path``: every second frame, 2x, 25 fps."""
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f).resize((2 * f.shape[1], 2 * f.shape[0]), Image.NEAREST) for f in frames[::2]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def evaluation_episode(agent: Any, task: str, out: Path, seed: int) -> tuple[float, float, Path]:
    """One episode with ``predict(deterministic=True)``: (return, ms per decision, GIF path)."""
    frames: list[np.ndarray] = []
    total, decisions, spent = play_episode(agent, task, seed, frames)
    return total, 1000 * spent / decisions, save_gif(frames, out / f"{task}.gif")


def main_job(
    task: str = "cheetah-run",
    agent_name: str = "voc-vqvae-select",
    episodes: int = 15,
    out: str | Path = "quickstart",
    seed: int = 0,
    retrain: bool = False,
    size: str = "small",
    n_states: int = 32,
    **overrides: Any,
) -> MainJobReport:
    start = time.perf_counter()
    make_env(task).close()  # an unknown task fails here, with the close names, before any work
    out = check_writable(out, "output folder")  # absolute from here on, whatever the working directory
    out.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    tic = time.perf_counter()
    ds = collect_or_open(out / "datasets", task, "mixed", episodes, f"{task}-quickstart", seed)
    phases["dataset"] = time.perf_counter() - tic
    tic = time.perf_counter()
    saved = out / "agent.zip"
    if saved.exists() and not retrain:
        agent = load_agent(saved)
        print(f"reusing {saved} (pass --retrain to train again)")
    else:
        agent = make_agent(agent_name, size=size, seed=seed, **{**QUICK, **overrides})
        agent.learn(ds, runs=out / "runs")
        agent.save(saved)
    phases["agent training"] = time.perf_counter() - tic
    table, truth = ([], "")
    if hasattr(agent, "occupancy"):
        steps = overrides.get("critic_steps", QUICK_STEPS["critic_steps"])
        table, truth = return_error_table(
            agent, ds, out, n_states, seed=seed, critic_steps=steps, phases=phases
        )
        (out / "return_error.md").write_text("\n".join([*markdown_table(table, TABLE), "", truth, ""]))
    plot = learning_curve_plot(agent.run_dir, out / "learning_curve.png")
    futures = None
    if getattr(agent, "occupancy", None) is not None and agent.tokenizer.has_decoder:
        futures = imagine(agent, ds, out / "futures.png", seed=seed)
    tic = time.perf_counter()
    ret, ms, gif = evaluation_episode(agent, task, out, seed)
    phases["evaluation episode"] = time.perf_counter() - tic
    ids = ds.arrays["policy_id"][ds.ep_start]
    returns = ds.episode_returns()
    levels = {str(k): v.get("level", k) for k, v in ds.meta.get("policies", {}).items()}
    behaviour = {levels.get(str(p), str(p)): float(returns[ids == p].mean()) for p in np.unique(ids)}
    return MainJobReport(
        table,
        truth,
        ret,
        ms,
        behaviour,
        agent.run_dir,
        gif,
        plot,
        futures,
        phases,
        time.perf_counter() - start,
    )


def _shown(path: Path) -> str:
    """``path`` as a user would type it here: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(report: MainJobReport, task: str, agent_name: str) -> str:
    lines = []
    if report.table:
        lines += [f"Return-estimation error of {agent_name} on held-out episodes (Q at its gamma):", ""]
        lines += [*markdown_table(report.table, TABLE), report.truth, ""]
    behaviour = ", ".join(f"{k} {v:.0f}" for k, v in report.behaviour_returns.items())
    lines.append(
        f"{task}: evaluation episode return {report.episode_return:.1f} "
        f"({report.ms_per_decision:.0f} ms per decision); behaviour policies in the dataset: {behaviour}"
    )
    if report.run_dir is not None:
        lines.append(f"TensorBoard: tensorboard --logdir {_shown(report.run_dir)}")
    if agent_name.endswith("-select"):
        lines.append(
            f"(the main job runs {agent_name}, the selection agent of the same occupancy model; "
            f"{agent_name.removesuffix('-select')}, which acts best, adds a pixel policy: 40 min a thread)"
        )
    if not agent_name.startswith("voc-dino"):
        lines.append(
            "(not voc-dino-select: DINO's ViT tokenizer takes about twice this agent's training time, "
            "and in the control benchmark voc-dino acts within noise of voc-vqvae; "
            "--agent voc-dino-select runs it)"
        )
    wrote = [_shown(p) for p in (report.gif, report.plot, report.futures) if p is not None]
    lines.append(f"wrote {', '.join(wrote)}")
    spent = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in report.phases.items())
    lines.append(f"minutes: {spent}; total {report.seconds / 60:.1f}")
    return "\n".join(lines)
