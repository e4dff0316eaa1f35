"""Agents: the registry, learn / predict / q_values / save / load at the tiny size, SB3 tools."""

from __future__ import annotations

import dataclasses
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import voc_rl
from voc_rl.agents import Agent, BCAgent, TDCriticAgent, VOCAgent
from voc_rl.checkpoint import CheckpointError
from voc_rl.envs import make_env
from voc_rl.registry import REGISTRY, AgentConfig


@pytest.fixture(scope="module")
def trained(fake_ds_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Agent]:
    """Every registered agent at the tiny size, each part trained 6 steps on the fake dataset."""
    runs = tmp_path_factory.mktemp("runs")
    short = {"wm-rollout": {"gamma": 0.5, "candidates": 3}}  # 2-step rollouts: the test is about the plumbing
    return {
        name: voc_rl.make_agent(name, size="tiny", **short.get(name, {})).learn(
            fake_ds_path, steps=6, runs=runs, progress=False
        )
        for name in voc_rl.list_agents()
    }


def _obs(seed: int = 0) -> np.ndarray:
    env = make_env("fake-pixels")
    obs, _ = env.reset(seed=seed)
    return obs


# ------------------------------------------------------------------ registry
def test_registry_lists_every_agent_of_the_issue() -> None:
    expected = {
        "voc-vqvae-select",
        "voc-dino-select",
        "voc-musik-select",
        "voc-titok-select",
        "bc",
        "td-critic",
        "wm-rollout",
    }
    assert expected <= set(voc_rl.list_agents())
    backends = ["dino", "musik", "titok", "vqvae"]
    assert voc_rl.list_agents("voc-*") == sorted(
        f"voc-{b}{x}" for b in backends for x in ("", "-awr", "-qwr", "-select")
    )
    agent = voc_rl.make_agent("voc-dino-select", size="tiny", gamma=0.8)
    assert isinstance(agent, VOCAgent) and agent.config.gamma == 0.8 and agent.config.size == "tiny"
    assert REGISTRY["voc-dino-select"].config.gamma != 0.8  # the registered spec stays frozen
    # voc-<tokenizer> is the VOC agent that acts best (a pixel policy, qbc); -select scores candidates
    assert REGISTRY["voc-dino"].config.extraction == "qbc" and REGISTRY["voc-dino"].config.candidates == 1
    assert REGISTRY["voc-dino-select"].config.extraction == "none"
    assert REGISTRY["voc-dino-select"].config.policy_input == "tokens"


def test_an_agent_saved_under_an_old_name_loads_under_the_new_one(
    trained: dict[str, Agent], tmp_path: Path
) -> None:
    """Before voc-<tokenizer> named the qbc agent it named the selection agent: such a file loads as
    voc-<tokenizer>-select, acting as it did."""
    import json
    import zipfile

    agent, obs = trained["voc-titok-select"], _obs()
    saved = agent.save(tmp_path / "new.zip")
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "agent.json":
                meta = json.loads(data)
                assert meta["agent"] == "voc-titok-select"
                data = json.dumps({**meta, "agent": "voc-titok"}).encode()
            dst.writestr(item, data)
    loaded = Agent.load(old)
    assert loaded.name == "voc-titok-select" and loaded.config == agent.config
    np.testing.assert_allclose(
        loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0]
    )
    assert (
        Agent.load(trained["voc-titok"].save(tmp_path / "qbc.zip")).name == "voc-titok"
    )  # today's name stays


def test_unknown_names_and_fields_suggest_close_ones() -> None:
    with pytest.raises(ValueError, match="did you mean 'voc-dino'"):
        voc_rl.make_agent("voc-dnio")
    with pytest.raises(ValueError, match="did you mean 'gamma'"):
        voc_rl.make_agent("voc-dino-select", gama=0.9)
    with pytest.raises(ValueError, match="unknown size"):
        voc_rl.make_agent("bc", size="huge")
    with pytest.raises(ValueError, match="gamma"):
        voc_rl.make_agent("voc-titok-select", gamma=1.0)


