"""stable-baselines3 runs on the real pixel env end to end (physics, rendering, NatureCNN)."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from voc_rl.envs import make_env

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)


def test_ppo_cnn_policy_trains_a_few_hundred_steps_on_cheetah_run() -> None:
    env = make_env("cheetah-run")
    model = PPO("CnnPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    changed = [not np.allclose(b, p.detach()) for b, p in zip(before, model.policy.parameters(), strict=True)]
    assert any(changed)  # the update really ran through the CNN
    mean, _ = evaluate_policy(model, Monitor(make_env("cheetah-run", action_repeat=100)), n_eval_episodes=1)
    assert np.isfinite(mean)
