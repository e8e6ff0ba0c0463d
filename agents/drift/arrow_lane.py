"""The drift agent's Arrow lane: an Arrow IPC message counted straight from its columns.

An Arrow message's features already are columns: numbers as float64 arrays
(nulls as NaN, no Python objects), categories as integer codes into a
dictionary, counted with ``bincount`` (``streams.batch.Categories``). This
lane hands them to the drift monitor as they are, after checking, column by
column, everything the event model checks row by row.

It takes a message only when every row would pass validation as JSON, so a
message's reports never depend on the lane; any doubt sends the whole message
the usual way (``agents.inputs.codec``: the rows as the JSON form's events, validated
one by one, a bad row dead-lettered by itself). The lane takes a message when:

* it is a readable IPC stream of at least one row, within the size limit;
* ``model`` (and, on ``predictions``, ``model_version``) is one non-null value
  of 1-200 characters in every row, the model the message key names;
  ``request_id`` is non-null, 1-200 characters, in every row; on ``features`` a
  ``model_version`` column is either absent or one non-null value everywhere;
* ``ts`` is a timestamp or a number of epoch seconds, never null or non-finite
  (``schemas.arrow.times_ms``);
* on ``predictions``: ``prediction`` is non-null, a boolean, number or string;
  ``score`` numbers, finite where not null; ``latency_ms`` numbers >= 0 where not
  null; ``variant`` one of the contract's where not null; ``error`` booleans;
  no ``probabilities``, and ``segment`` absent, null or strings (others: the usual way);
* ``features`` is a struct column without null rows (absent on predictions: no
  features) whose children are numbers, booleans, strings or dictionary-encoded
  strings, none of them named as PII by the policy (pseudonymised the usual way).

Columns the contract does not name are ignored, as JSON ignores extra fields.
``decode_many`` reads consecutive messages of one schema as one table.
Bound: nothing kept between calls.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agents.drift.columns import Columns
from agents.inputs.codec import Origin
from schemas import arrow
from schemas.events import PredictionEvent, Variant
from streams.batch import Categories, Column, FeatureBatch
from streams.drift.state import PREDICTION, SCORE

#: The longest model name, version and request id (schemas.events.Name).
MAX_NAME = 200
_VARIANTS = pa.array(get_args(Variant))


class ArrowLane:
    """Arrow messages of one topic's event model into the drift monitor's columns."""

    def __init__(self, model: type, *, max_message_bytes: int, pii: Collection[str] = ()) -> None:
        self.outputs = model is PredictionEvent  # predictions carry score and prediction
        self.max_message_bytes = max_message_bytes
        self.pii = frozenset(pii)

    def decode(self, raw: bytes | None, origin: Origin) -> Columns | None:
        """The message's columns, or None when it must take the usual way."""
        if not arrow.is_arrow(raw) or len(raw or b"") > self.max_message_bytes:
            return None
        try:
            table = arrow.read(raw or b"")
            return self._columns(table, origin) if table.num_rows else None
        except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError):
            return None  # the usual way says what is wrong

    def decode_many(self, raws: list[bytes | None], origin: Origin) -> list[Columns] | None:
        """Consecutive messages of one key and one schema, checked and read as one table
        (a few dozen Arrow calls for all of them instead of for each), then cut back
        into each message's columns. None when any of them must take the usual way,
        or they differ in schema: then each is decoded by itself (``decode``). The
        checks hold for every row of the table exactly when they hold for every row
        of each message (one model, the key's, in all of them)."""
        if not all(arrow.is_arrow(r) and len(r or b"") <= self.max_message_bytes for r in raws):
            return None
        try:
            tables = [arrow.read(r or b"") for r in raws]
            schema = tables[0].schema
            if not all(t.num_rows for t in tables) or any(
                not t.schema.equals(schema) for t in tables[1:]
            ):
                return None
            whole = self._columns(pa.concat_tables(tables), origin)
        except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError):
            return None
        if whole is None:
            return None
        ends = np.cumsum([t.num_rows for t in tables]).tolist()
        return [
            Columns(model=whole.model, version=whole.version, batch=whole.batch.slice(a, b))
            for a, b in zip([0, *ends[:-1]], ends, strict=True)
        ]

    def _columns(self, table: pa.Table, origin: Origin) -> Columns | None:
        names = set(table.column_names)
        model = _one_name(table, "model")
        if model is None or (origin.key is not None and origin.key != model.encode()):
            return None
        if not _names(table, "request_id"):
            return None
        version = None
        if self.outputs or "model_version" in names:
            version = _one_name(table, "model_version")
            if version is None:
                return None
        ts_ms = arrow.times_ms(table.column(arrow.TIME)) if arrow.TIME in names else None
        if ts_ms is None:
            return None
        columns: dict[str, Column] = {}
        if "features" in names:
            features = _features(table.column("features"), self.pii)
            if features is None:
                return None
            columns.update(features)
        elif not self.outputs:
            return None  # FeatureEvent: features are required
        if self.outputs:
            outputs = _outputs(table, names)
            if outputs is None:
                return None
            columns.update(outputs)
        batch = FeatureBatch(ts_ms=ts_ms, columns=columns)
        return Columns(model=model, version=version, batch=batch)


