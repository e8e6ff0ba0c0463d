"""Durations in the policy file: ``"5m"``-style strings held as milliseconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(value: Any) -> int:
    """``"5m"`` -> 300000. Plain numbers are seconds.

    >>> parse_duration_ms("90s"), parse_duration_ms("1.5h"), parse_duration_ms(2)
    (90000, 5400000, 2000)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a finite, non-negative number of seconds")
        return int(value * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(float(match.group(1)) * _UNITS_MS[match.group(2)])
    raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h")


def format_duration_ms(ms: int) -> str:
    """The inverse of :func:`parse_duration_ms`, so a dumped policy reloads unchanged.

    >>> format_duration_ms(300_000), format_duration_ms(1500)
    ('5m', '1500ms')
    """
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# Held as milliseconds; written as "5m"-style strings, so dump -> load round-trips.
# Plain numbers in a policy file are seconds.
DurationMs = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": _DURATION.pattern}, {"type": "number"}],
            "description": "a duration like 30s, 5m, 1h; a plain number is seconds",
        }
    ),
]
