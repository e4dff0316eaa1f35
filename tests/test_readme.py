"""The commands of the README and of the documentation pages work as written (issue 14, part 2).

The pages are README.md and every ``docs/*.md`` (:data:`PAGES`; a new page is covered without
editing this file). ``test_commands_run[PAGE]`` runs every ``voc-rl`` command of one page's ```bash
blocks, in order, in one empty temporary working directory of its own, with the installed ``voc-rl``
script: paths stay relative as written. Commands are found automatically, so a command added to a
page is run the next time the suite runs. Each page runs apart from the others, so a page's commands
must work from a fresh folder (with what :func:`provide_inputs` brings). The shell's share is done
as bash does it: comments, line continuations, quotes and ``~``, with ``HOME`` set to a temporary
folder. A command that fails stops the test, which prints the page, the command, what was run, and
its output.

The only changes made to a command are these (:data:`SHRINK`, :func:`provide_inputs`):

* sizes shrink so that every page runs in a minute or two on one core: ``collect --episodes
  2``; ``behavior train --steps 20 --eval-every 10`` (two snapshots, no SAC update); ``behavior eval
  --episodes 1``; ``tokenizer fit`` and ``occupancy fit`` get ``--size tiny --steps 2``;
  ``quickstart --size tiny --steps 2 --episodes 3 --states 4``; ``bench return-error`` gets
  ``--quick`` (its own scratch folders, about a minute); ``agent train --size tiny --steps 2``,
  ``agent eval --episodes 1``, ``agent imagine --states 2 --samples 2``. An option already there gets the tiny
  value, one that is not is added.
* ``behavior ship`` gets ``--out shipped-policies``: by default it writes into the installed
  package's ``policies/`` folder, which a test must not touch.
* a path with ``...`` in it (``runs/tokenizers/.../tokenizer.pt``) becomes the file an earlier
  command wrote that matches it (``...`` read as ``*``; the newest, if several do).
* inputs a user brings are written before the command that reads them, where they are missing
  and no earlier command of the page writes them: V-D4RL files at the path given to ``import-vd4rl``
  (``~/vd4rl/walker_walk/medium/64px``: a few tiny 64 px ``.npz`` episodes, or an 84 px shard);
  a dataset ``ROOT/voc_rl/TASK-KIND-v0`` (collected by ``voc-rl collect --task TASK --policy KIND
  --episodes 3 --out ROOT``); a tokenizer checkpoint ``.../NAME__BACKEND__SIZE/tokenizer.pt`` (an
  untrained tiny tokenizer of that backend); a ``--policy-file`` (a copy of a shipped policy).

``test_commands_exist[PAGE]`` checks every ``voc-rl`` command a page names anywhere (shell blocks,
the command-line synopsis, inline code, the ``torchrun -m voc_rl.distributed_train`` lines) against
the CLI's parser: a subcommand or option that disappears fails it, and the synopsis's
``[--option default]`` values must be the parser's defaults.

``test_the_readme_is_a_front_door``: README.md stays short (at most :data:`README_MAX_LINES` lines)
and shows a ```python or ```bash example within its first :data:`FIRST_EXAMPLE_BY` lines; the
guides live in docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voc_rl.cli import build_parser

pytestmark = pytest.mark.slow  # (the fast tier: pytest; every test: scripts/test.sh)

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 300
FIRST_EXAMPLE_BY = 60  # the line by which the README's first ```python or ```bash block opens
VOC_RL = Path(sys.executable).with_name("voc-rl")
TIMEOUT_S = 300  # per command

# (subcommand path) -> {option: tiny value, or None for a flag}; see the module docstring
SHRINK: dict[tuple[str, ...], dict[str, str | None]] = {
    ("collect",): {"--episodes": "2"},
    ("behavior", "train"): {"--steps": "20", "--eval-every": "10"},
    ("behavior", "ship"): {"--out": "shipped-policies"},  # never the installed package's policies/
    ("behavior", "eval"): {"--episodes": "1"},
    ("tokenizer", "fit"): {"--size": "tiny", "--steps": "2"},
    ("occupancy", "fit"): {"--size": "tiny", "--steps": "2"},
    ("quickstart",): {"--size": "tiny", "--steps": "2", "--episodes": "3", "--states": "4"},
    ("bench", "return-error"): {"--quick": None},
    ("agent", "train"): {"--size": "tiny", "--steps": "2"},
    ("agent", "eval"): {"--episodes": "1"},
    ("agent", "imagine"): {"--states": "2", "--samples": "2"},
}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")  # PATH, DIR, N, TOKENIZER.pt


# ---------------------------------------------------------------------------------------- reading
def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m[1].strip(), m[2]) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def logical_lines(body: str) -> list[str]:
    """Lines with backslash continuations joined, as bash reads them."""
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", body).splitlines() if line.strip()]


def shell_commands(text: str) -> list[str]:
    """Every line of the ```bash blocks that runs ``voc-rl``, in order."""
    lines = [
        ln
        for lang, body in fenced_blocks(text)
        if lang in ("bash", "sh", "shell")
        for ln in logical_lines(body)
    ]
    return [ln for ln in lines if "voc-rl" in shlex.split(ln, comments=True)]


def mentions(text: str) -> list[str]:
    """Every ``voc-rl`` command named anywhere: code blocks of any kind, inline code, torchrun lines."""
    found = []
    for lang, body in fenced_blocks(text):
        if lang not in ("bash", "sh", "shell"):  # a synopsis goes on in an indented line
            body = re.sub(r"\n[ \t]+(?=\[)", " ", body)
        for line in logical_lines(body):
            if "voc-rl" in line.split():  # also after NAME=value assignments
                found.append(line[line.index("voc-rl") :])
            elif "-m voc_rl.distributed_train" in line:  # takes exactly voc-rl's arguments
                found.append("voc-rl " + line.split("-m voc_rl.distributed_train", 1)[1])
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    found += [" ".join(m.split()) for m in re.findall(r"`(voc-rl\b[^`]*)`", prose)]
    return found


def shell_syntax(line: str) -> list[str]:
    """What bash would do more with than split words: operators, expansions, unquoted globs."""
    lexer = shlex.shlex(line, posix=False, punctuation_chars=True)
    lexer.commenters = "#"
    return [
        token
        for token in lexer
        if set(token) <= set("();<>|&")
        or (token[0] not in "'\"" and re.search(r"[*?$`]", token))
        or (token[0] == '"' and re.search(r"[$`]", token))
    ]


def split_command(line: str) -> tuple[dict[str, str], str, list[str]]:
    """(``NAME=value`` assignments before the program, the program, bash's words after it)."""
    argv = shlex.split(line, comments=True)
    assignments = {}
    while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
        name, value = argv.pop(0).split("=", 1)
        assignments[name] = value
    return assignments, argv[0] if argv else "", words(shlex.join(argv))


def words(line: str) -> list[str]:
    """bash's words of a command line without the program: comments dropped, quotes removed."""
    argv = shlex.split(line, comments=True)[1:]
    out: list[str] = []
    for word in argv:  # --opt=value is --opt value to argparse; split it so that rules find options
        out += word.split("=", 1) if word.startswith("--") and "=" in word else [word]
    return out


# ---------------------------------------------------------------------------------------- the parser
def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(argv: list[str]) -> tuple[tuple[str, ...], argparse.ArgumentParser, list[str]]:
    """(subcommand path, its parser, the remaining words); fails on a subcommand the CLI lacks."""
    parser, path, rest = build_parser(), (), list(argv)
    while rest and (subs := subparsers(parser)) and not rest[0].startswith("-"):
        names = rest[0].strip("{}").split(",")  # a synopsis's {train,ship,eval} names several
        missing = [n for n in names if n not in subs]
        assert not missing, (
            f"`voc-rl {' '.join([*path, rest[0]])}`: the CLI has no {missing} (has {sorted(subs)})"
        )
        if len(names) > 1:
            return (*path, rest[0]), parser, []
        parser, path, rest = subs[names[0]], (*path, names[0]), rest[1:]
    return path, parser, rest


def option_strings(path: tuple[str, ...], parser: argparse.ArgumentParser) -> set[str]:
    if path == ("bench", "return-error"):  # its own parser, behind argparse.REMAINDER
        from voc_rl.cli import main

        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
            main(["bench", "return-error", "--help"])
        return set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", help_text.getvalue()))
    return {s for action in parser._actions for s in action.option_strings}


# ---------------------------------------------------------------------------------------- the tests
def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_the_readme_is_a_front_door() -> None:
    """README.md is short and opens with an example; the guides live in docs/."""
    text = README.read_text()
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move guides to docs/"
    )
    first = next(
        (text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"^```(python|bash)\b", text, re.M)), None
    )
    assert first is not None and first <= FIRST_EXAMPLE_BY, (
        f"README.md's first ```python or ```bash example opens at line {first}, not within {FIRST_EXAMPLE_BY}"
    )


