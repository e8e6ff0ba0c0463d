"""Arrow IPC messages are read as the same events sent as JSON (schemas/arrow.py,
agents/inputs/codec.py): the same rows accepted with the same values, the same rows refused,
each by itself with its index and reason."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

from agents.inputs.codec import Codec, Origin
from schemas import arrow
from schemas.events import FeatureEvent, LabelEvent, PredictionEvent
from tests.agents.drift.test_arrow_lane import messages

ORIGIN = Origin("predictions", 0, 7, b"m")
PREDICTIONS: list[dict[str, Any]] = [
    {
        "request_id": "r1",
        "model": "m",
        "model_version": "v1",
        "ts": 1_800_000_000.123,
        "prediction": True,
        "score": 0.9,
        "variant": "canary",
        "latency_ms": 3,
        "features": {"amount": 12.5, "channel": "app", "new": True},
    },
    {
        "request_id": "r2",
        "model": "m",
        "model_version": "v1",
        "ts": "2027-01-15T08:00:00Z",
        "prediction": False,
        "features": {"amount": 3, "channel": None},
    },
    {
        "request_id": "r3",
        "model": "m",
        "model_version": "v1",
        "ts": 1_800_000_060,
        "prediction": True,
        "score": 0.1,
        "error": True,
        "segment": {"country": "FR"},
        "features": {"amount": -1.0, "channel": "web", "new": False},
    },
]


def codec(model: type = PredictionEvent) -> Codec[Any]:
    return Codec(model, max_message_bytes=1 << 22, agent="test")


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A decoded row without its ``ts`` (a datetime or the number or text sent: its value
    is ``ts_ms``) and with absent optional values and features as None."""
    out = {k: v for k, v in row.items() if k != "ts" and v is not None}
    out["features"] = {k: v for k, v in (row.get("features") or {}).items() if v is not None}
    return out


@pytest.mark.parametrize("categories", ["dictionary", "string"])
def test_an_arrow_batch_decodes_to_the_rows_of_the_same_json_batch(categories: str) -> None:
    as_json = codec().decode(orjson.dumps({"events": PREDICTIONS}), ORIGIN)
    as_arrow = codec().decode(arrow.to_ipc(PREDICTIONS, categories=categories), ORIGIN)
    assert not as_json.dead and not as_arrow.dead
    assert [comparable(r) for r in as_arrow.events] == [comparable(r) for r in as_json.events]
    assert [r["ts_ms"] for r in as_arrow.events] == [
        1_800_000_000_123,
        1_800_000_000_000,
        1_800_000_060_000,
    ]


def test_several_record_batches_in_one_stream_are_one_message() -> None:
    decoded = codec().decode(arrow.to_ipc(PREDICTIONS, batch_rows=1), ORIGIN)
    assert [r["request_id"] for r in decoded.events] == ["r1", "r2", "r3"]


@pytest.mark.parametrize(
    ("model", "events"),
    [
        (FeatureEvent, [{"request_id": "r", "model": "m", "ts": 5, "features": {"a": 1.5}}]),
        (
            LabelEvent,
            [
                {"request_id": "r", "model": "m", "ts": 5, "label": 1},
                {"request_id": "s", "model": "m", "ts": 6, "label": 0},
            ],
        ),
    ],
)
def test_features_and_labels_take_the_arrow_form_too(model: type, events: list[Any]) -> None:
    as_json = codec(model).decode(orjson.dumps({"events": events}), ORIGIN)
    as_arrow = codec(model).decode(arrow.to_ipc(events), ORIGIN)
    assert not as_arrow.dead
    assert [comparable(r) for r in as_arrow.events] == [comparable(r) for r in as_json.events]


@pytest.mark.parametrize(
    ("unit", "tz", "ticks", "ms"),
    [
        ("s", "UTC", 1_800_000_000, 1_800_000_000_000),
        ("ms", None, 1_800_000_000_123, 1_800_000_000_123),  # naive: UTC
        ("us", "Europe/Paris", 1_800_000_000_123_999, 1_800_000_000_123),
        ("ns", "UTC", 1_800_000_000_123_456_789, 1_800_000_000_123),
    ],
)
def test_any_timestamp_unit_is_read_to_the_millisecond(
    unit: str, tz: str | None, ticks: int, ms: int
) -> None:
    table = pa.table(
        {
            "request_id": ["r"],
            "model": ["m"],
            "label": [1.0],
            "ts": pa.array([ticks], pa.timestamp(unit, tz=tz)),
        }
    )
    decoded = codec(LabelEvent).decode(arrow.to_ipc(table), ORIGIN)
    assert not decoded.dead
    assert decoded.events[0]["ts_ms"] == ms
    assert arrow.times_ms(table.column("ts")).tolist() == [ms]


