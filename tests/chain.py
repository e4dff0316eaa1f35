"""A known 8-state Markov chain and occupancy models trained on it (shared by several test files).

State i is the 2-token word (i // 4, i % 4) over a vocabulary of 4, so 8 of the 16 words are states.
Models are cached per (gamma, variant, steps, n_step): each is trained once per test session.
Training windows come from episodes of at most ``EPISODE`` transitions, so the objective's
bootstrap where a record ends (:func:`voc_rl.data.sampler.future_targets`) is exercised.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from voc_rl.data.sampler import future_targets
from voc_rl.occupancy import OccupancyConfig, OccupancyModel, td_loss
from voc_rl.utils import ema_update, make_target

N_STATES, VOCAB = 8, 4
WORDS = torch.tensor([[i // 4, i % 4] for i in range(N_STATES)])
EVERY_WORD = torch.cartesian_prod(torch.arange(VOCAB), torch.arange(VOCAB))  # index = 4a + b
# a sticky random transition matrix (slow mixing, so that Q differs between states even at gamma 0.9)
P = 0.5 * np.eye(N_STATES) + 0.5 * np.random.default_rng(3).dirichlet(np.full(N_STATES, 0.5), size=N_STATES)
REWARD = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0])  # r(state), received on entering it
EPISODE = 12  # transitions per recorded episode: a window at t has m = T - 1 - t in {1, ..., 11}


def chain_occupancy(p: np.ndarray, gamma: float) -> np.ndarray:
    """Occupancy of s_{t+1+k}, k ~ Geom(1 - gamma): (1 - gamma) (I - gamma P)^-1 P."""
    return (1 - gamma) * np.linalg.solve(np.eye(len(p)) - gamma * p, p)


def chain_q(gamma: float) -> np.ndarray:
    """Q(s) = sum_k gamma^k r(s_{t+1+k}) = occupancy . r / (1 - gamma), per state."""
    return chain_occupancy(P, gamma) @ REWARD / (1 - gamma)


def reward_of_words(tokens: torch.Tensor) -> torch.Tensor:
    """The exact reward of (..., 2) words; words that are not states get 0."""
    idx = tokens[..., 0] * VOCAB + tokens[..., 1]
    table = torch.zeros(VOCAB * VOCAB)
    table[:N_STATES] = torch.from_numpy(REWARD).float()
    return table[idx]


def chain_batch(
    n: int, gamma: float, n_step: int | None, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training windows of the chain, as :class:`~voc_rl.data.WindowSampler` draws them from
    episodes of ``EPISODE`` transitions: (s_t (n,), target state (n,), bootstrap (n,)), the target
    being s_{t+k} or, where ``bootstrap``, the state s_{t+j} to bootstrap at."""
    cum = torch.from_numpy(np.cumsum(P, 1)).float()
    s = torch.randint(N_STATES, (n,), generator=g)
    m = torch.randint(1, EPISODE, (n,), generator=g).numpy()  # steps recorded after s_t with an action
    k = np.random.default_rng(int(torch.randint(2**31, (1,), generator=g))).geometric(1 - gamma, n)
    offset, boot, _ = future_targets(np.zeros(n, np.int64), m + 1, np.zeros(n, bool), k, n_step)
    state, offset = s.clone(), torch.from_numpy(offset)
    for step in range(int(offset.max())):  # walk the chain as far as each row's target
        nxt = torch.searchsorted(cum[state], torch.rand(n, 1, generator=g))[:, 0].clamp_max(N_STATES - 1)
        state = torch.where(offset > step, nxt, state)
    return s, state, torch.from_numpy(boot)


@functools.cache
def train_on_chain(
    gamma: float, variant: str, steps: int = 800, seed: int = 0, n_step: int | None = 1
) -> OccupancyModel:
    """The occupancy objective with horizon ``n_step`` on windows of the chain (batch 256, Adam 1e-3,
    EMA rate 0.05, lr decayed)."""
    torch.manual_seed(seed)
    config = OccupancyConfig(
        vocab_size=VOCAB, tokens_per_frame=2, action_dim=1, frame_stack=1, target_frames=1, gamma=gamma,
        variant=variant, n_step=n_step, width=64, depth=2, heads=2, target_rate=0.05, lr=1e-3,
        action_conditioning="token",  # the objective is under test; the action is a constant here
    )  # fmt: skip
    model = OccupancyModel(config)
    target = make_target(model)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, 2 * (1 - i / steps)) + 0.02)
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(256, 1)
    for _ in range(steps):
        s, future, boot = chain_batch(256, gamma, n_step, g)
        loss, _ = td_loss(model, target, WORDS[s], zeros, WORDS[future], boot, zeros, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema_update(target, model, config.target_rate)
    return model.eval()


def model_occupancy(model: OccupancyModel) -> np.ndarray:
    """The model's occupancy from every state over all 16 words, read exactly through log_prob."""
    return model.log_prob(WORDS, torch.zeros(N_STATES, 1), EVERY_WORD).exp().numpy()
