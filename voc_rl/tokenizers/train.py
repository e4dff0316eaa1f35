"""Training and measuring tokenizers on pixel datasets.

``fit`` trains any backend on the training episodes of a dataset (episodes split by seed) through
the shared loop (:mod:`voc_rl.train_loop`: TensorBoard, atomic checkpoints, exact resume, torchrun).
Besides the losses it logs the training batch's ``train/codebook_usage`` and ``train/perplexity``,
and every ``eval_every`` steps ``val/codebook_usage`` and reconstructions beside originals where a
decoder exists. Under ``torchrun`` the buffers that training changes (codebooks) are taken from rank
0 after every step, as DDP would. ``evaluate`` measures on held-out episodes: codebook usage and
perplexity, reconstruction MSE / PSNR, a linear probe from token embeddings of a frame stack to the
proprioceptive state (R^2), and encode throughput; ``fit`` reports it at the end (``val/*``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from voc_rl import distributed
from voc_rl.data.dataset import PixelDataset
from voc_rl.tokenizers.base import Tokenizer, probe_r2_cv, psnr, to_float
from voc_rl.tokenizers.quantizer import codebook_stats
from voc_rl.train_loop import Loop, Run, TrainReport, train
from voc_rl.utils import adamw, resolve_device

COLLAPSE_USAGE = 0.05  # below this fraction of codes in use on held-out frames, the codebook collapsed


def fit(
    tok: Tokenizer,
    ds: PixelDataset,
    steps: int | None = None,
    loop: Loop | None = None,
    val_fraction: float = 0.1,
    probe_groups: Mapping[str, np.ndarray] | None = None,
) -> TrainReport:
    """Train ``tok`` on ``ds`` with :func:`voc_rl.train_loop.train` (warm-up then a constant rate,
    clipping at 1) on ``loop.device``; with ``loop.out`` (a folder) also TensorBoard logs,
    checkpoints and resume. The report's metrics are :func:`evaluate`'s (``probe_groups``: its
    ``groups``)."""
    if tuple(ds.frames.shape[1:]) != (3, tok.config.image_size, tok.config.image_size):
        raise ValueError(
            f"dataset frames are {tuple(ds.frames.shape[1:])}; expected 3x{tok.config.image_size}px"
        )
    loop = loop or Loop()
    seed = loop.seed
    tok.to(resolve_device(loop.device))
    distributed.init()
    train_eps, val_eps = ds.split(val_fraction, seed)
    train_frames = ds.frame_index(train_eps)
    if tok.config.state_aux > 0:
        if "proprio" not in ds.arrays:
            raise ValueError(f"this tokenizer has state_aux={tok.config.state_aux}, which needs the "
                             f"proprioceptive state; {ds.path} did not record it")  # fmt: skip
        tok.set_state_scale(ds, train_frames)
    data_seed = distributed.rank_seed(seed)  # = seed on one process
    rng = np.random.default_rng(data_seed)
    opt = adamw([p for p in tok.parameters() if p.requires_grad], lr=tok.config.lr, weight_decay=0.01)

    def step() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        batch = {k: v.to(tok.device) for k, v in tok.sample_batch(ds, train_frames, rng).items()}
        loss, logs, codes = tok.loss(batch)
        stats = codebook_stats(codes, tok.vocab_size)  # this rank's batch
        return {"loss": loss}, {**logs, "codebook_usage": stats["usage"], "perplexity": stats["perplexity"]}

    def after_step() -> None:
        tok.after_step()
        distributed.broadcast_buffers(tok)  # codebook EMA, restarts: rank 0's, as DDP would

    def final() -> dict[str, float]:
        episodes = val_eps if len(val_eps) else train_eps
        return evaluate(tok, ds, episodes, train_episodes=train_eps, seed=seed, groups=probe_groups)

    run = Run(
        name=f"{tok.backend} tokenizer",
        config=tok.config,
        identity={"backend": tok.backend},
        modules={"model": tok},
        optimizers={"loss": opt},
        step=step,
        rngs=[rng],
        data_seed=data_seed,
        device=tok.device,
        save=lambda folder: tok.save(folder / "tokenizer.pt"),
        schedule="constant",
        after_step=after_step,
        final=final,
        media=lambda writer, _: _log_eval(tok, ds, val_eps, writer),
    )
    return train(run, steps or tok.config.steps, loop.defaults(log_every=50, eval_every=500, ckpt_every=500))


def _log_eval(tok: Tokenizer, ds: PixelDataset, val_eps: np.ndarray, writer: Any) -> None:
    frames = ds.frame_index(val_eps[:1] if len(val_eps) else np.array([0]))
    at = frames[:: max(len(frames) // 8, 1)][:8]
    pick = np.asarray(ds.frames[at])  # (8, 3, H, W)
    codes = tok.encode_index(ds, at)
    stats = codebook_stats(codes, tok.vocab_size)
    writer.add_scalar("val/codebook_usage", stats["usage"], tok.step)
    if tok.has_decoder:
        recon = tok.decode(codes)[:, 0]
        grid = torch.cat([torch.from_numpy(pick), recon], dim=2)  # originals above reconstructions
        writer.add_images("val/reconstructions", grid, tok.step)


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
    groups: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Quality on ``episodes`` (held out): usage, perplexity, MSE/PSNR, probe R^2, frames/s.

    The probe is a ridge regression fit on up to ``probe_frames`` frames of ``train_episodes`` (ridge
    chosen on a held-back slice of them) and scored on up to ``max_frames`` frames of ``episodes``;
    ``probe_r2`` is its mean R^2 over the state's dimensions, ``probe_r2_<name>`` the mean over the
    columns ``groups[name]`` (e.g. :func:`voc_rl.envs.state_parts`' positions and velocities).
    """
    train, test = _probe_frames(ds, episodes, train_episodes, max_frames, probe_frames, seed)
    frames = np.asarray(ds.frames[test])
    start = time.perf_counter()
    codes = tok.encode_index(ds, test)  # (M, T)
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
    if "proprio" in ds.arrays and len(train):
        x_train, x_test = (_stack_features(tok, ds, idx, frame_stack) for idx in (train, test))
        r2, ridge = probe_r2_cv(x_train, ds.arrays["proprio"][train], x_test, ds.arrays["proprio"][test])
        metrics.update(probe_r2=float(np.mean(r2)), probe_ridge=ridge)
        metrics.update(
            {f"probe_r2_{name}": float(np.mean(r2[cols])) for name, cols in (groups or {}).items()}
        )
    return metrics


