"""Bad input: what a user sees for every case of the catalogue in ``tests/bad_input_cases.py``.

Runs each case against data built in a temporary folder (a fake-pixels dataset, untrained tiny
parts, an agent zip), records the error type and the message, and writes
``<out-dir>/robustness.md``. ``tests/test_bad_input.py`` asserts the same catalogue's error types
and messages, so the table and the tests cannot drift apart.

    python tests/robustness_report.py [--out-dir results]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch are imported

import dataclasses
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import bad_input_cases as bad_input  # beside this file: run from the source tree
import torch

from voc_rl.args import parse_args
from voc_rl.report import command_line, machine_line, markdown_table

COLUMNS = ("case", "input", "call", "error", "message (first 100 characters)", "status")
WIDTH = 100


@dataclasses.dataclass(frozen=True)
class Args:
    out_dir: Path = Path("results")
    """folder of robustness.md"""


def cell(text: str) -> str:
    """One markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def short(message: str, root: Path) -> str:
    """The message with temporary paths replaced by ``<tmp>``, cut to ``WIDTH`` characters."""
    message = message.replace(str(root), "<tmp>")
    message = re.sub(re.escape(tempfile.gettempdir()) + r"/tmp\w+", "<tmp>", message)
    message = " ".join(message.split())
    return message if len(message) <= WIDTH else message[: WIDTH - 1] + "…"


def run_case(case: Any, world: Any, exit_type: type, warned_type: type) -> dict[str, str]:
    try:
        case.run(world)
    except Exception as exc:
        got: Exception | None = exc
    else:
        got = None
    name = "no error" if got is None else type(got).__name__
    name = "exit status 2" if isinstance(got, exit_type) else name
    name = "warning, repaired" if isinstance(got, warned_type) else name
    message = "" if got is None else short(str(got), world.root)
    ok = got is not None and isinstance(got, case.error) and re.search(case.match, str(got)) is not None
    want = {exit_type: "exit status 2", warned_type: "a warning"}.get(case.error, case.error.__name__)
    status = "ok" if ok else f"**regression**: expected {want} matching `{case.match}`"
    return {
        "case": f"`{case.id}`",
        "input": cell(case.bad),
        "call": f"`{cell(case.call)}`",
        "error": name,
        "message (first 100 characters)": cell(message),
        "status": status,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        world = bad_input.World(Path(tmp))
        rows = [run_case(case, world, bad_input.ExitStatus2, bad_input.Warned) for case in bad_input.CASES]
    seconds = time.perf_counter() - start
    handled = sum(r["status"] == "ok" for r in rows)
    lines = [
        "# Bad input: what the user sees",
        "",
        f"Command: `{command_line()}`  ",
        machine_line(threads=1, uses_gpu=False),
        f"Date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; run {seconds:.0f} s",
        "",
        f"Every case of the catalogue in `tests/bad_input_cases.py` ({len(rows)} cases): one bad input to "
        "the public API, the error type the user gets and the start of its message (temporary paths shown "
        f"as `<tmp>`). {handled} get a clear error of the documented type (or, where the library can "
        "repair the damage, a warning saying what it repaired: `warning, repaired`, and the data read "
        "is checked to be the undamaged data). The CLI cases run the installed `voc-rl` script: exit "
        "status 2, a one-line message on stderr, no traceback.",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        "The hypothesis tests in `tests/test_bad_input.py` fuzz the dataset reader: copies of a valid "
        "dataset with the HDF5 truncated or bytes flipped, the cache deleted, cut or bytes flipped, "
        "`voc_rl.json` deleted or cut, Minari's `metadata.json` deleted, stripped of keys or garbled; "
        "each opens consistently (with `verify=True`: exactly the undamaged data) or raises "
        "`DatasetError`. A second one deletes keys of `voc_rl.json` or sets them to values of the wrong "
        "type: each opens consistently or raises `DatasetError` naming the file.",
        "",
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "robustness.md"
    out.write_text("\n".join(lines))
    print(f"{len(rows)} cases, {handled} ok, {seconds:.0f} s: wrote {out}")
    drift = [r["case"] for r in rows if r["status"] != "ok"]
    if drift:
        raise SystemExit(f"cases whose error is not the catalogue's (see the table): {', '.join(drift)}")


if __name__ == "__main__":
    main()
