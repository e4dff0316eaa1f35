"""One process at a time in a run folder, and no run folder reused for another seed or dataset.

Every trainer with an output folder (:func:`voc_rl.train_loop.train`) and every ``Agent.learn``
holds :func:`locked` on its folder while it works: a ``.lock`` file with the holder's process id,
host and start time (written whole, then hard-linked into place, so no reader sees it empty),
removed on exit. A second process on the same folder is refused with the
holder's name; a lock whose process is gone (killed, the machine restarted) is stale and taken
over. Under ``torchrun`` rank 0 holds the lock for every rank. The holder removes what atomic writes
that a kill cut short left behind (``.*.tmp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK = ".lock"
_held: dict[Path, int] = {}  # folders this process holds, and how deeply (a trainer inside learn)


class RunFolderError(RuntimeError):
    """A run folder held by another process, or holding a run of another seed or dataset."""


def _holder(path: Path) -> dict[str, Any] | None:
    """The lock file's record, or None where it is unreadable (corrupted, or an older version's lock
    caught while being written)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive(holder: dict[str, Any] | None, path: Path) -> bool:
    """Is the holder's process running? Unknowable on another host: assumed so. An unreadable lock
    file younger than 10 s is one being written."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime < 10
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # (PermissionError: it runs under another user)
    return True


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``folder`` (created if missing) for this process; :class:`RunFolderError` where another
    live process holds it. Reentrant within a process."""
    folder = Path(folder)
    if int(os.environ.get("RANK", "0")) != 0 or folder in _held:
        _held[folder] = _held.get(folder, 0) + 1
        try:
            yield
        finally:
            _held[folder] -= 1
            if not _held[folder]:
                del _held[folder]
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    draft = folder / f"{LOCK}.{os.getpid()}.new"  # the record, complete before it becomes the lock
    draft.write_text(json.dumps(record))
    try:
        while True:
            try:
                os.link(draft, path)  # atomic: the lock never exists without its holder's record
            except FileExistsError:
                holder = _holder(path)
                if _alive(holder, path):
                    who = "a process" if holder is None else (
                        f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
                    )  # fmt: skip
                    raise RunFolderError(
                        f"run folder {folder} is in use by {who}; wait for it to finish or use another "
                        f"run folder (if that process is gone from another machine, delete {path})"
                    ) from None
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            break
    finally:
        draft.unlink(missing_ok=True)
    _held[folder] = 1
    for tmp in folder.glob(".*.tmp"):  # left by an atomic write a kill cut short: none runs now
        tmp.unlink(missing_ok=True)
    try:
        yield
    finally:
        _held.pop(folder, None)
        path.unlink(missing_ok=True)


def check_same_run(folder: Path, want: dict[str, Any]) -> None:
    """Refuse ``folder`` where its ``config.json`` (an agent's run) records other values of the
    fields in ``want`` (seed, dataset, task): the parts there were trained for that run, and
    reusing them would label its weights with ``want``'s seed."""
    path = folder / "config.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return  # (cut short: the parts' own checkpoints are checked as they resume)
    have = {k: saved.get(k) for k in ("dataset", "task")} | {"seed": saved.get("config", {}).get("seed")}
    if have["dataset"] is not None:
        have["dataset"] = Path(have["dataset"]).name
    differ = {k: (have[k], v) for k, v in want.items() if have.get(k) is not None and have[k] != v}
    if differ:
        said = ", ".join(f"{k} {old!r} (asked: {new!r})" for k, (old, new) in differ.items())
        raise RunFolderError(
            f"run folder {folder} holds a run of {said}; its parts would be reused under the wrong "
            "label: use another run folder (one per seed and dataset)"
        )
