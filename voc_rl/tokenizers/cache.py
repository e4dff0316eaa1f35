"""A dataset encoded once to tokens, on disk, keyed by the weights of the tokenizer that made them.

``token_view(ds, checkpoint)`` returns the dataset with its frames replaced by token ids,
``(N, tokens_per_frame)``, memory-mapped from ``<dataset>/tokens/<key>/``. Every consumer
(occupancy model, reward model, behaviour prior, TD critic) reads that view, so pixels are encoded
once per tokenizer; ``stacks`` and :class:`~voc_rl.data.WindowSampler` work on it unchanged and give
``(B, frame_stack * tokens_per_frame)`` token windows.

The key is the tokens' identity (:func:`token_key`): a hash of the tokenizer's backend, config and
weights, not of its file, so the same weights saved again (under another torch, whose pickles
differ) find the same cache, and a model trained on those tokens still fits them; retrained weights
get a new key, hence their own cache: a stale one is never read. Caches written before the key
followed the weights (named by the checkpoint file's sha256) are still found, recorded with the
weights' key on first use, and keep their name, so the models trained on them keep fitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voc_rl.checkpoint import atomic_write, save_json
from voc_rl.data.dataset import PixelDataset, TokenView
from voc_rl.data.storage import DatasetError, sha256_file
from voc_rl.paths import cache_folder, user_path
from voc_rl.tokenizers.base import Tokenizer

MARKER = "tokens.json"


def token_key(tok: Tokenizer) -> str:
    """The identity of ``tok``'s tokens: sha256 (16 hex digits) of its backend, its config and every
    tensor of its state dict (name, dtype, shape, bytes), whatever file or torch version held them."""
    h = hashlib.sha256()
    h.update(json.dumps([tok.backend, dataclasses.asdict(tok.config)], sort_keys=True, default=str).encode())
    for name, tensor in sorted(tok.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=32)
def _checkpoint_keys(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    """(:func:`token_key` of the checkpoint's tokenizer, its file's sha256[:16]); cached per file
    version (its size and modification time)."""
    return token_key(Tokenizer.load(path)), sha256_file(Path(path))[:16]


def checkpoint_keys(checkpoint: str | Path) -> tuple[str, str]:
    """The weights key and the file key of a tokenizer checkpoint (see :func:`_checkpoint_keys`)."""
    path = user_path(checkpoint)
    stat = path.stat()
    return _checkpoint_keys(str(path), stat.st_size, stat.st_mtime_ns)


def cache_dir(ds: PixelDataset, checkpoint: str | Path) -> Path:
    """Where the tokens of ``ds`` by ``checkpoint`` are kept (:func:`voc_rl.paths.cache_folder`): the
    folder of its weights' key, or an existing cache of the same weights under an older name."""
    key, file_key = checkpoint_keys(checkpoint)
    folder = cache_folder(ds.path, "tokens", key, MARKER)
    if (folder / MARKER).exists():
        return folder
    legacy = cache_folder(ds.path, "tokens", file_key, MARKER)
    if (legacy / MARKER).exists():
        return legacy
    for other in sorted(folder.parent.glob(f"*/{MARKER}")) if folder.parent.is_dir() else []:
        try:
            if json.loads(other.read_text()).get("weights_key") == key:
                return other.parent
        except (OSError, ValueError):
            continue  # a damaged cache of other tokens: not this one
    return folder