def _names(table: pa.Table, name: str) -> bool:
    """True when column ``name`` is text of 1-200 characters in every row.

    Its bytes are counted first (the string offsets' differences, no decoding): 1-200
    bytes are 1-200 characters, as a character is 1-4 bytes; only a column with a
    name longer than 200 bytes has its characters counted."""
    if name not in table.column_names:
        return False
    column = _text_chunks(table.column(name))
    if column is None or column.null_count:
        return False
    return _within(pc.binary_length(column)) or _within(pc.utf8_length(column))


def _within(lengths: pa.ChunkedArray) -> bool:
    extremes = pc.min_max(lengths).as_py()
    return extremes["min"] is not None and extremes["min"] >= 1 and extremes["max"] <= MAX_NAME


def _one_name(table: pa.Table, name: str) -> str | None:
    """The one value of column ``name`` if it is the same valid name in every row
    (then only that one value's length needs checking)."""
    if name not in table.column_names:
        return None
    column = _text_chunks(table.column(name))
    if column is None or column.null_count or not len(column):
        return None
    first = column[0].as_py()
    if not 1 <= len(first) <= MAX_NAME:
        return None
    return first if pc.all(pc.equal(column, first)).as_py() else None


def _text_chunks(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A text column as string chunks, dictionaries decoded, not copied into one array
    (a batch of messages is many chunks); None for another type."""
    kind = column.type
    if _is_text_dictionary(kind):
        return pa.chunked_array([c.dictionary_decode() for c in column.chunks], kind.value_type)
    return column if _is_text(kind) else None


def _is_text_or_dictionary(kind: pa.DataType) -> bool:
    return _is_text(kind) or _is_text_dictionary(kind)


def _is_text_dictionary(kind: pa.DataType) -> bool:
    return bool(pa.types.is_dictionary(kind) and _is_text(kind.value_type))


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _features(column: pa.ChunkedArray, pii: frozenset[str]) -> dict[str, Column] | None:
    """The struct's children as the monitor's columns, or None (the usual way). Each
    child is read across the column's chunks (one per message of a batch) into one
    numpy array, without first copying the whole struct into one."""
    kind = column.type
    if not pa.types.is_struct(kind) or column.null_count:
        return None
    out: dict[str, Column] = {}
    for index in range(kind.num_fields):
        field = kind.field(index)
        if field.name in pii or field.name in out:
            return None
        values = _feature(pa.chunked_array([c.field(index) for c in column.chunks], field.type))
        if values is None:
            return None
        out[field.name] = values
    return out


def _feature(child: pa.ChunkedArray) -> Column | None:
    """One feature: numbers as float64 (NaN: null), text and booleans as Categories;
    a feature null in every row as Nones (as JSON would give it); None: another type."""
    n = len(child)
    kind = child.type
    if child.null_count == n:
        return [None] * n
    if _is_number(kind):
        return np.asarray(child.to_numpy(), dtype=np.float64)
    return _categories(child.combine_chunks())


def _categories(child: pa.Array) -> Categories | None:
    kind = child.type
    if pa.types.is_boolean(kind):
        codes = np.where(pc.fill_null(child, False).to_numpy(zero_copy_only=False), 1, 0)
        return Categories(_nulls_as_minus_one(codes, child), ("false", "true"))
    if _is_text(kind):
        child = child.dictionary_encode()
    elif not _is_text_dictionary(kind):
        return None
    names = tuple(child.dictionary.to_pylist())
    if None in names or len(set(names)) != len(names):
        return None  # a dictionary with a null or a repeated name: the usual way
    codes = child.indices.fill_null(0).to_numpy(zero_copy_only=False)
    return Categories(_nulls_as_minus_one(codes, child), names)


def _nulls_as_minus_one(codes: Any, child: pa.Array) -> Any:
    codes = np.asarray(codes, dtype=np.int32)
    if child.null_count:
        codes = codes.copy()
        codes[child.is_null().to_numpy(zero_copy_only=False)] = -1
    return codes


def _outputs(table: pa.Table, names: set[str]) -> dict[str, Column] | None:
    """``score`` and ``prediction`` as the monitor's columns, after the checks of the
    other optional fields of PredictionEvent; None: the usual way."""
    if "probabilities" in names and table.column("probabilities").null_count < table.num_rows:
        return None
    if "segment" in names and not _segment_ok(table.column("segment")):
        return None
    if "error" in names:
        kind = table.column("error").type
        if not (pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            return None
    if "variant" in names:
        variant = _text_chunks(table.column("variant"))
        if (
            variant is None
            or not pc.all(
                pc.or_kleene(pc.is_null(variant), pc.is_in(variant, value_set=_VARIANTS))
            ).as_py()
        ):
            return None
    if "latency_ms" in names and not _numbers(table.column("latency_ms"), low=0.0):
        return None
    out: dict[str, Column] = {}
    n = table.num_rows
    if "score" in names:
        score = table.column("score").combine_chunks()
        if score.null_count < n:
            if not _numbers(score, low=None):
                return None
            out[SCORE] = np.asarray(score.to_numpy(zero_copy_only=False), dtype=np.float64)
    if "prediction" not in names:
        return None
    prediction = table.column("prediction").combine_chunks()
    if prediction.null_count:
        return None
    if _is_number(prediction.type):
        out[PREDICTION] = np.asarray(prediction.to_numpy(zero_copy_only=False), np.float64)
    else:
        categories = _categories(prediction)
        if categories is None:
            return None
        out[PREDICTION] = categories
    return out


def _numbers(column: pa.ChunkedArray | pa.Array, *, low: float | None) -> bool:
    """True for a numeric column whose non-null values are finite (and >= ``low``)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type) or column.null_count == len(column):
        return True
    if not _is_number(column.type):
        return False
    values = np.asarray(column.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)
    return bool(np.isfinite(values).all() and (low is None or (values >= low).all()))


def _segment_ok(column: pa.ChunkedArray) -> bool:
    """A segment column the model accepts: all null, or a struct without null rows of
    text children without nulls (``dict[str, str]``): types and null counts only."""
    if column.null_count == len(column):
        return True
    kind = column.type
    if not pa.types.is_struct(kind) or column.null_count:
        return False
    return all(
        _is_text_or_dictionary(kind.field(i).type)
        and not any(chunk.field(i).null_count for chunk in column.chunks)
        for i in range(kind.num_fields)
    )
