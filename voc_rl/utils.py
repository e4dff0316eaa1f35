"""Small helpers that several of voc_rl's trainers and models share: choosing the torch device, EMA
target networks, the random states a checkpoint keeps for an exact resume, numpy batches as tensors.

torch is imported inside the helpers that use it, so that the dataset code can import this module
and still never pay for importing torch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from voc_rl.checkpoint import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

M = TypeVar("M", bound="nn.Module")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA where available, else the CPU; anything else is passed to ``torch.device``."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def adamw(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The trainers' AdamW, fused (one kernel for every parameter: a small model's optimiser step
    4x cheaper on a CPU than the per-tensor loop; the same update rule and state)."""
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def ema_update(target: nn.Module, online: nn.Module, rate: float) -> None:
    """``target <- (1 - rate) target + rate online``, parameter by parameter (buffers are left alone)."""
    import torch

    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, rate)


def make_target(model: M) -> M:
    """A frozen copy of ``model`` in eval mode, to be followed by :func:`ema_update`."""
    target = copy.deepcopy(model).eval()
    target.requires_grad_(False)
    return target


def rng_states(generators: Sequence[np.random.Generator], device: torch.device) -> dict[str, Any]:
    """This process's random states for a checkpoint: the numpy ``generators``' (JSON, in order),
    torch's, and the GPU's where ``device`` is one. Under torchrun, gather every rank's
    (:func:`voc_rl.distributed.gather_objects`) and keep them as ``rank_rngs``."""
    import torch

    states: dict[str, Any] = {
        "sampler_rng": json.dumps([g.bit_generator.state for g in generators]),
        "torch_rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rngs(
    state: dict[str, Any], generators: Sequence[np.random.Generator], data_seed: int, device: torch.device
) -> None:
    """Set this rank's ``generators`` (in place) and torch's RNGs from a checkpoint of :func:`rng_states`;
    fresh streams if it was written by another number of processes (the run then continues, but not
    as it would have without the stop)."""
    import torch

    from voc_rl import distributed

    per_rank = state.get("rank_rngs") or [state]
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1 and len(per_rank) != world:
        if distributed.is_main():
            print(f"the checkpoint was written by {len(per_rank)} process(es), not {world}: new data streams")
        step = int(state["step"])
        for i, g in enumerate(generators):
            g.bit_generator.state = np.random.default_rng([data_seed, step, i]).bit_generator.state
        torch.manual_seed(data_seed * 1_000_003 + step)
        return
    mine = per_rank[rank]
    saved = json.loads(mine["sampler_rng"])
    if len(saved) != len(generators):
        raise CheckpointError(f"the checkpoint holds {len(saved)} numpy RNG states, not {len(generators)}")
    for g, rng_state in zip(generators, saved, strict=True):
        g.bit_generator.state = rng_state
    torch.set_rng_state(mine["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in mine:
        torch.cuda.set_rng_state(mine["cuda_rng"], device)


def to_tensors(arrays: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of numpy arrays as tensors on ``device``: integer arrays (token ids, indices) as int64,
    the others (float actions and rewards, bool flags) with their own dtype."""
    import torch

    return {
        key: torch.from_numpy(
            np.asarray(x, dtype=np.int64) if np.issubdtype(np.asarray(x).dtype, np.integer) else np.asarray(x)
        ).to(device)
        for key, x in arrays.items()
    }
