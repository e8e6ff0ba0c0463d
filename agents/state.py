"""Encoding of kernel state for Faust tables: compact JSON bytes via orjson."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(state: Any) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)
