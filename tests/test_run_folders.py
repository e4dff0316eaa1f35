"""Run folders one process and one seed at a time, typed configs, outputs checked before work, caches
of read-only datasets, and Ctrl-C during training (issue [L])."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import voc_rl
from voc_rl import paths
from voc_rl.checkpoint import CheckpointError
from voc_rl.cli import main
from voc_rl.data import open_dataset
from voc_rl.pixel_policy import PixelBCConfig
from voc_rl.registry import AgentConfig
from voc_rl.run_folder import LOCK, RunFolderError, locked
from voc_rl.train_loop import Loop, train
from voc_rl.typed import ConfigError, parse_field

sys.path.insert(0, str(Path(__file__).parent))
from test_train_loop import toy_run


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, modification time)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------- typed configs
def test_configs_check_types_and_normalise_json_values() -> None:
    config = AgentConfig(gamma=0, tasks=["walker-run"])  # as JSON gives them: an int, a list
    assert config.gamma == 0.0 and isinstance(config.gamma, float) and config.tasks == ("walker-run",)
    for field, bad in [
        ("seed", "0"),
        ("seed", True),
        ("gamma", float("inf")),
        ("size", 3),
        ("prior_steps", 1.5),
    ]:
        with pytest.raises(ConfigError, match=rf"AgentConfig\.{field} must be"):
            AgentConfig(**{field: bad})
    with pytest.raises(ConfigError, match=r"PixelBCConfig\.lr must be a finite number, got 'fast'"):
        PixelBCConfig(action_dim=2, lr="fast")
    assert dataclasses.replace(PixelBCConfig(action_dim=2), steps=torch.tensor(5).numpy()[()]).steps == 5


def test_set_parses_each_value_by_its_field_type() -> None:
    assert parse_field(AgentConfig, "gamma", "0.99") == 0.99
    assert parse_field(AgentConfig, "task", "1") == "1"  # a string field keeps the text
    assert parse_field(AgentConfig, "occupancy_steps", "none") is None
    assert parse_field(AgentConfig, "occupancy_kwargs", '{"depth": 2}') == {"depth": 2}
    with pytest.raises(ConfigError, match=r"AgentConfig.candidates must be an integer; 'eight' is not one"):
        parse_field(AgentConfig, "candidates", "eight")
    with pytest.raises(ConfigError, match=r"did you mean 'candidates'"):
        parse_field(AgentConfig, "candidate", "8")


def test_the_cli_prints_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "dataset", "info", str(tmp_path / "missing")])


# ---------------------------------------------------------------------------------------- run folders
HOLD = """
import sys, time
from pathlib import Path
from voc_rl.run_folder import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_and_a_stale_lock_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        with pytest.raises(RunFolderError, match=rf"in use by process {holder.pid} on "), locked(run):
            pass
        assert snapshot(run) == before  # the refused call changed nothing, the holder's lock included
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK).exists()  # killed: its lock is left behind, stale
    with locked(run):  # taken over: its process is gone
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
        with locked(run):  # reentrant within a process
            pass
        assert (run / LOCK).exists()
    assert not list(run.glob(f"{LOCK}*"))  # the lock and its draft gone


