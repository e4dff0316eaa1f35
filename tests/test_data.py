"""Offline pixel datasets: collection, Minari storage, memmap view, sampler, returns, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from voc_rl.behavior import RandomPolicy
from voc_rl.data import DatasetError, DatasetWriter, Episode, WindowSampler, discounted_returns, open_dataset
from voc_rl.data.collect import MIXED_PROPORTIONS, _episode_levels, collect
from voc_rl.envs import make_env


@pytest.fixture(scope="module")
def fake_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes of 50 agent steps on the fake pixel env, random policy."""
    out = tmp_path_factory.mktemp("datasets")
    return collect("fake-pixels", "random", episodes=4, out=out, seed=1, size=32, progress=False)


def test_collect_writes_minari_dataset_with_metadata(fake_ds: Path) -> None:
    meta = json.loads((fake_ds / "voc_rl.json").read_text())
    for key in ["task", "env_id", "env_kwargs", "policies", "seed", "versions", "hdf5_sha256", "transitions"]:
        assert key in meta, key
    assert meta["task"] == "fake-pixels" and meta["seed"] == 1 and meta["transitions"] == 200
    assert meta["env_kwargs"]["size"] == 32 and meta["policies"]["0"]["level"] == "random"
    ds = open_dataset(fake_ds)
    assert ds.num_episodes == 4 and ds.num_transitions == 200
    assert ds.frames.shape == (204, 3, 32, 32) and ds.frames.dtype == np.uint8
    assert isinstance(ds.frames, np.memmap)
    assert {"proprio", "physics_state", "policy_id"} <= set(ds.arrays)


def test_plain_minari_reads_the_dataset(fake_ds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fake_ds.parents[1]))
    dataset = minari.load_dataset("voc_rl/fake-pixels-random-v0")
    assert dataset.total_episodes == 4 and dataset.total_steps == 200
    ep = next(dataset.iterate_episodes())
    assert ep.observations.shape == (51, 3, 32, 32) and ep.observations.dtype == np.uint8
    assert ep.actions.shape == (50, 2) and ep.truncations[-1] and not ep.terminations.any()
    for key in ["proprio", "physics_state", "policy_id", "discount", "is_first", "is_last", "is_terminal"]:
        assert len(ep.infos[key]) == 51, key
    ours = open_dataset(fake_ds)
    np.testing.assert_array_equal(ep.observations, ours.episode_frames(0))  # lossless
    env = dataset.recover_environment()
    assert env.observation_space.shape == (3, 32, 32)


def test_stored_transitions_replay_in_the_simulator(fake_ds: Path) -> None:
    ds = open_dataset(fake_ds)
    env = make_env("fake-pixels", size=32, frame_stack=1).unwrapped
    for i in [0, 17, 60, 130]:  # frame indices in various episodes
        obs, _ = env.set_physics_state(ds.arrays["physics_state"][i], step=int(ds.arrays["step"][i]))
        np.testing.assert_array_equal(obs, ds.frames[i])
        obs, reward, *_ = env.step(ds.arrays["action"][i])
        np.testing.assert_array_equal(obs, ds.frames[i + 1])
        assert reward == pytest.approx(ds.arrays["reward"][i], rel=1e-6)


def test_cache_is_reused_and_a_modified_file_is_reported(tmp_path: Path, fake_ds: Path) -> None:
    ds_dir = tmp_path / "copy"
    shutil.copytree(fake_ds, ds_dir, ignore=shutil.ignore_patterns("cache"))
    open_dataset(ds_dir)
    (cache,) = (ds_dir / "cache").iterdir()
    stamp = (cache / "frames.npy").stat().st_mtime_ns
    open_dataset(ds_dir)
    assert (cache / "frames.npy").stat().st_mtime_ns == stamp  # built once
    hdf5 = ds_dir / "data" / "main_data.hdf5"
    data = bytearray(hdf5.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    hdf5.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="checksum"):
        open_dataset(ds_dir, verify=True)
    hdf5.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DatasetError, match="truncated"):
        open_dataset(ds_dir)


