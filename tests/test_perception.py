"""benchmarks/perception.py: the pixel policy cloned from the expert's episodes, under variants."""

import csv
from pathlib import Path

import numpy as np
import pytest

from voc_rl.benchmarks import perception as bench
from voc_rl.envs import state_parts


def test_state_parts_split_the_recorded_state_into_positions_and_velocities() -> None:
    parts = state_parts("cheetah-run", 17)  # position (8), velocity (9)
    assert parts["position"].tolist() == list(range(8)) and parts["velocity"].tolist() == list(range(8, 17))
    walker = state_parts("walker-walk", 24)  # orientations (14), height (1), velocity (9)
    assert len(walker["position"]) == 15 and walker["velocity"].tolist() == list(range(15, 24))
    with pytest.raises(ValueError, match="records 18"):
        state_parts("cheetah-run", 18)


@pytest.mark.slow
def test_perception_benchmark_clones_the_expert_of_real_physics_and_merges_rows(tmp_path: Path) -> None:
    from voc_rl.data import open_dataset
    from voc_rl.data.collect import collect

    data = collect("cheetah-run", "mixed", episodes=6, out=tmp_path / "data", progress=False)
    assert len(open_dataset(data).level_episodes("expert")) == 2  # one trained on, one held out
    argv = ["--tasks", "cheetah-run", "--episodes", "1", "--steps", "5",
            "--data-root", str(tmp_path / "data"), "--runs", str(tmp_path / "runs")]  # fmt: skip
    bench.main([*argv, "--variants", "base", "--out-dir", str(tmp_path / "a")])
    merged = ["--rows-from", str(tmp_path / "a" / "perception_seeds.csv")]
    bench.main([*argv, "--variants", "state-aux", "vqvae-init", "--tokenizer-steps", "2",
                "--out-dir", str(tmp_path / "b"), *merged])  # fmt: skip
    with open(tmp_path / "b" / "perception.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"base", "state-aux", "vqvae-init"} and rows["state-aux"]["fields"] == "state_aux=1.0"
    assert (tmp_path / "runs" / "cheetah-run" / "tokenizer" / "tokenizer.pt").is_file()  # the encoder's start
    verdict = rows["state-aux"]["p_vs_base"].split()[-1]  # "0.50 [0.50, 0.50] noise" for one episode each
    assert rows["base"]["p_vs_base"] == "-" and verdict in ("better", "worse", "noise")
    for row in rows.values():
        assert int(row["runs"]) == 1 and np.isfinite(float(row["iqm"])) and float(row["r2_velocity"]) <= 1
    # a finished run is read back, not retrained
    assert (tmp_path / "runs" / "cheetah-run" / "base-5" / "seed0" / "bc.pt").is_file()
    with pytest.raises(SystemExit, match="unknown variants"):
        bench.main([*argv, "--variants", "huge"])
