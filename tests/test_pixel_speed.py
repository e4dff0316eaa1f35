"""The pixel trainers' speed benchmark: real trainers timed, rows appended with the code's commit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from voc_rl.benchmarks import pixel_speed


@pytest.mark.slow
def test_pixel_speed_appends_a_row_per_trainer_and_run(fake_ds_path: Path, tmp_path: Path) -> None:
    argv = ["--data", str(fake_ds_path), "--trainers", "bc", "td3bc", "--steps", "2", "--warmup", "1",
            "--channels", "4", "--out-dir", str(tmp_path)]  # fmt: skip
    pixel_speed.main([*argv, "--label", "first"])
    pixel_speed.main([*argv, "--label", "second"])
    with open(tmp_path / "pixel_speed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["trainer"]) for r in rows] == [
        ("first", "bc"), ("first", "td3bc"), ("second", "bc"), ("second", "td3bc")]  # fmt: skip
    assert all(float(r["ms_per_step"]) > 0 and r["commit"] and r["channels"] == "4" for r in rows)
    assert "| second | td3bc |" in (tmp_path / "pixel_speed.md").read_text()
    with pytest.raises(SystemExit, match="unknown trainers"):
        pixel_speed.main(["--data", str(fake_ds_path), "--trainers", "sac"])