def test_the_pages_have_commands_to_run() -> None:
    """Guards the reader: a layout it no longer understands must not pass by running nothing."""
    assert DOCS, "no docs/*.md pages"
    assert shell_commands(README.read_text()), "README.md has no voc-rl command in a ```bash block"
    commands = [c for page in PAGES for c in shell_commands(page.read_text())]
    assert len(commands) >= 8, commands
    assert {tuple(walk(words(c))[0][:1]) for c in commands} >= {("collect",), ("tokenizer",), ("agent",)}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_exist(page: Path) -> None:
    """Every voc-rl command the page names is one the CLI parses: subcommands, options, defaults."""
    text = page.read_text()
    problems = []
    for line in mentions(text):
        try:
            path, parser, rest = walk(words(line.replace("[", " ").replace("]", " ")))
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        known = option_strings(path, parser)
        for word in rest:
            if word.startswith("-") and word not in known:
                problems.append(f"`{line}`: `voc-rl {' '.join(path)}` has no option {word}")
        if path and path[0] not in ("bench",):
            defaults = {s: a.default for a in parser._actions for s in a.option_strings}
            for opt, value in re.findall(r"\[(--[\w-]+) ([^\]\s]+)\]", line):
                literal = not PLACEHOLDER.match(value) and value != "..."
                if opt in defaults and literal and str(defaults[opt]) != value:
                    problems.append(f"`{line}`: {opt} defaults to {defaults[opt]!r}, not {value}")
    assert not problems, f"{page_id(page)} and the CLI disagree:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if shell_commands(p.read_text())], ids=page_id
)  # pages without a command to run have no test here
def test_commands_run(page: Path, tmp_path: Path) -> None:
    """Every voc-rl command of the page's shell blocks, in order, at a tiny size (module docstring)."""
    from voc_rl.behavior import POLICY_DIR

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
        "XDG_CONFIG_HOME": os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config")),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.pop("MINARI_DATASETS_PATH", None)
    shipped = {p.name: p.stat().st_mtime_ns for p in POLICY_DIR.glob("*.pt")}
    writes: set[Path] = set()  # what earlier commands of the page write: never provided by the test
    timings = []
    for line in shell_commands(page.read_text()):
        bad = shell_syntax(line)
        assert not bad, (
            f"`{line}`: shell syntax {bad} that this test does not run; extend tests/test_readme.py"
        )
        assignments, program, argv = split_command(line)
        assert program == "voc-rl", f"`{line}`: runs {program}, not voc-rl; extend tests/test_readme.py"
        argv = [expand_home(w, home) for w in argv]
        path, _, _ = walk(argv)
        argv = [find_placeholder(w, work, line) if "..." in w else w for w in argv]
        placeholders = [w for w in argv if PLACEHOLDER.match(w)]
        assert not placeholders, (
            f"`{line}`: placeholder {placeholders}: give it a substitution in tests/test_readme.py"
        )
        argv = shrink(path, argv)
        provide_inputs(path, argv, work, writes)
        writes |= outputs(path, argv, work)
        start = time.perf_counter()
        proc = subprocess.run(
            [str(VOC_RL), *argv],
            cwd=work,
            env={**env, **assignments},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        timings.append(f"{time.perf_counter() - start:5.1f} s  voc-rl {shlex.join(argv)}")
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-4000:]
            pytest.fail(
                f"{page_id(page)} command failed (exit {proc.returncode}):\n  as written: {line}\n"
                f"  as run:     voc-rl {shlex.join(argv)}\n  in:         {work}\n"
                f"--- output (end) ---\n{output}",
                pytrace=False,
            )
    print("\n".join(timings))
    assert {p.name: p.stat().st_mtime_ns for p in POLICY_DIR.glob("*.pt")} == shipped, "policies/ changed"


