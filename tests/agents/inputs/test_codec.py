"""Decoding input messages into events and dead letters (agents/inputs/codec.py)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from agents.dev.simulate import FraudTraffic, batches
from agents.inputs.codec import Codec, Origin
from schemas.events import FeatureEvent, PredictionEvent
from schemas.reports import DeadLetter

ORIGIN = Origin(topic="predictions", partition=3, offset=1234, key=b"fraud-detector")
LIMIT = 64 * 1024


def _codec(max_message_bytes: int = LIMIT) -> Codec[PredictionEvent]:
    return Codec(PredictionEvent, max_message_bytes=max_message_bytes, agent="drift")


def _events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return FraudTraffic(seed=seed).events(n, start_s=1_800_000_000.0, span_s=60.0)


def _assert_origin(dead: DeadLetter, origin: Origin = ORIGIN) -> None:
    assert (dead.topic, dead.partition, dead.offset) == (
        origin.topic,
        origin.partition,
        origin.offset,
    )
    assert dead.key == (origin.key.decode() if origin.key is not None else None)
    assert dead.agent == "drift"


def test_single_event_object() -> None:
    event = _events(1)[0]
    decoded = _codec().decode(orjson.dumps(event), ORIGIN)
    assert decoded.dead == []
    (got,) = decoded.events
    # Rows are plain dicts holding exactly what the public model validates.
    assert isinstance(got, dict)
    assert PredictionEvent.model_validate(got) == PredictionEvent.model_validate(event)
    assert got["request_id"] == event["request_id"]
    assert got["features"]["merchant_category"] == event["features"]["merchant_category"]


def test_batch_of_events_in_order() -> None:
    events = _events(25)
    (raw,) = list(batches(events, 100))
    decoded = _codec().decode(raw, ORIGIN)
    assert decoded.dead == []
    assert [e["request_id"] for e in decoded.events] == [e["request_id"] for e in events]


def test_invalid_event_in_a_batch_is_dead_lettered_alone() -> None:
    events = _events(4)
    bad = dict(events[1], ts="yesterday")
    raw = orjson.dumps({"events": [events[0], bad, events[2], events[3]]})
    decoded = _codec().decode(raw, ORIGIN)

    assert [e["request_id"] for e in decoded.events] == [
        events[0]["request_id"],
        events[2]["request_id"],
        events[3]["request_id"],
    ]
    (dead,) = decoded.dead
    assert dead.index == 1
    assert "event 1 of the batch" in dead.error
    assert "ts:" in dead.error
    assert "PredictionEvent" in dead.error
    assert orjson.loads(base64.b64decode(dead.raw)) == bad
    assert dead.event == bad
    _assert_origin(dead)


def test_several_invalid_events_each_get_a_dead_letter() -> None:
    events = _events(5)
    broken = [dict(e) for e in events]
    del broken[0]["model_version"]
    broken[3]["score"] = "high"
    broken[4] = "not an event"  # type: ignore[call-overload]
    decoded = _codec().decode(orjson.dumps({"events": broken}), ORIGIN)
    assert [e["request_id"] for e in decoded.events] == [
        events[1]["request_id"],
        events[2]["request_id"],
    ]
    assert [d.index for d in decoded.dead] == [0, 3, 4]
    assert "model_version: Field required" in decoded.dead[0].error
    assert "score" in decoded.dead[1].error
    assert decoded.dead[2].event == "not an event"


def test_invalid_single_event_names_the_fields() -> None:
    event = _events(1)[0]
    del event["request_id"]
    decoded = _codec().decode(orjson.dumps(event), ORIGIN)
    assert decoded.events == []
    (dead,) = decoded.dead
    assert dead.error.startswith("the event is not a valid PredictionEvent")
    assert "request_id: Field required" in dead.error
    assert dead.event == event


def test_error_lists_at_most_five_problems() -> None:
    decoded = _codec().decode(b'{"ts": "never", "variant": "blue", "score": "x"}', ORIGIN)
    (dead,) = decoded.dead
    assert "and 2 more" in dead.error  # 4 missing fields and 3 bad values: 5 listed


@pytest.mark.parametrize(
    "raw",
    [
        b'{"events": [{"request_id": "r1", "model": "fraud-detector"',  # truncated
        b'{"request_id": }',
        b"not json at all",
        b"\xff\xfe\x00garbage",  # not UTF-8
        '{"model": "caf\u00e9"}'.encode("latin-1"),  # JSON, but Latin-1 encoded
    ],
)
def test_unreadable_message_keeps_its_exact_bytes(raw: bytes) -> None:
    decoded = _codec().decode(raw, ORIGIN)
    assert decoded.events == []
    (dead,) = decoded.dead
    assert dead.index is None
    assert dead.event is None
    assert base64.b64decode(dead.raw) == raw
    assert "not valid UTF-8 JSON" in dead.error
    assert "driftline schemas export" in dead.error  # points at the contract
    _assert_origin(dead)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[1, 2, 3]", "not an object"),
        (b'[{"events": []}]', "not an object"),
        (b"42", "a JSON number, not an object"),
        (b"4.5", "not an object"),
        (b'"fraud"', "not an object"),
        (b"true", "a JSON boolean, not an object"),
        (b"null", "a JSON null, not an object"),
        (b'{"events": 5}', '"events" must be an array, got a JSON number'),
        (b'{"events": {"request_id": "r1"}}', 'must be an array, got a JSON object'),
        (b'{"events": null}', '"events" must be an array, got a JSON null'),
        (b'{"events": "[]"}', 'must be an array, got a JSON string'),
    ],
)
def test_wrong_shape_is_one_dead_letter(raw: bytes, words: str) -> None:
    decoded = _codec().decode(raw, ORIGIN)
    assert decoded.events == []
    (dead,) = decoded.dead
    assert words in dead.error
    assert dead.index is None
    assert base64.b64decode(dead.raw) == raw
    _assert_origin(dead)


@pytest.mark.parametrize("raw", [b"", None])
def test_empty_message(raw: bytes | None) -> None:
    origin = Origin(topic="features", partition=0, offset=0, key=None)
    decoded = _codec().decode(raw, origin)
    assert decoded.events == []
    (dead,) = decoded.dead
    assert "empty" in dead.error
    assert dead.raw == ""
    assert dead.key is None
    _assert_origin(dead, origin)


def test_message_over_the_limit() -> None:
    raw = next(batches(_events(50), 50))
    decoded = _codec(max_message_bytes=len(raw) - 1).decode(raw, ORIGIN)
    assert decoded.events == []
    (dead,) = decoded.dead
    assert f"{len(raw)} bytes" in dead.error
    assert f"limit of {len(raw) - 1}" in dead.error
    assert "DRIFTLINE_MAX_MESSAGE_BYTES" in dead.error
    assert base64.b64decode(dead.raw) == raw
    assert dead.index is None
    _assert_origin(dead)


def test_message_at_the_limit_is_read() -> None:
    raw = next(batches(_events(50), 50))
    decoded = _codec(max_message_bytes=len(raw)).decode(raw, ORIGIN)
    assert decoded.dead == []
    assert len(decoded.events) == 50


def test_empty_batch_gives_nothing() -> None:
    decoded = _codec().decode(b'{"events": []}', ORIGIN)
    assert decoded.events == []
    assert decoded.dead == []


def test_batch_envelope_extra_fields_are_ignored() -> None:
    event = _events(1)[0]
    decoded = _codec().decode(orjson.dumps({"events": [event], "producer": "x"}), ORIGIN)
    assert decoded.dead == []
    assert [e["request_id"] for e in decoded.events] == [event["request_id"]]


def test_undecodable_key_is_replaced_not_raised() -> None:
    origin = Origin(topic="predictions", partition=0, offset=7, key=b"\xff-model")
    (dead,) = _codec().decode(b"[]", origin).dead
    assert dead.key == "\ufffd-model"


def test_feature_event_codec() -> None:
    codec = Codec(FeatureEvent, max_message_bytes=LIMIT, agent="drift")
    good = {"request_id": "r1", "model": "m", "ts": 1_800_000_000, "features": {"a": True}}
    bad = {"request_id": "r2", "model": "m", "ts": 1_800_000_000}
    decoded = codec.decode(orjson.dumps({"events": [good, bad]}), ORIGIN)
    assert [e["request_id"] for e in decoded.events] == ["r1"]
    assert decoded.events[0]["features"] == {"a": True}
    assert decoded.events[0].get("model_version") is None
    (dead,) = decoded.dead
    assert dead.index == 1
    assert "not a valid FeatureEvent" in dead.error
    assert "features: Field required" in dead.error
