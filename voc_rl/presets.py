"""Size presets of frozen config dataclasses: ``tiny`` (tests), ``small`` (the CPU default), ``base``."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def from_preset(
    config_cls: type[C],
    presets: dict[str, dict[str, Any]],
    size: str,
    fields: dict[str, Any],
    what: str,
    label: str = "fields",
) -> C:
    """``config_cls`` with the preset ``size``'s values, then ``fields``; ``what`` names it in errors."""
    if size not in presets:
        raise ValueError(f"unknown size {size!r} for {what}; choose from {', '.join(presets)}")
    known = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"{what} has no {label} {sorted(unknown)}; fields: {sorted(known)}")
    return config_cls(**{**presets[size], **fields})