# ---------------------------------------------------------------------------------------- substitutions
def expand_home(word: str, home: Path) -> str:
    """bash's tilde expansion of a word (``~`` and ``~/...``)."""
    return str(home) + word[1:] if word == "~" or word.startswith("~/") else word


def shrink(path: tuple[str, ...], argv: list[str]) -> list[str]:
    argv = list(argv)
    for opt, value in SHRINK.get(path, {}).items():
        if opt not in argv:
            argv += [opt] if value is None else [opt, value]
        elif value is not None:
            argv[argv.index(opt) + 1] = value
    return argv


def find_placeholder(word: str, work: Path, line: str) -> str:
    """``runs/tokenizers/.../tokenizer.pt``: the newest file an earlier command wrote that matches."""
    matches = sorted(work.glob(word.replace("...", "*")), key=lambda p: p.stat().st_mtime_ns)
    assert matches, f"`{line}`: nothing written so far matches {word}"
    return str(matches[-1].relative_to(work))


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def outputs(path: tuple[str, ...], argv: list[str], work: Path) -> set[Path]:
    """What a command will write that later commands may read (collect's dataset, fit's checkpoint)."""
    if path == ("collect",):
        name = (
            option(argv, "--name")
            or f"{option(argv, '--task') or 'cheetah-run'}-{option(argv, '--policy') or 'medium'}"
        )
        return {(work / (option(argv, "--out") or "datasets") / "voc_rl" / f"{name}-v0").resolve()}
    if path == ("tokenizer", "fit") and (dataset := option(argv, "--dataset")):
        name = Path(dataset).name.removesuffix("-v0")
        backend, size = option(argv, "--backend") or "vqvae", option(argv, "--size") or "small"
        out = option(argv, "--out") or f"runs/tokenizers/{name}__{backend}__{size}"
        return {(work / out / "tokenizer.pt").resolve()}
    if path == ("agent", "train"):
        return {(work / (option(argv, "--out") or "agent.zip")).resolve()}
    return set()


