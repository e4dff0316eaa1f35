"""Policy extraction: the step that improves an agent's behaviour prior with the agent's own Q.

After ``learn`` trains the scorer (an occupancy model or a TD critic), an agent whose config sets
``extraction`` trains its prior again with one weight per training transition (see
:class:`voc_rl.registry.AgentConfig` ``extraction``): ``awr`` and ``qwr`` weight the regression by
exp(advantage / beta), ``qbc`` and ``pbc`` keep the top episodes (by the agent's mean Q or by the
recorded return). The weights come from :mod:`voc_rl.prior`; this module scores the transitions
and keeps the extracted prior in its own run folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from voc_rl.agents.state import PartFitting, State
from voc_rl.checkpoint import save_json
from voc_rl.data.dataset import PixelDataset
from voc_rl.evaluation import spearman
from voc_rl.pixel_trunk import pixel_batch
from voc_rl.prior import (
    advantage_weights,
    episode_means,
    level_shares,
    top_episode_weights,
)
from voc_rl.registry import AgentConfig
from voc_rl.token_trunk import token_batch, window_starts

EXTRACTION_BATCH = 256  # states scored at once when computing advantages
EXTRACTION_FIELDS = {  # the config fields that change an extracted prior, beside the scorer's own
    "pbc": ("pbc_fraction",),
    "qbc": ("pbc_fraction", "awr_samples", "awr_states", "distill_steps"),
    "awr": ("awr_samples", "awr_temperature", "awr_clip", "awr_states", "distill_steps"),
}


class PolicyExtraction:
    """The extraction step of :class:`voc_rl.agents.Agent` (a base class of it): it reads the agent's
    ``config``, ``prior``, ``device``, ``generator``, ``_score`` and ``_prior_in``."""

    extraction_info: dict[str, Any]

    def _extract(self, view: PixelDataset, fit: PartFitting, fit_policy: Callable[..., Any]) -> None:
        """Train the extracted prior (``fit_policy(weights=..., loop=...)``) in its folder of the run
        and keep its summary in ``extraction_info`` (saved beside it, for a rerun that reuses it)."""
        self.extraction_info = {}
        folder = self._extraction_folder()
        record = fit.run / folder / "extraction_info.json"

        def weights() -> np.ndarray:  # scored only if the prior must train; recorded before it trains
            w = self._extraction_weights(view, fit)
            save_json(self.extraction_info, record)
            return w

        self.prior = fit_policy(weights=weights, loop=fit.loop(folder))
        if not self.extraction_info and record.exists():
            self.extraction_info = json.loads(record.read_text())

    def _extraction_folder(self) -> str:
        """The run folder of the extracted prior: ``extracted-<extraction>``, with a tag of the
        extraction's settings where they differ from the defaults (so ``pbc`` and ``pbc-67`` or two
        AWR temperatures in one run folder do not share a prior), and the task suffix."""
        c, default = self.config, AgentConfig()
        fields = EXTRACTION_FIELDS.get(c.extraction, EXTRACTION_FIELDS["awr"])
        changed = {f: getattr(c, f) for f in fields if getattr(c, f) != getattr(default, f)}
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        pixels = "-pixels" if c.policy_input == "pixels" else ""
        return f"extracted-{c.extraction}{'-' + digest if changed else ''}{pixels}" + self._task_suffix()

    @torch.no_grad()
    def _extraction_weights(self, view: PixelDataset, fit: PartFitting) -> np.ndarray:
        """One weight per frame of ``view`` for the prior's extraction step (the config's ``extraction``),
        over the training episodes (the prior's own split); the current prior is the BC prior."""
        c = self.config
        train_eps, _ = view.split(0.1, c.seed)
        if c.extraction == "pbc":
            weights = top_episode_weights(view.for_task(self.acting_task), train_eps, c.pbc_fraction)
            self.extraction_info = level_shares(view, weights)
            return weights
        index = window_starts(view, train_eps, False)
        q_data, q_prior, fit_info = self._awr_estimates(view, index, fit)
        if c.extraction == "qbc":  # %BC ranked by the scorer's mean Q(s_t, a_t) over each episode
            scores = episode_means(view, index, q_data, train_eps)
            scored = np.isfinite(scores)
            weights = top_episode_weights(view, train_eps[scored], c.pbc_fraction, scores[scored])
            corr = spearman(
                scores[scored], view.for_task(self.acting_task).episode_returns()[train_eps[scored]]
            )
            self.extraction_info = {
                "transitions": len(index),
                **fit_info,
                "episode_rank_corr": corr,
                **level_shares(view, weights),
            }
            return weights
        if c.extraction == "qwr":  # the baseline is one constant: the mean Q of the data
            q_prior = np.full((len(q_data), 1), q_data.mean())
        w, info = advantage_weights(q_data, q_prior, c.awr_temperature, c.awr_clip)
        weights = np.zeros(len(view.arrays["action"]), np.float32)
        weights[index] = w
        self.extraction_info = {"transitions": len(index), **fit_info, **info, **level_shares(view, weights)}
        return weights

    def _awr_estimates(
        self, view: PixelDataset, index: np.ndarray, fit: PartFitting
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Q of the dataset action (N,) and of ``awr_samples`` BC prior samples (N, M; M = 0 for
        ``qwr``) at the flat frames ``index`` of ``view``, by the agent's own scorer (and a summary,
        here empty); ``fit`` caps the steps of anything it trains."""
        batches = self._score_batches(view, index, EXTRACTION_BATCH, self._score, fit.pixels)
        q = torch.cat([q for _, q in batches])
        return q[:, 0].cpu().numpy(), q[:, 1:].cpu().numpy(), {}

    def _score_batches(
        self, view: PixelDataset, index: np.ndarray, batch: int, score: Callable[..., torch.Tensor],
        pixels: PixelDataset,
    ) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:  # fmt: skip
        """Per ``batch`` frames of ``index``: the batch (its ``state``, a :class:`State`), its
        ``actions`` (B, 1 + M) [the dataset action, and for ``awr`` M prior samples] among them, and
        ``score(state, actions)``, their Q. ``view`` is the token view (or ``pixels`` itself)."""
        frames = self.frame_stack
        for start in range(0, len(index), batch):
            rows = index[start : start + batch]
            b: dict[str, Any] = pixel_batch(pixels, rows, frames, self.device, False)
            tokens = (
                token_batch(view, rows, frames, self.device, False)["obs"] if self.reads_tokens() else None
            )
            b["state"] = State(b["obs"], tokens)
            b["actions"] = b["action"][:, None]
            if self.config.extraction == "awr":
                samples = self.prior.sample(
                    self._prior_in(b["state"]), self.config.awr_samples, self.generator
                )
                b["actions"] = torch.cat([b["actions"], samples], 1)
            yield b, score(b["state"], b["actions"])
