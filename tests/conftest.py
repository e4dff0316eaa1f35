"""Test-wide settings: one thread per process (2-core machines), seeded RNGs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

import voc_rl  # noqa: F401  (registers the envs and picks the GL backend before dm_control loads)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