def test_a_damaged_cache_is_rebuilt_and_opening_does_not_hash_it(
    tmp_path: Path, fake_ds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voc_rl.data import DatasetWarning, dataset

    ds_dir = tmp_path / "copy"
    shutil.copytree(fake_ds, ds_dir, ignore=shutil.ignore_patterns("cache"))
    first = open_dataset(ds_dir)
    (cache,) = (ds_dir / "cache").iterdir()
    assert sorted(json.loads((cache / "cache.json").read_text())["files"]) == ["arrays.npz", "frames.npy"]
    hashed: list[str] = []
    sha256 = dataset.sha256_file
    monkeypatch.setattr(dataset, "sha256_file", lambda path: hashed.append(Path(path).name) or sha256(path))
    open_dataset(ds_dir)
    assert hashed == []  # an intact cache opens without reading the HDF5 or the frames
    open_dataset(ds_dir, verify=True)
    assert sorted(hashed) == ["arrays.npz", "frames.npy", "main_data.hdf5"]
    # an old cache format, a stale cache.json and a cut frames file: each rebuilt, with a warning
    for damage, reason in [
        (lambda: (cache / "cache.json").write_text('{"cache_format": 1}'), "cache format 1"),
        (lambda: (cache / "cache.json").write_text("[1, 2"), "cache.json is unreadable"),
        (lambda: (cache / "frames.npy").write_bytes(b"\x93NUMPY"), "frames.npy is 6 bytes"),
    ]:
        damage()
        with pytest.warns(DatasetWarning, match=reason):
            again = open_dataset(ds_dir)
        np.testing.assert_array_equal(np.asarray(again.frames), np.asarray(first.frames))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        open_dataset(ds_dir, verify=True)  # rebuilt once, then trusted again


def test_missing_and_incomplete_datasets(tmp_path: Path, fake_ds: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no voc_rl dataset"):
        open_dataset(tmp_path)
    ds_dir = tmp_path / "copy"
    shutil.copytree(fake_ds, ds_dir)
    (ds_dir / "voc_rl.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not JSON"):
        open_dataset(ds_dir)
    shutil.copytree(fake_ds, tmp_path / "copy2")
    (tmp_path / "copy2" / "data" / "main_data.hdf5").unlink()
    with pytest.raises(DatasetError, match="missing"):
        open_dataset(tmp_path / "copy2")


def test_interrupted_collection_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    class Interrupting(RandomPolicy):
        def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
            calls["n"] += 1
            if calls["n"] > 120:  # in the middle of the third episode, after a chunk was flushed
                raise KeyboardInterrupt
            return super().act(obs, rng, deterministic)

    monkeypatch.setattr("voc_rl.data.collect.load_policy", lambda task, level: Interrupting(2))
    monkeypatch.setattr("voc_rl.data.storage.DatasetWriter.chunk_episodes", 1)
    with pytest.raises(KeyboardInterrupt):
        collect("fake-pixels", "random", episodes=5, out=tmp_path, size=16, progress=False)
    assert not any(p.name.endswith("-v0") for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))
    assert not list(tmp_path.glob(".tmp-*"))


def test_existing_dataset_needs_overwrite(fake_ds: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        collect("fake-pixels", "random", episodes=1, out=fake_ds.parents[1], size=32, progress=False)


def test_reading_datasets_does_not_import_torch() -> None:
    """The data layer (and the helpers it shares, voc_rl.utils) stays free of torch's import time."""
    code = "import sys, voc_rl.data, voc_rl.data.storage, voc_rl.utils; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_bad_episodes_are_rejected() -> None:
    frames = np.zeros((4, 3, 8, 8), np.uint8)
    ok = {"frames": frames, "actions": np.zeros((3, 2), np.float32), "terminated": False}
    with pytest.raises(DatasetError, match="NaN"):
        Episode(rewards=np.array([0.0, np.nan, 1.0], np.float32), **ok)
    with pytest.raises(DatasetError, match="T\\+1 frames"):
        Episode(rewards=np.zeros(2, np.float32), **ok)
    with pytest.raises(DatasetError, match="uint8"):
        Episode(rewards=np.zeros(3), **{**ok, "frames": frames.astype(np.float32)})
    with pytest.raises(DatasetError, match="at least one transition"):
        Episode(
            frames=frames[:1], actions=np.zeros((0, 2), np.float32), rewards=np.zeros(0), terminated=False
        )


def test_writer_rejects_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="wrong task"):
        DatasetWriter(tmp_path, "x", "voc_rl/cheetah-run-v0", {}, action_dim=2, frame_shape=(3, 8, 8))
    writer = DatasetWriter(tmp_path, "x", "voc_rl/fake-pixels-v0", {}, action_dim=2, frame_shape=(3, 8, 8))
    ep = Episode(
        np.zeros((3, 3, 16, 16), np.uint8), np.zeros((2, 2), np.float32), np.zeros(2, np.float32), False
    )
    with pytest.raises(DatasetError, match="frames"):
        writer.add(ep)
    with pytest.raises(DatasetError, match="no episodes"):
        writer.finalize()


def _synthetic(tmp_path: Path, lengths: list[int], terminal_last: bool = False) -> Path:
    """Episodes whose frame pixels encode (episode, step), so windows can be checked exactly."""
    writer = DatasetWriter(tmp_path, "syn", "voc_rl/fake-pixels-v0", {"action_repeat": 2}, 2, (3, 4, 4))
    rng = np.random.default_rng(0)
    with writer:
        for e, t in enumerate(lengths):
            frames = np.zeros((t + 1, 3, 4, 4), np.uint8)
            frames[:, 0] = e
            frames[:, 1] = np.arange(t + 1)[:, None, None]
            actions = np.repeat(np.arange(t, dtype=np.float32)[:, None] / 1000 + e, 2, axis=1)
            rewards = rng.uniform(0, 2, t).astype(np.float32)
            writer.add(Episode(frames, actions, rewards, terminated=terminal_last and e == 0))
        return writer.finalize()


def _decode(stack: np.ndarray) -> list[tuple[int, int]]:
    return [(int(stack[3 * j, 0, 0]), int(stack[3 * j + 1, 0, 0])) for j in range(len(stack) // 3)]


def test_windows_never_cross_episodes_and_pad_at_the_start(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [5, 30, 12]))
    sampler = WindowSampler(ds, frame_stack=3, seed=0)
    batch = sampler.sample(512, gamma=0.9)
    for b in range(512):
        (e0, t0), (e1, t1), (e2, t2) = _decode(batch.obs[b])
        assert e0 == e1 == e2 and t2 == ds.arrays["step"][batch.index[b]]
        assert (t0, t1) == (max(t2 - 2, 0), max(t2 - 1, 0))  # first frame repeated at the start
        nxt, fut = _decode(batch.next_obs[b]), _decode(batch.future_obs[b])
        assert nxt[-1] == (e2, t2 + 1) and fut[-1] == (e2, t2 + batch.k[b])
        assert batch.action[b, 0] == pytest.approx(e2 + t2 / 1000)
        assert batch.next_action[b, 0] == pytest.approx(e2 + (t2 + 1) / 1000)  # a_{t+1} really exists
        t_len = ds.ep_len[e2]
        assert t2 + 1 < t_len  # the last transition of a truncated episode has no a_{t+1}
        assert batch.k[b] >= 1 and t2 + batch.k[b] <= t_len
        if batch.future_clipped[b]:
            assert t2 + batch.k[b] == t_len  # clipped futures sit on the last recorded frame


def test_future_offsets_are_geometric(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [2000]))
    sampler = WindowSampler(ds, frame_stack=1, seed=0)
    for gamma in [0.0, 0.5, 0.9]:
        _, _, k, clipped = sampler.sample_indices(20000, gamma)
        keep = ~clipped
        assert k[keep].mean() == pytest.approx(1 / (1 - gamma), rel=0.05)
    batch = sampler.sample(64, gamma=0.0)
    np.testing.assert_array_equal(batch.future_obs, batch.next_obs)
    _, _, k, clipped = sampler.sample_indices(20000, 0.999)
    assert clipped.any() and not (~clipped & (k > 2000)).any()


def test_terminal_episodes_absorb_the_future(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [4, 4], terminal_last=True))
    sampler = WindowSampler(ds, frame_stack=1, seed=0)
    batch = sampler.sample(2000, gamma=0.95)
    in_terminal_ep = ds.arrays["episode"][batch.index] == 0
    assert not batch.future_clipped[in_terminal_ep].any()
    assert batch.future_clipped[~in_terminal_ep].any()
    assert (ds.arrays["step"][batch.index[in_terminal_ep]] == 3).any()  # t = T-1 allowed when terminal
    assert batch.next_terminal[in_terminal_ep & (ds.arrays["step"][batch.index] == 3)].all()


