"""Checks shared by several test files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from voc_rl.train_loop import Loop

QUIET = Loop(progress=False)  # a trainer's loop in memory, without a progress bar


def assert_resumes_exactly(
    straight: torch.nn.Module,
    make: Callable[[], torch.nn.Module],
    train: Callable[..., Any],
    data: Any,
    loop: Loop,
    **kw: Any,
) -> None:
    """A run stopped half-way and resumed in a fresh model ends with exactly the weights of
    ``straight``, which was trained without a stop from a model made after ``torch.manual_seed(0)``
    (``loop.out``: the folder of the stopped run; ``kw``: the trainer's own arguments)."""
    torch.manual_seed(0)  # the same initial weights
    interrupted = make()
    train(interrupted, data, steps=straight.step // 2, loop=loop, **kw)
    resumed = make()  # a fresh process would start from a fresh model
    train(resumed, data, loop=loop, **kw)
    assert resumed.step == straight.step
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=f"{name} differs after resume")
