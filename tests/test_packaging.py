"""Packaging: envs/, agents/ and benchmarks/ ship as voc_rl.envs, voc_rl.agents and voc_rl.benchmarks
only; the CLI works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import voc_rl

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, **kw)


def test_wheel_installs_envs_agents_and_benchmarks_only_under_voc_rl(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, src / name)
    for pkg in ["voc_rl", "envs", "agents", "benchmarks"]:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=src,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("voc_rl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"voc_rl", f"{wheel.name.split('-py')[0]}.dist-info"}, tops
    expected = [
        "voc_rl/envs/__init__.py",
        "voc_rl/envs/dmc.py",
        "voc_rl/agents/__init__.py",
        "voc_rl/benchmarks/return_error.py",  # voc-rl bench return-error
        "voc_rl/py.typed",
    ]
    assert set(expected) <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"voc-rl = voc_rl.cli:main" in entry_points
    assert not any("bad_input" in n or "robustness" in n for n in names)  # the catalogue stays with the tests
    # installed without the source tree, a benchmark runs
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    installed = _run(pip, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    code = "import voc_rl.benchmarks.return_error as r; print(r.__file__)"
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).is_relative_to(site)


def test_installed_package_has_no_top_level_envs_agents_or_benchmarks(tmp_path: Path) -> None:
    code = "import importlib.util as u, voc_rl.envs, voc_rl.agents, voc_rl.benchmarks.return_error; " + (
        "print(u.find_spec('envs'), u.find_spec('agents'), u.find_spec('benchmarks'), voc_rl.envs.__name__)"
    )
    out = _run([sys.executable, "-c", code], cwd=tmp_path)  # outside the repo: no '' path entry to the source
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None", "None", "voc_rl.envs"]
    assert Path(voc_rl.envs.__file__).parent.name == "envs"


def _voc_rl_cli() -> str:
    exe = Path(sys.executable).with_name("voc-rl")
    if not exe.exists():
        pytest.skip("the voc-rl script is not installed next to this python")
    return str(exe)


def test_cli_help_and_envs(tmp_path: Path) -> None:
    out = _run([_voc_rl_cli(), "--help"], cwd=tmp_path)
    assert out.returncode == 0 and "quickstart" in out.stdout
    out = _run([_voc_rl_cli(), "envs"], cwd=tmp_path)
    assert "voc_rl/cheetah-run-v0" in out.stdout and "voc_rl/fake-pixels-v0" in out.stdout


def test_quickstart_main_job_end_to_end_at_tiny_size(tmp_path: Path) -> None:
    """The README's main job, tiny: real collection, training, ground truth and evaluation episode."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [_voc_rl_cli(), "quickstart", "--size", "tiny", "--episodes", "2", "--steps", "3", "--states", "4"]
    out = _run([*args, "--out", str(tmp_path / "q")], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "evaluation episode return" in out.stdout and "ms per decision" in out.stdout
    for method in ("sample (N=32)", "density over 256", "pool (K=8, 8)", "td-critic (3 steps)", "mean"):
        assert f"| {method}" in out.stdout
    assert "minutes: dataset" in out.stdout and (tmp_path / "q" / "learning_curve.png").exists()
    table = (tmp_path / "q" / "return_error.md").read_text()
    assert "nan" not in table.split("simulator Q")[0]
    from PIL import Image

    assert Image.open(tmp_path / "q" / "cheetah-run.gif").n_frames == 251  # reset + 500 steps, every second
    assert (tmp_path / "q" / "agent.zip").exists()
    assert not (tmp_path / "q" / "tokenizer.pt").exists()  # the agent's own checkpoint, not a copy
    assert list((tmp_path / "q" / "runs").glob("cheetah-run__voc-vqvae-select__0__*/occupancy/tb/events.*"))
    # the action diagnostics: a response for the pool estimate and the critic, the action information
    assert "| action response |" in table and "action information" in table
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table.splitlines()[2:7]}
    assert all(np.isfinite(float(rows[m])) for m in ("pool (K=8, 8)", "td-critic (3 steps)")), rows
    assert rows["sample (N=32)"] == rows["mean (of training states)"] == "–", rows
    (run,) = (tmp_path / "q" / "runs").glob("cheetah-run__voc-vqvae-select__0__*")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "evaluation" / "tb"))
    events.Reload()
    assert {"eval/action_info", "eval/action_response_pool", "eval/action_response_td-critic",
            "eval/q_nmse_sample"} <= set(events.Tags()["scalars"])  # fmt: skip


def test_cli_reports_unknown_task_clearly(tmp_path: Path) -> None:
    out = _run([_voc_rl_cli(), "quickstart", "--task", "cheetah-runn", "--steps", "1"], cwd=tmp_path)
    assert out.returncode == 2
    assert "Did you mean voc_rl/cheetah-run-v0" in out.stderr
    assert "Traceback" not in out.stderr