def test_occupancy_targets_follow_the_horizon(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [5, 30, 12]))
    sampler = WindowSampler(ds, frame_stack=3, seed=0)
    for n_step in [1, 3, None]:
        batch = sampler.occupancy_targets(2000, 0.9, n_step)
        for b in range(2000):
            (e, t), fut = _decode(batch.obs[b])[-1], _decode(batch.target[b])[-1]
            m = ds.ep_len[e] - 1 - t  # the last recorded step with an action is T - 1 = t + m
            j = m if n_step is None else min(n_step, m)
            assert fut[0] == e
            if batch.k[b] <= j:  # the dataset's own future
                assert not batch.bootstrap[b] and fut[1] == t + batch.k[b]
            else:  # a bootstrap at (s_{t+j}, a_{t+j}): the stack there and its recorded action
                assert batch.bootstrap[b] and fut[1] == t + j and batch.j[b] == j
                assert batch.bootstrap_action[b, 0] == pytest.approx(e + (t + j) / 1000)
        assert batch.bootstrap.any() and not batch.bootstrap_action[~batch.bootstrap].any()


def test_monte_carlo_bootstraps_a_fraction_gamma_to_the_m(tmp_path: Path) -> None:
    """P(k > m) = gamma^m: only windows whose geometric future runs past the record bootstrap."""
    ds = open_dataset(_synthetic(tmp_path, [12, 12]))
    batch = WindowSampler(ds, frame_stack=1, seed=0).occupancy_targets(40000, 0.8, None)
    m = ds.ep_len[ds.arrays["episode"][batch.index]] - 1 - ds.arrays["step"][batch.index]
    for value in np.unique(m):
        rows = m == value
        expected, se = 0.8**value, np.sqrt(0.8**value * (1 - 0.8**value) / rows.sum())
        assert abs(batch.bootstrap[rows].mean() - expected) < 4 * se + 1e-3, f"m = {value}"


