"""Decode input messages: one event, or a ``{"events": [...]}`` batch of them.

Events are validated against the public models (``schemas.events``) and come
out as plain dicts: optional fields may be absent (read them with ``.get``),
and every row carries ``ts_ms``, its event time in epoch milliseconds, the one
to compute with (``ts`` is as validated: a datetime, or the number or text as
sent when the fast path took the message).

Two paths, one contract. Predictions, features and labels first go through
their msgspec twins (``schemas.fast_rows``): parse and validate in one pass at
JSON speed, accepting only what the pydantic model accepts, with the same
values. A message msgspec refuses, for whatever reason, is validated again by
pydantic into dicts (``row_type``), event by event if need be: that path
decides what is invalid and says why. Each event is validated on its own.
A message that cannot be read at all becomes one DeadLetter holding its exact
bytes; an invalid event inside a batch becomes a DeadLetter holding that event
(re-encoded as JSON) and its position, while the valid events of the same
batch go on.

The drift agent has a third way for regular batches, straight into columns
(``agents.drift.columns``); what it takes, this codec reads the same.

A message may also be an Apache Arrow IPC stream (``schemas.arrow``): its rows
become the JSON form's events, built column by column and validated by the
msgspec twins (``msgspec.convert``), or, when they refuse any, by pydantic as
above, row by row (a bad row's dead letter holds the row as JSON and its index). Arrow batches
the drift agent can count without looking at each row take its columnar lane
(``agents.drift.arrow_lane``); the rest take this one.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
from pydantic import BaseModel, TypeAdapter, ValidationError

from agents.inputs.pii import Pseudonymizer
from schemas import arrow, fast_rows
from schemas.errors import explain
from schemas.events import EventTime, datetime_ms, row_type
from schemas.reports import DeadLetter

E = TypeVar("E", bound=BaseModel)
Row = dict[str, Any]
#: ``MODEL(row)`` is the row's model: ``map(MODEL, rows)`` reads them at C speed.
MODEL = itemgetter("model")


@dataclass(frozen=True)
class Origin:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass
class Decoded:
    events: list[Row] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: position of each valid event in its batch (equal length to ``events``)
    positions: list[int] = field(default_factory=list)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


#: The raw bytes a dead letter holds whole; of a larger message, its first this many.
#: A dead letter must fit what the worker's producer sends (its max request:
#: DRIFTLINE_MAX_MESSAGE_BYTES or 1 MiB, whichever is more, + 64 KiB; agents.app) and
#: what a broker with Apache Kafka's defaults stores (message.max.bytes, about 1 MB):
#: at most 1 MiB whatever the settings. Base64 makes 256 KiB into 341 KiB; ``event``
#: (an invalid event decoded) can hold as much again as JSON; the error is bounded by
#: ERROR_CHARS: about 600 KiB at most, well inside both. A larger message stays whole on
#: its input topic (at ``topic``/``partition``/``offset``, while retention lasts):
#: ``driftline deadletter fetch`` gets it, checked against ``raw_size``/``raw_sha256``.
RAW_LIMIT_BYTES = 256 * 1024
#: the longest error sentence a dead letter keeps (an exception's text can be huge)
ERROR_CHARS = 4000


def dead_letter(
    origin: Origin,
    error: str,
    raw: bytes,
    *,
    agent: str,
    index: int | None = None,
    event: Any = None,
    raw_limit: int = RAW_LIMIT_BYTES,
) -> DeadLetter:
    """A DeadLetter for ``raw`` from ``origin``: the bytes whole up to ``raw_limit``
    (RAW_LIMIT_BYTES), else their first ``raw_limit`` bytes and no ``event``
    (``raw_truncated``); their full length and SHA-256 always."""
    truncated = len(raw) > raw_limit
    if len(error) > ERROR_CHARS:
        error = f"{error[:ERROR_CHARS]}... ({len(error) - ERROR_CHARS} more characters)"
    return DeadLetter(
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        key=origin.key.decode("utf-8", "replace") if origin.key is not None else None,
        error=error,
        index=index,
        raw=base64.b64encode(raw[:raw_limit] if truncated else raw).decode("ascii"),
        event=None if truncated else event,
        agent=agent,
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        raw_truncated=truncated,
    )


class Codec(Generic[E]):
    """Validating decoder for one input topic's event type."""

    def __init__(
        self,
        model: type[E],
        *,
        max_message_bytes: int,
        agent: str,
        pii: Pseudonymizer | None = None,
    ) -> None:
        self.model = model
        self.pii = pii  # fields named as PII in the policy, replaced after validation
        self.max_message_bytes = max_message_bytes
        self.agent = agent
        row = row_type(model)
        self._many: TypeAdapter[list[Row]] = TypeAdapter(list[row])  # type: ignore[valid-type]
        self._one: TypeAdapter[Row] = TypeAdapter(row)
        self._fast = fast_rows.decoders(model)
        self._twin = fast_rows.ROWS.get(model, (None,))[0]  # for Arrow rows (msgspec.convert)
        self._hint = (
            f'send one {model.__name__} JSON object or {{"events": [...]}} of them '
            "(JSON Schema: `driftline schemas export`)"
        )

    def decode(self, raw: bytes | None, origin: Origin) -> Decoded:
        out = self._decode(raw, origin)
        if self.pii:
            self.pii.apply(out.events)
        return out

    def _decode(self, raw: bytes | None, origin: Origin) -> Decoded:
        form = "Arrow" if arrow.is_arrow(raw) else "JSON"
        if raw and form == "JSON" and self._fast is not None and (
                len(raw) <= self.max_message_bytes):
            rows = self._decode_fast(raw)
            if rows is not None:
                return Decoded(events=rows, positions=list(range(len(rows))))
        if raw and form == "Arrow" and self._twin is not None and (
                len(raw) <= self.max_message_bytes):
            rows = self._arrow_fast(raw)
            if rows is not None:
                return Decoded(events=rows, positions=list(range(len(rows))))
        out = Decoded()
        items = self._items(raw or b"", origin, out)
        if items is None:
            return out
        try:
            out.events = self._many.validate_python(items)
            out.positions = list(range(len(items)))
            for event in out.events:
                event["ts_ms"] = datetime_ms(event["ts"])
            return out
        except ValidationError:
            pass  # find the bad ones one by one; the good ones go on
        for index, item in enumerate(items):
            try:
                event = self._one.validate_python(item)
                event["ts_ms"] = datetime_ms(event["ts"])
                out.events.append(event)
                out.positions.append(index)
            except ValidationError as exc:
                where = (f"row {index} of the Arrow stream" if form == "Arrow"
                         else f"event {index} of the batch" if len(items) > 1 else "the event")
                why = explain(exc, where_empty="(event)", limit=5)
                out.dead.append(
                    dead_letter(
                        origin,
                        f"{where} is not a valid {self.model.__name__}: {why}",
                        orjson.dumps(item),
                        agent=self.agent,
                        index=index,
                        event=item,
                    )
                )
        return out

    def _decode_fast(self, raw: bytes) -> list[Row] | None:
        """The message's rows if msgspec accepts all of it, else None (pydantic decides)."""
        batch, single = self._fast  # type: ignore[misc]
        try:
            rows: list[Row] = batch.decode(raw)["events"]
        except (msgspec.MsgspecError, ValueError):  # ValueError: bad UTF-8
            if b'"events"' in raw:  # a batch with a bad event: the slow path finds it
                return None
            try:
                rows = [single.decode(raw)]
            except (msgspec.MsgspecError, ValueError):  # ValueError: bad UTF-8
                return None
        millis = event_times_ms([row["ts"] for row in rows])
        if millis is None:
            return None
        for row, ms in zip(rows, millis.tolist(), strict=True):
            row["ts_ms"] = ms
        return rows

    def _arrow_fast(self, raw: bytes) -> list[Row] | None:
        """An Arrow message's rows if msgspec's twin accepts every one (then pydantic
        would: ``schemas.fast_rows``), else None (pydantic decides, row by row). A
        timestamp ``ts`` is given as epoch seconds; ``ts_ms`` is exact either way."""
        try:
            table = arrow.read(raw)
        except (pa.ArrowException, OSError, ValueError, OverflowError):
            return None
        if arrow.TIME not in table.column_names:
            return None
        millis = arrow.times_ms(table.column(arrow.TIME))
        if millis is None:
            return None
        timestamps = pa.types.is_timestamp(table.schema.field(arrow.TIME).type)
        try:
            rows: list[Row] = msgspec.convert(
                arrow.rows(table, times=(millis / 1000).tolist() if timestamps else None),
                list[self._twin])  # type: ignore[name-defined]
        except (msgspec.ValidationError, TypeError, ValueError):
            return None
        for row, ms in zip(rows, millis.tolist(), strict=True):
            row["ts_ms"] = ms
        return rows

    def _items(self, raw: bytes, origin: Origin, out: Decoded) -> list[Any] | None:
        def refuse(reason: str) -> None:
            out.dead.append(dead_letter(origin, reason, raw, agent=self.agent))

        if not raw:
            refuse(f"the message is empty; {self._hint}")
            return None
        if len(raw) > self.max_message_bytes:
            refuse(
                f"the message is {len(raw)} bytes, over the limit of {self.max_message_bytes} "
                "(DRIFTLINE_MAX_MESSAGE_BYTES); split it into smaller batches"
            )
            return None
        if arrow.is_arrow(raw):
            return self._arrow_rows(raw, refuse)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            refuse(f"the message is not valid UTF-8 JSON ({exc}); {self._hint}")
            return None
        if isinstance(doc, dict) and "events" in doc:
            events = doc["events"]
            if not isinstance(events, list):
                refuse(f'"events" must be an array, got a JSON {json_type(events)}; {self._hint}')
                return None
            return events
        if isinstance(doc, dict):
            return [doc]
        refuse(f"the message is a JSON {json_type(doc)}, not an object; {self._hint}")
        return None

    def _arrow_rows(self, raw: bytes, refuse: Any) -> list[Any] | None:
        """The rows of an Arrow IPC stream as the JSON form's events; None (and the
        whole message dead-lettered) when the stream cannot be read."""
        try:
            return arrow.rows(arrow.read(raw))
        except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:
            refuse(f"the message starts as an Apache Arrow IPC stream but cannot be read "
                   f"({type(exc).__name__}: {exc}); write one stream of record batches of "
                   f"{self.model.__name__} columns (pyarrow.ipc.new_stream; "
                   "`driftline schemas export` writes the Arrow schema)")
            return None