def test_a_bad_row_is_dead_lettered_by_itself_with_its_index_and_reason() -> None:
    events = [
        dict(PREDICTIONS[0]),
        dict(PREDICTIONS[1], score=math.inf),
        dict(PREDICTIONS[2], request_id=None),
    ]
    decoded = codec().decode(arrow.to_ipc(events), ORIGIN)
    assert [r["request_id"] for r in decoded.events] == ["r1"]
    assert [(d.index, d.offset) for d in decoded.dead] == [(1, 7), (2, 7)]
    assert "row 1 of the Arrow stream is not a valid PredictionEvent" in decoded.dead[0].error
    assert "score" in decoded.dead[0].error and "finite" in decoded.dead[0].error
    assert "request_id: Field required" in decoded.dead[1].error  # a null is absent
    # the row itself, as JSON, is what the letter holds
    assert "request_id" not in decoded.dead[1].event
    assert decoded.dead[1].event["features"]["channel"] == "web"


def test_the_same_events_refused_as_json_are_refused_as_arrow() -> None:
    events = [
        dict(PREDICTIONS[0], model_version=""),
        dict(PREDICTIONS[0], variant="blue"),
        dict(PREDICTIONS[0], latency_ms=-1),
        dict(PREDICTIONS[0], prediction=None),
        dict(PREDICTIONS[0], ts=None),
        PREDICTIONS[1],
    ]
    as_json = codec().decode(orjson.dumps({"events": events}), ORIGIN)
    as_arrow = codec().decode(arrow.to_ipc(events), ORIGIN)
    assert [d.index for d in as_arrow.dead] == [d.index for d in as_json.dead] == [0, 1, 2, 3, 4]
    assert [r["request_id"] for r in as_arrow.events] == ["r2"]


def test_a_map_column_reads_as_an_object() -> None:
    table = arrow.to_table(PREDICTIONS[:1]).append_column(
        "probabilities",
        pa.array([[("fraud", 0.9), ("ok", 0.1)]], pa.map_(pa.string(), pa.float64())),
    )
    decoded = codec().decode(arrow.to_ipc(table), ORIGIN)
    assert decoded.events[0]["probabilities"] == {"fraud": 0.9, "ok": 0.1}


@pytest.mark.parametrize(
    "raw",
    [
        arrow.to_ipc(PREDICTIONS)[:60],  # cut short
        arrow.MAGIC + b"\x10\x00\x00\x00not arrow at all",  # pyarrow: OSError
    ],
)
def test_an_unreadable_stream_is_dead_lettered_whole_with_its_bytes(raw: bytes) -> None:
    decoded = codec().decode(raw, ORIGIN)
    assert not decoded.events
    (letter,) = decoded.dead
    assert "Apache Arrow IPC stream but cannot be read" in letter.error
    assert letter.raw_size == len(raw) and letter.index is None


def test_the_message_size_limit_holds_for_arrow() -> None:
    raw = arrow.to_ipc(PREDICTIONS)
    small = Codec(PredictionEvent, max_message_bytes=len(raw) - 1, agent="test")
    (letter,) = small.decode(raw, ORIGIN).dead
    assert "over the limit" in letter.error


def test_rows_give_timestamps_as_utc_datetimes() -> None:
    (row,) = arrow.rows(arrow.read(arrow.to_ipc(PREDICTIONS[:1])))
    assert row["ts"] == datetime(2027, 1, 15, 8, 0, 0, 123000, tzinfo=UTC)


def _both_ways(model: type, raw: bytes) -> tuple[Any, Any]:
    """The codec's decoding of ``raw``, and the same with its msgspec twin switched off
    (every row validated by pydantic)."""
    fast = codec(model).decode(raw, ORIGIN)
    slow_codec = codec(model)
    slow_codec._twin = None  # the pydantic path alone, for comparison
    return fast, slow_codec.decode(raw, ORIGIN)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages())
def test_the_fast_arrow_rows_are_what_pydantic_accepts(message: tuple[bytes, int]) -> None:
    raw, _ = message
    fast, slow = _both_ways(PredictionEvent, raw)
    assert [comparable(r) for r in fast.events] == [comparable(r) for r in slow.events]
    assert [r["ts_ms"] for r in fast.events] == [r["ts_ms"] for r in slow.events]
    assert [(d.index, d.error) for d in fast.dead] == [(d.index, d.error) for d in slow.dead]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_fast_labels_keep_the_exact_millisecond(unit: str) -> None:
    ms = [1_800_000_000_123, 9_000_000_000_999, -1]  # now, the year 2255, before 1970
    per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    ticks = [m // 1000 if per_ms is None else m * per_ms for m in ms]
    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "model": ["m"] * 3,
            "label": [1, 0, 1],
            "ts": pa.array(ticks, pa.timestamp(unit, tz="UTC")),
        }
    )
    fast, slow = _both_ways(LabelEvent, arrow.to_ipc(table))
    assert [r["ts_ms"] for r in fast.events] == [r["ts_ms"] for r in slow.events]
    assert not fast.dead and not slow.dead