def provide_inputs(path: tuple[str, ...], argv: list[str], work: Path, writes: set[Path]) -> None:
    """Write what a user brings (module docstring), where it is missing and no earlier command writes it."""
    positional = [
        w for i, w in enumerate(argv) if not w.startswith("-") and (i == 0 or not argv[i - 1].startswith("-"))
    ]
    inputs = {
        "vd4rl": positional[len(path)] if path == ("import-vd4rl",) and len(positional) > 1 else None,
        "dataset": option(argv, "--dataset") or (positional[2] if path == ("dataset", "info") else None),
        "tokenizer": option(argv, "--tokenizer") or option(argv, "--checkpoint"),
        "policy": option(argv, "--policy-file"),
    }
    for kind, value in inputs.items():
        if value is None:
            continue
        target = (work / value).resolve()  # absolute values (from ~) stay as they are
        if target.exists() or target in writes:
            continue
        {
            "vd4rl": write_vd4rl,
            "dataset": write_dataset,
            "tokenizer": write_tokenizer,
            "policy": write_policy,
        }[kind](target, argv, work)


def write_vd4rl(target: Path, argv: list[str], work: Path) -> None:
    from test_vd4rl import dreamer_episode, write_npz, write_shard

    from voc_rl.data.vd4rl import infer_task
    from voc_rl.envs import make_env

    task = option(argv, "--task") or infer_task(target)
    assert task, f"cannot tell the task of the V-D4RL path {target}"
    env = make_env(task)
    act = int(env.action_space.shape[0])
    env.close()
    rng = np.random.default_rng(0)
    size = 84 if "84px" in target.parts else 64
    episodes = [dreamer_episode(rng, t, size=size) for t in (6, 5)]
    for ep in episodes:  # the task's action size (dreamer_episode writes 6)
        ep["action"] = rng.uniform(-1, 1, (len(ep["reward"]), act)).astype(np.float32)
        ep["action"][0] = 0  # Dreamer's convention: row 0 has a zero action
    if size == 84:
        write_shard(target / "shard_0.hdf5", episodes)
    else:
        write_npz(target, episodes)


def write_dataset(target: Path, argv: list[str], work: Path) -> None:
    from voc_rl.cli import main
    from voc_rl.data.collect import KINDS
    from voc_rl.envs import list_envs

    task, _, kind = target.name.removesuffix("-v0").rpartition("-")
    assert target.parent.name == "voc_rl" and kind in KINDS and f"voc_rl/{task}-v0" in list_envs(), (
        f"a page reads a dataset {target} that none of its commands writes and this test cannot collect"
    )
    args = ["collect", "--task", task, "--policy", kind, "--episodes", "3", "--out", str(target.parents[1])]
    assert main(args) == 0, args


def write_tokenizer(target: Path, argv: list[str], work: Path) -> None:
    from voc_rl.tokenizers import BACKENDS, make_tokenizer

    backend = next((p for p in target.parent.name.split("__") if p in BACKENDS), None)
    assert backend, f"cannot tell the tokenizer backend of {target} (folder NAME__BACKEND__SIZE)"
    make_tokenizer(backend, size="tiny").save(target)  # musik's default action size is DMC's 6


def write_policy(target: Path, argv: list[str], work: Path) -> None:
    from voc_rl.behavior import shipped_policy_path

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped_policy_path(option(argv, "--task") or "cheetah-run", "medium"), target)
