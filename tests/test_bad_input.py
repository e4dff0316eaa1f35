"""Bad input and safe loading: every case of the catalogue (``bad_input_cases.py``) gets
its documented error, and hypothesis fuzzes the dataset reader with corrupted copies of a valid
dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_input_cases import CASES, Case, World, assert_consistent, truncate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from voc_rl.data import DatasetError, PixelDataset, open_dataset


@pytest.fixture(scope="module")
def world(fake_ds_path: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("bad_input"), pixels=fake_ds_path)


def test_the_catalogue_is_distinct_and_covers_every_area() -> None:
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    assert len({(c.call, c.bad) for c in CASES}) == len(CASES), "each case must be a distinct input"
    areas = {c.id.split("-")[0] for c in CASES}
    assert {"env", "step", "ds", "sampler", "tok", "occ", "value", "gt", "agent", "load", "cli"} <= areas
    assert len(CASES) >= 35


@pytest.mark.parametrize(  # the CLI cases start the installed script: the slow tier
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] * c.id.startswith("cli-")) for c in CASES]
)
def test_bad_input_gets_a_clear_error(case: Case, world: World) -> None:
    with pytest.raises(case.error, match=case.match):
        case.run(world)


# ---------------------------------------------------------------------------------------- fuzzing the reader
FRACTION = st.floats(0.0, 1.0, exclude_max=True)
CACHE_FILES = ("frames.npy", "arrays.npz", "cache.json")
CORRUPTION = st.one_of(
    st.tuples(st.just("truncate_hdf5"), FRACTION),
    st.tuples(st.just("flip_hdf5"), FRACTION, st.integers(1, 255)),
    st.tuples(st.just("drop_cache")),
    st.tuples(st.just("truncate_cache"), st.sampled_from(CACHE_FILES), FRACTION),
    st.tuples(st.just("flip_cache"), st.sampled_from(CACHE_FILES), FRACTION, st.integers(1, 255)),
    st.tuples(st.just("drop_meta")),
    st.tuples(st.just("truncate_meta"), FRACTION),  # a strict prefix of a JSON object is never JSON
    st.tuples(st.just("drop_minari_meta")),
    st.tuples(st.just("drop_minari_key"), st.integers(0, 1000)),
    st.tuples(st.just("garble_minari_meta"), st.binary(max_size=64)),
)


def corrupt(path: Path, op: tuple[Any, ...]) -> None:
    kind, *args = op
    hdf5, meta = path / "data" / "main_data.hdf5", path / "voc_rl.json"
    minari = path / "data" / "metadata.json"  # Minari's own: the reader does not need it
    if kind == "truncate_hdf5" and hdf5.exists():
        truncate(hdf5, int(args[0] * hdf5.stat().st_size))
    elif kind == "flip_hdf5" and hdf5.exists() and hdf5.stat().st_size:
        data = bytearray(hdf5.read_bytes())
        data[int(args[0] * len(data))] ^= args[1]
        hdf5.write_bytes(bytes(data))
    elif kind == "drop_cache":
        shutil.rmtree(path / "cache", ignore_errors=True)
    elif kind in ("truncate_cache", "flip_cache"):
        for file in path.glob(f"cache/*/{args[0]}"):
            if kind == "truncate_cache":
                truncate(file, int(args[1] * file.stat().st_size))
            elif file.stat().st_size:
                data = bytearray(file.read_bytes())
                data[int(args[1] * len(data))] ^= args[2]
                file.write_bytes(bytes(data))
    elif kind == "drop_meta":
        meta.unlink(missing_ok=True)
    elif kind == "truncate_meta" and meta.exists():
        truncate(meta, int(args[0] * meta.stat().st_size))
    elif kind == "drop_minari_meta":
        minari.unlink(missing_ok=True)
    elif kind == "drop_minari_key" and minari.exists():
        try:
            doc = json.loads(minari.read_text())
        except ValueError:  # garbled by an earlier step
            return
        doc.pop(sorted(doc)[args[0] % len(doc)], None)
        minari.write_text(json.dumps(doc))
    elif kind == "garble_minari_meta":
        minari.write_bytes(args[0])


def assert_intact(ds: PixelDataset, world: World) -> None:
    """``ds`` reads exactly the data of the undamaged small dataset."""
    np.testing.assert_array_equal(np.asarray(ds.frames), np.asarray(world.small_ds.frames))
    assert ds.arrays.keys() == world.small_ds.arrays.keys()
    for key, array in world.small_ds.arrays.items():
        np.testing.assert_array_equal(ds.arrays[key], array)


FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


@pytest.mark.timeout(120)
@FUZZ
@given(ops=st.lists(CORRUPTION, min_size=1, max_size=4), verify=st.booleans())
def test_a_damaged_dataset_opens_consistently_or_raises_dataset_error(
    world: World, ops: list[tuple[Any, ...]], verify: bool
) -> None:
    """Truncated or flipped HDF5 bytes, a lost, cut or flipped cache, a lost or cut voc_rl.json,
    Minari's metadata lost or garbled: the reader opens a consistent dataset (the cache still holds
    good data, is rebuilt from the HDF5, or Minari's metadata is not needed) or raises DatasetError,
    nothing else. With verify=True, what opens is exactly the undamaged data."""
    path = world.copy_small()
    try:
        for op in ops:
            corrupt(path, op)
        try:
            ds = open_dataset(path, verify=verify)
        except DatasetError:
            event("raised DatasetError")
            return
        event("opened")
        assert_consistent(ds)
        if verify:
            assert_intact(ds, world)
    finally:
        shutil.rmtree(path, ignore_errors=True)


READER_KEYS = ("format", "name", "env_id", "episodes", "transitions", "frame_shape", "action_dim",
               "hdf5_bytes", "hdf5_sha256")  # fmt: skip
META_EDIT = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(READER_KEYS)),
    st.tuples(
        st.just("set"),
        st.sampled_from(READER_KEYS),
        st.one_of(st.none(), st.integers(-3, 200), st.text(max_size=6), st.lists(st.integers(0, 16))),
    ),
)


@pytest.mark.timeout(120)
@FUZZ
@given(edits=st.lists(META_EDIT, min_size=1, max_size=3), drop_cache=st.booleans(), verify=st.booleans())
def test_a_garbled_voc_rl_json_opens_consistently_or_raises_dataset_error(
    world: World, edits: list[tuple[Any, ...]], drop_cache: bool, verify: bool
) -> None:
    """Keys of voc_rl.json deleted or set to values of the wrong type or size: the reader opens a
    consistent dataset or raises DatasetError naming the file, nothing else."""
    path = world.copy_small()
    try:
        meta = json.loads((path / "voc_rl.json").read_text())
        for kind, key, *value in edits:
            if kind == "delete":
                meta.pop(key, None)
            else:
                meta[key] = value[0]
        (path / "voc_rl.json").write_text(json.dumps(meta))
        if drop_cache:
            shutil.rmtree(path / "cache", ignore_errors=True)
        try:
            ds = open_dataset(path, verify=verify)
        except DatasetError as exc:
            assert "voc_rl.json" in str(exc) or "main_data.hdf5" in str(exc), exc
            return
        assert_consistent(ds)
    finally:
        shutil.rmtree(path, ignore_errors=True)