def test_terminal_episodes_never_bootstrap_past_their_end(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [4, 4], terminal_last=True))
    sampler = WindowSampler(ds, frame_stack=1, seed=0)
    mc = sampler.occupancy_targets(2000, 0.95, None)
    in_terminal_ep = ds.arrays["episode"][mc.index] == 0
    assert not mc.bootstrap[in_terminal_ep].any() and mc.bootstrap[~in_terminal_ep].any()
    step = ds.arrays["step"][mc.index]
    far = in_terminal_ep & (step + mc.k >= 4)  # the terminal frame s_4 absorbs every later future
    assert far.any() and all(_decode(x)[-1] == (0, 4) for x in mc.target[far])
    one = sampler.occupancy_targets(2000, 0.95, 1)  # 1-step TD bootstraps where t + 1 < T only
    terminal_rows = ds.arrays["episode"][one.index] == 0
    assert not one.bootstrap[terminal_rows & (ds.arrays["step"][one.index] == 3)].any()
    assert one.bootstrap[terminal_rows & (ds.arrays["step"][one.index] < 3)].any()


def test_reward_batches_cover_every_transition(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [5, 7]))
    sampler = WindowSampler(ds, frame_stack=1, seed=0, require_next_action=False)
    nxt, rewards = sampler.rewards(4000)
    seen = {_decode(x)[-1] for x in nxt}
    assert seen == {(e, t + 1) for e, n in enumerate([5, 7]) for t in range(n)}  # the last ones too
    for x, r in zip(nxt[:50], rewards[:50], strict=True):
        e, t1 = _decode(x)[-1]
        assert r == ds.arrays["reward"][ds.ep_start[e] + t1 - 1]  # r_t belongs to s_{t+1}


def test_sampler_rejects_episodes_too_short(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [1, 1]))
    with pytest.raises(ValueError, match="too short"):
        WindowSampler(ds)
    assert len(WindowSampler(ds, require_next_action=False)) == 2
    with pytest.raises(ValueError, match="gamma"):
        WindowSampler(ds, require_next_action=False).sample(4, gamma=1.0)


