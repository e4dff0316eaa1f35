"""Training and measuring tokenizers on pixel datasets.

``fit`` trains any backend on the training episodes of a dataset (episodes split by seed), logs to
TensorBoard (``losses/*``, ``charts/codebook_usage``, ``charts/perplexity``, reconstructions beside
originals where a decoder exists), checkpoints atomically and resumes exactly (the weights, optimiser
and every random state; a run folder of another config is refused). ``evaluate`` measures on
held-out episodes: codebook usage and perplexity, reconstruction MSE / PSNR, a linear probe from
token embeddings of a frame stack to the proprioceptive state (R^2), and encode throughput.

Under ``torchrun``, ``fit`` trains on every process (see :mod:`voc_rl.distributed`): gradients
averaged over ranks, each rank sampling its own frames, buffers that training changes (codebooks)
taken from rank 0 after every step; rank 0 alone logs, checkpoints and evaluates; the checkpoint
keeps every rank's RNG states, so a run resumed with as many processes continues exactly.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from voc_rl import distributed
from voc_rl.checkpoint import Callback, CheckpointError, load_checkpoint, save_checkpoint
from voc_rl.data.dataset import PixelDataset
from voc_rl.paths import optional_user_path
from voc_rl.tokenizers.base import FitReport, Tokenizer, probe_r2_cv, psnr, to_float
from voc_rl.tokenizers.quantizer import codebook_stats
from voc_rl.utils import restore_rngs, rng_states

COLLAPSE_USAGE = 0.05  # below this fraction of codes in use on held-out frames, the codebook collapsed


def _frames_of(ds: PixelDataset, episodes: np.ndarray) -> np.ndarray:
    return np.concatenate([ds.ep_start[e] + np.arange(ds.ep_len[e] + 1) for e in episodes])


def fit(
    tok: Tokenizer,
    ds: PixelDataset,
    steps: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    out: str | Path | None = None,
    log_every: int = 50,
    eval_every: int = 500,
    ckpt_every: int = 500,
    progress: bool = True,
    callback: Callback | None = None,
) -> FitReport:
    """Train ``tok`` on ``ds``; with ``out`` (a folder) also TensorBoard logs, checkpoints and resume.

    ``callback(step, logs)`` runs after every step; returning ``False`` stops (after a checkpoint).
    """
    steps = steps or tok.config.steps
    if tuple(ds.frames.shape[1:]) != (3, tok.config.image_size, tok.config.image_size):
        raise ValueError(
            f"dataset frames are {tuple(ds.frames.shape[1:])}; expected 3x{tok.config.image_size}px"
        )
    distributed.init()
    main = distributed.is_main()
    distributed.broadcast_module(tok)  # every rank starts from rank 0's weights
    train_eps, val_eps = ds.split(val_fraction, seed)
    train_frames = _frames_of(ds, train_eps)
    data_seed = distributed.rank_seed(seed)  # = seed on one process
    rng = np.random.default_rng(data_seed)
    torch.manual_seed(data_seed)
    opt = torch.optim.AdamW(
        [p for p in tok.parameters() if p.requires_grad], lr=tok.config.lr, weight_decay=0.01
    )
    out = optional_user_path(out)
    writer = None
    if out is not None:
        from torch.utils.tensorboard import SummaryWriter

        state_file = out / "train_state.pt"
        if state_file.exists():
            state = load_checkpoint(state_file, required=("model", "optimizer", "step"))
            _check_same_run(state, tok, state_file)
            tok.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            tok.step = int(state["step"])
            if "torch_rng" in state:
                restore_rngs(state, [rng], data_seed, tok.device)
            else:  # written before the random states were kept: resumes, but not exactly
                rng = np.random.default_rng([data_seed, tok.step])
            if main:
                print(f"resumed {tok.backend} tokenizer at step {tok.step} from {state_file}")
        distributed.check_agree(tok.step, "step to start from")
        if main:
            writer = SummaryWriter(str(out / "tb"))
            writer.add_text("config", str(tok.config))
    tok.train()
    start, loss_value = time.perf_counter(), float("nan")
    bar = tqdm(
        total=steps, initial=tok.step, disable=not (progress and main), desc=f"fit {tok.backend}", unit="step"
    )
    while tok.step < steps:
        for group in opt.param_groups:
            group["lr"] = tok.config.lr * min(1.0, (tok.step + 1) / 100)
        batch = {k: v.to(tok.device) for k, v in tok.sample_batch(ds, train_frames, rng).items()}
        loss, logs, codes = tok.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.all_reduce_grads(tok.parameters())  # every rank then takes the same step
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        tok.after_step()
        distributed.broadcast_buffers(tok)  # codebook EMA, restarts: rank 0's, as DDP would
        tok.step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        stop = callback is not None and callback(tok.step, {"loss": loss_value, **logs}) is False
        stop = distributed.any_rank(stop)  # all ranks stop at the same step
        if tok.step % log_every == 0:
            stats = codebook_stats(codes, tok.vocab_size)  # this rank's batch
            scalars = distributed.mean_scalars({"total": loss_value, **logs})
            bar.set_postfix(loss=f"{scalars['total']:.4f}", usage=f"{stats['usage']:.2f}")
            if writer is not None:
                for k, v in scalars.items():
                    writer.add_scalar(f"losses/{k}", v, tok.step)
                writer.add_scalar("charts/codebook_usage", stats["usage"], tok.step)
                writer.add_scalar("charts/perplexity", stats["perplexity"], tok.step)
        if writer is not None and (tok.step % eval_every == 0 or tok.step == steps):
            _log_eval(tok, ds, val_eps, writer)
        if out is not None and (tok.step % ckpt_every == 0 or tok.step == steps or stop):
            distributed.assert_in_sync(tokenizer=tok)
            rngs = distributed.gather_objects(rng_states([rng], tok.device))  # [rank 0's, rank 1's, ...]
            if main:
                save_checkpoint(
                    {
                        "backend": tok.backend,
                        "config": dataclasses.asdict(tok.config),
                        "model": tok.state_dict(),
                        "optimizer": opt.state_dict(),
                        "step": tok.step,
                        **rngs[0],
                        **({"rank_rngs": rngs} if len(rngs) > 1 else {}),
                    },
                    out / "train_state.pt",
                )
                tok.save(out / "tokenizer.pt")
        if stop:
            break
    bar.close()
    tok.eval()
    metrics: dict[str, float] = {}
    if main:  # the ranks hold the same weights: one evaluation serves all
        episodes = val_eps if len(val_eps) else train_eps
        metrics = evaluate(tok, ds, episodes, train_episodes=train_eps, seed=seed)
    metrics = distributed.broadcast_object(metrics)
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, tok.step)
        writer.close()
    return FitReport(tok.step, time.perf_counter() - start, loss_value, metrics)


def _check_same_run(state: dict[str, Any], tok: Tokenizer, state_file: Path) -> None:
    """Refuse to resume a run folder written for another backend or config (a checkpoint written
    before they were recorded is taken as it is)."""
    if "backend" in state and state["backend"] != tok.backend:
        raise CheckpointError(
            f"{state_file} belongs to a {state['backend']} tokenizer run, not {tok.backend}; "
            "use another output folder"
        )
    config = dataclasses.asdict(tok.config)
    if "config" in state and state["config"] != config:
        diff = {k: v for k, v in state["config"].items() if config.get(k) != v}
        raise CheckpointError(
            f"{state_file} belongs to a run with another config (differs in {diff}); "
            "use another output folder or the same config"
        )


def _log_eval(tok: Tokenizer, ds: PixelDataset, val_eps: np.ndarray, writer: Any) -> None:
    frames = _frames_of(ds, val_eps[:1] if len(val_eps) else np.array([0]))
    pick = np.asarray(ds.frames[frames[:: max(len(frames) // 8, 1)][:8]])  # (8, 3, H, W)
    codes = tok.encode(pick)
    stats = codebook_stats(codes, tok.vocab_size)
    writer.add_scalar("eval/codebook_usage", stats["usage"], tok.step)
    if tok.has_decoder:
        recon = tok.decode(codes)[:, 0]
        grid = torch.cat([torch.from_numpy(pick), recon], dim=2)  # originals above reconstructions
        writer.add_images("eval/reconstructions", grid, tok.step)
    tok.train()


@torch.no_grad()
def evaluate(
    tok: Tokenizer,
    ds: PixelDataset,
    episodes: np.ndarray,
    train_episodes: np.ndarray | None = None,
    frame_stack: int = 3,
    max_frames: int = 2000,
    probe_frames: int = 4000,
    seed: int = 0,
) -> dict[str, float]:
    """Quality on ``episodes`` (held out): usage, perplexity, MSE/PSNR, probe R^2, frames/s.

    The probe is a ridge regression fit on up to ``probe_frames`` frames of ``train_episodes`` (ridge
    chosen on a held-back slice of them) and scored on up to ``max_frames`` frames of ``episodes``.
    """
    rng = np.random.default_rng(seed)
    test = _subsample(_frames_of(ds, episodes), max_frames, rng)
    frames = np.asarray(ds.frames[test])
    start = time.perf_counter()
    codes = tok.encode(frames)  # (M, T)
    fps = len(test) / (time.perf_counter() - start)
    stats = codebook_stats(codes, tok.vocab_size)
    metrics: dict[str, float] = {
        "usage": stats["usage"],
        "perplexity": stats["perplexity"],
        "encode_fps": fps,
        "tokens_per_frame": float(tok.tokens_per_frame),
    }
    if stats["usage"] < COLLAPSE_USAGE:
        msg = f"CODEBOOK COLLAPSED: {tok.backend} uses {stats['usage']:.1%} of its codes on held-out frames"
        warnings.warn(msg, stacklevel=2)
        print("!" * 8, msg, "!" * 8)
    if tok.has_decoder:
        recon = tok.decode(codes)[:, 0].float() / 255
        mse = float(((recon - to_float(frames)) ** 2).mean())
        metrics.update(mse=mse, psnr=psnr(mse))
    if "proprio" in ds.arrays and train_episodes is not None and len(train_episodes):
        train = _subsample(_frames_of(ds, train_episodes), probe_frames, rng)
        x_train, x_test = (_stack_features(tok, ds, idx, frame_stack) for idx in (train, test))
        r2, ridge = probe_r2_cv(x_train, ds.arrays["proprio"][train], x_test, ds.arrays["proprio"][test])
        metrics.update(probe_r2=float(np.mean(r2)), probe_ridge=ridge)
    return metrics


def _subsample(index: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(index, size=min(n, len(index)), replace=False))


def _stack_features(tok: Tokenizer, ds: PixelDataset, index: np.ndarray, frame_stack: int) -> np.ndarray:
    """Embeddings of the tokens of the frame stack ending at each index, flattened: (M, F*T*D)."""
    feats = []
    for i in range(0, len(index), 256):
        stack = ds.stacks(index[i : i + 256], frame_stack)  # (m, 3F, H, W)
        m, _, h, w = stack.shape
        tokens = tok.encode(stack.reshape(m, frame_stack, 3, h, w))
        feats.append(tok.embed(tokens.to(tok.device)).reshape(m, -1).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)