SWEEP = """
import sys
import voc_rl
from voc_rl.run_folder import RunFolderError
try:
    agent = voc_rl.make_agent("bc", size="tiny", seed=int(sys.argv[3]))
    agent.learn(sys.argv[1], steps=3, run_dir=sys.argv[2], progress=False)
    agent.save(sys.argv[4])
except RunFolderError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.slow
def test_a_seed_sweep_sharing_a_run_folder_never_mislabels(
    fake_ds_path: Path, tmp_path: Path, at_once: bool
) -> None:
    run = tmp_path / "run"
    argv = [[sys.executable, "-c", SWEEP, str(fake_ds_path), str(run), str(s), str(tmp_path / f"s{s}.zip")]
            for s in (0, 1)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if at_once:
        procs = [subprocess.Popen(a, stdout=subprocess.PIPE, text=True, env=env) for a in argv]
        outs = [p.communicate(timeout=300)[0] for p in procs]
    else:
        outs = [subprocess.run(a, capture_output=True, text=True, env=env, timeout=300).stdout for a in argv]
    refused = [o for o in outs if o.startswith("refused:")]
    assert len(refused) == 1, outs  # one trained; the other saw the lock or the first one's seed
    assert "in use by process" in refused[0] or "holds a run of seed" in refused[0]
    (saved,) = list(tmp_path.glob("s*.zip"))
    agent = voc_rl.load_agent(saved)
    assert f"s{agent.config.seed}.zip" == saved.name
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["seed"] == agent.config.seed and not (run / LOCK).exists()


def test_a_trainer_refuses_to_resume_a_run_of_another_seed(tmp_path: Path) -> None:
    train(toy_run(), 10, Loop(tmp_path, seed=1, progress=False))
    with pytest.raises(CheckpointError, match="belongs to a run of seed 1, not 0"):
        train(toy_run(), 20, Loop(tmp_path, seed=0, progress=False))
    assert train(toy_run(), 20, Loop(tmp_path, seed=1, progress=False)).steps == 20


# ---------------------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_checkpoints_at_the_step_and_the_run_resumes_exactly(tmp_path: Path, signum: int) -> None:
    handler = signal.getsignal(signum)
    if handler == signal.SIG_IGN:
        pytest.skip("this process ignores the signal (a background job's SIGINT): so does training")

    def interrupt_at_7(step: int, logs: dict[str, float]) -> None:
        if step == 7:
            os.kill(os.getpid(), signum)

    (tmp_path / ".train_state.pt.abc.tmp").write_bytes(b"cut short")  # a write a kill interrupted
    run = toy_run()
    with pytest.raises(KeyboardInterrupt, match=r"saved at step 7 .* run again to resume"):
        train(run, 20, Loop(tmp_path, ckpt_every=100, callback=interrupt_at_7, progress=False))
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 7
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / LOCK).exists()
    assert signal.getsignal(signum) == handler  # the handler is put back
    resumed = toy_run()
    train(resumed, 20, Loop(tmp_path, progress=False))
    whole = toy_run()
    train(whole, 20, Loop(tmp_path / "whole", progress=False))
    assert torch.equal(resumed.model.net.weight, whole.model.net.weight)


# ---------------------------------------------------------------------------------------- outputs
def test_outputs_are_checked_before_work(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert (
        paths.check_writable(tmp_path / "new" / "deeper" / "out.zip")
        == tmp_path / "new" / "deeper" / "out.zip"
    )
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ValueError, match=r"cannot write the agent file .*afile is a file, not a folder"):
        paths.check_writable(afile / "agent.zip", "agent file")
    if os.geteuid() != 0:  # (permission bits do not stop root)
        locked_dir = tmp_path / "read-only"
        locked_dir.mkdir(mode=0o555)
        with pytest.raises(ValueError, match=r"read-only.* is not writable"):
            paths.check_writable(locked_dir / "out", "output")


def test_a_read_only_dataset_is_read_with_its_caches_in_the_user_cache(
    fake_ds_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voc_rl.tokenizers import make_tokenizer
    from voc_rl.tokenizers.cache import token_view

    shared = tmp_path / "shared"
    shutil.copytree(fake_ds_path, shared, ignore=shutil.ignore_patterns("cache", "tokens"))
    probe = paths._unwritable
    monkeypatch.setattr(
        paths, "_unwritable", lambda f: "read-only file system" if shared in (f, *f.parents) else probe(f)
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = snapshot(shared)
    ds = open_dataset(shared, verify=True)
    assert len(ds.frames) == len(open_dataset(fake_ds_path).frames)
    tok = make_tokenizer("titok", size="tiny").save(tmp_path / "tok.pt")
    view = token_view(ds, tok, progress=False)
    assert view.frames.shape[0] == len(ds.frames)
    assert snapshot(shared) == before  # nothing written into the dataset
    cached = tmp_path / "xdg" / "voc_rl"
    assert list((cached / "cache" / "shared").iterdir()) and list((cached / "tokens" / "shared").iterdir())
