"""The video occupancy model: an action-conditioned causal transformer over tokens, trained by
generative TD, that samples and scores states from the discounted occupancy ``mu(s_e | s, a)``.

Sequence: ``[context tokens of the frame stack s | action embedding | target tokens of s_e]``; the
loss is on target tokens only. ``s_e`` is the last ``target_frames`` frames of a future stack. With
``r(s_e)`` the reward received on entering ``s_e``, ``Q(s, a) = E[r(s_e)] / (1 - gamma)``.

Training (:func:`td_loss`) is one family of objectives with a horizon ``n_step``, the occupancy's
analogue of n-step returns. The target of a window (s_t, a_t) is the dataset's own future s_{t+k},
k ~ Geom(1 - gamma) on {1, 2, ...}, when k <= n_step and it was recorded; otherwise a sample of the
EMA target model at (s_{t+j}, a_{t+j}), j = min(n_step, T - 1 - t). By the geometric law's
memorylessness this is exact (:func:`voc_rl.data.sampler.future_targets`). Its fixed point is the
occupancy of s_{t+1+k'}, k' ~ Geom(1 - gamma) on {0, 1, ...}: on a Markov chain with transition
matrix P, ``(1 - gamma) (I - gamma P)^-1 P``.

- ``n_step=None`` (Monte-Carlo, the default): bootstrap only where the episode's record ends before
  t + k, a few % of rows; it learns the behaviour policy's occupancy from the first step.
- ``n_step=1``: the published generative TD (s_{t+1} with probability 1 - gamma, else a bootstrap at
  (s_{t+1}, a_{t+1})). The only valid choice for another policy pi, a_{t+1} = pi(s_{t+1}).

Two variants of the bootstrapped rows: ``sample`` trains on the sampled tokens (one-hot),
``distill`` on the target model's full next-token distributions along its sampled sequence (the
lower-variance bootstrap of Temporal Difference Flows, applied to tokens). ``gamma = 0`` is a
one-step latent world model.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from voc_rl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    module_state,
    save_checkpoint,
    save_model,
)
from voc_rl.data.dataset import TokenView
from voc_rl.presets import from_preset
from voc_rl.tokenizers.cache import model_fields
from voc_rl.transformer import GPT, GPTConfig, KVCache
from voc_rl.typed import check_fields

FORMAT = "voc_rl.occupancy/1"
HEADS_FORMAT = "voc_rl.reward_heads/1"
VARIANTS = ("sample", "distill")
CONDITIONINGS = ("token", "every", "film")
ENCODERS = ("linear", "mlp")
# sampling reads a context's keys in place (instead of copying them to each of its rows) from
# SHARE_ROWS rows per context or SHARE_TOTAL rows in all: measured faster there on the small preset,
# slower below (and 8-17% slower at the tiny preset's width: results/estimator_speed.md)
SHARE_ROWS, SHARE_TOTAL = 32, 128
# on a GPU, sampling up to GRAPH_ROWS rows replays a CUDA graph of the whole decoding (one launch
# instead of ~100 small kernels per token: decoding there is launch-bound); the graphs of the last
# GRAPHS_KEPT shapes are kept per model. CUDA_GRAPHS = False turns it off.
CUDA_GRAPHS, GRAPH_ROWS, GRAPHS_KEPT = True, 4096, 8
_graphs: weakref.WeakKeyDictionary[nn.Module, OrderedDict[tuple, tuple | None]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class OccupancyConfig:
    vocab_size: int
    tokens_per_frame: int
    action_dim: int
    frame_stack: int = 3  # frames of context
    target_frames: int = 0  # frames of s_e, the newest of the future stack; 0 means frame_stack
    gamma: float = 0.9
    variant: str = "distill"
    n_step: int | None = None  # horizon of the objective: None Monte-Carlo, 1 one-step generative TD
    # how the action enters: "token" (one embedding token after the context), "every" (that token,
    # and a second embedding of it added to the input of every target position) or "film" (that
    # token, and scales and shifts of every layer norm at the action's and the targets' positions);
    # results/action_response.md compares them
    action_conditioning: str = "film"
    action_encoder: str = "linear"  # the action token's embedding: "linear", or "mlp" (hidden 4 x width)
    width: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0
    target_rate: float = 0.01  # EMA: target <- (1 - rate) target + rate online, each step
    # 1e-3 for the small transformer: at equal steps it reached a lower held-out NLL and Q NMSE
    # than 3e-4 (FACTS.md)
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    steps: int = 5000
    reward_dim: int = 32  # token embedding size of the reward model (it reads velocity from 2+ frames)
    reward_hidden: int = 512
    reward_batch: int = 256  # the reward model trains on its own batches, with its own optimizer
    tokenizer: str = ""  # backend name of the tokens' tokenizer (informational)
    tokenizer_sha256: str = ""  # the key of its tokens (tokenizers.cache): a model reads only those

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "width": 32,
            "depth": 2,
            "heads": 2,
            "batch_size": 8,
            "steps": 50,
            "reward_dim": 8,
            "reward_hidden": 32,
            "reward_batch": 16,
        },
        "small": {},
        "base": {"width": 256, "depth": 6, "heads": 8, "batch_size": 64, "steps": 50_000, "lr": 3e-4},
    }

    def __post_init__(self) -> None:
        check_fields(self)
        if self.target_frames == 0:
            object.__setattr__(self, "target_frames", self.frame_stack)
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.action_conditioning not in CONDITIONINGS:
            raise ValueError(
                f"action_conditioning must be one of {CONDITIONINGS}, got {self.action_conditioning!r}"
            )
        if self.action_encoder not in ENCODERS:
            raise ValueError(f"action_encoder must be one of {ENCODERS}, got {self.action_encoder!r}")
        if self.n_step is not None and (
            isinstance(self.n_step, bool) or not isinstance(self.n_step, int) or self.n_step < 1
        ):
            raise ValueError(f"n_step must be an integer >= 1 or None (Monte-Carlo), got {self.n_step!r}")
        if self.reward_batch < 1:
            raise ValueError(f"reward_batch must be >= 1, got {self.reward_batch}")
        if not 1 <= self.target_frames <= self.frame_stack:
            raise ValueError(f"target_frames must be in [1, frame_stack={self.frame_stack}]")
        if min(self.vocab_size, self.tokens_per_frame, self.action_dim) < 1:
            raise ValueError("vocab_size, tokens_per_frame and action_dim must be positive")

    @property
    def n_context(self) -> int:
        return self.frame_stack * self.tokens_per_frame

    @property
    def n_target(self) -> int:
        return self.target_frames * self.tokens_per_frame

    @classmethod
    def preset(cls, size: str, **fields: Any) -> OccupancyConfig:
        return from_preset(cls, cls.presets, size, fields, cls.__name__)

    @classmethod
    def for_dataset(cls, token_ds: TokenView, size: str = "small", **fields: Any) -> OccupancyConfig:
        """The ``size`` preset with the vocabulary, tokens per frame, action size and tokenizer of
        the token dataset ``token_ds``, then ``fields``."""
        return cls.preset(size, **{**model_fields(token_ds), **fields})


def draw(
    probs: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """One index per row of ``probs`` (B, V), by inverse CDF from one uniform number per row (what
    ``torch.multinomial(probs, 1)`` draws, at a tenth of its cost on a CPU), drawn from ``generator``
    or given (``uniform``, (B, 1) in [0, 1)); an index of probability zero is never drawn. A row of
    NaN (what softmax makes of NaN or inf logits) gets V, out of range: the caller checks, so that no
    step waits for the device."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    if uniform is None:
        uniform = torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype)
    u = uniform * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # below the total, even rounded
    return torch.searchsorted(cdf, u, right=True)[:, 0]


