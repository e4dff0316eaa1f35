"""The voc_rl gymnasium environments: API checks, shapes, determinism, restore, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import voc_rl
from voc_rl.envs import DMC_TASKS, env_id, make_env

ALL_IDS = voc_rl.list_envs()


def test_every_required_id_is_registered_with_a_string_entry_point() -> None:
    required = ["cheetah-run", "walker-walk", "walker-run", "quadruped-run", "humanoid-walk", "fake-pixels"]
    for task in required:
        spec = gym.spec(env_id(task))
        assert isinstance(spec.entry_point, str), spec.entry_point  # Minari cannot record callables
    assert len(ALL_IDS) == len(DMC_TASKS) + 1


@pytest.mark.parametrize("full_id", ALL_IDS)
def test_gymnasium_and_sb3_check_env(full_id: str) -> None:
    env = gym.make(full_id)
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("task", ["cheetah-run", "quadruped-run", "fake-pixels"])
def test_observation_action_and_info(task: str) -> None:
    env = make_env(task)
    obs, info = env.reset(seed=0)
    assert obs.shape == (9, 64, 64) and obs.dtype == np.uint8
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert info["proprio"].dtype == np.float32 and info["proprio"].ndim == 1
    assert info["physics_state"].dtype == np.float64
    # after a reset every slot of the stack holds the first frame
    np.testing.assert_array_equal(obs[0:3], obs[6:9])
    obs2, reward, terminated, truncated, info2 = env.step(env.action_space.sample())
    assert obs2.shape == obs.shape and isinstance(reward, float)
    np.testing.assert_array_equal(obs2[0:3], obs[6:9])  # the stack shifted by one frame
    assert not terminated and not truncated
    assert not np.array_equal(info2["physics_state"], info["physics_state"])


def test_default_camera_is_2_for_quadruped_and_0_otherwise() -> None:
    assert make_env("quadruped-run").unwrapped.camera_id == 2
    assert make_env("walker-walk").unwrapped.camera_id == 0


def test_kwargs_configure_size_stack_camera_and_state_obs() -> None:
    env = make_env("walker-walk", size=84, frame_stack=1, camera=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 84, 84)
    cam0 = make_env("walker-walk", size=84, frame_stack=1, camera=0).reset(seed=0)[0]
    assert not np.array_equal(obs, cam0)
    state_env = make_env("cheetah-run", obs_type="state")
    s, info = state_env.reset(seed=0)
    assert s.dtype == np.float32 and s.shape == state_env.observation_space.shape
    np.testing.assert_array_equal(s, info["proprio"])


def test_episode_is_1000_control_steps_and_ends_truncated() -> None:
    env = make_env("cheetah-run", action_repeat=50, frame_stack=1, size=16)
    env.reset(seed=0)
    a = np.zeros(env.action_space.shape, np.float32)
    for t in range(1, 21):
        _, _, terminated, truncated, _ = env.step(a)
        assert not terminated
        assert truncated == (t == 20)
    assert env.unwrapped.physics.time() == pytest.approx(10.0)  # cheetah: 1000 steps of 10 ms
    with pytest.raises(RuntimeError, match="reset"):
        env.step(a)
    assert make_env("cheetah-run").unwrapped.max_episode_steps == 500


@pytest.mark.parametrize("task", ["cheetah-run", "walker-walk", "fake-pixels"])
def test_same_seed_same_frames_and_rewards(task: str) -> None:
    def rollout(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = make_env(task)
        env.action_space.seed(123)
        obs, _ = env.reset(seed=seed)
        frames, rewards = [obs], []
        for _ in range(15):
            obs, reward, *_ = env.step(env.action_space.sample())
            frames.append(obs)
            rewards.append(reward)
        return np.stack(frames), np.array(rewards)

    f1, r1 = rollout(7)
    f2, r2 = rollout(7)
    f3, _ = rollout(8)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(f1[0], f3[0])  # a different seed starts elsewhere


@pytest.mark.parametrize("task", ["cheetah-run", "quadruped-run", "fake-pixels"])
def test_restore_then_step_reproduces_a_recorded_transition(task: str) -> None:
    env = make_env(task).unwrapped
    obs, info = env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, (12, *env.action_space.shape)).astype(np.float32)
    recorded = []
    for t, a in enumerate(actions):
        if t == 6:
            saved = (info["physics_state"], obs)
        obs, reward, _, _, info = env.step(a)
        if t >= 6:
            recorded.append((obs, reward, info["proprio"]))
    env.reset(seed=99)  # wander off before restoring
    restored, _ = env.set_physics_state(saved[0], step=6, frames=saved[1])
    np.testing.assert_array_equal(restored, saved[1])
    for (rec_obs, rec_reward, rec_proprio), a in zip(recorded, actions[6:], strict=True):
        obs, reward, _, _, info = env.step(a)
        np.testing.assert_array_equal(obs, rec_obs)
        assert reward == pytest.approx(rec_reward, abs=1e-9)
        np.testing.assert_allclose(info["proprio"], rec_proprio, atol=1e-9)


def test_restore_without_frames_fills_the_stack_and_counts_remaining_steps() -> None:
    env = make_env("cheetah-run", action_repeat=100, frame_stack=2).unwrapped
    _, info = env.reset(seed=0)
    obs, _ = env.set_physics_state(info["physics_state"], step=9)
    np.testing.assert_array_equal(obs[:3], obs[3:])
    _, _, _, truncated, _ = env.step(np.zeros(6))
    assert truncated  # the 10th and last agent step


def test_standard_quality_matches_dm_control_physics_render() -> None:
    env = make_env("cheetah-run", render_quality="standard", frame_stack=1).unwrapped
    obs, _ = env.reset(seed=0)
    reference = env.physics.render(64, 64, camera_id=0)
    np.testing.assert_array_equal(obs.transpose(1, 2, 0), reference)
    fast, _ = make_env("cheetah-run", frame_stack=1).reset(seed=0)
    assert not np.array_equal(fast, obs)  # no shadows or reflections in the fast look


def test_render_returns_latest_frame() -> None:
    env = make_env("cheetah-run", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3)
    np.testing.assert_array_equal(frame, obs[-3:].transpose(1, 2, 0))


@pytest.mark.parametrize("task", ["cheetah-run", "fake-pixels"])
@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros(3), "shape"),
        (np.zeros((1, 6)), "shape"),
        ("left", "numeric"),
        (np.full(6, np.nan), "NaN"),
        (np.array([np.inf, 0, 0, 0, 0, 0]), "NaN or inf"),
    ],
)
def test_bad_actions_raise_clear_errors(task: str, action: object, match: str) -> None:
    env = make_env(task)
    env.reset(seed=0)
    if task == "fake-pixels" and isinstance(action, np.ndarray) and action.shape == (6,):
        action = action[:2]
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_out_of_range_actions_are_clipped() -> None:
    env = make_env("cheetah-run")
    env.reset(seed=0)
    env.step(np.full(6, 5.0))
    np.testing.assert_array_equal(env.unwrapped.physics.data.ctrl, np.ones(6))


def test_bad_physics_state_and_kwargs_raise() -> None:
    env = make_env("cheetah-run").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expects"):
        env.set_physics_state(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        env.set_physics_state(np.full(18, np.nan))
    with pytest.raises(ValueError, match="uint8 observation"):
        env.set_physics_state(np.zeros(18), frames=np.zeros((9, 64, 64), np.float32))
    with pytest.raises(ValueError, match="step"):
        env.set_physics_state(np.zeros(18), step=500)
    with pytest.raises(ValueError, match="render_quality"):
        make_env("cheetah-run", render_quality="ultra")
    with pytest.raises(ValueError, match="size"):
        make_env("cheetah-run", size=4)


def test_unknown_ids_suggest_the_closest() -> None:
    with pytest.raises(gym.error.NameNotFound, match="cheetah-run"):
        make_env("cheetah-runn")
    with pytest.raises(gym.error.Error, match="cheetah-run"):
        gym.make("voc_rl/cheetah-runn-v0")