_EVENT_TIMES: TypeAdapter[list[datetime]] = TypeAdapter(list[EventTime])


def event_times_ms(stamps: list[float | str]) -> npt.NDArray[np.int64] | None:
    """Epoch milliseconds of event times as msgspec decoded them: numbers read as
    pydantic reads them, text parsed by pydantic; None if pydantic refuses a text one."""
    if str not in set(map(type, stamps)):  # the common case, checked at C speed
        return fast_rows.epoch_ms(stamps)
    millis = _text_times(stamps)
    return None if millis is None else np.asarray(millis, dtype=np.int64)


def _text_times(stamps: list[float | str]) -> list[int] | None:
    """Event times, numbers and text mixed, in epoch milliseconds; None if pydantic
    refuses a text one."""
    texts = [(i, s) for i, s in enumerate(stamps) if isinstance(s, str)]
    try:
        parsed = _EVENT_TIMES.validate_python([s for _, s in texts])
    except ValidationError:
        return None
    numbers = np.array([0.0 if isinstance(s, str) else s for s in stamps], dtype=np.float64)
    millis = fast_rows.epoch_ms(numbers).tolist()
    for (i, _), when in zip(texts, parsed, strict=True):
        millis[i] = datetime_ms(when)
    return millis


def keyed_events(decoded: Decoded, origin: Origin, *, agent: str) -> list[Row]:
    """The decoded events whose model matches the message key; the others go to
    ``decoded.dead``. A model's windows and joins live on the partition its key
    picks, so an event filed under another model's key cannot be counted."""
    if origin.key is None:
        return decoded.events
    key = origin.key.decode("utf-8", "replace")
    if set(map(MODEL, decoded.events)) <= {key}:  # the usual case, checked at C speed
        return decoded.events
    kept: list[Row] = []
    for index, event in zip(decoded.positions, decoded.events, strict=True):
        if event["model"] == key:
            kept.append(event)
            continue
        raw = orjson.dumps(event)  # datetimes as RFC 3339 strings
        decoded.dead.append(
            dead_letter(
                origin,
                f"event {index} of the message is for model {event['model']!r} but the "
                f"message key is {key!r}; key each message by its events' model so a "
                "model's windows live on one partition",
                raw,
                agent=agent,
                index=index,
                event=orjson.loads(raw),
            )
        )
    return kept


def decode_one(
    model: type[E], raw: bytes | None, origin: Origin, *, agent: str
) -> tuple[E | None, DeadLetter | None]:
    """One JSON object of ``model`` (reports, commands), or the dead letter saying why not."""
    if not raw:
        return None, dead_letter(
            origin,
            f"empty message; expected one {model.__name__} JSON object",
            raw or b"",
            agent=agent,
        )
    try:
        return model.model_validate_json(raw), None
    except ValidationError as exc:
        why = explain(exc, where_empty="(message)", limit=5)
        return None, dead_letter(
            origin,
            f"not a valid {model.__name__}: {why} (JSON Schema: `driftline schemas export`)",
            raw,
            agent=agent,
        )
