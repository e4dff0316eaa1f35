"""The token models (:mod:`voc_rl.critic`, :mod:`voc_rl.prior`): a SARSA TD critic against an exact Q,
behaviour cloning of a known rule, size presets, checkpoints, exact resume and input checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from checks import QUIET, assert_resumes_exactly

from voc_rl.checkpoint import CheckpointError
from voc_rl.critic import CriticConfig, TDCritic, train_td_critic
from voc_rl.data import open_dataset
from voc_rl.data.dataset import TokenView
from voc_rl.occupancy import OccupancyConfig
from voc_rl.prior import BCConfig, BCPolicy, train_bc
from voc_rl.registry import SIZES
from voc_rl.tokenizers import get_backend, list_tokenizers
from voc_rl.train_loop import Loop


def token_dataset(
    frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, lengths: list[int], terminal: list[bool]
) -> TokenView:
    """An in-memory token dataset: frames (N, tokens_per_frame) of episodes with ``lengths`` transitions
    back to back; actions and rewards per frame (zero on each episode's last frame)."""
    starts = np.cumsum([0, *[t + 1 for t in lengths[:-1]]])
    step = np.concatenate([np.arange(t + 1) for t in lengths])
    is_terminal = np.zeros(len(frames), bool)
    is_terminal[(starts + lengths)[np.array(terminal)]] = True
    arrays = {
        "action": actions.astype(np.float32),
        "reward": rewards.astype(np.float32),
        "episode": np.repeat(np.arange(len(lengths)), np.array(lengths) + 1),
        "step": step,
        "is_terminal": is_terminal,
    }
    vocab = int(frames.max()) + 1
    meta = {
        "name": "synthetic",
        "reward_max": 2.0,
        "tokens": {"vocab_size": vocab, "tokens_per_frame": frames.shape[1], "backend": "none", "key": "k"},
    }
    return TokenView(Path("synthetic"), meta, frames, arrays, starts, np.array(lengths))


# ---------------------------------------------------------------------- a ring with a known Q
# 8 states on a ring, each the 2-token word (s // 4, s % 4). An action > 0 moves on with probability
# 0.9, otherwise it stays with probability 0.9; entering state 7 ends the episode (a true terminal).
N, REWARD = 8, np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0])  # reward on entering s
P_MOVE = np.roll(np.eye(N), 1, axis=1) * 0.9 + np.eye(N) * 0.1
P_STAY = np.roll(np.eye(N), 1, axis=1) * 0.1 + np.eye(N) * 0.9


def ring_q(gamma: float) -> np.ndarray:
    """Q(s, stay) and Q(s, move), (N, 2), of the uniform behaviour policy; state 7 absorbs with value 0."""
    alive = np.arange(N) != N - 1
    m = 0.5 * (P_MOVE + P_STAY)
    v = np.linalg.solve(np.eye(N) - gamma * m * alive, m @ REWARD)  # V(s) = m (R + gamma alive V)
    return np.stack([p @ (REWARD + gamma * alive * v) for p in (P_STAY, P_MOVE)], 1)


