"""benchmarks/state_bc.py: BC of a level's episodes on the recorded state (the data's ceiling)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from voc_rl.benchmarks import state_bc as bench


def test_clone_fits_a_state_to_action_map_far_below_the_actions_variance() -> None:
    rng = np.random.default_rng(0)
    states = rng.normal(size=(2000, 5)).astype(np.float32) * 3 + 1  # standardised inside the policy
    actions = np.tanh(states @ rng.normal(size=(5, 2)).astype(np.float32) / 3)
    policy = bench.clone(states, actions, steps=1500, seed=0)
    with torch.no_grad():
        pred = policy(torch.from_numpy(states)).numpy()
    assert ((pred - actions) ** 2).mean() < 0.05 * actions.var()


@pytest.mark.slow
def test_state_bc_benchmark_clones_the_expert_episodes_of_real_physics(tmp_path: Path) -> None:
    from voc_rl.data import open_dataset
    from voc_rl.data.collect import collect

    data = collect("cheetah-run", "mixed", episodes=3, out=tmp_path / "data", progress=False)
    states, actions, data_return = bench.level_transitions(open_dataset(data), "expert")
    assert states.shape == (500, 17) and actions.shape == (500, 6)  # one episode, its last frame dropped
    with pytest.raises(ValueError, match="no 'expurt' episodes"):
        bench.level_transitions(open_dataset(data), "expurt")
    out = tmp_path / "results"
    argv = ["--tasks", "cheetah-run", "--seeds", "0", "--episodes", "1", "--steps", "50"]
    bench.main([*argv, "--data-root", str(tmp_path / "data"), "--out-dir", str(out)])
    with open(out / "state_bc.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["task"] == "cheetah-run" and int(row["transitions"]) == 500 and int(row["runs"]) == 1
    assert float(row["data_return"]) == pytest.approx(data_return, abs=0.1)
    assert "| cheetah-run | mixed | expert |" in (out / "state_bc.md").read_text()
