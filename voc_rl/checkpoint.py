"""Checkpoints that are written atomically and loaded without running code.

Every checkpoint in voc_rl is a dict of tensors, numbers, strings and lists/dicts of those, saved
with ``torch.save`` to a temporary file in the same folder and renamed into place, so a reader
never sees half a file; and loaded with ``torch.load(..., weights_only=True)``, which refuses
pickled code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

# A trainer's per-step hook: ``callback(step, logs)``; returning False stops the run after a checkpoint.
Callback = Callable[[int, dict[str, float]], "bool | None"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not match what the caller expects."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Save a dict of tensors and plain values atomically."""
    import torch  # here, so that reading datasets never pays for importing torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_npz(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Save numpy arrays atomically (uncompressed ``.npz``; read back with ``allow_pickle=False``)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def save_json(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    text = json.dumps(obj, indent=indent)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint safely; ``required`` keys must be present. Errors name the file and problem."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one is not
        raise CheckpointError(f"{path} is not a readable checkpoint: truncated or corrupt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "global" in str(exc).lower():  # the weights-only unpickler met a class or function
            raise CheckpointError(
                f"{path} contains pickled objects that could run code, and voc_rl loads checkpoints "
                "with weights_only=True; it was not written by voc_rl (or was tampered with)"
            ) from exc
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict checkpoint")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path} lacks the keys {missing}; it is not a checkpoint of this kind")
    return obj


# ---------------------------------------------------------------------------------------------- models
# One layout for every model's checkpoint: ``format``, ``config`` (its dataclass as a dict), ``step``,
# the weights under ``model``, the package versions, and what a model adds (a backend name, a second
# module's weights). Tokenizer files written before this layout kept their weights under ``state_dict``:
# they load as they are.
LEGACY_WEIGHTS = "state_dict"


def module_state(module: Any) -> dict[str, Any]:
    """A module's ``state_dict`` as CPU copies (a checkpoint does not keep the device)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_model(path: str | Path, module: Any, fmt: str, config: Any, **extra: Any) -> Path:
    """Save ``module`` (its weights and ``step``) with its dataclass ``config`` in the layout above."""
    import dataclasses

    ckpt = {"format": fmt, "config": dataclasses.asdict(config), "step": int(getattr(module, "step", 0)),
            "model": module_state(module), "versions": package_versions(), **extra}  # fmt: skip
    return save_checkpoint(ckpt, path)


def load_model(
    path: str | Path,
    fmt: str,
    build: Callable[[dict[str, Any]], Any],
    expect: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
) -> tuple[Any, dict[str, Any]]:
    """(model, checkpoint) from :func:`save_model`, every check in one place: the format, the
    ``required`` keys, ``expect`` (config fields, or top-level keys such as ``backend``, that must have
    these values), ``build(checkpoint)`` making the model from its config, the weights fitting it, and
    ``step`` an integer >= 0. Every failure is a :class:`CheckpointError` naming the file; an
    ``expect`` key the checkpoint does not have is the caller's mistake, a ``ValueError``."""
    ckpt = load_checkpoint(path, required=("format", "config", *required))
    if ckpt["format"] != fmt:
        raise CheckpointError(f"{path} has format {ckpt['format']!r}, expected {fmt!r}")
    if "model" not in ckpt and LEGACY_WEIGHTS in ckpt:
        ckpt["model"] = ckpt.pop(LEGACY_WEIGHTS)
    if "model" not in ckpt:
        raise CheckpointError(f"{path} lacks the keys ['model']; it is not a checkpoint of this kind")
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: its config is a {type(ckpt['config']).__name__}, expected a dict")
    for key, want in (expect or {}).items():
        if key not in ckpt["config"] and key not in required:
            raise ValueError(f"{path} has no config field {key!r} to compare with {want!r}")
        have = ckpt["config"][key] if key in ckpt["config"] else ckpt[key]
        if have != want:
            raise CheckpointError(f"{path} was trained with {key}={have!r}, but {want!r} was asked for")
    try:
        model = build(ckpt)
    except (TypeError, ValueError) as exc:  # unknown fields, or values the config rejects
        raise CheckpointError(f"{path}: its config does not fit this version of voc_rl: {exc}") from exc
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # mismatched, or not a dict of tensors
        raise CheckpointError(f"{path}: weights do not match its config: {exc}") from exc
    step = ckpt.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: its step must be an integer >= 0, got {step!r}")
    model.step = step
    return model.eval(), ckpt


def package_versions() -> dict[str, str]:
    """The installed versions of voc-rl and the packages its results depend on."""
    out = {}
    for pkg in ("voc-rl", "minari", "gymnasium", "dm-control", "mujoco", "numpy", "torch", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
