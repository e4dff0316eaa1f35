"""Training of the occupancy model and its reward model on a token dataset.

``train_occupancy(model, token_ds, loop=Loop(out="runs/occ"))`` trains with the objective of horizon
``config.n_step`` (see :mod:`voc_rl.occupancy`: Monte-Carlo dataset futures by default, 1-step
generative TD on request) on the training episodes, and the reward model on its own batches with its
own optimizer. It watches held-out episodes: the NLL per token of the true discounted future
``s_{t+k}`` (k ~ Geom(1 - gamma), the Monte-Carlo occupancy of the behaviour policy) beside the
per-slot unigram of the training tokens (a model that ignores the context), the NLL of
``s_{t+1}``, and the reward model's NMSE (``val/*``). It runs in the shared loop
(:mod:`voc_rl.train_loop`: warm-up then cosine, TensorBoard, atomic checkpoints, exact resume from
``out/train_state.pt``, torchrun); where the tokenizer decodes, the logs also show sampled occupancy
frames beside the true future frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voc_rl import distributed
from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import TargetBatch, WindowBatch, WindowSampler, check_action_table, table_actions
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel, save_reward_heads, td_loss
from voc_rl.tokenizers.cache import check_model_fits
from voc_rl.train_loop import Loop, Run, TrainReport, train
from voc_rl.utils import adamw, ema_update, make_target, resolve_device, to_tensors

Policy = Callable[[torch.Tensor], torch.Tensor]  # tokens of s_{t+1} (B, n_context) -> a_{t+1} (B, A)


def _targets(batch: TargetBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return to_tensors(
        {
            "obs": batch.obs,
            "action": batch.action,
            "future": batch.target,
            "bootstrap": batch.bootstrap,
            "bootstrap_action": batch.bootstrap_action,
        },
        device,
    )


def unigram_logp(ds: PixelDataset, episodes: np.ndarray, vocab_size: int) -> torch.Tensor:
    """Per-slot unigram of a token dataset's frames in ``episodes``: (tokens_per_frame, vocab) log
    probabilities (add-one smoothed). The NLL a model that ignores the context can reach."""
    tokens = np.asarray(ds.frames[np.sort(ds.frame_index(episodes))], dtype=np.int64)  # (N, tokens_per_frame)
    counts = np.ones((tokens.shape[1], vocab_size))
    for slot in range(tokens.shape[1]):
        counts[slot] += np.bincount(tokens[:, slot], minlength=vocab_size)
    return torch.from_numpy(np.log(counts / counts.sum(1, keepdims=True))).float()


def validation_batch(
    ds: PixelDataset,
    episodes: np.ndarray,
    train_episodes: np.ndarray,
    config: OccupancyConfig,
    seed: int,
    device: torch.device,
    size: int = 256,
) -> dict[str, torch.Tensor]:
    """``size`` held-out windows of ``episodes`` as tensors for :func:`validate`, with the per-slot
    unigram of ``train_episodes``' tokens to compare the future's NLL against."""
    val = _tensors(WindowSampler(ds, episodes, config.frame_stack, seed).sample(size, config.gamma), device)
    val["unigram"] = unigram_logp(ds, train_episodes, config.vocab_size).to(device)
    return val


def _tensors(batch: WindowBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return to_tensors(
        {
            "obs": batch.obs,
            "action": batch.action,
            "reward": batch.reward,
            "next_obs": batch.next_obs,
            "next_action": batch.next_action,
            "next_terminal": batch.next_terminal,
            "future_obs": batch.future_obs,
            "future_ok": ~batch.future_clipped,
        },
        device,
    )


def train_occupancy(
    model: OccupancyModel,
    ds: PixelDataset,
    steps: int | None = None,
    loop: Loop | None = None,
    tokenizer: Any | None = None,
    policy: Policy | None = None,
    reward: RewardModel | None = None,
    val_fraction: float = 0.1,
    next_actions: np.ndarray | None = None,
) -> tuple[TrainReport, RewardModel]:
    """Train ``model`` (and a reward model) on the token dataset ``ds``; see the module docstring.

    ``policy`` maps the tokens of s_{t+1} to a_{t+1} (the occupancy of that policy, which needs
    ``config.n_step=1``); by default the dataset's actions are used (the behaviour policy's
    occupancy). ``next_actions`` does the same from a table of the policy's actions at every frame of
    ``ds`` ((N, K, A), K samples per frame, one drawn per row: :func:`voc_rl.selection.policy_actions`),
    for a policy that reads pixels or the recorded state rather than tokens. ``loop``
    (:class:`~voc_rl.train_loop.Loop`): the run folder, seed, device, callback and intervals.
    """
    c = model.config
    check_model_fits(c, ds, "OccupancyConfig.for_dataset")
    if policy is not None and next_actions is not None:
        raise ValueError("give the policy either as a callable (policy) or as an action table (next_actions)")
    if next_actions is not None:
        check_action_table(next_actions, ds)
    if (policy is not None or next_actions is not None) and c.n_step != 1:
        raise ValueError(
            f"the occupancy of another policy needs n_step=1 (got n_step={c.n_step}): the dataset's "
            "futures beyond s_{t+1} follow the behaviour policy, not this one; "
            "use OccupancyConfig.for_dataset(..., n_step=1)"
        )
    distributed.init()
    steps, loop = steps or c.steps, loop or Loop()
    seed = loop.seed
    device = resolve_device(loop.device)
    model.to(device)
    reward = (reward or RewardModel(c)).to(device)
    target = make_target(model)
    train_eps, val_eps = ds.split(val_fraction, seed)
    data_seed = distributed.rank_seed(seed)  # = seed on one process
    sampler = WindowSampler(ds, train_eps, frame_stack=c.frame_stack, seed=data_seed)
    # the reward model sees every training transition, the last of each episode too
    reward_sampler = WindowSampler(ds, train_eps, c.frame_stack, data_seed + 7919, require_next_action=False)
    val = validation_batch(ds, val_eps if len(val_eps) else train_eps, train_eps, c, seed + 1, device)

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        tb = sampler.occupancy_targets(c.batch_size, c.gamma, c.n_step)
        if next_actions is not None:  # n_step 1: the table's pi(s_{t+1}) at the bootstrap rows
            acts = table_actions(next_actions, tb.index + tb.j, sampler.rng)
            tb.bootstrap_action = np.where(tb.bootstrap[:, None], acts, 0.0).astype(np.float32)
        b = _targets(tb, device)
        if policy is not None and b["bootstrap"].any():  # n_step 1: bootstrap at (s_{t+1}, pi(s_{t+1}))
            b["bootstrap_action"][b["bootstrap"]] = policy(b["future"][b["bootstrap"]]).to(device)
        td, logs = td_loss(
            model, target, b["obs"], b["action"], b["future"], b["bootstrap"], b["bootstrap_action"]
        )
        r = to_tensors(
            dict(zip(("next_obs", "reward"), reward_sampler.rewards(c.reward_batch), strict=True)), device
        )
        r_loss = F.mse_loss(reward(r["next_obs"][:, -c.n_target :]), r["reward"])
        return {"td": td, "reward": r_loss}, logs

    def media(writer: Any, step: int) -> None:
        if tokenizer is not None and getattr(tokenizer, "has_decoder", False):
            _log_strip(model, tokenizer, val, writer)

    run = Run(
        name="occupancy model",
        config=c,
        modules={"model": model, "target": target, "reward": reward},
        optimizers={
            "td": adamw(model.parameters(), c.lr, c.weight_decay),
            "reward": adamw(reward.parameters(), c.lr, c.weight_decay),
        },
        step=step,
        rngs=[sampler.rng, reward_sampler.rng],
        data_seed=data_seed,
        device=device,
        save=lambda folder: model.save(folder / "occupancy.pt", reward=reward),
        # from the same weights on every rank: the targets stay equal too
        after_step=lambda: ema_update(target, model, c.target_rate),
        validate=lambda: validate(model, reward, val),
        media=media,
        units=("tokens", c.batch_size * (c.n_context + 1 + c.n_target)),
    )
    # a learning curve of ~10 points by default
    eval_every = min(500, max(10, steps // 10))
    report = train(run, steps, loop.defaults(log_every=50, eval_every=eval_every, ckpt_every=500))
    return report, reward


def transfer_steps(config: OccupancyConfig) -> int:
    """Training steps of a reward head that starts from another task's head (``fit_reward_head``'s
    ``init``): a tenth of ``config.steps``, at least 200 (measured enough on walker), at most all."""
    return min(config.steps, max(200, config.steps // 10))


def train_reward_head(
    head: RewardModel, ds: PixelDataset, steps: int | None = None, loop: Loop | None = None,
    val_fraction: float = 0.1,
) -> TrainReport:  # fmt: skip
    """Train a reward head alone on the rewards ``ds`` carries: another task's after
    ``ds.for_task(task)``. The same batches (transitions of the training episodes, seeded as in
    :func:`train_occupancy`), optimizer and schedule as the head that trains beside the occupancy
    model, for ``steps`` (default ``config.steps``), without the model: a head reads target tokens
    only, so one occupancy model serves every task it has a head for. Held-out NMSE as
    ``val/reward_nmse``; the run folder gets ``reward.pt`` (:func:`voc_rl.occupancy.save_reward_heads`,
    keyed by the task)."""
    c = head.config
    check_model_fits(c, ds, "OccupancyConfig.for_dataset")
    distributed.init()
    steps, loop = steps or c.steps, loop or Loop()
    device = resolve_device(loop.device)
    head.to(device)
    task = ds.reward_task
    train_eps, val_eps = ds.split(val_fraction, loop.seed)
    data_seed = distributed.rank_seed(loop.seed)
    sampler = WindowSampler(ds, train_eps, c.frame_stack, data_seed + 7919, require_next_action=False)
    held = val_eps if len(val_eps) else train_eps
    held_sampler = WindowSampler(ds, held, c.frame_stack, loop.seed + 1, require_next_action=False)
    val = to_tensors(dict(zip(("next_obs", "reward"), held_sampler.rewards(1024), strict=True)), device)

    def batch_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(head(batch["next_obs"][:, -c.n_target :]), batch["reward"])

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        b = dict(zip(("next_obs", "reward"), sampler.rewards(c.reward_batch), strict=True))
        return {"reward": batch_loss(to_tensors(b, device))}, {}

    @torch.no_grad()
    def validate_head() -> dict[str, float]:
        head.eval()
        return {"reward_nmse": float(batch_loss(val) / val["reward"].var().clamp_min(1e-8))}

    run = Run(
        name=f"reward head ({task})",
        config=c,
        modules={"model": head},
        optimizers={"reward": adamw(head.parameters(), c.lr, c.weight_decay)},
        step=step,
        rngs=[sampler.rng],
        data_seed=data_seed,
        device=device,
        save=lambda folder: save_reward_heads(folder / "reward.pt", {task: head}, c),
        identity={"task": task},
        validate=validate_head,
    )
    eval_every = min(500, max(10, steps // 10))
    return train(run, steps, loop.defaults(log_every=50, eval_every=eval_every, ckpt_every=500))


@torch.no_grad()
def validate(model: OccupancyModel, reward: RewardModel, val: dict[str, torch.Tensor]) -> dict[str, float]:
    """Held-out NLL per token of the true future s_{t+k} (and of the per-slot unigram on the same
    tokens, with ``val["unigram"]``) and of s_{t+1}; reward-model NMSE; and the action information,
    how much the true action lowers the future's NLL against another row's action (nats per token:
    0 for a model that ignores the action)."""
    model.eval()
    reward.eval()
    n = model.config.n_target
    ok = val["future_ok"]
    future = model.log_prob(val["obs"][ok], val["action"][ok], val["future_obs"][ok][:, None, -n:])
    shuffled = model.log_prob(
        val["obs"][ok], val["action"][ok].roll(1, 0), val["future_obs"][ok][:, None, -n:]
    )
    nxt = model.log_prob(val["obs"], val["action"], val["next_obs"][:, None, -n:])
    r = val["reward"]
    nmse = float(F.mse_loss(reward(val["next_obs"][:, -n:]), r) / r.var().clamp_min(1e-8))
    metrics = {
        "nll_future": float(-future.mean()) / n,
        "action_info": float((future - shuffled).mean()) / n,
        "nll_next": float(-nxt.mean()) / n,
        "reward_nmse": nmse,
    }
    if "unigram" in val:
        tokens = val["future_obs"][ok][:, -n:]  # (M, n_target): slot i is frame position i % tpf
        slots = torch.arange(n, device=tokens.device) % val["unigram"].shape[0]
        metrics["unigram_nll"] = float(-val["unigram"][slots, tokens].mean())
    return metrics


@torch.no_grad()
def _log_strip(model: OccupancyModel, tokenizer: Any, val: dict[str, torch.Tensor], writer: Any) -> None:
    """Top: newest context frame; middle: a sampled occupancy frame; bottom: the true future frame."""
    model.eval()
    t = model.config.tokens_per_frame
    sampled = model.sample(val["obs"][:8], val["action"][:8])[:, 0, -t:]
    rows = [val["obs"][:8, -t:], sampled, val["future_obs"][:8, -t:]]
    frames = [tokenizer.decode(r.cpu())[:, 0] for r in rows]  # (8, 3, H, W) uint8 each
    writer.add_images("val/context_sampled_future", torch.cat(frames, dim=2), model.step)
