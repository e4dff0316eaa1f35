"""Field types of the config dataclasses, checked where a config is made (from Python, a command-line
option or a saved file): ints are ints, floats finite numbers, strings strings, ``None`` only where the field
allows it; a JSON list becomes the tuple a field declares. Ranges stay with each config's own
``__post_init__``, which calls :func:`check_fields` first."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config field of the wrong type, an unknown field, or an option value that cannot be parsed."""


class _Mismatch(Exception):
    pass


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping (a JSON object)"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as a field of type ``tp`` (an int for a float field becomes a float, a list for a
    tuple field a tuple); :class:`_Mismatch` where it is not one."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(arg, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)  # (a NumPy integer too)
        raise _Mismatch
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            raise _Mismatch
        each = args[0] if args and (origin is list or args[-1] is Ellipsis) else None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Mismatch
            items = [_coerce(a, v) for a, v in zip(args, value, strict=True)]
        else:
            items = [v if each is None else _coerce(each, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # a type this check does not know: left to the config


def check_fields(config: Any) -> None:
    """Check (and normalise: int -> float, list -> tuple) every field of the dataclass ``config``
    against its annotation; :class:`ConfigError` names the field, the expected type and the value."""
    cls, hints = type(config), _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        try:
            fixed = _coerce(hints[f.name], value)
        except _Mismatch:
            raise ConfigError(
                f"{cls.__name__}.{f.name} must be {_describe(hints[f.name])}, got {value!r} "
                f"({type(value).__name__})"
            ) from None
        if fixed is not value:
            object.__setattr__(config, f.name, fixed)


def check_known(cls: type, fields: typing.Iterable[str]) -> None:
    """Refuse field names ``cls`` (a config dataclass) does not have, with the nearest names."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        near = {u: difflib.get_close_matches(u, names, n=1) for u in unknown}
        said = ", ".join(f"{u!r}" + (f" (did you mean {n[0]!r}?)" if n else "") for u, n in near.items())
        raise ConfigError(f"unknown {cls.__name__} field(s) {said}; fields: {', '.join(names)}")


def parse_field(cls: type, name: str, text: str) -> Any:
    """The value of the command-line option ``--NAME TEXT`` for field ``name`` of ``cls`` (see
    :func:`voc_rl.args.add_config_options`), parsed by the field's type: a
    string field takes the text as it is, ``none``/``null`` is None where the field allows it,
    anything else is read as JSON (3000, 0.99, true, [\"a\"], {\"depth\": 2}); the type itself is
    checked when the config is made."""
    check_known(cls, [name])
    tp = _hints(cls)[name]
    allowed = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    if type(None) in allowed and text.strip().lower() in ("none", "null"):
        return None
    if str in allowed or (get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp))):
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise ConfigError(
            f"--{name.replace('_', '-')} {text}: {cls.__name__}.{name} must be {_describe(tp)}; "
            f"{text!r} is not one"
        ) from None
