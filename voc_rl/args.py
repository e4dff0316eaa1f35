"""Command lines parsed into frozen dataclasses: a script's options are the fields of its ``Args``.

Each field is one option. Its name gives the flag (``n_states``: ``--n-states``); its annotation the
type (``int``, ``float``, ``str``, ``Path``; ``X | None``; ``tuple[X, ...]``: one or more values;
``bool``: a flag, off by default); its default the default (a field without one is a required
option); the string literal right under it, its docstring, the help. A field's metadata goes to
``argparse.ArgumentParser.add_argument`` as it is, for anything else: ``choices``, ``nargs="*"``,
``metavar``, a ``type`` that converts, ``help=argparse.SUPPRESS`` for an option internal to the
script::

    @dataclasses.dataclass(frozen=True)
    class Args:
        seeds: tuple[int, ...] = (0, 1, 2)
        '''training seeds'''
        out_dir: Path = Path("results")
        '''where the tables go'''
        quick: bool = False
        '''a tiny run'''

    args = parse_args(Args, argv, quick={"seeds": (0,)})

A script's ``quick`` preset applies when ``--quick`` is given, under the options the user typed:
``--quick --seeds 5`` runs the quick preset with seed 5. Paths come back absolute, ``~`` expanded
(:func:`voc_rl.paths.user_path`). A ``ValueError`` raised by the class (its ``__post_init__``
checks, and output folders ``out_dir`` and ``runs`` that cannot be written) becomes a usage error: the
message and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from voc_rl.paths import check_writable, user_path

T = TypeVar("T")
WRITTEN = ("out_dir", "runs")  # the fields of a script's output folders
Preset = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of ``cls`` (the string literal right under it), on one line."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a class made at run time): no help texts
        return {}
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _shown(default: Any) -> str:
    """A default as a user would type it (``a b`` for a tuple), or '' where there is nothing to show."""
    if default is None or isinstance(default, bool) or default == ():
        return ""
    return " ".join(map(str, default)) if isinstance(default, tuple) else str(default)


def build_parser(cls: type, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``cls``'s options; an option it is not given is absent from the namespace."""
    module = sys.modules[cls.__module__]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        hint, kwargs = hints[f.name], {}
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is tuple:
            hint, kwargs["nargs"] = typing.get_args(hint)[0], "+"
        if hint is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = hint
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        shown = "" if f.default is dataclasses.MISSING else _shown(f.default)
        text = docs.get(f.name, "") + (f" (default: {shown})" if shown else "")
        kwargs["help"] = text.replace("%", "%%")
        parser.add_argument("--" + f.name.replace("_", "-"), **{**kwargs, **f.metadata})
    return parser


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, skip: Sequence[str] = ()
) -> list[str]:
    """One option per field of the config dataclass ``cls`` (``--occupancy-steps 3000``,
    ``--extraction qbc``, ``--occupancy-kwargs '{"depth": 2}'``, ``--tasks walker-run walker-stand``)
    but those in ``skip``, each parsed by the field's type (:func:`voc_rl.typed.parse_field`) and
    absent from the namespace unless given, so that a config's own values stay where no option is
    typed; the help is the field's docstring. Returns the field names added."""
    from voc_rl.typed import ConfigError, parse_field

    def parser_of(name: str) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            try:
                return parse_field(cls, name, text)
            except ConfigError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return parse

    hints, docs, added = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        many = typing.get_origin(hints[f.name]) is tuple
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
            type=str if many else parser_of(f.name), nargs="+" if many else None,
            metavar="VALUE", help=docs.get(f.name, "").replace("``", "").replace("%", "%%"),
        )  # fmt: skip
        added.append(f.name)
    return added


def config_values(namespace: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The fields of :func:`add_config_options` the user typed (lists made tuples)."""
    return {n: _resolved(getattr(namespace, n)) for n in names if hasattr(namespace, n)}


def _resolved(value: Any) -> Any:
    """Paths made absolute with ``~`` expanded, lists (argparse's values of ``nargs``) made tuples."""
    if isinstance(value, Path):
        return user_path(value)
    return tuple(_resolved(v) for v in value) if isinstance(value, list | tuple) else value


def field_assignments(items: Sequence[str], option: str, objects: bool = False) -> dict[str, Any]:
    """``FIELD=VALUE`` items (``--set``, ``--variants``) as config fields: each value a JSON number (with
    a point: a float) or, with ``objects``, a JSON object (``pixel_kwargs={"channels": 16}``)."""
    kinds = (int, float, dict) if objects else (int, float)
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not re.fullmatch(r"\w+", key) or not isinstance(parsed, kinds) or isinstance(parsed, bool):
            expected = "FIELD=NUMBER or FIELD=JSON-OBJECT" if objects else "FIELD=NUMBER"
            raise ValueError(f"{option} {item!r}: expected {expected}")
        out[key] = parsed
    return out


def parse_args(
    cls: type[T], argv: Sequence[str] | None = None, quick: Preset | None = None, prog: str | None = None
) -> T:
    """``argv`` (default: this process's arguments) parsed into a ``cls``: its defaults, then the
    ``quick`` preset where ``--quick`` is given (a mapping of field values, or a function returning
    one, called only then), then the options given in ``argv``."""
    parser = build_parser(cls, prog)
    given = vars(parser.parse_args(argv))
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    if given.get("quick") and quick is not None:
        values |= quick() if callable(quick) else quick
    values |= given
    try:
        args = cls(**{name: _resolved(value) for name, value in values.items()})
        for name in WRITTEN:  # checked before hours of work, not at their end
            if isinstance(getattr(args, name, None), Path):
                check_writable(getattr(args, name), f"--{name.replace('_', '-')} folder")
    except ValueError as exc:
        parser.error(str(exc))
    return args
