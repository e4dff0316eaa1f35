"""The pixel control heads: the encoder's augmentation, the pixel prior, IQL and TD3+BC at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import voc_rl
from voc_rl.data import open_dataset
from voc_rl.offline_rl import ActorCriticConfig, PixelCritic, expectile_loss, make_actor, train_actor_critic
from voc_rl.pixel_policy import PixelBCConfig, PixelBCPolicy, train_pixel_bc
from voc_rl.pixel_trunk import init_from_tokenizer, pixel_batch, random_shift
from voc_rl.train_loop import Loop


def test_random_shift_crops_each_image_of_its_padded_copy_at_its_own_offset() -> None:
    x = torch.rand(32, 3, 16, 16)
    assert torch.equal(random_shift(x, 0), x)
    y = random_shift(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(padded[i, :, dy : dy + 16, dx : dx + 16], y[i])]  # fmt: skip
        assert hits, "every output is a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets differ between images


def test_the_pixel_prior_has_the_token_priors_interface_and_checks_its_input(fake_ds_path: Path) -> None:
    ds = open_dataset(fake_ds_path)
    policy = PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny"))
    obs = ds.stacks(np.arange(5), 3)
    assert policy.mode(obs).shape == (5, 2) and policy.sample(obs, 4).shape == (5, 4, 2)
    assert policy.sample(obs, 4).abs().max() <= 1 and policy.log_prob(obs, policy.mode(obs)).shape == (5,)
    with pytest.raises(TypeError, match="uint8"):
        policy.mode(obs.astype(np.float32))
    with pytest.raises(ValueError, match="obs must be"):
        policy.mode(obs[:, :3])
    with pytest.raises(ValueError, match="shift must be"):
        PixelBCConfig.for_dataset(ds, "tiny", shift=40)


def test_weighted_pixel_bc_imitates_the_weighted_episode(fake_ds_path: Path, tmp_path: Path) -> None:
    """Weight only episode 0 and its actions are fitted better than another episode's (a behaviour
    that fails if the weights are ignored)."""
    ds = open_dataset(fake_ds_path)
    weights = np.zeros(len(ds.arrays["action"]), np.float32)
    first = slice(ds.ep_start[0], ds.ep_start[0] + ds.ep_len[0])
    weights[first] = 1.0
    policy = PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny", steps=300, shift=0, lr=3e-3))
    train_pixel_bc(policy, ds, loop=Loop(progress=False, device="cpu"), val_fraction=0.0, weights=weights)

    def mse(e: int) -> float:
        idx = ds.ep_start[e] + np.arange(ds.ep_len[e])
        return float(
            (policy.mode(ds.stacks(idx, 3)) - torch.from_numpy(ds.arrays["action"][idx])).pow(2).mean()
        )

    assert mse(0) < 0.5 * mse(1)
    with pytest.raises(ValueError, match="weights must be"):
        train_pixel_bc(policy, ds, loop=Loop(progress=False), weights=weights[:-1])


def test_only_weighted_episodes_are_drawn_and_all_zero_training_weights_are_refused(
    fake_ds_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voc_rl.pixel_policy as pixel_policy

    ds = open_dataset(fake_ds_path)
    train_eps, val_eps = ds.split(0.1, 0)
    drawn: list[np.ndarray] = []

    def recording_batch(ds_, index, *args):
        drawn.append(np.asarray(index))
        return pixel_batch(ds_, index, *args)

    monkeypatch.setattr(pixel_policy, "pixel_batch", recording_batch)
    weights = np.zeros(len(ds.arrays["action"]), np.float32)
    kept = train_eps[0]
    weights[ds.ep_start[kept] : ds.ep_start[kept] + ds.ep_len[kept]] = 1.0
    policy = PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny", steps=5))
    train_pixel_bc(policy, ds, loop=Loop(progress=False, device="cpu"), weights=weights)
    rows = np.concatenate(drawn[1:])  # the training batches (the held-out states are read first)
    assert len(rows) and np.all(ds.arrays["episode"][rows] == ds.arrays["episode"][ds.ep_start[kept]])
    held = np.zeros_like(weights)
    held[ds.ep_start[val_eps[0]] : ds.ep_start[val_eps[0]] + ds.ep_len[val_eps[0]]] = 1.0
    with pytest.raises(ValueError, match="zero on every training episode"):
        train_pixel_bc(policy, ds, loop=Loop(progress=False, device="cpu"), weights=held)


def test_the_state_auxiliary_head_learns_the_recorded_state_and_round_trips(
    fake_ds_path: Path, tmp_path: Path
) -> None:
    ds = open_dataset(fake_ds_path)
    config = PixelBCConfig.for_dataset(ds, "tiny", steps=300, shift=0, lr=3e-3, state_aux=1.0)
    assert config.state_dim == ds.arrays["proprio"].shape[1]
    policy = PixelBCPolicy(config)
    loop = Loop(out=tmp_path / "run", progress=False, device="cpu")
    report = train_pixel_bc(policy, ds, loop=loop, val_fraction=0.0)  # scored on its training frames
    assert report.metrics["state_nmse"] < 0.5  # 1 is predicting the training mean
    back = PixelBCPolicy.load(tmp_path / "run" / "bc.pt")
    assert torch.equal(back.state_mean, policy.state_mean) and back.config == config
    obs = ds.stacks(np.arange(4), 3)
    assert torch.equal(back.mode(obs), policy.mode(obs))
    no_state = dict(ds.arrays)
    no_state.pop("proprio")
    ds.arrays = no_state
    with pytest.raises(ValueError, match="proprioceptive state"):
        PixelBCConfig.for_dataset(ds, "tiny", state_aux=1.0)


def test_the_vqvae_encoder_starts_from_a_tokenizers_encoder_and_trains_on(
    fake_ds_path: Path, tmp_path: Path
) -> None:
    from voc_rl.parts import fit_tokenizer

    ds = open_dataset(fake_ds_path)
    geometry = {"channels": 8, "downsample": 4, "code_dim": 8, "vocab_size": 16}
    tok = fit_tokenizer(ds, "vqvae", "tiny", {**geometry, "steps": 2}, loop=Loop(progress=False))
    fields = {"encoder": "vqvae", "vqvae_channels": 8, "vqvae_downsample": 4, "vqvae_code_dim": 8}
    policy = init_from_tokenizer(PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny", steps=3, **fields)), tok)
    obs = torch.from_numpy(ds.stacks(np.arange(5), 3))
    frames = obs.float().reshape(15, 3, 64, 64) / 255  # each frame through the tokenizer's own layers
    with torch.no_grad():
        assert torch.allclose(policy.encoder.frames(frames * 2 - 1), tok.encoder(frames * 2 - 1), atol=1e-6)
    assert policy.mode(obs).shape == (5, ds.arrays["action"].shape[1])
    before = policy.encoder.frames[0].weight.clone()
    train_pixel_bc(policy, ds, loop=Loop(out=tmp_path / "run", progress=False, device="cpu"))
    assert not torch.equal(policy.encoder.frames[0].weight, before)  # fine-tuned, not frozen
    back = PixelBCPolicy.load(tmp_path / "run" / "bc.pt")
    assert back.config.encoder == "vqvae" and torch.equal(back.mode(obs), policy.mode(obs))
    with pytest.raises(ValueError, match="do not match"):
        init_from_tokenizer(
            PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny", **{**fields, "vqvae_code_dim": 4})), tok
        )
    with pytest.raises(ValueError, match="set encoder='vqvae'"):
        init_from_tokenizer(PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny")), tok)
    with pytest.raises(ValueError, match="unknown encoder"):
        PixelBCConfig.for_dataset(ds, "tiny", encoder="resnet")


def test_expectile_regression_finds_the_expectile() -> None:
    samples = torch.randn(4000)
    for tau, above_mean in ((0.5, False), (0.9, True)):
        v = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([v], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            expectile_loss(samples - v, tau).backward()
            opt.step()
        if above_mean:
            assert float(v.detach()) > float(samples.mean()) + 0.5
        else:
            assert abs(float(v.detach()) - float(samples.mean())) < 0.05


@pytest.mark.parametrize("algo", ["iql", "td3bc"])
def test_actor_critics_train_share_the_encoder_and_resume(
    algo: str, fake_ds_path: Path, tmp_path: Path
) -> None:
    ds = open_dataset(fake_ds_path)
    config = ActorCriticConfig.for_dataset(ds, "tiny", algo=algo, steps=12)
    torch.manual_seed(0)
    critic = PixelCritic(config)
    actor = make_actor(critic)
    assert actor.encoder is critic.encoder
    stop = lambda step, logs: step < 5  # noqa: E731
    loop = Loop(out=tmp_path / "run", progress=False, device="cpu", callback=stop)
    train_actor_critic(critic, actor, ds, loop=loop)
    assert critic.step == 5 and (tmp_path / "run" / "actor.pt").exists()
    torch.manual_seed(0)
    again = PixelCritic(config)
    report = train_actor_critic(again, make_actor(again), ds, loop=Loop(out=tmp_path / "run", progress=False,
                                                                       device="cpu"))  # fmt: skip
    assert again.step == 12 and np.isfinite(report.final_loss) and np.isfinite(report.metrics["td_rmse"])
    obs = ds.stacks(np.arange(3), 3)
    assert again.q_values(obs, torch.zeros(3, 4, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match="share the critic's encoder"):
        train_actor_critic(again, PixelBCPolicy(PixelBCConfig.for_dataset(ds, "tiny")), ds)


def test_the_state_auxiliary_target_trains_the_critics_encoder_not_an_actor_head(fake_ds_path: Path) -> None:
    from voc_rl.pixel_trunk import standardised_state

    ds = open_dataset(fake_ds_path)
    config = ActorCriticConfig.for_dataset(
        ds, "tiny", algo="td3bc", steps=300, shift=0, lr=3e-3, state_aux=1.0
    )
    torch.manual_seed(0)
    critic = PixelCritic(config)
    actor = make_actor(critic)
    assert not hasattr(actor, "state_head") and actor.encoder is critic.encoder
    logs: list[float] = []
    loop = Loop(progress=False, device="cpu", callback=lambda step, log: logs.append(log["state_mse"]))
    train_actor_critic(critic, actor, ds, loop=loop, val_fraction=0.0)
    state = standardised_state(critic, ds, np.arange(ds.num_episodes))
    idx = np.arange(0, len(state) - 1, 7)
    with torch.no_grad():
        err = critic.state_error(critic.encoder(torch.from_numpy(ds.stacks(idx, 3))), state[idx]).mean()
    assert float(err) < 0.5 and np.mean(logs[-20:]) < 0.5 * np.mean(logs[:20])


def test_pixel_agents_have_no_tokenizer_and_token_choices_are_refused() -> None:
    for name in ("bc", "pbc", "pbc-67", "iql", "td3bc"):
        assert "tokenizer" not in voc_rl.make_agent(name).parts
    assert "tokenizer" in voc_rl.make_agent("voc-vqvae-awr").parts  # the occupancy model reads tokens
    assert voc_rl.make_agent("voc-vqvae-awr").config.policy_input == "pixels"
    with pytest.raises(ValueError, match="policy_input"):
        voc_rl.make_agent("iql", policy_input="tokens")
    with pytest.raises(ValueError, match="policy_input"):
        voc_rl.make_agent("wm-rollout", policy_input="pixels")
    with pytest.raises(ValueError, match="unknown policy_input"):
        voc_rl.make_agent("bc", policy_input="rgb")


def test_an_agent_saved_before_policies_read_pixels_loads_with_its_token_prior(
    fake_ds_path: Path, tmp_path: Path
) -> None:
    import json
    import zipfile

    from voc_rl.agents import Agent

    agent = voc_rl.make_agent("bc-tokens", size="tiny", tokenizer="titok")
    agent.learn(fake_ds_path, steps=3, run_dir=tmp_path / "run", progress=False)
    new = agent.save(tmp_path / "new.zip")
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "agent.json":
                meta = json.loads(data)
                del meta["config"]["policy_input"]  # as written by earlier versions
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    loaded = Agent.load(old)
    assert loaded.config.policy_input == "tokens" and "tokenizer" in loaded.parts
    obs = open_dataset(fake_ds_path).stacks(np.arange(1), 3)[0]
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0]
    )


def test_pixel_kwargs_reach_every_pixel_model_of_an_agent_and_unknown_fields_are_refused(
    fake_ds_path: Path, tmp_path: Path
) -> None:
    kw = {"channels": 3, "batch_size": 8}
    bc = voc_rl.make_agent("bc", size="tiny", pixel_kwargs=kw)
    bc.learn(fake_ds_path, steps=2, run_dir=tmp_path / "bc", progress=False)
    assert (bc.prior.config.channels, bc.prior.config.batch_size) == (3, 8)
    assert bc.prior.encoder.convs[0].out_channels == 3
    td3bc = voc_rl.make_agent("td3bc", size="tiny", pixel_kwargs=kw)
    td3bc.learn(fake_ds_path, steps=2, run_dir=tmp_path / "td3bc", progress=False)
    assert td3bc.critic.config.channels == td3bc.prior.config.channels == 3
    with pytest.raises(ValueError, match=r"pixel_kwargs \['chanels'\].*'channels'"):
        voc_rl.make_agent("bc", pixel_kwargs={"chanels": 3})
    with pytest.raises(ValueError, match="prior_steps"):
        voc_rl.make_agent("bc", pixel_kwargs={"steps": 3})
