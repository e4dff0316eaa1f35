"""Other tasks' rewards of a dataset's domain, recomputed from its physics: exact on the dataset's own
task, written beside the dataset and verified, refused where they cannot be computed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from voc_rl.cli import main as cli
from voc_rl.data import DatasetError, PixelDataset, open_dataset
from voc_rl.data.collect import collect
from voc_rl.task_rewards import TASKS, check_tasks, other_tasks, relabel, task_rewards


@pytest.fixture(scope="module")
def walker(tmp_path_factory: pytest.TempPathFactory) -> PixelDataset:
    """3 short episodes of walker-walk, one per level (random, medium, expert)."""
    out = tmp_path_factory.mktemp("walker")
    return open_dataset(collect("walker-walk", "mixed", episodes=3, out=out, size=64, progress=False))


def test_the_own_task_is_recomputed_exactly_and_the_others_differ(walker: PixelDataset) -> None:
    names = ["walker-stand", "walker-walk", "walker-run"]
    rewards = task_rewards(walker, names, progress=False)
    np.testing.assert_allclose(rewards["walker-walk"], walker.arrays["reward"], rtol=0, atol=1e-6)
    last = walker.ep_start + walker.ep_len  # each episode's last frame has no action: no reward
    assert all(not r[last].any() for r in rewards.values())
    stand, walk, run = (rewards[n].astype(np.float64) for n in names)
    assert np.all(run <= walk + 1e-6)  # the run reward asks 8 m/s where walk asks 1: never more
    assert stand.std() > 0.01 and run.std() > 0.01 and not np.allclose(stand, walk)
    assert other_tasks(walker) == ["walker-stand", "walker-run"]


def test_relabel_writes_verified_files_beside_the_dataset_and_the_cli_runs(
    walker: PixelDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ds"
    shutil.copytree(walker.path, path)
    ds = open_dataset(path)
    with pytest.raises(DatasetError, match="dataset relabel"):
        ds.task_reward("walker-run")
    assert cli(["dataset", "relabel", str(path), "--tasks", "walker-run"]) == 0
    assert "walker-run: reward mean" in capsys.readouterr().out
    ds = open_dataset(path, verify=True)
    np.testing.assert_array_equal(
        ds.task_reward("walker-run"), task_rewards(ds, ["walker-run"], False)["walker-run"]
    )
    assert ds.task_reward("walker-walk") is ds.arrays["reward"]  # its own task: the recorded rewards
    assert 0 <= json.loads((path / "rewards" / "rewards.json").read_text())["own_task_max_error"] < 1e-6
    relabel(ds, ["walker-stand"], progress=False)  # a second call keeps the first task's file
    assert cli(["dataset", "info", str(path)]) == 0
    assert "relabelled rewards: walker-run, walker-stand" in capsys.readouterr().out
    file = path / "rewards" / "walker-run.npy"
    file.write_bytes(file.read_bytes()[:-8] + b"\0" * 8)  # a changed file
    with pytest.raises(DatasetError, match="does not match its manifest"):
        open_dataset(path, verify=True)


def test_tasks_that_cannot_be_computed_are_refused(walker: PixelDataset) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        check_tasks(walker, ["walker-jump"])
    with pytest.raises(ValueError, match="is a cheetah task"):
        check_tasks(walker, ["cheetah-run"])
    no_physics = dataclasses.replace(
        walker, arrays={k: v for k, v in walker.arrays.items() if k != "physics_state"}
    )
    with pytest.raises(DatasetError, match="no recorded physics states"):
        task_rewards(no_physics, ["walker-run"], progress=False)
    assert not TASKS["cheetah-flip"].on_support and TASKS["cheetah-walk"].source == "ExORL"


def test_cheetah_tasks_of_exorl_follow_their_definitions(tmp_path: Path) -> None:
    ds = open_dataset(collect("cheetah-run", "expert", episodes=1, out=tmp_path, size=64, progress=False))
    r = task_rewards(ds, ["cheetah-run", "cheetah-walk", "cheetah-run-backward", "cheetah-flip"], False)
    np.testing.assert_allclose(r["cheetah-run"], ds.arrays["reward"], rtol=0, atol=1e-6)
    assert np.all(r["cheetah-walk"] >= r["cheetah-run"] - 1e-6)  # a target of 2 m/s, not 10
    fast = ds.arrays["reward"] > 0.6  # over 3 m/s on average over the step's two physics steps
    assert fast.mean() > 0.5  # the expert runs
    np.testing.assert_allclose(r["cheetah-walk"][fast], 2.0, rtol=0, atol=1e-6)  # walking is done
    assert r["cheetah-run-backward"][fast].max() == 0  # forwards, not backwards
    assert r["cheetah-flip"].min() >= 0 and r["cheetah-flip"].max() <= 2  # two physics steps of [0, 1]


def test_ground_truth_scores_the_same_rollouts_with_every_task(walker: PixelDataset) -> None:
    from voc_rl.ground_truth import simulator_q

    index = walker.ep_start + 20
    kw = {"rollouts": 2, "seed": 4, "processes": 1, "cache": False, "progress": False}
    alone = simulator_q(walker, index, [0.0, 0.9], **kw)
    both = simulator_q(walker, index, [0.0, 0.9], tasks=["walker-run", "walker-walk", "walker-stand"], **kw)
    assert both.tasks == ["walker-walk", "walker-run", "walker-stand"]  # the own task once, first
    np.testing.assert_array_equal(both.q, alone.q)  # scoring other tasks leaves the rollouts as they were
    np.testing.assert_array_equal(both.at(0.9, "walker-walk")[0], alone.at(0.9)[0])
    relabelled = task_rewards(walker, ["walker-run", "walker-stand"], progress=False)
    for task in ("walker-run", "walker-stand"):  # gamma 0: the task's reward of the dataset's action
        np.testing.assert_allclose(both.at(0.0, task)[0], relabelled[task][index], rtol=0, atol=1e-6)
    run, walk = both.at(0.9, "walker-run")[0], both.at(0.9)[0]
    assert np.all(run <= walk + 1e-6) and not np.allclose(run, walk)  # run's reward never exceeds walk's
    with pytest.raises(KeyError, match="not computed"):
        alone.at(0.9, "walker-run")
    with pytest.raises(ValueError, match="is a cheetah task"):
        simulator_q(walker, index, [0.9], tasks=["cheetah-run"], **kw)


def test_ground_truth_of_other_tasks_is_cached_with_them(walker: PixelDataset, tmp_path: Path) -> None:
    from voc_rl.ground_truth import simulator_q

    path = tmp_path / "ds"
    shutil.copytree(walker.path, path)
    ds, index = open_dataset(path), walker.ep_start[:2] + 5
    kw = {"rollouts": 2, "processes": 1, "progress": False}
    first = simulator_q(ds, index, [0.5], tasks=["walker-stand"], **kw)
    plain = simulator_q(ds, index, [0.5], **kw)
    assert first.cache_path != plain.cache_path and plain.tasks == ["walker-walk"]
    again = simulator_q(ds, index, [0.5], tasks=["walker-stand"], **kw)
    np.testing.assert_array_equal(again.at(0.5, "walker-stand")[0], first.at(0.5, "walker-stand")[0])
    np.testing.assert_array_equal(again.q, plain.q)


@pytest.mark.slow
def test_one_occupancy_model_serves_every_task_of_an_agent(walker: PixelDataset, tmp_path: Path) -> None:
    import voc_rl
    from voc_rl.envs import make_env

    path = tmp_path / "ds"
    shutil.copytree(walker.path, path)
    with pytest.raises(DatasetError, match="dataset relabel"):  # the rewards must be there first
        voc_rl.make_agent("voc-titok-select", size="tiny", tasks=["walker-run"]).learn(
            path, steps=2, progress=False
        )
    relabel(open_dataset(path), ["walker-stand", "walker-run"], progress=False)
    agent = voc_rl.make_agent(
        "voc-titok-select", size="tiny", tasks=["walker-stand", "walker-run"], candidates=3
    )
    agent.learn(path, steps=6, run_dir=tmp_path / "run", progress=False)
    assert agent.known_tasks() == ["walker-walk", "walker-stand", "walker-run"]
    assert (tmp_path / "run" / "reward-walker-run" / "reward.pt").exists()  # one head per other task
    obs, _ = make_env("walker-walk", size=64).reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    q = {}
    for task in agent.known_tasks():
        agent.seed(1)
        q[task] = agent.q_values(obs, actions, task=task)
    assert not np.allclose(q["walker-run"], q["walker-walk"])  # another head on the same futures
    agent.seed(1)
    np.testing.assert_array_equal(agent.q_values(obs, actions), q["walker-walk"])  # acts for its own
    agent.set_task("walker-run")
    agent.seed(1)
    np.testing.assert_array_equal(agent.q_values(obs, actions), q["walker-run"])
    assert agent.predict(obs, deterministic=True)[0].shape == (6,)
    with pytest.raises(ValueError, match="no Q for task 'walker-jump'"):
        agent.q_values(obs, actions, task="walker-jump")
    loaded = voc_rl.load_agent(agent.save(tmp_path / "agent.zip"))
    for task in agent.known_tasks():  # every head travels with the agent
        loaded.seed(1)
        np.testing.assert_allclose(loaded.q_values(obs, actions, task=task), q[task], rtol=1e-6)
    # an extraction agent of another task scores the same states on the pools the first one sampled
    fields = {"size": "tiny", "awr_states": 8, "distill_steps": 2}
    walk = voc_rl.make_agent("voc-titok-awr", **fields)
    walk.learn(path, steps=6, run_dir=tmp_path / "awr", progress=False)
    run = voc_rl.make_agent("voc-titok-awr", task="walker-run", **fields)
    run.learn(path, steps=6, run_dir=tmp_path / "awr", progress=False)
    assert walk.extraction_info["pools_reused"] == 0 and run.extraction_info["pools_reused"] == 1
    assert len(list((tmp_path / "awr" / "occupancy" / "awr-pools").glob("*.npz"))) == 1
    assert run.extraction_info["beta"] != walk.extraction_info["beta"]  # its own head's Q
    shutil.rmtree(tmp_path / "awr" / walk._extraction_folder())  # the first extraction again, on kept pools
    again = voc_rl.make_agent("voc-titok-awr", **fields)
    again.learn(path, steps=6, run_dir=tmp_path / "awr", progress=False)
    assert again.extraction_info == {**walk.extraction_info, "pools_reused": 1}  # the same Q, exactly
    with pytest.raises(ValueError, match="only an occupancy-model agent"):
        voc_rl.make_agent("td-critic", tasks=["walker-run"])
    critic = voc_rl.make_agent("td-critic", size="tiny", task="walker-run", candidates=2)
    critic.learn(path, steps=4, run_dir=tmp_path / "critic", progress=False)
    assert (tmp_path / "critic" / "critic-walker-run" / "critic.pt").exists()  # beside, not over, walk's
    assert critic.known_tasks() == ["walker-run"] and critic.acting_task == "walker-run"
    with pytest.raises(ValueError, match="no Q for task 'walker-walk'"):
        critic.q_values(obs, actions, task="walker-walk")
