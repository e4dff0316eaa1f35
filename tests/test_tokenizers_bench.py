"""benchmarks/tokenizers.py: tokenizers at the agents' size, with and without the state target."""

import csv
from pathlib import Path

import pytest

from voc_rl.benchmarks import tokenizers as bench


def test_variants_parse_numbers_and_refuse_anything_else() -> None:
    assert bench.variant_fields("-") == {}
    assert bench.variant_fields("state_aux=1.0,vocab_size=1024") == {"state_aux": 1.0, "vocab_size": 1024}
    for bad in ("state_aux", "state_aux=yes", "state-aux=1", "state_aux=true"):
        with pytest.raises(ValueError, match="FIELD=NUMBER"):
            bench.variant_fields(bad)


@pytest.mark.slow
def test_tokenizer_rows_split_the_probe_and_reuse_finished_rows(tmp_path: Path) -> None:
    argv = ["--tasks", "cheetah-run", "--backends", "vqvae", "--quick", "--variants", "-", "state_aux=1.0",
            "--runs", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"),
            "--out-dir", str(tmp_path / "out")]  # fmt: skip
    bench.main(argv)
    with open(tmp_path / "out" / "tokenizers.csv") as f:
        rows = {r["fields"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"-", "state_aux=1.0", "positions, linear probe", "positions, MLP"}
    bound = rows.pop("positions, linear probe")  # the probe on the recorded positions: exact there
    assert bound["backend"] == "recorded state" and float(bound["r2_position"]) > 0.99
    assert float(bound["r2_velocity"]) < 1 and rows.pop("positions, MLP")["backend"] == "recorded state"
    for row in rows.values():
        assert row["tokens_per_frame"] == "16" and row["steps"] == "20"  # the agents' tokens
        assert -10 < float(row["r2_position"]) <= 1 and -10 < float(row["r2_velocity"]) <= 1
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["cheetah-run__recorded state__seed0.json", "cheetah-run__vqvae__tiny__agent",
                       "cheetah-run__vqvae__tiny__agent__state_aux=1.0"]  # fmt: skip
    table = (tmp_path / "out" / "tokenizers.md").read_text()
    assert "probe R^2 >= 0.85 at <= 32 tokens a frame" in table
    assert "Codes of the exact positions alone would give this probe" in table
    bench.main(argv)  # every row is read back, not trained again
    assert (tmp_path / "out" / "tokenizers.csv").read_text().count("cheetah-run") == 4
    one = [*argv[: argv.index("--variants")], "--variants", "-", *argv[argv.index("--runs") :]]
    bench.main([*one[:-1], str(tmp_path / "joined"), "--rows-from", str(tmp_path / "out" / "tokenizers.csv")])
    with open(tmp_path / "joined" / "tokenizers.csv") as f:
        joined = sorted(r["fields"] for r in csv.DictReader(f))
    assert joined == ["-", "positions, MLP", "positions, linear probe", "state_aux=1.0"]  # no row twice