class OccupancyModel(nn.Module):
    """Samples ``s_e ~ mu(. | s, a)`` (KV cache, batched) and scores candidates exactly (``log_prob``)."""

    def __init__(self, config: OccupancyConfig):
        super().__init__()
        self.config = config
        c = config
        self.gpt = GPT(
            GPTConfig(c.vocab_size, c.n_context + 1 + c.n_target, c.width, c.depth, c.heads, c.dropout)
        )
        self.action_emb: nn.Module = nn.Linear(c.action_dim, c.width)
        if c.action_encoder == "mlp":
            self.action_emb = nn.Sequential(
                nn.Linear(c.action_dim, 4 * c.width), nn.GELU(), nn.Linear(4 * c.width, c.width)
            )
        # "every": the action's embedding at each target input; "film": the action's scales and shifts
        # of every layer norm (B, depth x 4 x width). Both start at zero (then they are "token").
        self.action_cond: nn.Module | None = None
        if c.action_conditioning == "every":
            self.action_cond = nn.Linear(c.action_dim, c.width)
        elif c.action_conditioning == "film":
            self.action_cond = nn.Sequential(
                nn.Linear(c.action_dim, c.width), nn.GELU(), nn.Linear(c.width, c.depth * 4 * c.width)
            )
        # film's multipliers are 1 + scale: its (4, 1) offsets, a buffer so that no step copies them
        # from the host (which a CUDA graph could not capture); not saved
        self.register_buffer("film_offset", torch.tensor([1.0, 0.0, 1.0, 0.0])[:, None], persistent=False)
        if self.action_cond is not None:
            last = self.action_cond if isinstance(self.action_cond, nn.Linear) else self.action_cond[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.gpt.tok_emb.weight.device

    # ------------------------------------------------------------------ input checks
    def check_tokens(self, tokens: Any, length: int, name: str) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{name} must be integer token ids, got {tokens.dtype}")
        if tokens.shape[-1:] != (length,) or tokens.ndim < 2 or 0 in tokens.shape:
            raise ValueError(
                f"{name} must be (..., {length}) token ids with a non-empty batch, got {tuple(tokens.shape)}"
            )
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"{name} ids must be in [0, {self.config.vocab_size}), got [{lo}, {hi}]")
        return tokens.long().to(self.device)

    def check_inputs(
        self, context: Any, action: Any, candidates: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contexts (B, n_context) and actions (B, A) as tensors on the device; with ``candidates``
        also K actions per context, (B, K, A)."""
        context = self.check_tokens(context, self.config.n_context, "context")
        if context.ndim != 2:
            raise ValueError(f"context must be (B, {self.config.n_context}), got {tuple(context.shape)}")
        action = torch.as_tensor(action)
        if not action.is_floating_point():
            raise TypeError(f"action must be float, got {action.dtype}")
        b, a = len(context), self.config.action_dim
        ok = action.shape == (b, a) or (
            candidates and action.ndim == 3 and action.shape[0] == b and action.shape[1] >= 1
            and action.shape[2] == a
        )  # fmt: skip
        if not ok and candidates and action.ndim == 3:
            raise ValueError(
                f"candidate actions must be (B={b}, K >= 1, action_dim={a}), got {tuple(action.shape)}"
            )
        if not ok:
            raise ValueError(f"action must be (B={b}, action_dim={a}), got {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise ValueError("action contains NaN or inf")
        return context, action.to(self.device, self.gpt.tok_emb.weight.dtype)

    def _prompts(self, context: torch.Tensor, extra: int = 0) -> KVCache:
        """Keys and values of each context (B, n_context), computed once for all of its rows, in a
        cache with room for ``extra`` more positions."""
        dtype, n = self.gpt.tok_emb.weight.dtype, self.config.n_context
        cache = KVCache.empty(self.gpt.config, len(context), self.device, dtype, n + extra)
        self.gpt(self.gpt.tok_emb(context), cache)
        return cache

    # ------------------------------------------------------------------ forward passes
    def _prefix(self, context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.gpt.tok_emb(context), self.action_emb(action)[:, None]], dim=1)

    def _targets_in(self, tokens: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Input embeddings of target tokens (B, L) of rows with actions (B, A)."""
        x = self.gpt.tok_emb(tokens)
        if self.config.action_conditioning != "every":
            return x
        return x + self.action_cond(action)[:, None]

    def _modulation(self, action: torch.Tensor) -> torch.Tensor | None:
        """With "film", the rows' multipliers (1 + scale) and shifts of every layer norm's output,
        (B, depth, 4, width): :class:`voc_rl.transformer.GPT`'s ``mod``."""
        if self.config.action_conditioning != "film":
            return None
        c = self.config
        mod = self.action_cond(action).view(len(action), c.depth, 4, c.width)
        return mod + self.film_offset

    def _hidden(
        self,
        x: torch.Tensor,
        action: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
        mod: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The GPT over input embeddings ``x`` (B, T, width) of rows with actions (B, A); with "film",
        positions ``start`` on (the action's and the targets') are modulated by the action (``mod``:
        its :meth:`_modulation`, when the caller computed it once for many steps)."""
        mod = self._modulation(action) if mod is None else mod
        return self.gpt(x, cache, None if mod is None else (mod, start))

    def logits(self, context: torch.Tensor, action: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, n_target, vocab) logits of every target token given the ones before it."""
        n = self.config.n_context
        x = torch.cat([self._prefix(context, action), self._targets_in(targets[:, :-1], action)], dim=1)
        return self.gpt.head(self._hidden(x, action, start=n)[:, n:])

    @staticmethod
    def _probs(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
        logits = logits.float() / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def sample(
        self,
        context: Any,
        action: Any,
        n: int = 1,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        return_probs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of s_e per (context, action): tokens (B, n, n_target), or (B, K, n, n_target)
        for K candidate actions per context, ``action`` (B, K, A).

        Defaults are the unbiased sampler (temperature 1, no top-k). With ``return_probs`` also the
        sampling distribution of every target token along the sampled sequence, (..., n, n_target,
        vocab). Each context is computed once for all of its rows (:meth:`_decode`); ``use_cache=False``
        recomputes the whole sequence at every token (the reference, for tests and benchmarks). On a
        GPU, in eval mode, a CUDA graph of the decoding is replayed (:meth:`_replay`; the same tokens).
        """
        context, action = self.check_inputs(context, action, candidates=True)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.config.vocab_size:
            raise ValueError(f"top_k must be in [1, {self.config.vocab_size}] or None, got {top_k}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        c, lead = self.config, action.shape[:-1]
        group = (action.shape[1] if action.ndim == 3 else 1) * n  # rows per context
        row_action = action.reshape(-1, c.action_dim).repeat_interleave(n, 0)
        rows = len(row_action)
        # every token's uniform number at once: on a CPU the same stream as one draw per step
        uniform = torch.rand((c.n_target, rows, 1), generator=generator, device=self.device)
        probs: list[torch.Tensor] | None = [] if return_probs else None
        on_gpu = CUDA_GRAPHS and self.device.type == "cuda" and not self.training
        if on_gpu and use_cache and not return_probs and rows <= GRAPH_ROWS:
            out, broken = self._replay(context, row_action, group, uniform, temperature, top_k)
        else:
            args = (context, row_action, group, uniform, temperature, top_k, probs, use_cache)
            out, broken = self._decode(*args)
        if bool(broken.any()):
            raise FloatingPointError("the next-token probabilities are NaN: the model's weights are broken")
        tokens = out.view(*lead, n, c.n_target)
        if probs is not None:
            return tokens, torch.stack(probs, 1).view(*lead, n, c.n_target, -1)
        return tokens

    def _decode(
        self,
        context: torch.Tensor,
        row_action: torch.Tensor,
        group: int,
        uniform: torch.Tensor,
        temperature: float,
        top_k: int | None,
        probs: list[torch.Tensor] | None = None,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (R, n_target) of ``group`` consecutive rows per context, a token at a time (token
        j from ``uniform[j]``), and which rows met NaN probabilities; each step's distribution
        appended to ``probs``, if given. Each context's keys and values are computed once and copied
        to its rows, or read in place by them where there are many (``SHARE_ROWS``, ``SHARE_TOTAL``);
        without ``use_cache`` the whole sequence is recomputed at every token (the reference)."""
        c, rows = self.config, len(row_action)
        mod = self._modulation(row_action)  # the same at every decoding step
        out = torch.empty(rows, c.n_target, dtype=torch.long, device=self.device)
        broken = torch.zeros(rows, dtype=torch.bool, device=self.device)
        if not use_cache:
            prefix = self._prefix(context.repeat_interleave(group, 0), row_action)
        elif group == 1:  # one row per context (training's bootstrap samples): no copy needed
            cache = self._prompts(context, c.n_target)
        elif group < SHARE_ROWS and rows < SHARE_TOTAL:
            cache = self._prompts(context).repeat_rows(group, c.n_target)
        else:
            cache = self._prompts(context).share(group, c.n_target)
        if use_cache:
            logits = self.gpt.head(
                self._hidden(self.action_emb(row_action)[:, None], row_action, cache, mod=mod)[:, -1]
            )
        for j in range(c.n_target):
            if not use_cache:
                x = torch.cat([prefix, self._targets_in(out[:, :j], row_action)], dim=1)
                logits = self.gpt.head(self._hidden(x, row_action, start=c.n_context, mod=mod)[:, -1])
            p = self._probs(logits, temperature, top_k)
            token = draw(p, uniform=uniform[j])
            broken |= token == c.vocab_size  # NaN probabilities; checked once, after the loop
            out[:, j] = token.clamp_(max=c.vocab_size - 1)
            if probs is not None:
                probs.append(p)
            if use_cache and j + 1 < c.n_target:
                x = self._targets_in(out[:, j : j + 1], row_action)
                logits = self.gpt.head(self._hidden(x, row_action, cache, mod=mod)[:, -1])
        return out, broken

    def _replay(
        self,
        context: torch.Tensor,
        row_action: torch.Tensor,
        group: int,
        uniform: torch.Tensor,
        temperature: float,
        top_k: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_decode` as a CUDA graph: captured at the second call of a shape (and of a set of
        parameter tensors: a model moved or reloaded gets new graphs), then replayed on copies of the
        inputs. The same tokens as :meth:`_decode` from the same uniform numbers."""
        params = tuple(t.data_ptr() for t in self.parameters())
        key = (
            tuple(context.shape),
            tuple(row_action.shape),
            group,
            temperature,
            top_k,
            params,
        )
        kept = _graphs.setdefault(self, OrderedDict())
        if key not in kept:  # a shape seen once is decoded eagerly: capturing costs ~2 eager calls
            kept[key] = None
            while len(kept) > GRAPHS_KEPT:
                kept.popitem(last=False)
            return self._decode(context, row_action, group, uniform, temperature, top_k)
        if kept[key] is None:
            inputs = (context.clone(), row_action.clone(), uniform.clone())
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # a warm-up before capture, as CUDA graphs require
                self._decode(inputs[0], inputs[1], group, inputs[2], temperature, top_k)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._decode(inputs[0], inputs[1], group, inputs[2], temperature, top_k)
            kept[key] = (graph, inputs, outputs)
        kept.move_to_end(key)
        graph, inputs, outputs = kept[key]
        for static, value in zip(inputs, (context, row_action, uniform), strict=True):
            static.copy_(value)
        graph.replay()
        return outputs[0].clone(), outputs[1].clone()

    @torch.no_grad()
    def log_prob(self, context: Any, action: Any, targets: Any, chunk: int = 256) -> torch.Tensor:
        """Exact ``log mu(targets | context, action)``: (B, M) for actions (B, A) and targets
        (B, M, n_target), or (M, n_target) shared by every row; (B, K, M) for K candidate actions per
        context, ``action`` (B, K, A): every target under every action.

        Each context is computed once; its keys and values are copied to all of its (action, target)
        rows, which are teacher-forced ``chunk`` rows at a time.
        """
        context, action = self.check_inputs(context, action, candidates=True)
        c, b = self.config, len(context)
        targets = self.check_tokens(targets, c.n_target, "targets")
        if targets.ndim == 2:
            targets = targets.expand(b, *targets.shape)
        if targets.ndim != 3 or targets.shape[0] != b:
            raise ValueError(
                f"targets must be (B={b}, M, {c.n_target}) or (M, {c.n_target}), got {tuple(targets.shape)}"
            )
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        actions = action if action.ndim == 3 else action[:, None]
        k, m = actions.shape[1], targets.shape[1]
        per_state = k * m  # rows of one context: each action with each target
        states, piece = max(1, chunk // per_state), min(per_state, chunk)
        prompts = self._prompts(context)
        out = torch.empty(b, per_state, device=self.device)
        for i in range(0, b, states):
            rows = slice(i, i + states)
            for j in range(0, per_state, piece):
                idx = torch.arange(j, min(j + piece, per_state), device=self.device)
                act = actions[rows][:, idx // m].reshape(-1, c.action_dim)
                tgt = targets[rows][:, idx % m].reshape(-1, c.n_target)
                x = torch.cat([self.action_emb(act)[:, None], self._targets_in(tgt[:, :-1], act)], dim=1)
                cache = prompts.repeat_rows(len(idx), c.n_target, rows)
                logits = self.gpt.head(self._hidden(x, act, cache)).float()
                lp = logits.gather(2, tgt[..., None])[..., 0] - logits.logsumexp(-1)
                out[rows, j : j + len(idx)] = lp.sum(1).view(-1, len(idx))
        return out.view(b, k, m) if action.ndim == 3 else out.view(b, m)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, reward: RewardModel | None = None, **extra: Any) -> Path:
        """This model, and its reward model when given, in one checkpoint (:func:`save_model`)."""
        weights = None if reward is None else module_state(reward)
        return save_model(path, self, FORMAT, self.config, reward=weights, **extra)

    @classmethod
    def load(cls, path: str | Path, **expect: Any) -> tuple[OccupancyModel, RewardModel | None]:
        """(model, reward model or None) from :meth:`save`; ``expect`` fields must match the config."""
        model, ckpt = load_model(path, FORMAT, lambda ck: cls(OccupancyConfig(**ck["config"])), expect)
        if ckpt.get("reward") is None:
            return model, None
        reward = RewardModel(model.config)
        try:
            reward.load_state_dict(ckpt["reward"])
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: reward weights do not match its config: {exc}") from exc
        return model, reward.eval()

    def __repr__(self) -> str:
        c, n = self.config, sum(p.numel() for p in self.parameters())
        return (
            f"OccupancyModel(gamma={c.gamma}, {c.n_context} context + {c.n_target} target tokens, "
            f"vocab {c.vocab_size}, width {c.width}, depth {c.depth}, {n / 1e6:.2f}M params)"
        )


class RewardModel(nn.Module):
    """r(s) from the tokens of a target stack (the reward received on entering s)."""

    def __init__(self, config: OccupancyConfig):
        super().__init__()
        self.config = config
        self.step = 0  # training steps taken (a head trained alone: voc_rl.occupancy_train.train_reward_head)
        n = config.n_target * config.reward_dim
        self.emb = nn.Embedding(config.vocab_size, config.reward_dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(n),
            nn.Linear(n, config.reward_hidden),
            nn.GELU(),
            nn.Linear(config.reward_hidden, config.reward_hidden),
            nn.GELU(),
            nn.Linear(config.reward_hidden, 1),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (..., n_target) -> rewards (...)."""
        lead = tokens.shape[:-1]
        x = self.emb(tokens.reshape(-1, tokens.shape[-1])).flatten(1)
        return self.mlp(x)[:, 0].view(lead)


def save_reward_heads(path: str | Path, heads: dict[str, RewardModel], config: OccupancyConfig) -> Path:
    """Reward heads of occupancy models of ``config``, one per task, in one checkpoint (atomic)."""
    import dataclasses

    from voc_rl.checkpoint import package_versions

    if any(head.config != config for head in heads.values()):
        raise ValueError("every reward head saved together must have the occupancy config given")
    ckpt = {
        "format": HEADS_FORMAT,
        "config": dataclasses.asdict(config),
        "heads": {task: module_state(head) for task, head in heads.items()},
        "steps": {task: int(getattr(head, "step", 0)) for task, head in heads.items()},
        "versions": package_versions(),
    }
    return save_checkpoint(ckpt, path)


def load_reward_heads(path: str | Path, config: OccupancyConfig | None = None) -> dict[str, RewardModel]:
    """The reward heads of :func:`save_reward_heads`, by task; ``config``, where given, must be the
    config they were trained for (the occupancy model's: the same tokens and target)."""
    ckpt = load_checkpoint(path, required=("format", "config", "heads", "steps"))
    if ckpt["format"] != HEADS_FORMAT:
        raise CheckpointError(f"{path} has format {ckpt['format']!r}, expected {HEADS_FORMAT!r}")
    try:
        saved = OccupancyConfig(**ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config does not fit this version of voc_rl: {exc}") from exc
    if config is not None and saved != config:
        raise CheckpointError(f"{path}: its reward heads were trained for another occupancy config")
    heads = {}
    for task, weights in ckpt["heads"].items():
        head = RewardModel(saved)
        try:
            head.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: {task!r}'s head does not match its config: {exc}") from exc
        head.step = int(ckpt["steps"].get(task, 0))
        heads[task] = head.eval()
    return heads


def td_loss(
    model: OccupancyModel,
    target: OccupancyModel,
    obs: torch.Tensor,
    action: torch.Tensor,
    future: torch.Tensor,
    bootstrap: torch.Tensor,
    bootstrap_action: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Occupancy loss per target token on one batch of token windows (all tensors on the device).

    ``future`` (B, n_context) is the stack of each row's target: the recorded s_{t+k}, or, where
    ``bootstrap`` (B,) is set, the stack s_{t+j} at which the EMA ``target`` model is sampled with
    ``bootstrap_action`` (B, A) (the dataset's a_{t+j}, or pi(s_{t+1}) for another policy). Which is
    which comes from :meth:`voc_rl.data.WindowSampler.occupancy_targets`; only bootstrapped rows
    cost autoregressive sampling.
    """
    c = model.config
    targets, soft = future[:, -c.n_target :].clone(), None
    if bootstrap.any():
        tokens, probs = target.sample(
            future[bootstrap], bootstrap_action[bootstrap], generator=generator, return_probs=True
        )
        targets[bootstrap] = tokens[:, 0]
        if c.variant == "distill":
            soft = probs[:, 0]  # (n_boot, n_target, V)
    logp = torch.log_softmax(model.logits(obs, action, targets).float(), -1)  # (B, n_target, V)
    nll = -logp.gather(2, targets[..., None])[..., 0]  # (B, n_target)
    if soft is not None:
        nll[bootstrap] = -(soft * logp[bootstrap]).sum(-1)  # cross-entropy to the target's distributions
    loss = nll.mean()
    return loss, {"td": float(loss.detach()), "bootstrap_fraction": float(bootstrap.float().mean())}
