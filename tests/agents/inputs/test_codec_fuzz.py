"""Property-based fuzzing of the input path: whatever arrives, every event ends as a
valid event or a DeadLetter with a reason, and the handlers never raise."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.drift.handler import DriftHandler
from agents.inputs.codec import Codec, Origin
from agents.kpi.handler import KpiHandler
from schemas.events import LabelEvent, PredictionEvent
from schemas.policy import parse_policy

LIMIT = 64 * 1024
ORIGIN = Origin("predictions", 0, 7, b"fraud")
POLICY = parse_policy("drift: {window: 60s, min_reference_events: 10}\nkpi: {window: 60s}")

GOOD = {"request_id": "r1", "model": "fraud", "model_version": "v1", "ts": 1_800_000_000,
        "prediction": 1, "score": 0.7, "features": {"amount": 12.5, "country": "DE"}}

# JSON values, nested, with the awkward ones: huge and tiny numbers, unicode, nulls.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: Any) -> Any:
    """A valid prediction with one field dropped, replaced by junk, or made extreme."""
    event = dict(GOOD)
    field = draw(st.sampled_from(sorted(GOOD)))
    how = draw(st.sampled_from(["drop", "junk", "extreme", "keep"]))
    if how == "drop":
        event.pop(field)
    elif how == "junk":
        event[field] = draw(json_values)
    elif how == "extreme":
        event[field] = draw(st.sampled_from(
            [10**30, -(10**30), 1e308, -1e308, 253402300800, -62135596801, "9999-12-31T23:59:59Z",
             "0001-01-01T00:00:00Z", "", "x" * 300, {"deep": [[[[{"a": 1}]]]]}, [1, 2]]))
    return event


def check(codec: Codec[Any], raw: bytes) -> None:
    decoded = codec.decode(raw, ORIGIN)
    for letter in decoded.dead:
        assert letter.error and len(letter.error) > 20, letter.error
        assert letter.topic == "predictions" and letter.offset == 7
        base64.b64decode(letter.raw, validate=True)
        if letter.index is None:  # the whole message: its exact bytes
            assert base64.b64decode(letter.raw) == raw
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    items = doc["events"] if isinstance(doc, dict) and isinstance(doc.get("events"), list) \
        else None
    if items is not None and len(raw) <= LIMIT:
        # every event of a batch is accounted for: valid, or its own dead letter
        assert len(decoded.events) + sum(d.index is not None for d in decoded.dead) == len(items)
        assert sorted(decoded.positions + [d.index for d in decoded.dead
                                           if d.index is not None]) == list(range(len(items)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    check(Codec(PredictionEvent, max_message_bytes=LIMIT, agent="drift"), raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(doc=json_values, cut=st.integers(min_value=0, max_value=200))
def test_any_json_and_truncated_json(doc: Any, cut: int) -> None:
    codec = Codec(PredictionEvent, max_message_bytes=LIMIT, agent="drift")
    raw = json.dumps(doc).encode()
    check(codec, raw)
    check(codec, raw[:cut])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(events=st.lists(mutated_events(), min_size=1, max_size=12))
def test_batches_of_mutated_events_keep_their_good_events(events: list[Any]) -> None:
    codec = Codec(PredictionEvent, max_message_bytes=LIMIT, agent="drift")
    batch = [dict(GOOD, request_id=f"ok-{i}") if i % 3 == 0 else e for i, e in enumerate(events)]
    raw = json.dumps({"events": batch}).encode()  # orjson cannot write integers past 64 bits
    check(codec, raw)
    decoded = codec.decode(raw, ORIGIN)
    good = [i for i in range(len(batch)) if i % 3 == 0]
    assert set(good) <= set(decoded.positions)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(events=st.lists(mutated_events(), min_size=1, max_size=8),
       noise=st.binary(max_size=40))
def test_the_handlers_never_raise_and_count_every_good_event(events: list[Any],
                                                              noise: bytes) -> None:
    drift = DriftHandler(policy=POLICY, predictions_topic="predictions", features_topic="f",
                         max_message_bytes=LIMIT, references_topic="references")
    kpi = KpiHandler(policy=POLICY, predictions_topic="predictions", labels_topic="labels",
                     max_message_bytes=LIMIT)
    raw = json.dumps({"events": events}).encode()
    codec = Codec(PredictionEvent, max_message_bytes=LIMIT, agent="drift")
    valid = [e for e in codec.decode(raw, ORIGIN).events if e["model"] == "fraud"]
    for handler in (drift, kpi):
        table: dict[bytes, bytes] = {}
        out = handler.handle(raw, ORIGIN, table)
        # every valid event is counted, or dead-lettered by itself for running more than
        # an hour ahead of its stream (agents.inputs.future: the fuzz mixes 1970 and 9999)
        ahead = [d for d in out.dead if "ahead of its stream's time" in d.error]
        assert all(d.index is not None for d in ahead)
        assert out.counted + len(ahead) == len(valid)
        if max((e["ts_ms"] for e in valid), default=0) - min(
                (e["ts_ms"] for e in valid), default=0) <= 3_600_000:
            assert ahead == []
        handler.handle(noise, ORIGIN, table)  # junk in between: a dead letter, no exception
        label = orjson.dumps({"request_id": "r1", "model": "fraud", "ts": 1_800_000_100,
                              "label": 1})
        kpi_origin = Origin("labels", 0, 8, b"fraud")
        if handler is kpi:
            dead = handler.handle(label, kpi_origin, table).dead
            # The label is refused only by the bound on event times that run ahead of
            # their stream (agents.inputs.future): when the predictions set the model's time
            # more than an hour before it (the fuzz reaches 1970 and the year 9999).
            assert all("ahead of its stream's time" in d.error for d in dead), dead
            label_ms = 1_800_000_100_000
            if all(label_ms - 3_600_000 <= e["ts_ms"] for e in valid):
                assert dead == []


def test_an_oversized_message_is_one_dead_letter_with_its_bytes() -> None:
    codec = Codec(LabelEvent, max_message_bytes=LIMIT, agent="kpi")
    raw = orjson.dumps({"events": [{"request_id": "r" * 100, "model": "m", "ts": 1,
                                    "label": 1}] * 1000})
    decoded = codec.decode(raw, ORIGIN)
    assert decoded.events == [] and len(decoded.dead) == 1
    assert "over the limit" in decoded.dead[0].error
    assert base64.b64decode(decoded.dead[0].raw) == raw
