"""Importing V-D4RL files: both layouts, the Dreamer -> voc_rl convention shift, task inference, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from voc_rl.data.dataset import PixelDataset
from voc_rl.data.storage import DatasetError
from voc_rl.data.vd4rl import import_vd4rl, infer_kind, infer_task

A = 6


def dreamer_episode(rng: np.random.Generator, t: int = 10, size: int = 64, terminal: bool = False) -> dict:
    """One episode in Dreamer's convention: row 0 has a zero action and reward."""
    action = rng.uniform(-1, 1, (t, A)).astype(np.float32)
    action[0] = 0
    reward = rng.uniform(0, 1, t).astype(np.float32)
    reward[0] = 0
    discount = np.ones(t, np.float32)
    discount[-1] = 0.0 if terminal else 1.0
    first, last = np.zeros(t, bool), np.zeros(t, bool)
    first[0] = last[-1] = True
    return {
        "image": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
        "action": action,
        "reward": reward,
        "discount": discount,
        "is_first": first,
        "is_last": last,
        "is_terminal": last & terminal,
    }


def write_npz(folder: Path, episodes: list[dict]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ep in reversed(list(enumerate(episodes))):  # written out of order: the import sorts by name
        paths.append(folder / f"20220101T0000{i:02d}-{i}-{len(ep['image'])}.npz")
        np.savez_compressed(paths[-1], **ep)
    return paths[::-1]


def write_shard(path: Path, episodes: list[dict], **override: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    step_type = np.concatenate([np.r_[0, np.ones(len(ep["reward"]) - 2), 2] for ep in episodes]).astype(
        np.int64
    )
    data = {
        "observation": np.concatenate([ep["image"].transpose(0, 3, 1, 2) for ep in episodes]),
        "action": np.concatenate([ep["action"] for ep in episodes]),
        "reward": np.concatenate([ep["reward"] for ep in episodes]),
        "discount": np.concatenate([ep["discount"] for ep in episodes]),
        "step_type": step_type,
        **override,
    }
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
    return path


def check_round_trip(ds: PixelDataset, episodes: list[dict]) -> None:
    assert ds.num_episodes == len(episodes)
    assert ds.num_transitions == sum(len(ep["reward"]) - 1 for ep in episodes)
    for e, ep in enumerate(episodes):
        s, t = ds.ep_start[e], len(ep["reward"])
        np.testing.assert_array_equal(ds.episode_frames(e), ep["image"].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(ds.arrays["action"][s : s + t - 1], ep["action"][1:])
        np.testing.assert_array_equal(ds.arrays["reward"][s : s + t - 1], ep["reward"][1:])
        assert not ds.arrays["action"][s + t - 1].any() and ds.arrays["reward"][s + t - 1] == 0
        assert ds.arrays["is_terminal"][s + t - 1] == bool(ep["is_terminal"][-1])
        assert not ds.arrays["is_terminal"][s : s + t - 1].any()
    returns = [ep["reward"][1:].sum(dtype=np.float64) for ep in episodes]
    np.testing.assert_allclose(ds.episode_returns(), returns, rtol=1e-6)


def assert_empty(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == [], list(out.rglob("*"))


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    episodes = [dreamer_episode(rng, t) for t in (10, 7, 12)]
    episodes[1] = dreamer_episode(rng, 9, terminal=True)
    src = tmp_path / "walker_walk" / "medium" / "64px"
    write_npz(src, episodes)
    path = import_vd4rl(src, tmp_path / "out", progress=False)
    assert path == tmp_path / "out" / "voc_rl" / "walker-walk-vd4rl-medium-64px-v0"
    ds = PixelDataset.open(path)
    check_round_trip(ds, episodes)
    meta = json.loads((path / "voc_rl.json").read_text())
    assert meta["task"] == "walker-walk" and meta["kind"] == "medium" and meta["source"] == "V-D4RL import"
    assert meta["env_id"] == "voc_rl/walker-walk-v0" and meta["reward_max"] == 2.0
    assert meta["env_kwargs"] == {
        "size": 64,
        "action_repeat": 2,
        "frame_stack": 1,
        "camera": 0,
        "render_quality": "standard",
    }
    assert meta["has_physics_state"] is False and meta["policies"]["0"]["name"] == "V-D4RL medium"
    assert meta["source_path"] == str(src.resolve())
    assert "proprio" not in ds.arrays and "physics_state" not in ds.arrays


def test_hdf5_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    episodes = [
        dreamer_episode(rng, 10, 84),
        dreamer_episode(rng, 8, 84, terminal=True),
        dreamer_episode(rng, 11, 84),
    ]
    src = tmp_path / "cheetah_run_expert" / "84px"
    write_shard(src / "shard_1.hdf5", episodes[2:])
    write_shard(src / "shard_0.hdf5", episodes[:2])
    path = import_vd4rl(src, tmp_path / "out", progress=False)
    assert path.name == "cheetah-run-vd4rl-expert-84px-v0"
    ds = PixelDataset.open(path)
    check_round_trip(ds, episodes)
    assert ds.arrays["is_terminal"].sum() == 1
    assert ds.meta["env_kwargs"]["size"] == 84 and ds.meta["frame_shape"] == [3, 84, 84]


def test_last_step_with_discount_one_is_not_terminal(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ep = dreamer_episode(rng, 6, 84)
    shard = write_shard(tmp_path / "x.hdf5", [ep])
    ds = PixelDataset.open(import_vd4rl(shard, tmp_path / "out", task="walker-walk", progress=False))
    assert not ds.arrays["is_terminal"].any()


def test_single_file_name_and_overwrite(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    (f,) = write_npz(tmp_path / "data", [dreamer_episode(rng)])
    out = tmp_path / "out"
    path = import_vd4rl(f, out, task="cheetah-run", name="mine", progress=False)
    assert path.name == "mine-v0" and PixelDataset.open(path).meta["kind"] == "unknown"
    with pytest.raises(FileExistsError):
        import_vd4rl(f, out, task="cheetah-run", name="mine", progress=False)
    assert import_vd4rl(f, out, task="cheetah-run", name="mine", overwrite=True, progress=False) == path


def test_tiny_action_excess_is_clipped(tmp_path: Path) -> None:
    ep = dreamer_episode(np.random.default_rng(4))
    ep["action"][3, 2] = 1.00005
    (f,) = write_npz(tmp_path / "d", [ep])
    ds = PixelDataset.open(import_vd4rl(f, tmp_path / "out", task="walker-walk", progress=False))
    assert ds.arrays["action"][2, 2] == 1.0 and np.abs(ds.arrays["action"]).max() <= 1.0


def test_task_and_kind_inference(tmp_path: Path) -> None:
    assert infer_task(tmp_path / "walker_walk" / "medium" / "64px") == "walker-walk"
    assert infer_kind(tmp_path / "walker_walk" / "medium" / "64px") == "medium"
    assert infer_task(tmp_path / "cheetah_run_medium_replay") == "cheetah-run"
    assert infer_kind(tmp_path / "cheetah_run_medium_replay") == "medium_replay"
    assert infer_kind(tmp_path / "humanoid_walk" / "medium_expert" / "84px") == "medium_expert"
    assert infer_task(tmp_path / "humanoid_walk" / "medium_expert" / "84px") == "humanoid-walk"
    assert infer_task(tmp_path / "walker_walk_random.hdf5") == "walker-walk"
    assert infer_task(tmp_path / "nothing" / "here") is None
    assert infer_kind(tmp_path / "nothing" / "here") == "unknown"


def test_uninferable_task_asks_for_it(tmp_path: Path) -> None:
    write_npz(tmp_path / "some" / "data", [dreamer_episode(np.random.default_rng(5))])
    with pytest.raises(ValueError, match="--task"):
        import_vd4rl(tmp_path / "some" / "data", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        import_vd4rl(tmp_path / "some" / "data", tmp_path / "out", task="walker-fly", progress=False)
    assert_empty(tmp_path / "out")


def test_minari_reads_the_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minari = pytest.importorskip("minari")
    rng = np.random.default_rng(6)
    episodes = [dreamer_episode(rng, t) for t in (10, 8)]
    write_npz(tmp_path / "walker_walk" / "random", episodes)
    out = tmp_path / "out"
    import_vd4rl(tmp_path / "walker_walk" / "random", out, progress=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    ds = minari.load_dataset("voc_rl/walker-walk-vd4rl-random-64px-v0")
    assert ds.total_episodes == 2 and ds.total_steps == 16
    for ep, src in zip(ds.iterate_episodes(), episodes, strict=True):
        np.testing.assert_array_equal(ep.observations, src["image"].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(ep.actions, src["action"][1:])
        np.testing.assert_allclose(ep.rewards, src["reward"][1:])


# --------------------------------------------------------------------------- bad input
# Each case writes its files into `src` and returns the name the error must mention.
def _good(src: Path, n: int = 2, size: int = 64) -> list[Path]:
    return write_npz(src, [dreamer_episode(np.random.default_rng(i), size=size) for i in range(n)])


def _write_bad(src: Path, ep: dict) -> str:
    _good(src)
    np.savez(src / "zz_bad.npz", **ep)
    return "zz_bad.npz"


def _truncated_npz(src: Path) -> str:
    files = _good(src, n=11)  # more than one writer chunk: Minari files exist before the failure
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) // 2])
    return files[-1].name


def _garbage_npz(src: Path) -> str:
    _good(src)
    (src / "zz_bad.npz").write_bytes(b"not a zip file at all" * 50)
    return "zz_bad.npz"


def _corrupt_npz_member(src: Path) -> str:
    files = _good(src, n=3)
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)  # zip directory intact, image data not
    files[1].write_bytes(bytes(data))
    return files[1].name


def _truncated_hdf5(src: Path) -> str:
    rng = np.random.default_rng(0)
    write_shard(src / "a.hdf5", [dreamer_episode(rng, size=84)])
    bad = write_shard(src / "b.hdf5", [dreamer_episode(rng, size=84)] * 2)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return "b.hdf5"


def _without(key: str) -> Callable[[Path], str]:
    def case(src: Path) -> str:
        ep = dreamer_episode(np.random.default_rng(9))
        del ep[key]
        return _write_bad(src, ep)

    return case


def _hdf5_missing_step_type(src: Path) -> str:
    path = write_shard(src / "a.hdf5", [dreamer_episode(np.random.default_rng(0), size=84)])
    with h5py.File(path, "a") as f:
        del f["step_type"]
    return "a.hdf5"


def _changed(change: Callable[[dict], None]) -> Callable[[Path], str]:
    def case(src: Path) -> str:
        ep = dreamer_episode(np.random.default_rng(9))
        change(ep)
        return _write_bad(src, ep)

    return case


def _mixed_sizes(src: Path) -> str:
    _good(src)
    write_npz(src / "x", [dreamer_episode(np.random.default_rng(1), size=32)])[0].rename(src / "zz_small.npz")
    return "zz_small.npz"


def _mixed_hdf5_sizes(src: Path) -> str:
    rng = np.random.default_rng(0)
    write_shard(src / "a.hdf5", [dreamer_episode(rng, size=84)])
    write_shard(src / "b.hdf5", [dreamer_episode(rng, size=64)])
    return "b.hdf5"


def _shard_mid_episode(src: Path) -> str:
    ep = dreamer_episode(np.random.default_rng(0), size=84)
    write_shard(src / "a.hdf5", [ep], step_type=np.r_[1, np.ones(8), 2].astype(np.int64))
    return "a.hdf5"


def _set(key: str, value: object, row: int = 4) -> Callable[[dict], None]:
    def fn(ep: dict) -> None:
        ep[key][row] = value

    return fn


BAD_INPUTS = {
    "truncated npz": (_truncated_npz, "corrupt or truncated"),
    "garbage npz": (_garbage_npz, "corrupt or truncated"),
    "corrupt npz member": (_corrupt_npz_member, "corrupt or truncated.*CRC"),
    "truncated hdf5": (_truncated_hdf5, "corrupt or truncated"),
    "missing image": (_without("image"), "missing key.*image"),
    "missing reward": (_without("reward"), "missing key.*reward"),
    "missing step_type": (_hdf5_missing_step_type, "missing key.*step_type"),
    "4 channels": (
        _changed(lambda ep: ep.update(image=np.zeros((10, 64, 64, 4), np.uint8))),
        "image has shape",
    ),
    "mixed sizes": (_mixed_sizes, "mixed image sizes"),
    "mixed hdf5 sizes": (_mixed_hdf5_sizes, "mixed image sizes"),
    "nan reward": (_changed(_set("reward", np.nan)), "NaN or inf"),
    "inf reward": (_changed(_set("reward", np.inf)), "NaN or inf"),
    "too short": (_changed(lambda ep: ep.update({k: v[:1] for k, v in ep.items()})), "too short"),
    "lengths disagree": (_changed(lambda ep: ep.update(action=ep["action"][:-1])), "lengths disagree"),
    "action out of range": (_changed(_set("action", 1.5)), r"outside \[-1, 1\]"),
    "shard starts mid-episode": (_shard_mid_episode, "step_type 0"),
}


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        import_vd4rl(tmp_path / "nowhere", tmp_path / "out", task="walker-walk", progress=False)
    assert_empty(tmp_path / "out")


def test_folder_without_vd4rl_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"empty holds no \.npz"):
        import_vd4rl(tmp_path / "empty", tmp_path / "out", task="walker-walk", progress=False)
    assert_empty(tmp_path / "out")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_leaves_nothing(tmp_path: Path, case: str) -> None:
    make, message = BAD_INPUTS[case]
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    bad_name = make(src)
    with pytest.raises(DatasetError, match=message) as info:
        import_vd4rl(src, out, task="walker-walk", progress=False)
    assert bad_name in str(info.value)
    assert_empty(out)
