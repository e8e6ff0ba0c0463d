"""Encoding of kernel state for Faust tables: MessagePack, read back exactly.

A state is a value of plain dicts, lists, numbers and strings (``streams`` kernels
keep nothing else; numpy arrays and scalars are written as lists and numbers).
MessagePack keeps a float in 9 bytes and a small integer in 1 to 3 where JSON
takes up to 24 and 6: a drift version's warm-up state of 25 features (sketches
and multivariate moments) is about 37 KB instead of 66 KB as JSON, written and
read in the same time (msgspec). It also keeps infinities and NaN, which JSON
wrote as null; the kernels read both alike.

The bytes start with ``MARKER`` (0xc1, the one byte MessagePack never uses), so
state written as JSON by earlier versions (``orjson``; its text never starts
with that byte) still reads as it always did. A worker of an earlier version
cannot read state written by this one: roll back with its table's changelog
replaced (``driftline replay``), not over it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import orjson

#: The first byte of every state written by this codec.
MARKER = b"\xc1"


def _enc_hook(value: Any) -> Any:
    """numpy values as lists and numbers (as the JSON codec before wrote them)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode a {type(value).__name__} in a state")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder()


def dumps(state: Any) -> bytes:
    return MARKER + _encoder.encode(state)


def loads(raw: bytes | None) -> Any:
    """The state ``dumps`` wrote, or JSON an earlier version wrote; None for None."""
    if raw is None:
        return None
    if raw[:1] == MARKER:
        return _decoder.decode(memoryview(raw)[1:])
    return orjson.loads(raw)