def ring_dataset(episodes: int = 200, horizon: int = 60, seed: int = 0) -> TokenView:
    rng = np.random.default_rng(seed)
    frames, actions, rewards, lengths, terminal = [], [], [], [], []
    for _ in range(episodes):
        s, t = int(rng.integers(N - 1)), 0
        frames.append(s)
        while t < horizon and s != N - 1:
            a = rng.uniform(-1, 1)
            s = (s + int(rng.random() < (0.9 if a > 0 else 0.1))) % N
            actions.append(a)
            rewards.append(REWARD[s])
            frames.append(s)
            t += 1
        actions.append(0.0)
        rewards.append(0.0)
        lengths.append(t)
        terminal.append(s == N - 1)
    words = np.stack([np.array(frames) // 4, np.array(frames) % 4], 1)
    return token_dataset(words, np.array(actions)[:, None], np.array(rewards), lengths, terminal)


@pytest.fixture(scope="module")
def ring() -> TokenView:
    return ring_dataset()


# tolerances: measured NMSE 0.005 at gamma 0 and 0.032 at gamma 0.9 (about 1600 transitions: the
# empirical chain's own Q is 0.006 from the true one); 1 is "predict the mean"
@pytest.mark.parametrize(("gamma", "tol"), [(0.0, 0.02), (0.9, 0.06)])
def test_critic_learns_the_exact_q_of_a_ring(ring: TokenView, gamma: float, tol: float) -> None:
    config = CriticConfig.for_dataset(
        ring, "tiny", frame_stack=1, gamma=gamma, hidden=64, emb_dim=8, batch_size=128, steps=800, lr=3e-3
    )
    torch.manual_seed(0)
    critic = TDCritic(config)
    report = train_td_critic(critic, ring, loop=Loop(device="cpu", progress=False))
    assert report.steps == 800 and {"td_rmse", "mc_nmse", "mc_rmse", "mc_states"} <= set(report.metrics)
    words = torch.tensor([[s // 4, s % 4] for s in range(N - 1)])  # every non-terminal state
    actions = torch.tensor([[-0.5], [0.5]]).expand(N - 1, 2, 1)  # stay, move
    q = critic.q_values(words, actions).numpy()  # (7, 2)
    truth = ring_q(gamma)[: N - 1]
    nmse = ((q - truth) ** 2).mean() / truth.var()
    assert nmse < tol, f"NMSE {nmse:.4f} against the exact Q at gamma {gamma}: {q} vs {truth}"


def test_critic_matches_monte_carlo_returns_far_from_truncation() -> None:
    """A deterministic walk 0 -> 7 (reward 2 on entering 7, terminal): Q(s) = 2 gamma^(6 - s).
    Half the episodes are cut after 3 steps; their returns to the cut miss the reward, so the
    Monte-Carlo check must leave those states out."""
    lengths = [7, 3] * 10
    frames = np.concatenate([np.arange(t + 1) for t in lengths])[:, None]
    rewards = np.concatenate([np.r_[np.zeros(t - 1), 2.0 if t == 7 else 0.0, 0.0] for t in lengths])
    actions = np.random.default_rng(0).uniform(-1, 1, (len(frames), 1))
    ds = token_dataset(frames, actions, rewards, lengths, [t == 7 for t in lengths])
    config = CriticConfig.for_dataset(ds, "tiny", frame_stack=2, gamma=0.8, batch_size=64, steps=400, lr=3e-3)
    torch.manual_seed(0)
    critic = TDCritic(config)
    first = train_td_critic(critic, ds, steps=1, loop=QUIET, val_fraction=0.2)
    report = train_td_critic(critic, ds, loop=QUIET, val_fraction=0.2)  # continues to config.steps
    assert report.steps == 400 and report.metrics["td_rmse"] < 0.1 * first.metrics["td_rmse"]
    held_out = ds.split(0.2, 0)[1]
    assert report.metrics["mc_states"] == 7 * (ds.ep_len[held_out] == 7).sum()  # no truncated state
    assert report.metrics["mc_tail_max"] == 0.0
    assert report.metrics["mc_nmse"] < 0.05 and abs(report.metrics["mc_bias"]) < 0.1


def test_critic_follows_a_given_policy(ring: TokenView) -> None:
    """With ``policy`` the bootstrap action is pi(s_{t+1}): here always "move", whose Q is exact."""
    config = CriticConfig.for_dataset(
        ring, "tiny", frame_stack=2, gamma=0.5, hidden=64, emb_dim=8, batch_size=128, steps=600, lr=3e-3
    )
    seen = []

    def always_move(next_obs: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(next_obs.shape))
        return torch.full((len(next_obs), 1), 0.5)

    torch.manual_seed(0)
    critic = TDCritic(config)
    train_td_critic(critic, ring, loop=QUIET, policy=always_move)
    assert seen[0] == (config.batch_size, 4)
    alive = np.arange(N) != N - 1
    v = np.linalg.solve(np.eye(N) - 0.5 * P_MOVE * alive, P_MOVE @ REWARD)  # V(s) = Q(s, move)
    truth = np.stack([p @ (REWARD + 0.5 * alive * v) for p in (P_STAY, P_MOVE)], 1)[: N - 1]
    words = torch.tensor([[s // 4, s % 4] for s in range(N - 1)]).repeat(1, 2)  # a stack of 2 frames
    q = critic.q_values(words, torch.tensor([[-0.5], [0.5]]).expand(N - 1, 2, 1)).numpy()
    assert ((q - truth) ** 2).mean() / truth.var() < 0.05


def test_q_values_of_candidate_actions_match_one_by_one() -> None:
    torch.manual_seed(0)
    critic = TDCritic(CriticConfig.preset("tiny", vocab_size=5, tokens_per_frame=2, action_dim=3))
    ctx = torch.randint(5, (4, critic.config.n_context))
    cand = torch.rand(4, 6, 3) * 2 - 1
    each = torch.stack([critic.q_values(ctx, cand[:, k]) for k in range(6)], 1)
    torch.testing.assert_close(critic.q_values(ctx, cand), each)
    assert each.shape == (4, 6) and each.dtype == torch.float32


# ---------------------------------------------------------------------- behaviour cloning
def rule(frames: np.ndarray) -> np.ndarray:
    """The action is a function of the newest frame's two tokens (vocab 6)."""
    return np.stack([(frames[:, 0] - 2.5) / 3.0, np.where(frames[:, 1] % 2 == 0, 0.7, -0.7)], 1)


def test_bc_recovers_a_deterministic_rule() -> None:
    rng = np.random.default_rng(0)
    lengths = [50] * 30
    frames = rng.integers(0, 6, (sum(lengths) + len(lengths), 2))
    actions = rule(frames)
    ds = token_dataset(frames, actions, np.zeros(len(frames)), lengths, [False] * 30)
    config = BCConfig.for_dataset(
        ds, "tiny", frame_stack=2, hidden=64, batch_size=128, steps=600, lr=3e-3, token_dropout=0.0
    )  # without dropout: the rule reads single tokens
    torch.manual_seed(0)
    policy = BCPolicy(config)
    report = train_bc(policy, ds, loop=Loop(device="cpu", progress=False))
    assert report.metrics["mode_mse"] < 2e-3 and report.metrics["mode_nmse"] < 0.01
    assert report.metrics["nll"] < -4.0  # a near-deterministic density (2 action dimensions)
    test = rng.integers(0, 6, (64, 4))  # frame stacks: the rule reads the newest frame, tokens 2 and 3
    want = torch.from_numpy(rule(test[:, 2:])).float()
    assert (policy.mode(test) - want).abs().max() < 0.1
    g = torch.Generator().manual_seed(0)
    samples = policy.sample(test, 5, generator=g)
    assert samples.shape == (64, 5, 2) and samples.dtype == torch.float32
    assert samples.abs().max() <= 1.0 and (samples - want[:, None]).abs().mean() < 0.05
    assert torch.equal(samples, policy.sample(test, 5, generator=torch.Generator().manual_seed(0)))
    lp = policy.log_prob(test, want)
    assert lp.shape == (64,) and policy.log_prob(test, samples).shape == (64, 5)
    assert (lp > policy.log_prob(test, -want)).all()


def test_bc_log_prob_is_a_density_on_the_action_interval() -> None:
    torch.manual_seed(0)
    policy = BCPolicy(BCConfig.preset("tiny", vocab_size=5, tokens_per_frame=2, action_dim=1))
    ctx = torch.randint(5, (3, policy.config.n_context))
    grid = torch.linspace(-1, 1, 20_001)[1:-1]  # the density is finite inside (-1, 1)
    dens = policy.log_prob(ctx, grid[None, :, None].expand(3, -1, 1)).exp()  # (3, M)
    torch.testing.assert_close(torch.trapezoid(dens, grid), torch.ones(3), atol=2e-3, rtol=0)
    saturated = policy.log_prob(ctx, torch.ones(3, 1))  # clamped before atanh: finite
    assert torch.isfinite(saturated).all()


# ---------------------------------------------------------------------- presets, checkpoints, resume, errors
def test_every_config_has_the_three_size_presets(ring: TokenView) -> None:
    """Any agent size (``--occ-size base`` too) gives a prior and a critic."""
    presets = {c.__name__: c.presets for c in (CriticConfig, BCConfig, OccupancyConfig)}
    presets |= {b: get_backend(b).presets for b in list_tokenizers()}  # a tokenizer's are its class's
    assert all(list(p) == list(SIZES) for p in presets.values()), {k: list(p) for k, p in presets.items()}
    for size in SIZES:
        assert BCPolicy(BCConfig.for_dataset(ring, size)).config.action_dim == 1
        assert TDCritic(CriticConfig.for_dataset(ring, size, gamma=0.5)).config.gamma == 0.5


KINDS = {
    "critic": (TDCritic, CriticConfig.for_dataset, train_td_critic, {"gamma": 0.8, "token_dropout": 0.2}),
    "bc": (BCPolicy, BCConfig.for_dataset, train_bc, {"token_dropout": 0.2}),  # dropout: resume restores RNGs
}


@pytest.mark.parametrize("kind", KINDS)
def test_training_logs_checkpoints_and_resumes_exactly(
    kind: str, titok: tuple[Any, Any], tmp_path: Path
) -> None:
    cls, config_for, train, fields = KINDS[kind]
    tok, view = titok
    config = config_for(view, "tiny", frame_stack=2, steps=8, **fields)
    assert (config.vocab_size, config.tokens_per_frame, config.action_dim) == (tok.vocab_size, 8, 2)
    loop = Loop(tmp_path / "a", eval_every=4, ckpt_every=4, log_every=2, progress=False)
    torch.manual_seed(0)
    straight = cls(config)
    report = train(straight, view, loop=loop)
    assert report.steps == 8 and all(np.isfinite(v) for v in report.metrics.values())
    assert list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))
    loaded = cls.load(tmp_path / "a" / f"{kind}.pt", tokenizer_sha256=config.tokenizer_sha256)
    assert loaded.step == 8 and loaded.config == config
    loop = dataclasses.replace(loop, out=tmp_path / "b")
    assert_resumes_exactly(straight, lambda: cls(config), train, view, loop)
    other = cls(dataclasses.replace(config, lr=1e-3))
    with pytest.raises(CheckpointError, match="another config"):
        train(other, view, loop=loop)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_and_mismatch(kind: str, tmp_path: Path) -> None:
    cls, config_cls = {"critic": (TDCritic, CriticConfig), "bc": (BCPolicy, BCConfig)}[kind]
    torch.manual_seed(0)
    model = cls(config_cls.preset("tiny", vocab_size=11, tokens_per_frame=3, action_dim=2)).eval()
    model.step = 7
    path = model.save(tmp_path / "m.pt")
    loaded = cls.load(path, vocab_size=11)
    assert loaded.step == 7 and loaded.config == model.config
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    ctx = torch.randint(11, (4, model.config.n_context))
    if kind == "critic":
        act = torch.rand(4, 2) * 2 - 1
        assert torch.equal(loaded.q_values(ctx, act), model.q_values(ctx, act))
    else:
        assert torch.equal(loaded.mode(ctx), model.mode(ctx))
    with pytest.raises(CheckpointError, match="trained with vocab_size=11, but 512"):
        cls.load(path, vocab_size=512)
    with pytest.raises(ValueError, match="no config field 'widht'"):
        cls.load(path, widht=3)
    with pytest.raises(CheckpointError, match="expected"):  # a critic is not a policy and vice versa
        (BCPolicy if kind == "critic" else TDCritic).load(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["hidden"] = 64  # a config that no longer matches the weights
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="weights do not match its config"):
        cls.load(tmp_path / "bad.pt")


def test_bad_input_is_a_clear_error(titok: tuple[Any, Any], fake_ds_path: Path) -> None:
    critic = TDCritic(CriticConfig.preset("tiny", vocab_size=11, tokens_per_frame=3, action_dim=2))
    policy = BCPolicy(BCConfig.preset("tiny", vocab_size=11, tokens_per_frame=3, action_dim=2))
    ctx, act = torch.randint(11, (2, 9)), torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 11\)"):
        critic.q_values(ctx + 20, act)
    with pytest.raises(ValueError, match=r"context must be \(B, 9\)"):
        policy.sample(ctx[:, :6])
    with pytest.raises(ValueError, match="non-empty"):
        policy.mode(ctx[:0])
    with pytest.raises(TypeError, match="integer token ids"):
        policy.mode(ctx.float())
    with pytest.raises(ValueError, match="action_dim=2"):
        critic.q_values(ctx, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="must be float"):
        policy.log_prob(ctx, act.long())
    with pytest.raises(ValueError, match="NaN"):
        critic.q_values(ctx, torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"lie in \[-1, 1\]"):
        policy.log_prob(ctx, act + 1.5)
    with pytest.raises(ValueError, match="n must be"):
        policy.sample(ctx, 0)
    with pytest.raises(ValueError, match="gamma must be in"):
        CriticConfig.preset("tiny", vocab_size=4, tokens_per_frame=2, action_dim=1, gamma=1.0)
    with pytest.raises(ValueError, match="no fields"):
        BCConfig.preset("tiny", vocab_size=4, tokens_per_frame=2, action_dim=1, gama=0.9)
    with pytest.raises(ValueError, match="unknown size"):
        BCConfig.preset("huge", vocab_size=4, tokens_per_frame=2, action_dim=1)
    _, view = titok
    with pytest.raises(ValueError, match="read tokens"):
        train_bc(policy, open_dataset(fake_ds_path), loop=QUIET)
    config = CriticConfig.for_dataset(view, "tiny", frame_stack=2)
    wrong = TDCritic(dataclasses.replace(config, vocab_size=config.vocab_size + 1))
    with pytest.raises(ValueError, match="vocab_size"):
        train_td_critic(wrong, view, loop=QUIET)
