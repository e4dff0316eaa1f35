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
