"""Pictures of what an occupancy model imagines: for held-out states of a dataset, the current frame,
the true future s_{t+k} (k ~ Geom(1 - gamma), the occupancy's own law) and several futures sampled
from the model, decoded to pixels by the agent's tokenizer, side by side in one PNG.

Only tokenizers with a pixel decoder (``vqvae``, ``titok``) can show their tokens; agents without
an occupancy model (``bc``, ``td-critic``) have no futures to show. Both get a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from voc_rl.data.dataset import PixelDataset
from voc_rl.evaluation import states_by_level
from voc_rl.paths import user_path

SCALE = 2  # pixels per frame pixel in the picture
LABEL = 12  # height of the label strip above each column


def check_imaginable(agent: Any) -> None:
    """Raise ``ValueError`` unless ``agent`` has an occupancy model and a tokenizer that decodes."""
    if getattr(agent, "occupancy", None) is None:
        raise ValueError(
            f"{agent.name} has no occupancy model, so it imagines no futures: use a voc-* or wm-rollout agent"
        )
    if not agent.tokenizer.has_decoder:
        raise ValueError(
            f"{agent.name} reads {agent.tokenizer.backend} tokens, which have no pixel decoder: futures "
            "can be shown for agents on vqvae or titok tokens (e.g. voc-vqvae, voc-titok)"
        )


def future_index(ds: PixelDataset, index: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Flat frames s_{t+k} of the states ``index``, k ~ Geom(1 - gamma) on {1, 2, ...}, clipped to the
    episode's last frame (k = 1 at gamma 0: the next frame)."""
    k = rng.geometric(1.0 - gamma, size=len(index))
    last = ds.ep_start[ds.arrays["episode"][index]] + ds.ep_len[ds.arrays["episode"][index]]
    return np.minimum(index + k, last)


@torch.no_grad()
def imagine(
    agent: Any, ds: PixelDataset, out: str | Path, states: int = 4, samples: int = 4, seed: int = 0
) -> Path:
    """Write ``out`` (PNG): one row per held-out state of ``ds`` (drawn equally from its behaviour
    levels), columns the current frame, the true future and ``samples`` sampled futures (the newest
    frame of each). Returns the path."""
    check_imaginable(agent)
    if states < 1 or samples < 1:
        raise ValueError(f"states and samples must be >= 1, got {states} and {samples}")
    c = agent.occupancy.config
    _, val_eps = ds.split(0.1, agent.config.seed)  # the states no part trained on
    idx = states_by_level(ds, val_eps, states, seed)
    rng = np.random.default_rng(seed)
    true = np.asarray(ds.frames[future_index(ds, idx, c.gamma, rng)])  # (S, 3, H, W)
    stacks = ds.stacks(idx, c.frame_stack)  # (S, 3F, H, W)
    context = agent._context(stacks)[0].tokens
    actions = torch.from_numpy(ds.arrays["action"][idx]).float().to(agent.device)
    g = torch.Generator(device=agent.device).manual_seed(seed)
    tokens = agent.occupancy.sample(context, actions, n=samples, generator=g)  # (S, n, n_target)
    newest = tokens[..., -agent.tokenizer.tokens_per_frame :].reshape(len(idx) * samples, -1)
    imagined = agent.tokenizer.decode(newest)[:, -1].reshape(len(idx), samples, *true.shape[1:]).numpy()
    now = stacks[:, -3:]
    columns = ["now", "true future", *[f"sample {i + 1}" for i in range(samples)]]
    rows = [[now[s], true[s], *imagined[s]] for s in range(len(idx))]
    return _grid(rows, columns, user_path(out))


def _grid(rows: list[list[np.ndarray]], columns: list[str], out: Path) -> Path:
    """Frames (3, H, W) uint8 in a labelled grid, saved as PNG at ``out``."""
    h, w = rows[0][0].shape[1:]
    cell_h, cell_w = h * SCALE, w * SCALE
    picture = Image.new("RGB", (len(columns) * (cell_w + 2), LABEL + len(rows) * (cell_h + 2)), "white")
    draw = ImageDraw.Draw(picture)
    for j, name in enumerate(columns):
        draw.text((j * (cell_w + 2) + 2, 0), name, fill="black")
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            image = Image.fromarray(frame.transpose(1, 2, 0)).resize((cell_w, cell_h), Image.NEAREST)
            picture.paste(image, (j * (cell_w + 2), LABEL + i * (cell_h + 2)))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out
