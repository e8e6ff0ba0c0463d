"""Apache Arrow IPC streams: the columnar form of ``predictions``, ``features`` and ``labels``.

A message may carry, instead of JSON, the bytes of an Arrow IPC *stream* (the
format ``pyarrow.ipc.new_stream``, Java's ``ArrowStreamWriter`` and Go's
``ipc.NewWriter`` write) holding one or more record batches of one schema.
Producers set the Kafka header ``content-type: application/vnd.apache.arrow.stream``
for the consumers that need it; driftline itself recognises the form by its
first bytes (an IPC stream starts with the continuation marker ``0xFFFFFFFF``,
which no JSON text can start with), so a message read back by ``replay``,
``backfill`` or from a dump without its headers is read the same way.

Columns are the events' fields by their JSON names. ``ts`` is a timestamp (any
unit, with or without a time zone: naive is UTC) or a number of epoch seconds;
``features`` (and ``segment``) is a struct column whose children are the
features: numbers of any integer or float type, categories as strings or
dictionary-encoded strings, booleans. A null is an absent value. Each row is
validated exactly as the same event sent as JSON (``rows``), so the form never
changes what is accepted, refused or counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from schemas import fast_rows
from schemas.events import event_time_ms

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
#: The Kafka header a producer sets on an Arrow message.
HEADER = ("content-type", CONTENT_TYPE.encode())
#: The first bytes of every Arrow IPC stream (the continuation marker).
MAGIC = b"\xff\xff\xff\xff"
#: The columns read as event time; ``ts_ms`` is how the decoders carry it.
TIME = "ts"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


def is_arrow(raw: bytes | None) -> bool:
    """True when ``raw`` is (or claims to be) an Arrow IPC stream.

    >>> is_arrow(to_ipc([{"request_id": "r", "model": "m", "ts": 0, "label": 1}]))
    True
    >>> is_arrow(b'{"events": []}'), is_arrow(None)
    (False, False)
    """
    return raw is not None and raw[:4] == MAGIC


def read(raw: bytes) -> pa.Table:
    """The message's record batches as one table; ``pa.ArrowException`` or ``OSError``
    (pyarrow's error for a broken flatbuffer) when the bytes are not a readable stream."""
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()


def times_ms(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64] | None:
    """Epoch milliseconds of an event-time column, read as pydantic reads ``ts``: a
    timestamp floored to the millisecond, a number as epoch seconds (milliseconds
    above 2e10, ``fast_rows.epoch_ms``). None when the column has nulls or another type.

    >>> times_ms(pa.array([1_800_000_000.5, 2.0])).tolist()
    [1800000000500, 2000]
    >>> times_ms(pa.array([1_800_000_000_123_456_789], pa.timestamp("ns"))).tolist()
    [1800000000123]
    """
    if column.null_count:
        return None
    kind = column.type
    if pa.types.is_timestamp(kind):
        ticks = _numpy(column.cast(pa.int64()))
        per_ms = _PER_MS[kind.unit]
        return ticks * 1000 if per_ms is None else ticks // per_ms
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = _numpy(column).astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            return None
        return fast_rows.epoch_ms(values)
    return None


def rows(table: pa.Table, *, times: list[Any] | None = None) -> list[dict[str, Any]]:
    """The table's rows as the JSON form's events (``{"field": value}``), built column by
    column (a fifth of ``to_pylist``'s time). A null field is left out (absent); a null
    feature stays (a feature without a value); structs and maps become dicts,
    dictionary-encoded strings strings. A timestamp ``ts`` becomes the datetime of its
    millisecond (exact, any unit), or the value given in ``times`` (one per row).

    >>> rows(pa.table({"a": [1, None], "f": [{"x": None}, {"x": "u"}]}))
    [{'f': {'x': None}, 'a': 1}, {'f': {'x': 'u'}}]
    """
    n = table.num_rows
    dense: list[tuple[str, list[Any]]] = []
    sparse: list[tuple[str, list[Any]]] = []
    for name in table.column_names:
        column = table.column(name)
        kind = column.type
        if name == TIME and times is not None:
            values: list[Any] = times
        elif name == TIME and pa.types.is_timestamp(kind):
            per_ms = _PER_MS[kind.unit]
            values = [
                None
                if t is None
                else _EPOCH + timedelta(milliseconds=t * 1000 if per_ms is None else t // per_ms)
                for t in column.cast(pa.int64()).to_pylist()
            ]
        else:
            values = column.to_pylist()
            if pa.types.is_map(kind):  # to_pylist gives (key, value) pairs; JSON has objects
                values = [None if v is None else dict(v) for v in values]
        (sparse if None in values else dense).append((name, values))
    names = [name for name, _ in dense]
    out = (
        [dict(zip(names, row, strict=True)) for row in zip(*(v for _, v in dense), strict=True)]
        if dense
        else [{} for _ in range(n)]
    )
    for name, values in sparse:  # an Arrow column has a value for every row: null is absent
        for event, value in zip(out, values, strict=True):
            if value is not None:
                event[name] = value
    return out


def _numpy(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    out: npt.NDArray[Any] = column.to_numpy(zero_copy_only=False)
    return out


# -- writing: the simulator, the bench, tests and the README's producer ----------


def to_table(events: Sequence[Mapping[str, Any]], *, categories: str = "dictionary") -> pa.Table:
    """Events (the JSON form's dicts) as one Arrow table: ``ts`` as ``timestamp[ms, UTC]``
    (the event's time exactly, as the JSON form reads it), ``features`` and ``segment``
    as structs whose children are the features, strings among them dictionary-encoded
    unless ``categories="string"``.

    >>> t = to_table([{"request_id": "r", "model": "m", "ts": 1.5, "features": {"a": "x"}}])
    >>> str(t.schema.field("ts").type), str(t.schema.field("features").type)
    ('timestamp[ms, tz=UTC]', 'struct<a: dictionary<values=string, indices=int32, ordered=0>>')
    """
    if categories not in ("dictionary", "string"):
        raise ValueError('categories must be "dictionary" or "string"')
    names: dict[str, None] = {}
    for event in events:
        names.update(dict.fromkeys(event))
    arrays: dict[str, pa.Array] = {}
    for name in names:
        values = [event.get(name) for event in events]
        if name == TIME:
            ms = [None if v is None else event_time_ms(v) for v in values]
            arrays[name] = pa.array(ms, pa.timestamp("ms", tz="UTC"))
        elif name in ("features", "segment"):
            arrays[name] = _struct(values, dictionary=categories == "dictionary")
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _struct(values: list[Any], *, dictionary: bool) -> pa.Array:
    """Per-event feature dicts as one struct column (an absent feature is null)."""
    children: dict[str, None] = {}
    for value in values:
        children.update(dict.fromkeys(value or ()))
    if not children:
        return pa.array([None if v is None else {} for v in values], pa.struct([]))
    arrays, fields = [], []
    for child in children:
        column = pa.array([None if v is None else v.get(child) for v in values])
        if dictionary and pa.types.is_string(column.type):
            column = column.dictionary_encode()
        arrays.append(column)
        fields.append(pa.field(child, column.type))
    mask = pa.array([v is None for v in values])
    return pa.StructArray.from_arrays(arrays, fields=fields, mask=mask)


def to_ipc(
    events: Sequence[Mapping[str, Any]] | pa.Table,
    *,
    batch_rows: int | None = None,
    categories: str = "dictionary",
) -> bytes:
    """One Arrow IPC stream of the events (``to_table``), in record batches of at most
    ``batch_rows`` rows (one batch when None)."""
    table = events if isinstance(events, pa.Table) else to_table(events, categories=categories)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return bytes(sink.getvalue().to_pybytes())
