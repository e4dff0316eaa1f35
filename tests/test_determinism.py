"""The same command prints the same table: the main job twice in one process (so that nothing rests on
the global random state a fresh process starts with), tiny sizes, real cheetah-run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from voc_rl.cli import main

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def quickstart(out: Path) -> str:
    printed = io.StringIO()
    argv = [
        "quickstart",
        "--size",
        "tiny",
        "--steps",
        "3",
        "--episodes",
        "2",
        "--states",
        "4",
        "--out",
        str(out),
    ]
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    text = printed.getvalue()
    text = text[text.index("Return-estimation") : text.index("TensorBoard:")]
    text = re.sub(r"\(\d+ ms per decision\)", "", text)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    timing = lines[header].split("|").index(" Q evals/s ")  # the one column that measures time
    for i in range(header, len(lines)):
        if lines[i].startswith("|"):
            cells = lines[i].split("|")
            lines[i] = "|".join(cells[:timing] + cells[timing + 1 :])
    return "\n".join(lines)


def test_the_main_job_prints_the_same_table_twice(tmp_path: Path) -> None:
    first = quickstart(tmp_path / "a")
    torch.manual_seed(12345), np.random.seed(12345)  # a global state the second run must not read
    second = quickstart(tmp_path / "b")
    assert "evaluation episode return" in first and "| sample (N=32) |" in first
    assert first == second
