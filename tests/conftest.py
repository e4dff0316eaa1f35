"""Test-wide settings: one thread per process (2-core machines), seeded RNGs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

import voc_rl  # noqa: F401  (registers the envs and picks the GL backend before dm_control loads)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fake_ds_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 random episodes (150 transitions) of the fake pixel env at 64 px, shared by the tokenizer tests."""
    from voc_rl.data.collect import collect

    out = tmp_path_factory.mktemp("fake_pixels_64")
    return collect("fake-pixels", "random", episodes=3, out=out, size=64, progress=False)


@pytest.fixture(scope="session")
def ds(fake_ds_path: Path):
    from voc_rl.data import open_dataset

    return open_dataset(fake_ds_path)


@pytest.fixture(scope="session")
def titok(fake_ds_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """An (untrained) tiny titok tokenizer and the fake dataset's token view (8 tokens per frame)."""
    from voc_rl.data import open_dataset
    from voc_rl.tokenizers import make_tokenizer
    from voc_rl.tokenizers.cache import token_view

    tok = make_tokenizer("titok", size="tiny")
    ckpt = tok.save(tmp_path_factory.mktemp("titok") / "tok.pt")
    return tok, token_view(open_dataset(fake_ds_path), ckpt, progress=False)