def state_probe_bounds(
    ds: PixelDataset,
    episodes: np.ndarray,
    train_episodes: np.ndarray,
    groups: Mapping[str, np.ndarray],
    frame_stack: int = 3,
    max_frames: int = 2000,
    probe_frames: int = 4000,
    seed: int = 0,
    mlp_steps: int = 3000,
) -> dict[str, dict[str, float]]:
    """What :func:`evaluate`'s probe could read from perfect codes of the positions alone.

    ``linear``: the same ridge probe, on the same frames, from the recorded positions
    (``groups["position"]``) of the frame stack instead of its token embeddings: the bound for codes
    that keep each frame's positions exactly and nothing else (velocities only as differences).
    ``mlp``: a 2x256 MLP from the same inputs, fit on every training-episode frame
    (``mlp_steps`` Adam steps of 256 on one thread), scored on the same held-out frames: what the
    stack holds of the velocities at all. Each: ``probe_r2`` and ``probe_r2_<group>``, as
    :func:`evaluate` gives them.
    """
    state = np.asarray(ds.arrays["proprio"], dtype=np.float64)
    position = np.asarray(groups["position"])
    train, test = _probe_frames(ds, episodes, train_episodes, max_frames, probe_frames, seed)

    def inputs(index: np.ndarray) -> np.ndarray:
        return state[ds.stack_index(index, frame_stack)][..., position].reshape(len(index), -1)

    def scores(r2: np.ndarray) -> dict[str, float]:
        return {"probe_r2": float(np.mean(r2))} | {
            f"probe_r2_{name}": float(np.mean(r2[cols])) for name, cols in groups.items()
        }

    linear, _ = probe_r2_cv(inputs(train), state[train], inputs(test), state[test])
    every = ds.frame_index(train_episodes)
    x, y = (torch.as_tensor(a, dtype=torch.float32) for a in (inputs(every), state[every]))
    x_mean, x_std, y_mean, y_std = x.mean(0), x.std(0) + 1e-6, y.mean(0), y.std(0) + 1e-6
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, y.shape[1]),
        )  # fmt: skip
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    for _ in range(mlp_steps):
        pick = torch.randint(len(x), (256,), generator=gen)
        loss = ((mlp((x[pick] - x_mean) / x_std) - (y[pick] - y_mean) / y_std) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x_test = torch.as_tensor(inputs(test), dtype=torch.float32)
        pred = (mlp((x_test - x_mean) / x_std) * y_std + y_mean).numpy()
    target = state[test]
    mlp_r2 = 1 - ((pred - target) ** 2).sum(0) / np.maximum(((target - target.mean(0)) ** 2).sum(0), 1e-12)
    return {"linear": scores(linear), "mlp": scores(mlp_r2)}


def _probe_frames(
    ds: PixelDataset,
    episodes: np.ndarray,
    train_episodes: np.ndarray | None,
    max_frames: int,
    probe_frames: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The probe's training frames (of ``train_episodes``) and its held-out frames (of ``episodes``)."""
    rng = np.random.default_rng(seed)
    test = _subsample(ds.frame_index(episodes), max_frames, rng)
    if train_episodes is None or not len(train_episodes):
        return np.zeros(0, dtype=np.int64), test
    return _subsample(ds.frame_index(train_episodes), probe_frames, rng), test


def _subsample(index: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(index, size=min(n, len(index)), replace=False))


def _stack_features(tok: Tokenizer, ds: PixelDataset, index: np.ndarray, frame_stack: int) -> np.ndarray:
    """Embeddings of the tokens of the frame stack ending at each index, flattened: (M, F*T*D); each
    frame's tokens as the token cache has them (:meth:`Tokenizer.encode_index`)."""
    feats = []
    for i in range(0, len(index), 256):
        at = ds.stack_index(index[i : i + 256], frame_stack)  # (m, F)
        tokens = tok.encode_index(ds, at.ravel()).reshape(len(at), -1)  # (m, F*T)
        feats.append(tok.embed(tokens.to(tok.device)).reshape(len(at), -1).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)