def token_view(
    ds: PixelDataset, checkpoint: str | Path, chunk: int = 512, progress: bool = True
) -> TokenView:
    """``ds`` with ``frames`` replaced by the tokens of every frame (a :class:`TokenView`), encoding
    on first use."""
    checkpoint = user_path(checkpoint)
    key, _ = checkpoint_keys(checkpoint)
    folder = cache_dir(ds, checkpoint)
    meta_file = folder / MARKER
    if not meta_file.exists():
        tok = Tokenizer.load(checkpoint)
        if tuple(ds.frames.shape[1:]) != (3, tok.config.image_size, tok.config.image_size):
            raise DatasetError(
                f"{ds.path} has frames {tuple(ds.frames.shape[1:])}; "
                f"{checkpoint} encodes {tok.config.image_size}px frames"
            )
        dtype = np.int16 if tok.vocab_size <= np.iinfo(np.int16).max else np.int32
        n = len(ds.frames)

        def write(tmp: str) -> None:
            from tqdm import tqdm

            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, tok.tokens_per_frame))
            for i in tqdm(
                range(0, n, chunk), disable=not progress, desc=f"encode {tok.backend}", unit="chunk"
            ):
                out[i : i + chunk] = (
                    tok.encode_index(ds, np.arange(i, min(i + chunk, n))).numpy().astype(dtype)
                )
            out.flush()
            del out

        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "tokens.npy", write)
        meta = {
            "backend": tok.backend,
            "config": dataclasses.asdict(tok.config),
            "tokens_per_frame": tok.tokens_per_frame,
            "vocab_size": tok.vocab_size,
            "checkpoint": str(checkpoint.resolve()),
            "dataset_sha256": ds.meta["hdf5_sha256"],
            "weights_key": key,
        }
        save_json(meta, meta_file)
    meta = json.loads(meta_file.read_text())
    if meta.get("weights_key") != key:  # a cache named by its checkpoint file: record whose tokens they are
        meta["weights_key"] = key
        with contextlib.suppress(OSError):  # a read-only cache is read as it is
            save_json(meta, meta_file)
    if meta["dataset_sha256"] != ds.meta["hdf5_sha256"]:
        raise DatasetError(f"{folder} was encoded from another version of {ds.path}; delete it to re-encode")
    tokens = np.load(folder / "tokens.npy", mmap_mode="r")
    if tokens.shape != (len(ds.frames), meta["tokens_per_frame"]):
        raise DatasetError(
            f"{folder / 'tokens.npy'} has shape {tokens.shape}: truncated? delete it to re-encode"
        )
    return TokenView.of(ds, tokens, {**meta, "key": folder.name, "keys": sorted({folder.name, key})})


def model_fields(token_ds: TokenView) -> dict[str, Any]:
    """The config fields a model reading ``token_ds`` must have: vocabulary, tokens per frame, action
    size, and the tokenizer (backend and checkpoint key) that made the tokens."""
    if not isinstance(token_ds, TokenView):
        raise ValueError(
            f"{token_ds.path} is a pixel dataset; models read tokens: "
            "pass voc_rl.tokenizers.cache.token_view(dataset, tokenizer_checkpoint)"
        )
    tokens = token_ds.tokens
    return {
        "vocab_size": tokens["vocab_size"],
        "tokens_per_frame": tokens["tokens_per_frame"],
        "action_dim": int(token_ds.arrays["action"].shape[1]),
        "tokenizer": tokens["backend"],
        "tokenizer_sha256": tokens["key"],
    }


def check_model_fits(config: Any, token_ds: TokenView, config_helper: str) -> None:
    """Raise ``ValueError`` when a model's ``config`` was not made for the tokens of ``token_ds``
    (the tokens' key is compared only when the config records one; the cache's name and the
    weights' key both name them)."""
    fields = model_fields(token_ds)
    keys = token_ds.meta["tokens"].get("keys", [fields["tokenizer_sha256"]])
    if not config.tokenizer_sha256 or config.tokenizer_sha256 in keys:  # the same tokens, by any name
        fields.pop("tokenizer_sha256")
    fields.pop("tokenizer")
    for key, have in fields.items():
        if getattr(config, key) != have:
            raise ValueError(
                f"the model has {key}={getattr(config, key)!r} but {token_ds.path} (tokens from "
                f"{token_ds.meta['tokens']['backend']} checkpoint {token_ds.meta['tokens']['key']}) has "
                f"{have!r}: train a model for these tokens ({config_helper}(token_ds))"
            )
