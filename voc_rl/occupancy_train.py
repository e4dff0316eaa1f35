"""Training loop of the occupancy model and its reward model on a token dataset.

``train_occupancy(model, token_ds, out="runs/occ")`` trains with the objective of horizon
``config.n_step`` (see :mod:`voc_rl.occupancy`: Monte-Carlo dataset futures by default, 1-step
generative TD on request) on the training episodes, and the reward model on its own batches with its
own optimizer. It watches held-out episodes: the NLL per token of the true discounted future
``s_{t+k}`` (k ~ Geom(1 - gamma), the Monte-Carlo occupancy of the behaviour policy) beside the
per-slot unigram of the training tokens (a model that ignores the context), the NLL of
``s_{t+1}``, and the reward model's NMSE. With ``out`` it writes
TensorBoard logs (and, where the tokenizer decodes, sampled occupancy frames beside the true future
frames), checkpoints atomically and resumes from ``out/train_state.pt``.

Under ``torchrun`` it trains on every process (see :mod:`voc_rl.distributed`): gradients averaged
over ranks, each rank sampling its own batches, rank 0 alone logging and checkpointing; the
checkpoint keeps every rank's RNG states, so a run resumed with as many processes continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voc_rl import distributed
from voc_rl.checkpoint import Callback, CheckpointError, load_checkpoint, save_checkpoint
from voc_rl.data.dataset import PixelDataset
from voc_rl.data.sampler import TargetBatch, WindowBatch, WindowSampler
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, RewardModel, td_loss
from voc_rl.paths import optional_user_path
from voc_rl.tokenizers.cache import check_model_fits
from voc_rl.utils import ema_update, make_target, resolve_device, restore_rngs, rng_states

Policy = Callable[[torch.Tensor], torch.Tensor]  # tokens of s_{t+1} (B, n_context) -> a_{t+1} (B, A)


@dataclass
class OccupancyReport:
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, float]


def _long(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.int64)).to(device)


def _targets(batch: TargetBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "obs": _long(batch.obs, device),
        "action": torch.from_numpy(batch.action).to(device),
        "future": _long(batch.target, device),
        "bootstrap": torch.from_numpy(batch.bootstrap).to(device),
        "bootstrap_action": torch.from_numpy(batch.bootstrap_action).to(device),
    }


def unigram_logp(ds: PixelDataset, episodes: np.ndarray, vocab_size: int) -> torch.Tensor:
    """Per-slot unigram of a token dataset's frames in ``episodes``: (tokens_per_frame, vocab) log
    probabilities (add-one smoothed). The NLL a model that ignores the context can reach."""
    frames = np.concatenate([ds.ep_start[e] + np.arange(ds.ep_len[e] + 1) for e in episodes])
    tokens = np.asarray(ds.frames[np.sort(frames)], dtype=np.int64)  # (N, tokens_per_frame)
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
    def long(x: np.ndarray) -> torch.Tensor:
        return _long(x, device)

    return {
        "obs": long(batch.obs),
        "action": torch.from_numpy(batch.action).to(device),
        "reward": torch.from_numpy(batch.reward).to(device),
        "next_obs": long(batch.next_obs),
        "next_action": torch.from_numpy(batch.next_action).to(device),
        "next_terminal": torch.from_numpy(batch.next_terminal).to(device),
        "future_obs": long(batch.future_obs),
        "future_ok": torch.from_numpy(~batch.future_clipped).to(device),
    }


def train_occupancy(
    model: OccupancyModel,
    ds: PixelDataset,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    tokenizer: Any | None = None,
    policy: Policy | None = None,
    reward: RewardModel | None = None,
    val_fraction: float = 0.1,
    log_every: int = 50,
    eval_every: int | None = None,
    ckpt_every: int = 500,
    progress: bool = True,
    device: str | torch.device = "auto",
    callback: Callback | None = None,
) -> tuple[OccupancyReport, RewardModel]:
    """Train ``model`` (and a reward model) on the token dataset ``ds``; see the module docstring.

    ``policy`` maps the tokens of s_{t+1} to a_{t+1} (the occupancy of that policy, which needs
    ``config.n_step=1``); by default the dataset's actions are used (the behaviour policy's
    occupancy). ``callback(step, logs)`` runs after every step; returning ``False`` stops the run
    (after a checkpoint).
    """
    from tqdm import tqdm

    c = model.config
    check_model_fits(c, ds, "OccupancyConfig.for_dataset")
    if policy is not None and c.n_step != 1:
        raise ValueError(
            f"the occupancy of another policy needs n_step=1 (got n_step={c.n_step}): the dataset's "
            "futures beyond s_{t+1} follow the behaviour policy, not this one; "
            "use OccupancyConfig.for_dataset(..., n_step=1)"
        )
    distributed.init()
    main, world = distributed.is_main(), distributed.world_size()
    steps = steps or c.steps
    eval_every = eval_every or min(500, max(10, steps // 10))  # a learning curve of ~10 points
    device = resolve_device(device)
    model.to(device).train()
    reward = (reward or RewardModel(c)).to(device).train()
    for module in (model, reward):  # every rank starts from rank 0's weights
        distributed.broadcast_module(module)
    target = make_target(model)
    train_eps, val_eps = ds.split(val_fraction, seed)
    data_seed = distributed.rank_seed(seed)  # = seed on one process
    sampler = WindowSampler(ds, train_eps, frame_stack=c.frame_stack, seed=data_seed)
    # the reward model sees every training transition, the last of each episode too
    reward_sampler = WindowSampler(ds, train_eps, c.frame_stack, data_seed + 7919, require_next_action=False)
    val = validation_batch(ds, val_eps if len(val_eps) else train_eps, train_eps, c, seed + 1, device)
    params, reward_params = list(model.parameters()), list(reward.parameters())
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    reward_opt = torch.optim.AdamW(reward_params, lr=c.lr, weight_decay=c.weight_decay)
    torch.manual_seed(data_seed)
    out = optional_user_path(out)
    writer = None
    if out is not None:
        from torch.utils.tensorboard import SummaryWriter

        state_file = out / "train_state.pt"
        if state_file.exists():
            state = load_checkpoint(
                state_file,
                required=("config", "model", "target", "reward", "optimizer", "reward_optimizer", "step"),
            )
            if state["config"] != dataclasses.asdict(c):
                diff = {k: v for k, v in state["config"].items() if dataclasses.asdict(c).get(k) != v}
                raise CheckpointError(
                    f"{state_file} belongs to a run with another config (differs in {diff}); "
                    "use another output folder or the same config"
                )
            model.load_state_dict(state["model"])
            target.load_state_dict(state["target"])
            reward.load_state_dict(state["reward"])
            opt.load_state_dict(state["optimizer"])
            reward_opt.load_state_dict(state["reward_optimizer"])
            model.step = int(state["step"])
            restore_rngs(state, [sampler.rng, reward_sampler.rng], data_seed, device)
            if main:
                print(f"resumed occupancy model at step {model.step} from {state_file}")
        distributed.check_agree(model.step, "step to start from")
        if main:
            writer = SummaryWriter(str(out / "tb"))
            writer.add_text("config", json.dumps(dataclasses.asdict(c), indent=1))
    seq = c.n_context + 1 + c.n_target
    start, loss_value, tic = time.perf_counter(), float("nan"), time.perf_counter()
    bar = tqdm(
        total=steps, initial=model.step, disable=not (progress and main), desc="fit occupancy", unit="step"
    )
    while model.step < steps:
        # warm-up, then cosine to 10% over the config's steps (``steps`` only says where to stop)
        cos = math.cos(math.pi * min(model.step / c.steps, 1.0))
        lr = c.lr * min(1.0, (model.step + 1) / 100) * (0.55 + 0.45 * cos)
        for group in (*opt.param_groups, *reward_opt.param_groups):
            group["lr"] = lr
        b = _targets(sampler.occupancy_targets(c.batch_size, c.gamma, c.n_step), device)
        if policy is not None and b["bootstrap"].any():  # n_step 1: bootstrap at (s_{t+1}, pi(s_{t+1}))
            b["bootstrap_action"][b["bootstrap"]] = policy(b["future"][b["bootstrap"]]).to(device)
        td, logs = td_loss(
            model, target, b["obs"], b["action"], b["future"], b["bootstrap"], b["bootstrap_action"]
        )
        next_obs, rewards = reward_sampler.rewards(c.reward_batch)
        r_loss = F.mse_loss(
            reward(_long(next_obs, device)[:, -c.n_target :]), torch.from_numpy(rewards).to(device)
        )
        for loss, group, optimizer in ((td, params, opt), (r_loss, reward_params, reward_opt)):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(group)  # every rank then takes the same step
            torch.nn.utils.clip_grad_norm_(group, 1.0)
            optimizer.step()
        ema_update(target, model, c.target_rate)  # from the same weights: the targets stay equal too
        model.step += 1
        loss_value, r_value = float(td.detach()), float(r_loss.detach())
        bar.update(1)
        stop = callback is not None and callback(model.step, {**logs, "reward": r_value}) is False
        stop = distributed.any_rank(stop)  # all ranks stop at the same step
        if model.step % log_every == 0:
            rate = world * log_every * c.batch_size * seq / (time.perf_counter() - tic)
            tic = time.perf_counter()
            scalars = distributed.mean_scalars({**logs, "reward": r_value})
            bar.set_postfix(td=f"{scalars['td']:.3f}", reward=f"{scalars['reward']:.4f}")
            if writer is not None:
                for k, v in {**scalars, "lr": lr, "tokens_per_s": rate}.items():
                    writer.add_scalar(f"train/{k}", v, model.step)
        if writer is not None and (model.step % eval_every == 0 or model.step == steps):
            for k, v in validate(model, reward, val).items():
                writer.add_scalar(f"val/{k}", v, model.step)
            if tokenizer is not None and getattr(tokenizer, "has_decoder", False):
                _log_strip(model, tokenizer, val, writer)
            model.train()
            reward.train()
        if out is not None and (model.step % ckpt_every == 0 or model.step == steps or stop):
            distributed.assert_in_sync(model=model, target=target, reward=reward)
            rngs = distributed.gather_objects(
                rng_states([sampler.rng, reward_sampler.rng], device)
            )  # [rank 0's, rank 1's, ...]
            if main:
                save_checkpoint(
                    {
                        "config": dataclasses.asdict(c),
                        "model": model.state_dict(),
                        "target": target.state_dict(),
                        "reward": reward.state_dict(),
                        "optimizer": opt.state_dict(),
                        "reward_optimizer": reward_opt.state_dict(),
                        "step": model.step,
                        **rngs[0],
                        **({"rank_rngs": rngs} if world > 1 else {}),
                    },
                    out / "train_state.pt",
                )
                model.save(out / "occupancy.pt", reward=reward)
        if stop:
            break
    bar.close()
    metrics = validate(model, reward, val)
    if writer is not None:
        writer.close()
    distributed.barrier()  # rank 0's files are written before any rank returns
    return OccupancyReport(model.step, time.perf_counter() - start, loss_value, metrics), reward.eval()


@torch.no_grad()
def validate(model: OccupancyModel, reward: RewardModel, val: dict[str, torch.Tensor]) -> dict[str, float]:
    """Held-out NLL per token of the true future s_{t+k} (and of the per-slot unigram on the same
    tokens, with ``val["unigram"]``) and of s_{t+1}; reward-model NMSE."""
    model.eval()
    reward.eval()
    n = model.config.n_target
    ok = val["future_ok"]
    future = model.log_prob(val["obs"][ok], val["action"][ok], val["future_obs"][ok][:, None, -n:])
    nxt = model.log_prob(val["obs"], val["action"], val["next_obs"][:, None, -n:])
    r = val["reward"]
    nmse = float(F.mse_loss(reward(val["next_obs"][:, -n:]), r) / r.var().clamp_min(1e-8))
    metrics = {
        "nll_future": float(-future.mean()) / n,
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
