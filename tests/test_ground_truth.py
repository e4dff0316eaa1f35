"""Simulator ground truth: replay, Q from rollouts past the time limit, cache, processes, bad input."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from voc_rl import ground_truth
from voc_rl.data import DatasetError, PixelDataset, open_dataset
from voc_rl.data.collect import POLICY_IDS, collect
from voc_rl.ground_truth import horizon_for, replay_rewards, simulator_q


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory: pytest.TempPathFactory) -> PixelDataset:
    """3 episodes of cheetah-run (500 agent steps each), one per level: random, medium, expert."""
    out = tmp_path_factory.mktemp("cheetah")
    return open_dataset(collect("cheetah-run", "mixed", episodes=3, out=out, size=64, progress=False))


def _episode(ds: PixelDataset, level: str) -> int:
    (e,) = np.flatnonzero(ds.arrays["policy_id"][ds.ep_start] == POLICY_IDS[level])
    return int(e)


def _frame(ds: PixelDataset, level: str, t: int) -> int:
    """Flat index of frame t of the episode of ``level``; negative t counts from the last frame."""
    e = _episode(ds, level)
    return int(ds.ep_start[e] + (t if t >= 0 else ds.ep_len[e] + t))


def test_horizon_is_the_smallest_with_gamma_power_below_1e_3() -> None:
    assert horizon_for(0.0) == 1 and horizon_for(0.9) == 66 and horizon_for(0.99) == 688
    for g in [0.5, 0.9, 0.99, 0.997]:
        h = horizon_for(g)
        assert g**h < 1e-3 <= g ** (h - 1)


def test_replay_reproduces_the_recorded_rewards(cheetah: PixelDataset) -> None:
    # The last 100 steps of each episode. Restoring a state drops MuJoCo's solver warm start (it is
    # not part of the saved state): a ~1e-16 difference that a running cheetah amplifies chaotically,
    # so replays of a few hundred steps drift apart (measured: from ~260 steps on, expert).
    for e in range(cheetah.num_episodes):
        start = int(cheetah.ep_len[e]) - 100
        rewards = replay_rewards(cheetah, e, start)
        first = cheetah.ep_start[e] + start
        np.testing.assert_allclose(rewards, cheetah.arrays["reward"][first : first + 100], rtol=0, atol=1e-6)


def test_q_from_rollouts_is_exact_at_gamma_0_and_not_truncated_near_the_end(cheetah: PixelDataset) -> None:
    levels = ["random", "medium", "expert"]
    index = np.array([_frame(cheetah, lvl, t) for lvl in levels for t in (200, -3)])
    gt = simulator_q(cheetah, index, [0.0, 0.9], rollouts=4, processes=1, cache=False, progress=False)
    assert gt.q.shape == gt.stderr.shape == gt.truncated_return.shape == (2, 6)
    assert gt.horizon == 66 and gt.rollouts == 4 and gt.cache_path is None
    # gamma 0: Q = r_t, deterministic given the restored state and a_t
    q0, se0 = gt.at(0.0)
    np.testing.assert_allclose(q0, cheetah.arrays["reward"][index], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(se0, 0.0)
    np.testing.assert_allclose(gt.truncated_return[0], q0, atol=1e-6)
    q9, se9 = gt.at(0.9)
    assert np.all(se9 > 0) and np.all(np.isfinite(se9))  # stochastic policies
    assert gt.tail_bound[1] == pytest.approx(0.9**66 * 2 / 0.1)
    # 3 steps before the end the dataset's return is cut off; the ground truth goes on. What it adds
    # is positive (rewards are >= 0) and below the bound on what truncation can drop.
    near_end = np.array([False, True] * 3)
    remaining = q9[near_end] - gt.truncated_return[1, near_end]
    bound = gt.truncated_bound[1, near_end]
    np.testing.assert_allclose(bound, 0.9**3 * 2 / 0.1)
    assert np.all(remaining > -4 * se9[near_end]) and np.all(remaining < bound + gt.tail_bound[1])
    assert np.all(remaining[1:] > 0.2 * bound[1:])  # medium and expert run: far from truncated
    assert np.all(gt.truncated_bound[1, ~near_end] < 1e-9)  # mid-episode, truncation is negligible


def test_deterministic_policies_give_zero_stderr(cheetah: PixelDataset) -> None:
    index = np.array([_frame(cheetah, "medium", 100), _frame(cheetah, "expert", 300)])
    gt = simulator_q(
        cheetah, index, [0.9], rollouts=3, processes=1, cache=False, progress=False, deterministic=True
    )
    np.testing.assert_allclose(gt.stderr, 0.0, atol=1e-12)
    assert np.all(gt.q > 0)


@pytest.mark.slow
def test_results_do_not_depend_on_the_process_count(cheetah: PixelDataset) -> None:
    index = np.array([_frame(cheetah, lvl, 50) for lvl in ["expert", "random", "medium"]] + [0])
    kwargs = {"gammas": [0.5, 0.8], "rollouts": 3, "seed": 3, "cache": False, "progress": False}
    one = simulator_q(cheetah, index, processes=1, **kwargs)
    two = simulator_q(cheetah, index, processes=2, **kwargs)
    np.testing.assert_array_equal(one.q, two.q)
    np.testing.assert_array_equal(one.stderr, two.stderr)
    # a state's result does not depend on the other states computed with it
    alone = simulator_q(cheetah, index[1:2], processes=1, **kwargs)
    np.testing.assert_array_equal(alone.q[:, 0], one.q[:, 1])


def test_cache_is_written_then_reused(cheetah: PixelDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    index = [_frame(cheetah, "medium", 10), _frame(cheetah, "random", 20)]
    first = simulator_q(cheetah, index, [0.5], rollouts=2, processes=1, progress=False)
    assert first.cache_path is not None and first.cache_path.parent == cheetah.path / "ground_truth"
    stamp = first.cache_path.stat().st_mtime_ns

    def no_rollouts(*args: object, **kwargs: object) -> None:
        raise AssertionError("rolled out again instead of reading the cache")

    monkeypatch.setattr(ground_truth, "_simulate", no_rollouts)
    again = simulator_q(cheetah, index, [0.5], rollouts=2, processes=1, progress=False)
    np.testing.assert_array_equal(again.q, first.q)
    np.testing.assert_array_equal(again.stderr, first.stderr)
    assert again.cache_path == first.cache_path and first.cache_path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="rolled out again"):  # another seed is another key
        simulator_q(cheetah, index, [0.5], rollouts=2, seed=1, processes=1, progress=False)


def test_rollouts_run_past_the_time_limit_on_the_fake_env(ds: PixelDataset) -> None:
    # fake-pixels episodes are 50 agent steps; gamma 0.9 needs 66, so every rollout crosses the limit
    index = ds.ep_start[:2] + np.array([0, 45])
    gt = simulator_q(ds, index, [0.0, 0.9], rollouts=2, processes=1, cache=False, progress=False)
    assert gt.horizon == 66 > ds.ep_len.max()
    np.testing.assert_allclose(gt.q[0], ds.arrays["reward"][index], atol=1e-6)
    remaining = gt.q[1, 1] - gt.truncated_return[1, 1]  # 5 steps before the end: 61 more simulated
    assert 0 < remaining < gt.truncated_bound[1, 1]  # the fake env's rewards are in (0, 1] a step


def test_bad_inputs_raise_clear_errors(cheetah: PixelDataset) -> None:
    kw = {"processes": 1, "cache": False, "progress": False}
    last = int(cheetah.ep_start[0] + cheetah.ep_len[0])
    with pytest.raises(ValueError, match="empty"):
        simulator_q(cheetah, [], [0.9], **kw)
    with pytest.raises(ValueError, match="last frame has no action"):
        simulator_q(cheetah, [5, last], [0.9], **kw)
    with pytest.raises(ValueError, match="outside"):
        simulator_q(cheetah, [len(cheetah.frames)], [0.9], **kw)
    with pytest.raises(ValueError, match="integer"):
        simulator_q(cheetah, [1.5], [0.9], **kw)
    for gammas in ([1.0], [-0.1], [0.5, float("nan")]):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            simulator_q(cheetah, [5], gammas, **kw)
    with pytest.raises(ValueError, match="rollouts"):
        simulator_q(cheetah, [5], [0.9], rollouts=0, **kw)
    no_physics = dataclasses.replace(
        cheetah, arrays={k: v for k, v in cheetah.arrays.items() if k != "physics_state"}
    )
    with pytest.raises(DatasetError, match="no saved physics states"):
        simulator_q(no_physics, [5], [0.9], **kw)
    with pytest.raises(DatasetError, match="no saved physics states"):
        replay_rewards(no_physics, 0)
    meta = copy.deepcopy(cheetah.meta)
    meta["policies"][str(POLICY_IDS["medium"])]["train_steps"] += 1  # as if re-shipped since
    with pytest.raises(ValueError, match="changed since collection"):
        simulator_q(dataclasses.replace(cheetah, meta=meta), [_frame(cheetah, "medium", 5)], [0.9], **kw)
    with pytest.raises(ValueError, match="episode"):
        replay_rewards(cheetah, 3)
    with pytest.raises(ValueError, match="start"):
        replay_rewards(cheetah, 0, 500)


def test_ground_truth_on_a_dataset_path(cheetah: PixelDataset) -> None:
    gt = simulator_q(str(cheetah.path), [7], [0.0], rollouts=1, processes=1, cache=False, progress=False)
    assert gt.horizon == 1 and np.isnan(gt.stderr).all()
    assert gt.q[0, 0] == pytest.approx(float(cheetah.arrays["reward"][7]), abs=1e-6)


def test_candidate_actions_replace_the_first_action(cheetah: PixelDataset) -> None:
    """Q(s_t, a) for a given a: the dataset's own a_t reproduces the default, another a differs."""
    i = _frame(cheetah, "expert", 120)
    index = np.array([i, i, i])
    recorded = cheetah.arrays["action"][i]
    actions = np.stack([recorded, -recorded, np.zeros_like(recorded)])
    kwargs = {"gammas": [0.5], "rollouts": 2, "processes": 1, "cache": False, "progress": False}
    default = simulator_q(cheetah, index[:1], **kwargs)
    ranked = simulator_q(cheetah, index, actions=actions, **kwargs)
    assert ranked.q[0, 0] == default.q[0, 0]
    assert ranked.q[0, 1] != ranked.q[0, 0] and ranked.q[0, 2] != ranked.q[0, 0]
    with pytest.raises(ValueError, match=r"shape \(3, 6\)"):
        simulator_q(cheetah, index, actions=actions[:2], **kwargs)
    with pytest.raises(ValueError, match="finite"):
        simulator_q(cheetah, index, actions=np.full((3, 6), np.nan), **kwargs)
