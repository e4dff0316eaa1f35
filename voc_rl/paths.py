"""Paths a user gives, resolved once where they enter voc_rl.

Every public entry point that takes a folder or file (the CLI, ``collect``, the V-D4RL importer,
``open_dataset``, the trainers, agents' ``learn``/``save``/``load``, the main job, the benchmarks)
passes it through :func:`user_path` first: ``~`` is expanded and a relative path is made absolute
against the working directory of that moment. Libraries below then only ever see absolute paths:
Minari joins ``MINARI_DATASETS_PATH`` with paths it derived from it (a relative root came back
doubled), and a relative path stored in metadata, or read after a change of directory, would point
elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike[str]


def user_path(path: PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current working directory."""
    return Path(path).expanduser().resolve()


def optional_user_path(path: PathLike | None) -> Path | None:
    """:func:`user_path`, passing ``None`` (an option left unset) through."""
    return None if path is None else user_path(path)


def check_writable(path: PathLike, what: str = "output") -> Path:
    """``path`` (:func:`user_path`) after checking, before any work, that it can be written: the nearest
    folder on it that exists (its parent, for an existing file: writes replace files atomically) must
    be one this process can create files in; missing folders below it are created later. A
    ``ValueError`` says which folder and why."""
    path = user_path(path)
    folder = path if path.is_dir() else path.parent if path.exists() else path
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(
            f"cannot write the {what} {path}: {folder} is a file, not a folder; choose another path"
        )
    why = _unwritable(folder)
    if why:
        raise ValueError(
            f"cannot write the {what} {path}: {folder} is not writable ({why}); "
            "choose a folder you can write to"
        )
    return path


def _unwritable(folder: Path) -> str:
    """Why no file can be created in the existing ``folder`` ('' where one can): a probe file is made
    and removed (permission bits alone miss read-only mounts and say nothing for root)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".voc_rl-write-check.", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(probe)
    return ""


def user_cache_dir() -> Path:
    """Where caches of read-only datasets go: ``$XDG_CACHE_HOME/voc_rl`` (default ``~/.cache/voc_rl``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser().resolve() / "voc_rl"


def cache_folder(dataset: Path, kind: str, key: str, marker: str) -> Path:
    """The folder of a dataset's cache ``kind`` (``cache``: its arrays, ``tokens``: a tokenizer's codes)
    under ``key``: ``dataset/kind/key`` where the dataset's folder can be written or already holds that
    cache (its ``marker`` file), else ``<user cache>/kind/<dataset's name>/key`` (:func:`user_cache_dir`):
    a shared, read-only dataset is read without writing into it."""
    local = dataset / kind / key
    nearest = local
    while not nearest.exists():
        nearest = nearest.parent
    if (local / marker).exists() or not _unwritable(nearest):
        return local
    return user_cache_dir() / kind / dataset.name / key