@pytest.mark.parametrize("gamma", [0.0, 0.8, 0.99])
def test_discounted_returns_match_brute_force(tmp_path: Path, gamma: float) -> None:
    ds = open_dataset(_synthetic(tmp_path, [7, 40, 3], terminal_last=True))
    returns, tails = discounted_returns(ds, gamma)
    for e in range(ds.num_episodes):
        start, t_len = ds.ep_start[e], ds.ep_len[e]
        r = ds.arrays["reward"][start : start + t_len].astype(np.float64)
        for t in range(t_len + 1):
            expected = sum(gamma**j * r[t + j] for j in range(t_len - t))
            assert returns[start + t] == pytest.approx(expected, abs=1e-9)
            bound = 0.0 if e == 0 else gamma ** (t_len - t) * 2.0 / (1 - gamma)
            assert tails[start + t] == pytest.approx(bound)


def test_tail_bound_is_tight_for_constant_max_reward(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, "c", "voc_rl/fake-pixels-v0", {"action_repeat": 2}, 2, (3, 4, 4))
    with writer:
        writer.add(
            Episode(np.zeros((11, 3, 4, 4), np.uint8), np.zeros((10, 2), np.float32), np.full(10, 2.0), False)
        )
        ds = open_dataset(writer.finalize())
    gamma = 0.9
    returns, tails = discounted_returns(ds, gamma)
    np.testing.assert_allclose(returns + tails, 2.0 / (1 - gamma))  # the untruncated value, exactly


def test_split_is_by_whole_episodes_and_fixed_by_seed(tmp_path: Path) -> None:
    ds = open_dataset(_synthetic(tmp_path, [3] * 20))
    train, val = ds.split(0.2, seed=0)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    np.testing.assert_array_equal(ds.split(0.2, seed=0)[1], val)
    assert not np.array_equal(ds.split(0.2, seed=1)[1], val)
    batch = WindowSampler(ds, episodes=val, frame_stack=1).sample(200, 0.5)
    assert set(ds.arrays["episode"][batch.index]) <= set(val)


def test_split_holds_out_every_behaviour_policy_in_proportion(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, "lv", "voc_rl/fake-pixels-v0", {"action_repeat": 2}, 2, (3, 4, 4))
    with writer:
        for e in range(30):
            frames = np.zeros((4, 3, 4, 4), np.uint8)
            actions, rewards = np.zeros((3, 2), np.float32), np.zeros(3, np.float32)
            writer.add(Episode(frames, actions, rewards, False, policy_id=[0, 0, 0, 1, 1, 2][e % 6]))
        ds = open_dataset(writer.finalize())
    policy = ds.arrays["policy_id"][ds.ep_start]  # 15, 10 and 5 episodes of policies 0, 1, 2
    for seed in range(5):
        train, val = ds.split(0.2, seed)
        assert sorted(np.bincount(policy[val]).tolist()) == [1, 2, 3]  # 20% of each, in proportion
        assert len(set(train) | set(val)) == 30 and not set(train) & set(val)


def test_mixed_proportions_are_exact() -> None:
    levels = _episode_levels("mixed", 7, np.random.default_rng(0))
    counts = {lvl: levels.count(lvl) for lvl in MIXED_PROPORTIONS}
    assert counts == {"random": 3, "medium": 2, "expert": 2}
    assert _episode_levels("mixed", 7, np.random.default_rng(1)) != levels  # order shuffled by seed


def test_collect_real_dmc_end_to_end(tmp_path: Path) -> None:
    """The real thing at a tiny size: dm_control physics, rendering, Minari, cache, sampler."""
    path = collect(
        "cheetah-run", "random", episodes=2, out=tmp_path, size=32, action_repeat=25, progress=False
    )
    ds = open_dataset(path)
    assert ds.num_transitions == 80 and ds.frames.shape[1:] == (3, 32, 32)
    assert ds.frames[:].std() > 5  # real pictures, not blank frames
    batch = WindowSampler(ds).sample(8, 0.9)
    assert batch.obs.shape == (8, 9, 32, 32)
    env = make_env("cheetah-run", size=32, frame_stack=1, action_repeat=25).unwrapped
    obs, _ = env.set_physics_state(ds.arrays["physics_state"][5], step=5)
    np.testing.assert_array_equal(obs, ds.frames[5])


def test_no_stray_minari_environment_variable(fake_ds: Path) -> None:
    assert os.environ.get("MINARI_DATASETS_PATH") != str(fake_ds.parents[1])
