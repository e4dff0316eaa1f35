"""A tiny occupancy-model run for tests/test_faults.py, in its own process so that it can be killed.

    python fault_child.py DATASET TOKENIZER OUT

Prints ``step N`` after every step and sleeps briefly, so that a test can kill it between two
checkpoints; running the same command again resumes from the last checkpoint in OUT.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from voc_rl.data import open_dataset
from voc_rl.data.dataset import PixelDataset
from voc_rl.occupancy import OccupancyConfig, OccupancyModel
from voc_rl.occupancy_train import train_occupancy
from voc_rl.tokenizers.cache import token_view
from voc_rl.train_loop import Loop

STEPS, CKPT_EVERY, DELAY = 16, 4, 0.1
LOOP = Loop(ckpt_every=CKPT_EVERY, eval_every=1000, log_every=1000, progress=False)


def config(view: PixelDataset) -> OccupancyConfig:
    return OccupancyConfig.for_dataset(view, "tiny", frame_stack=2, steps=STEPS, gamma=0.8)


def main(dataset: str, tokenizer: str, out: str) -> None:
    torch.set_num_threads(1)
    view = token_view(open_dataset(dataset), tokenizer, progress=False)
    torch.manual_seed(0)
    model = OccupancyModel(config(view))

    def callback(step: int, logs: dict[str, float]) -> None:
        print(f"step {step}", flush=True)
        time.sleep(DELAY)

    train_occupancy(model, view, loop=dataclasses.replace(LOOP, out=out, callback=callback))
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