def test_tokenizer_fields_go_over_the_agents_tokens() -> None:
    """A field given for the tokenizer keeps the agent's 16 tokens a frame (it does not replace them);
    another backend starts from its own agents' fields; the token count can still be set."""
    assert voc_rl.make_agent("voc-vqvae", tokenizer_kwargs={"state_aux": 1.0}).config.tokenizer_kwargs == {
        "downsample": 4,
        "state_aux": 1.0,
    }
    other = voc_rl.make_agent("voc-vqvae", tokenizer="dino", tokenizer_kwargs={"state_aux": 1.0})
    assert other.config.tokenizer_kwargs == {"patch_size": 16, "state_aux": 1.0}
    assert voc_rl.make_agent("td-critic", tokenizer="musik").config.tokenizer_kwargs == {"downsample": 4}
    assert voc_rl.make_agent("bc-tokens", tokenizer_kwargs={"downsample": 3}).config.tokenizer_kwargs == {
        "downsample": 3
    }


def test_an_agent_learns_on_tokens_that_regress_the_state(fake_ds_path: Path, tmp_path: Path) -> None:
    agent = voc_rl.make_agent("bc-tokens", size="tiny", tokenizer_kwargs={"state_aux": 1.0})
    agent.learn(fake_ds_path, steps=3, run_dir=tmp_path / "run", progress=False)
    config = agent.tokenizer.config
    assert config.state_aux == 1.0 and config.state_dim == 4 and agent.tokenizer.tokens_per_frame == 16
    loaded = voc_rl.load_agent(agent.save(tmp_path / "agent.zip"))
    assert loaded.tokenizer.config == config


def test_users_register_their_own_agent_and_overwrites_warn() -> None:
    try:
        voc_rl.register("my-bc", "voc_rl.agents.agents:BCAgent", AgentConfig(), tokenizer="titok")
        agent = voc_rl.make_agent("my-bc", size="tiny")
        assert isinstance(agent, BCAgent) and agent.config.tokenizer == "titok"
        with pytest.warns(UserWarning, match="overwriting"):
            voc_rl.register("my-bc", "voc_rl.agents.agents:BCAgent", AgentConfig())
    finally:
        REGISTRY.pop("my-bc", None)


# ------------------------------------------------------------------ every agent, tiny
@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.slow
def test_agent_acts_saves_loads_and_runs_under_evaluate_policy(
    name: str, trained: dict[str, Agent], tmp_path: Path
) -> None:
    agent, obs = trained[name], _obs()
    assert agent.task == "fake-pixels"
    assert (agent.run_dir / "config.json").exists() and list(agent.run_dir.glob("*/tb/events.*"))
    agent.seed(3)
    action, state = agent.predict(obs, deterministic=True)
    assert state is None and action.shape == (2,) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1)
    batch, _ = agent.predict(np.stack([obs, obs]))
    assert batch.shape == (2, 2)
    loaded = voc_rl.load_agent(agent.save(tmp_path / name))
    assert type(loaded) is type(agent) and loaded.config == agent.config
    for deterministic in (True, False):
        agent.seed(7), loaded.seed(7)
        a1, _ = agent.predict(obs, deterministic=deterministic)
        a2, _ = loaded.predict(obs, deterministic=deterministic)
        np.testing.assert_array_equal(a1, a2)
    env = Monitor(make_env("fake-pixels", episode_steps=20))  # 10 decisions
    mean, _ = evaluate_policy(agent, env, n_eval_episodes=1)
    assert np.isfinite(mean) and env.get_episode_lengths() == [10]


