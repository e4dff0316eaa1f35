"""Offline pixel datasets: collection, Minari storage, a fast memmap view, window sampling, import."""

from voc_rl.data.dataset import PixelDataset, TokenView, open_dataset
from voc_rl.data.sampler import WindowBatch, WindowSampler, discounted_returns
from voc_rl.data.storage import DatasetError, DatasetWarning, DatasetWriter, Episode

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "DatasetWriter",
    "Episode",
    "PixelDataset",
    "TokenView",
    "WindowBatch",
    "WindowSampler",
    "discounted_returns",
    "open_dataset",
]
