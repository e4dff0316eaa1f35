"""voc_rl.args: a script's options as a frozen dataclass, its --quick preset below the options typed."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from voc_rl.args import build_parser, field_assignments, parse_args


@dataclasses.dataclass(frozen=True)
class Args:
    tokens: Path
    """a required path"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """training seeds"""
    gammas: tuple[float, ...] = (0.9,)
    """discounts"""
    n_states: int = 200
    """held-out states (100% of them)"""
    name: str = "x"
    """a name"""
    out_dir: Path = Path("results")
    """output folder"""
    tokenizer: Path | None = None
    """a tokenizer.pt"""
    extra: tuple[Path, ...] = dataclasses.field(default=(), metadata={"nargs": "*"})
    """more files"""
    kind: str = dataclasses.field(default="agent", metadata={"choices": ("agent", "preset")})
    """a choice"""
    internal: int = dataclasses.field(default=0, metadata={"help": argparse.SUPPRESS})
    """between the script and its children"""
    quick: bool = False
    """tiny everything"""

    def __post_init__(self) -> None:
        if self.n_states < 1:
            raise ValueError(f"--n-states {self.n_states}: at least 1")


QUICK = {"seeds": (0,), "n_states": 16, "out_dir": Path("scratch")}


def test_types_defaults_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = parse_args(Args, ["--tokens", "~/t.npy", "--gammas", "0.8", "0.99", "--extra", "a", "b"])
    assert args == Args(
        tokens=tmp_path / "home" / "t.npy", gammas=(0.8, 0.99), out_dir=tmp_path / "results",
        extra=(tmp_path / "a", tmp_path / "b"),
    )  # fmt: skip
    assert args.seeds == (0, 1, 2) and args.tokenizer is None and not args.quick
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.seeds = (1,)  # type: ignore[misc]
    args = parse_args(Args, ["--tokens", "t", "--n-states", "5", "--tokenizer", "tok.pt", "--quick"])
    assert (args.n_states, args.tokenizer, args.quick) == (5, tmp_path / "tok.pt", True)


def test_quick_is_a_preset_below_the_options_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse_args(Args, ["--tokens", "t", "--quick"], quick=QUICK)
    assert (args.seeds, args.n_states, args.out_dir) == ((0,), 16, tmp_path / "scratch")
    # a value the user types wins, even where it equals the default; the rest of the preset applies
    args = parse_args(Args, ["--tokens", "t", "--quick", "--seeds", "5", "--out-dir", "results"], quick=QUICK)
    assert (args.seeds, args.n_states, args.out_dir) == ((5,), 16, tmp_path / "results")
    assert parse_args(Args, ["--tokens", "t"], quick=QUICK).n_states == 200  # no --quick: no preset
    made = []
    args = parse_args(Args, ["--tokens", "t", "--quick"], quick=lambda: made.append(1) or QUICK)
    assert args.n_states == 16 and made == [1]  # a preset function is called when --quick is given


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--tokens", "t", "--kind", "other"], ["--tokens", "t", "--n-states", "0"]):
        with pytest.raises(SystemExit) as exit:
            parse_args(Args, argv)
        assert exit.value.code == 2
    assert "--n-states 0: at least 1" in capsys.readouterr().err
    text = " ".join(build_parser(Args).format_help().split())
    assert "--seeds SEEDS [SEEDS ...] training seeds (default: 0 1 2)" in text
    assert "held-out states (100% of them) (default: 200)" in text
    assert "--tokens TOKENS a required path" in text and "--internal" not in text
    assert "voc_rl.args: a script's options" in text  # the description: the module's docstring


def test_field_assignments_take_numbers_and_objects_only_where_asked() -> None:
    fields = field_assignments(["prior_steps=6000", "state_aux=1.0"], "--set")
    assert fields == {"prior_steps": 6000, "state_aux": 1.0} and isinstance(fields["prior_steps"], int)
    objects = field_assignments(['pixel_kwargs={"channels": 16}'], "--set", objects=True)
    assert objects == {"pixel_kwargs": {"channels": 16}}
    with pytest.raises(ValueError, match=r"--set 'pixel_kwargs=.*FIELD=NUMBER$"):
        field_assignments(['pixel_kwargs={"channels": 16}'], "--set")
    for bad in ("state_aux", "state_aux=yes", "state-aux=1", "state_aux=true", "x=[1]"):
        message = f"--set {bad!r}: expected FIELD=NUMBER or FIELD=JSON-OBJECT"
        with pytest.raises(ValueError, match=re.escape(message)):
            field_assignments([bad], "--set", objects=True)