@pytest.mark.parametrize("name", ["voc-titok-select", "td-critic", "wm-rollout"])
def test_q_values_and_value_have_the_documented_shapes(name: str, trained: dict[str, Agent]) -> None:
    agent, obs = trained[name], _obs()
    actions = np.array([[-1, -1], [0, 0], [1, 1]], np.float32)
    q = agent.q_values(obs, actions)
    assert q.shape == (3,) and np.all(np.isfinite(q))
    assert agent.q_values(np.stack([obs] * 2), np.stack([actions] * 2)).shape == (2, 3)
    assert np.isfinite(agent.value(obs)) and agent.value(np.stack([obs] * 2)).shape == (2,)
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        agent.q_values(obs, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        agent.q_values(obs, np.full((1, 2), np.nan, np.float32))


def test_predict_takes_the_candidate_its_scorer_ranks_first(
    trained: dict[str, Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stub scorer with a known ranking: predict must act with the candidate it ranks first."""
    agent, obs = trained["voc-titok-select"], _obs()
    k = agent.config.candidates
    assert k >= 4  # the mode (candidate 0) and samples to pick among
    scored: list[torch.Tensor] = []
    best = torch.tensor([2, k - 1])  # per row of a batch of two; never the mode, so not the prior's pick

    def ranked(state: Any, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        scored.append(actions.clone())
        q = torch.zeros(actions.shape[:2])
        q[torch.arange(len(q)), best[: len(q)]] = 1.0  # a known best candidate, the rest tied
        return q

    monkeypatch.setattr(agent, "_score", ranked)
    agent.seed(0)
    action, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, scored[-1][0, 2].numpy())
    batch, _ = agent.predict(np.stack([obs, obs]), deterministic=True)
    np.testing.assert_array_equal(batch, scored[-1][torch.arange(2), best].numpy())
    # sampling at a low temperature: the softmax over the standardised Q puts all its mass on the best
    monkeypatch.setattr(agent, "config", dataclasses.replace(agent.config, temperature=0.01))
    for _ in range(10):
        action, _ = agent.predict(obs, deterministic=False)
        np.testing.assert_array_equal(action, scored[-1][0, 2].numpy())

    # equal Q (a scorer that ignores the action): deterministic takes the first, sampling spreads evenly
    def tied(state: Any, actions: torch.Tensor, task: str | None = None) -> torch.Tensor:
        scored.append(actions.clone())
        return torch.zeros(actions.shape[:2])

    monkeypatch.setattr(agent, "_score", tied)
    action, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, scored[-1][0, 0].numpy())  # argmax of a tie: the prior's mode
    n = 400
    actions, _ = agent.predict(np.stack([obs] * n), deterministic=False)
    cands = scored[-1].numpy()  # (n, K, A): distinct samples, so each row's pick is identified
    picks = [int(np.flatnonzero((c == a).all(1))[0]) for c, a in zip(cands, actions, strict=True)]
    counts = np.bincount(picks, minlength=k)
    assert counts.min() > 0.5 * n / k and counts.max() < 1.5 * n / k, counts  # uniform: n / k each


def test_bad_use_gets_clear_errors(trained: dict[str, Agent], tmp_path: Path) -> None:
    obs = _obs()
    with pytest.raises(RuntimeError, match="call learn"):
        voc_rl.make_agent("bc", size="tiny").predict(obs)
    with pytest.raises(RuntimeError, match="before save"):
        voc_rl.make_agent("bc", size="tiny").save(tmp_path / "x.zip")
    agent = trained["voc-titok-select"]
    with pytest.raises(ValueError, match=r"\(9, 64, 64\)"):
        agent.predict(obs[:6])
    with pytest.raises(TypeError, match="uint8"):
        agent.predict(obs.astype(np.float32))
    with pytest.raises(NotImplementedError, match="no value model"):
        trained["bc"].q_values(obs, np.zeros((2, 2), np.float32))
    path = agent.save(tmp_path / "voc.zip")
    with pytest.raises(CheckpointError, match=r"load it with voc_rl\.load_agent"):
        TDCriticAgent.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        Agent.load(tmp_path / "missing.zip")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Agent.load(cut)
    evil = tmp_path / "evil.zip"  # agent.json naming a class outside voc_rl: never imported
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "agent.json":
                data = data.replace(b"voc_rl.agents.agents:VOCAgent", b"os:system")
            dst.writestr(item, data)
    with pytest.raises(CheckpointError, match="not a voc_rl agent"):
        Agent.load(evil)
    with zipfile.ZipFile(path) as src:  # the layout of before: the kind in the config, not the class
        meta = json.loads(src.read("agent.json"))
    for kind, loads in (("voc", True), ("bc", False)):
        old = tmp_path / f"old_{kind}.zip"
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
            for item in src.namelist():
                data = src.read(item)
                if item == "agent.json":
                    data = json.dumps({**meta, "config": {**meta["config"], "kind": kind}}).encode()
                dst.writestr(item, data)
        if loads:
            assert Agent.load(old).kind == "voc"
        else:
            with pytest.raises(CheckpointError, match="is a 'bc' agent saved as a 'voc' class"):
                Agent.load(old)


def test_the_kind_of_an_agent_is_its_class() -> None:
    for name, spec in REGISTRY.items():
        agent = voc_rl.make_agent(name, size="tiny")
        assert spec.kind == agent.kind == type(agent).kind != "", name
    assert {REGISTRY[n].kind for n in ("bc", "pbc", "voc-dino-select", "td-critic-awr", "wm-rollout")} == {
        "bc",
        "voc",
        "td-critic",
        "wm-rollout",
    }
    with pytest.raises(ValueError, match="unknown AgentConfig field"):
        voc_rl.make_agent(
            "voc-dino-select", kind="bc"
        )  # once accepted, and then treated as BC by a benchmark


def test_callback_stops_a_part_and_learn_resumes_in_the_same_run(fake_ds_path: Path, tmp_path: Path) -> None:
    agent = voc_rl.make_agent("bc-tokens", size="tiny", tokenizer="titok")
    seen: list[tuple[str, int]] = []

    def stop_prior_early(step: int, logs: dict) -> bool:
        seen.append((logs["part"], step))
        return not (logs["part"] == "prior" and step == 3)

    agent.learn(fake_ds_path, steps=8, run_dir=tmp_path / "run", callback=stop_prior_early, progress=False)
    assert agent.prior.step == 3 and agent.tokenizer.step == 8
    assert ("tokenizer", 8) in seen and ("prior", 4) not in seen
    again = voc_rl.make_agent("bc-tokens", size="tiny", tokenizer="titok")
    again.learn(fake_ds_path, steps=8, run_dir=tmp_path / "run", progress=False)
    assert again.prior.step == 8  # resumed from the checkpoint written when the callback stopped it


@pytest.mark.slow
def test_one_agent_end_to_end_on_real_cheetah_run(tmp_path: Path) -> None:
    """Real dm_control physics and rendering: collect, learn, act through evaluate_policy."""
    from voc_rl.data.collect import collect

    path = collect("cheetah-run", "medium", episodes=1, out=tmp_path, progress=False)
    agent = voc_rl.make_agent("voc-titok-select", size="tiny", candidates=2, pool_size=2)
    agent.learn(path, steps=4, runs=tmp_path / "runs", progress=False)
    env = Monitor(make_env("cheetah-run", action_repeat=25))  # 40 decisions per episode
    mean, _ = evaluate_policy(agent, env, n_eval_episodes=1)
    assert np.isfinite(mean) and env.get_episode_lengths() == [40]


def test_token_features_put_voc_rl_tokens_under_ppo(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from voc_rl.agents import TokenFeatures
    from voc_rl.tokenizers import make_tokenizer

    tok_path = make_tokenizer("titok", size="tiny").save(tmp_path / "tok.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPO(
            "CnnPolicy", make_env("fake-pixels"), n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
            policy_kwargs={"features_extractor_class": TokenFeatures,
                           "features_extractor_kwargs": {"tokenizer": str(tok_path), "features_dim": 32}},
        )  # fmt: skip
    extractor = model.policy.features_extractor
    assert isinstance(extractor, TokenFeatures)
    tok_before = [p.clone() for p in extractor.tokenizer.parameters()]
    head_before = [p.clone() for p in extractor.head.parameters()]
    model.learn(total_timesteps=32)
    assert all(
        np.array_equal(a, b) for a, b in zip(tok_before, extractor.tokenizer.parameters(), strict=True)
    )
    assert not all(
        np.array_equal(a, b.detach()) for a, b in zip(head_before, extractor.head.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="stacked RGB frames"):
        import gymnasium as gym

        TokenFeatures(gym.spaces.Box(0, 255, (9, 32, 32), np.uint8), tok_path)


def test_token_features_read_the_codes_encode_gives(tmp_path: Path) -> None:
    """Under stable-baselines3 (floats in [0, 1]) the features read the tokens ``encode`` gives the
    same uint8 stack, also for a tokenizer whose codes read the frame before (``input_frames``)."""
    import gymnasium as gym

    from voc_rl.agents import TokenFeatures
    from voc_rl.tokenizers import make_tokenizer

    tok = make_tokenizer("vqvae", size="tiny", input_frames=2, downsample=4)
    features = TokenFeatures(gym.spaces.Box(0, 255, (9, 64, 64), np.uint8), tok, features_dim=8)
    obs = torch.randint(0, 256, (2, 9, 64, 64), dtype=torch.uint8)
    expected = features.head(tok.embed(tok.encode(obs.reshape(2, 3, 3, 64, 64))))
    torch.testing.assert_close(features(obs.float() / 255), expected)


# ------------------------------------------------------------------ policy extraction
def test_advantage_weights_favour_actions_better_than_the_prior() -> None:
    from voc_rl.prior import advantage_weights

    rng = np.random.default_rng(0)
    q_prior = rng.normal(size=(500, 8))
    q_data = q_prior.mean(1) + np.linspace(-3, 3, 500)  # advantages rise along the rows
    w, info = advantage_weights(q_data, q_prior, temperature=0.5, clip=20.0)
    assert w.shape == (500,) and w.max() <= 20.0 and w.min() > 0
    assert np.all(np.diff(w) >= 0) and w[-1] / w[0] > 100  # monotone in the advantage, and sharp
    assert 0 < info["ess_fraction"] < 1 and info["clipped"] > 0
    w2, _ = advantage_weights(10 * q_data, 10 * q_prior, temperature=0.5)  # scale-free: beta follows std(A)
    np.testing.assert_allclose(w, w2, rtol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        advantage_weights(np.full(3, np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="q_prior"):
        advantage_weights(np.zeros(3), np.zeros(3))


def test_level_shares_split_the_extraction_weight_by_behaviour_policy() -> None:
    from types import SimpleNamespace

    from voc_rl.prior import level_shares

    ds = SimpleNamespace(  # a mixed dataset's frames: 2 random, 3 medium, 1 expert
        arrays={"policy_id": np.array([0, 0, 1, 1, 1, 2])},
        meta={"policies": {"0": {"level": "random"}, "1": {"level": "medium"}, "2": {"level": "expert"}}},
    )
    shares = level_shares(ds, np.array([0.0, 1.0, 1.0, 1.0, 2.0, 5.0]))
    assert shares == pytest.approx({"weight_random": 0.1, "weight_medium": 0.4, "weight_expert": 0.5})
    assert level_shares(SimpleNamespace(arrays={}, meta={}), np.ones(6)) == {}  # no levels recorded


def test_top_episode_weights_keep_the_best_returns(fake_ds_path: Path) -> None:
    from voc_rl.data.dataset import open_dataset
    from voc_rl.prior import top_episode_weights

    ds = open_dataset(fake_ds_path)
    episodes = np.arange(len(ds.ep_start))
    w = top_episode_weights(ds, episodes, 0.5)
    returns = ds.episode_returns()
    kept = [e for e in episodes if w[ds.ep_start[e]] == 1.0]
    assert len(kept) == round(0.5 * len(episodes))
    assert min(returns[kept]) >= np.max(np.delete(returns, kept), initial=-np.inf)
    with pytest.raises(ValueError, match="fraction"):
        top_episode_weights(ds, episodes, 0.0)


def test_qbc_ranks_episodes_by_the_mean_of_their_transitions_estimates(fake_ds_path: Path) -> None:
    """qbc's ranking: an episode's score is the mean of its scored transitions' Q, and the episodes
    kept are those of highest score, whatever their recorded return."""
    from voc_rl.data.dataset import open_dataset
    from voc_rl.evaluation import spearman
    from voc_rl.prior import episode_means, top_episode_weights

    ds = open_dataset(fake_ds_path)
    episodes = np.arange(len(ds.ep_start))
    index = np.concatenate([ds.ep_start[e] + np.arange(2) for e in episodes])  # two frames of each
    owner = np.repeat(episodes, 2)
    q = np.where(np.arange(len(index)) % 2 == 0, 1.0, 3.0) * (len(episodes) - owner)  # falls with e
    np.testing.assert_allclose(episode_means(ds, index, q, episodes), 2.0 * (len(episodes) - episodes))
    w = top_episode_weights(ds, episodes, 0.5, episode_means(ds, index, q, episodes))
    kept = [e for e in episodes if w[ds.ep_start[e]] == 1.0]
    assert kept == list(range(round(0.5 * len(episodes))))  # the first episodes: the highest means
    assert np.isnan(episode_means(ds, index[:2], q[:2], episodes)[1:]).all()  # no frame scored: NaN
    with pytest.raises(ValueError, match="one finite score per episode"):
        top_episode_weights(ds, episodes, 0.5, np.zeros(2))
    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)  # episode_rank_corr's
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.arange(5.0), np.ones(5)))  # a constant has no ranks


def test_distill_q_amortises_a_scorer_into_a_token_q_network() -> None:
    import torch

    from voc_rl.critic import CriticConfig, TDCritic, distill_q

    torch.manual_seed(0)
    config = CriticConfig(vocab_size=8, tokens_per_frame=2, action_dim=2, gamma=0.9, hidden=64, lr=1e-3)
    context = torch.randint(8, (600, config.n_context))
    actions = torch.rand(600, 5, 2) * 2 - 1
    q = 10 * (context[:, :1].float() / 8 + actions[..., 0] - 0.5 * actions[..., 1] ** 2)  # (N, K)
    info = distill_q(TDCritic(config), context, actions, q, steps=1500)
    assert info["distill_nmse"] < 0.1 and info["distill_diff_corr"] > 0.9  # it learns the action's part too
    with pytest.raises(ValueError, match="q must be finite"):
        distill_q(TDCritic(config), context, actions, q[:, :3], steps=1)


def test_an_extraction_records_its_summary_before_its_policy_trains(
    tmp_path: Path, fake_ds_path: Path
) -> None:
    """A run stopped while the extracted policy trains (or once it finished, before anything else)
    keeps the extraction's summary, so the resumed agent reports it."""
    run = tmp_path / "pbc"

    def crash(step: int, logs: object) -> None:
        if (run / "extracted-pbc-pixels").exists():
            raise RuntimeError("stopped while the extracted policy trains")

    agent = voc_rl.make_agent("pbc", size="tiny")
    with pytest.raises(RuntimeError, match="stopped while"):
        agent.learn(fake_ds_path, steps=6, run_dir=run, progress=False, callback=crash)
    record = run / "extracted-pbc-pixels" / "extraction_info.json"
    assert json.loads(record.read_text()) == {"weight_random": 1.0}  # the fake data: one random policy


def test_extraction_agents_learn_save_and_load(
    trained: dict[str, Agent], tmp_path: Path, fake_ds_path: Path
) -> None:
    awr, bc = trained["td-critic-awr"], trained["bc"]
    assert awr.config.extraction == "awr" and awr.extraction_info["transitions"] > 0
    assert awr.extraction_info["beta"] > 0 and 0 < awr.extraction_info["ess_fraction"] <= 1
    assert (awr.run_dir / "extracted-awr-pixels" / "bc.pt").exists()
    assert (awr.run_dir / "pixel-prior" / "bc.pt").exists()  # the BC prior whose samples set V(s)
    obs = _obs()
    loaded = Agent.load(awr.save(tmp_path / "awr.zip"))
    act = awr.predict(obs, deterministic=True)[0]
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], act)
    assert loaded.extraction_info == awr.extraction_info
    again = voc_rl.make_agent("td-critic-awr", size="tiny")  # a rerun in the folder scores nothing
    again._awr_estimates = None  # (it would fail if called)
    again.learn(fake_ds_path, steps=6, run_dir=awr.run_dir, progress=False)
    assert again.extraction_info == awr.extraction_info
    assert (trained["pbc"].run_dir / "extracted-pbc-pixels" / "bc.pt").exists()
    assert not (trained["pbc"].run_dir / "pixel-prior").exists()  # %BC needs no BC prior
    assert trained["pbc"].extraction_info == {"weight_random": 1.0}  # the fake data: one random policy
    assert awr.extraction_info["weight_random"] == pytest.approx(1.0)
    pbc67 = trained["pbc-67"]  # other settings, another folder: pbc and pbc-67 can share a run folder
    assert pbc67.config.pbc_fraction == 0.67 and pbc67._extraction_folder().startswith("extracted-pbc-")
    assert (pbc67.run_dir / pbc67._extraction_folder() / "bc.pt").exists()
    assert not np.allclose(act, bc.predict(obs, deterministic=True)[0])
    voc = trained["voc-vqvae-awr"]  # the occupancy model scored a subset, distilled into a Q network
    info = voc.extraction_info
    assert 2 <= info["scored_states"] <= info["transitions"] and np.isfinite(info["distill_nmse"])
    assert (voc.run_dir / "extracted-awr-pixels" / "bc.pt").exists() and voc.config.candidates == 1
    qwr = trained["td-critic-qwr"]  # one constant baseline: no prior samples scored
    assert qwr.extraction_info["transitions"] == awr.extraction_info["transitions"]
    assert (qwr.run_dir / "extracted-qwr-pixels" / "bc.pt").exists()
    assert not (qwr.run_dir / "pixel-prior").exists()  # Q of the dataset's actions only: no BC prior
    assert "distill_diff_corr" in trained["voc-vqvae-qwr"].extraction_info
    qbc = trained["voc-vqvae"]  # the VOC agent: whole episodes ranked by the occupancy model's Q
    assert qbc.config.extraction == "qbc" and qbc.config.policy_input == "pixels"
    assert -1.0 <= qbc.extraction_info["episode_rank_corr"] <= 1.0
    assert qbc.extraction_info["weight_random"] == pytest.approx(1.0)
    assert (qbc.run_dir / "extracted-qbc-pixels" / "bc.pt").exists()
    assert not (qbc.run_dir / "pixel-prior").exists()  # the VOC agent trains one pixel policy
    assert not np.allclose(qbc.predict(obs, deterministic=True)[0], bc.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="needs a Q"):
        voc_rl.make_agent("bc", extraction="awr")
    with pytest.raises(ValueError, match="unknown extraction"):
        voc_rl.make_agent("td-critic", extraction="awrr")


@pytest.mark.parametrize("name", ["voc-titok-select", "wm-rollout"])
@pytest.mark.slow
def test_the_main_job_table_scores_each_agent_by_its_own_q(
    name: str, trained: dict[str, Agent], fake_ds_path: Path, tmp_path: Path
) -> None:
    """A world-model agent's occupancy model has gamma 0: its rows are its rollout's Q, not the
    occupancy estimators of a one-step model set against the agent's gamma."""
    from voc_rl.data import open_dataset
    from voc_rl.quickstart import return_error_table

    agent = trained[name]
    rows, truth = return_error_table(
        agent, open_dataset(fake_ds_path), tmp_path, 4, rollouts=1, critic_steps=2
    )
    methods = [r["method"].split(" ")[0] for r in rows]
    if name == "wm-rollout":
        assert methods == ["wm-rollout", "td-critic", "mean"]
    else:
        assert methods == ["sample", "pool", "density", "td-critic", "mean"]
    assert f"simulator Q (gamma {agent.config.gamma})" in truth and not list(tmp_path.glob("*.pt"))


# ------------------------------------------------------------------ the agent CLI
@pytest.mark.slow
def test_agent_cli_trains_evaluates_and_imagines(
    trained: dict[str, Agent], fake_ds_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from voc_rl.cli import main

    zipped = str(tmp_path / "voc.zip")
    args = ["agent", "train", "--agent", "voc-titok-select", "--dataset", str(fake_ds_path), "--size", "tiny",
            "--steps", "2", "--candidates", "2", "--pool-size", "2", "--occupancy-kwargs", '{"depth": 1}',
            "--runs", str(tmp_path / "runs"), "--out", zipped]  # fmt: skip
    assert main(args) == 0
    agent = voc_rl.load_agent(zipped)
    assert agent.config.candidates == 2 and agent.occupancy.config.depth == 1
    assert main(["agent", "eval", zipped, "--episodes", "2", "--gif", str(tmp_path / "ep.gif")]) == 0
    printed = capsys.readouterr().out
    assert "[95% CI" in printed and "ms per decision" in printed and "env seed 1001" in printed
    assert Image.open(tmp_path / "ep.gif").n_frames > 1
    out = tmp_path / "futures.png"
    assert main(["agent", "imagine", zipped, "--dataset", str(fake_ds_path), "--out", str(out),
                 "--states", "2", "--samples", "3"]) == 0  # fmt: skip
    width, height = Image.open(out).size
    assert width > 5 * 64 * 2 and height > 2 * 64 * 2  # 2 rows of now, true future and 3 samples, 2x


@pytest.mark.parametrize(
    ("name", "message"),
    [("bc", "has no occupancy model"), ("voc-dino-select", "dino tokens, which have no pixel decoder")],
)
def test_agent_imagine_says_which_agents_can_show_futures(
    name: str, message: str, trained: dict[str, Agent], fake_ds_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from voc_rl.cli import main

    zipped = str(trained[name].save(tmp_path / name))
    assert main(["agent", "imagine", zipped, "--dataset", str(fake_ds_path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["agent", "eval", zipped, "--episodes", "0"]) == 2
    assert main(["agent", "train", "--agent", "voc-dnio", "--dataset", str(fake_ds_path)]) == 2
    assert "did you mean 'voc-dino'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["voc-vqvae-select", "voc-dino-select"])
def test_the_main_job_says_why_it_runs_another_agent_than_voc_dino(name: str, tmp_path: Path) -> None:
    from voc_rl.quickstart import MainJobReport, summary

    report = MainJobReport([], "", 1.0, 2.0, {"random": 0.0}, None, tmp_path / "a.gif", None, None, {}, 60.0)
    text = summary(report, "cheetah-run", name)
    why = "(not voc-dino-select: DINO's ViT tokenizer takes about twice"
    assert (why in text) == (name != "voc-dino-select")
    assert f"the main job runs {name}, the selection agent" in text
