"""One check for the three dataclasses built from user mappings (MelConfig,
load_model options, TrainConfig): an unknown key is an error that lists the
known ones, never silently ignored."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def reject_unknown(cls: type, d: Mapping[str, Any], what: str, error: type[Exception] = ValueError) -> None:
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise error(f"unknown {what} {unknown}; known: {known}")
