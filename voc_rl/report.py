"""Pieces every benchmark report shares: the command that made it, the machine, CSV and markdown tables."""

from __future__ import annotations

import csv
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def command_line(hide: Sequence[str] = ()) -> str:
    """This process's command as a user would type it (``python script.py ...`` or ``voc-rl ...``);
    the values of the options in ``hide`` are shown as ``"..."``."""
    script, argv = Path(sys.argv[0]), list(sys.argv[1:])
    for option in hide:
        if option in argv:
            i = argv.index(option)
            argv = [*argv[:i], f'{option} "..."', *argv[i + 2 :]]
    head = f"python {script.as_posix()}" if script.suffix == ".py" else script.name
    return " ".join([head, *argv])


def machine_line(threads: int | None = None, uses_gpu: bool = True) -> str:
    """``Machine: ...`` with cores, torch threads (when given), torch version and the GPU, if any."""
    import torch

    cores = f"{os.cpu_count()} cores" + (f" ({threads} torch threads)" if threads else "")
    gpu = "CPU only"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        gpu = f"GPU ({name})" if uses_gpu else f"GPU present ({name}), not used"
    return f"Machine: {platform.machine()}, {cores}, torch {torch.__version__}, {gpu}  "


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` as CSV with exactly ``columns`` (other keys of the rows are left out)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The lines of a markdown table of ``rows`` with a header of ``columns``."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows),
    ]
