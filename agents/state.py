"""What an agent's models read (:class:`State`) and how ``learn`` fits each of its parts
(:class:`PartFitting`): shared by the agent contract and policy extraction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from voc_rl.checkpoint import Callback
from voc_rl.data.dataset import PixelDataset
from voc_rl.train_loop import Loop


@dataclass(frozen=True)
class PartFitting:
    """How ``learn`` fits each part: in ``run/<part>``, with the agent's seed and device, each part's
    steps capped by ``learn``'s ``steps``, and ``callback`` told which part a step belongs to."""

    run: Path
    seed: int
    device: torch.device
    progress: bool
    steps: int | None
    callback: Callback | None
    pixels: PixelDataset  # the dataset itself (token views share its flat frame indices)

    def cap(self, own: int | None) -> dict[str, int]:
        """The ``steps`` config field of a part: ``learn``'s cap, else the part's own (if set)."""
        n = self.steps if self.steps is not None else own
        return {} if n is None else {"steps": n}

    def loop(self, part: str) -> Loop:
        """The loop of ``voc_rl.parts.fit_<part>``: its folder, the seed, the device, the callback."""
        callback = self.callback
        hook = None if callback is None else lambda step, logs: callback(step, {"part": part, **logs})
        return Loop(
            out=self.run / part, seed=self.seed, device=self.device, progress=self.progress, callback=hook
        )


@dataclass
class State:
    """A batch of observations as the agent's models read them: uint8 frame stacks (B, 3F, H, W), and
    their token ids (B, F*T) where the agent reads tokens (else None)."""

    pixels: torch.Tensor
    tokens: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.pixels)
