"""Training on several processes (one per GPU, or several CPU processes) launched by ``torchrun``.

    torchrun --nproc_per_node=2 -m voc_rl.distributed_train occupancy fit --dataset D --tokenizer T.pt

:func:`init` starts the process group from torchrun's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) when there is more than one process, and does nothing
otherwise: every helper here is then a no-op (or returns the single-process answer), so trainers
call them unconditionally and a plain run is unchanged. Backend: gloo on CPU; where CUDA is
available ``cpu:gloo,cuda:nccl`` (each rank on GPU ``LOCAL_RANK``), so gradients of a model on a
GPU go through NCCL and small CPU tensors (flags, RNG states) through gloo.

The trainers (:func:`voc_rl.occupancy_train.train_occupancy`, :func:`voc_rl.tokenizers.train.fit`)
average gradients themselves with one ``all_reduce`` after ``backward`` (:func:`all_reduce_grads`)
instead of wrapping the model in ``DistributedDataParallel``. Why: their losses come from helper
methods, not ``forward`` (``td_loss`` calls ``model.logits`` and samples the EMA target;
``tok.loss(batch)``), and DDP only syncs gradients of a forward run through its wrapper; parameters
a step leaves unused would need ``find_unused_parameters``; and buffers that forward passes update
(VQ codebooks, DINO's centre, TiTok's reference frames) need syncing either way. The cost is that
communication does not overlap the backward pass, which is small for these model sizes.

What every rank shares, and what it does not:
- weights start equal (:func:`broadcast_module` from rank 0) and stay equal: same averaged
  gradients, same optimiser; so does the occupancy model's EMA target, updated from those weights
  (:func:`assert_in_sync` checks it at every checkpoint);
- data differ: each rank samples its own batches, seeded by :func:`rank_seed`, from the same
  training episodes (sampling with replacement, so this shards the stream, not the episodes); the
  effective batch is ``world_size`` times the config's;
- buffers that a rank's forward pass changes (codebook EMA and dead-code restarts) are overwritten
  with rank 0's after every step (:func:`broadcast_buffers`), as DDP's ``broadcast_buffers`` does;
- only rank 0 writes TensorBoard logs and checkpoints and shows a progress bar; each rank's RNG
  states go into the checkpoint, and every rank resumes from the same file (the run folder must be
  one that all ranks see).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init() -> bool:
    """Join torchrun's process group if there is more than one process; True when distributed."""
    if is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" now means this rank's GPU
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    return True


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a CPU all-reduce, so it works the same on gloo and NCCL groups)."""
    if world_size() > 1:
        dist.all_reduce(torch.zeros(1))


def rank_seed(seed: int) -> int:
    """The data seed of this rank: ``seed`` on a single process, ``seed * 1000 + rank`` otherwise."""
    return seed if world_size() == 1 else seed * 1000 + rank()


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (in place)."""
    if world_size() > 1:
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (state that forward passes change) into every rank's ``module``."""
    if world_size() > 1:
        for t in module.buffers():
            dist.broadcast(t.data, src=0)


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks: one flat all-reduce per device and dtype.

    A parameter without a gradient on some rank counts as a zero gradient there (as in DDP); if it
    has none anywhere it gets zeros, so every rank applies the same update.
    """
    n = world_size()
    if n == 1:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
    for p in params:
        if p.requires_grad:
            groups.setdefault((p.device, p.dtype), []).append(p)
    for ps in groups.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(n)
        offset = 0
        for p, g in zip(ps, grads, strict=True):
            g.copy_(flat[offset : offset + p.numel()].view_as(p))
            p.grad = g
            offset += p.numel()


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so that all ranks stop at the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_scalars(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each scalar (every rank passes the same keys)."""
    if world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` on one process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_agree(value: Any, what: str) -> None:
    """Raise on every rank if ranks hold different ``value``s (e.g. the step they resumed from)."""
    seen = gather_objects(value)
    if any(v != seen[0] for v in seen):
        raise RuntimeError(
            f"ranks disagree on the {what}: {seen}; every rank must see the same run folder "
            "(on several machines, a shared file system)"
        )


def fingerprint(module: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer's bytes: equal only for bitwise-equal weights."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def assert_in_sync(**modules: nn.Module) -> None:
    """Raise if any of ``modules`` (by name) differs between ranks, bit for bit."""
    if world_size() == 1:
        return
    for name, module in modules.items():
        check_agree(fingerprint(module), f"weights of {name} (the ranks drifted apart)")
