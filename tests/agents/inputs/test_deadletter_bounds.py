"""A dead letter is bounded: small messages whole, large ones as a prefix with their
full length and SHA-256 (agents.inputs.codec.dead_letter), and its line says which agent
wrote it (agents.operator.view)."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from agents.inputs.codec import ERROR_CHARS, RAW_LIMIT_BYTES, Codec, Origin, dead_letter
from agents.operator import view
from schemas.events import PredictionEvent
from schemas.export import json_schemas
from schemas.reports import DeadLetter

ORIGIN = Origin("predictions", 3, 1234, b"fraud-detector")
#: Apache Kafka's default message.max.bytes: every dead letter must fit it
KAFKA_DEFAULT_MAX = 1_048_588


@pytest.mark.parametrize("size", [0, 1, RAW_LIMIT_BYTES])
def test_up_to_the_limit_the_raw_bytes_are_kept_whole(size: int) -> None:
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    letter = dead_letter(ORIGIN, "bad", raw, agent="drift", event={"a": 1})
    assert base64.b64decode(letter.raw) == raw
    assert letter.raw_size == size and letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert letter.raw_truncated is False and letter.event == {"a": 1}


def test_a_larger_message_keeps_a_prefix_its_length_sha256_and_where_it_is() -> None:
    raw = b"0123456789" * 1_750_000  # 17.5 MB
    letter = dead_letter(ORIGIN, "too big", raw, agent="kpi", event={"x": "y" * 100})
    assert base64.b64decode(letter.raw) == raw[:RAW_LIMIT_BYTES]
    assert letter.raw_truncated is True
    assert letter.raw_size == len(raw) and letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert (letter.topic, letter.partition, letter.offset) == ("predictions", 3, 1234)
    assert letter.event is None, "the event is in the original, not copied at any size"
    assert letter.agent == "kpi" and letter.key == "fraud-detector"
    assert len(letter.model_dump_json()) < KAFKA_DEFAULT_MAX


def test_the_largest_letter_fits_a_default_kafka_broker() -> None:
    # Raw at the limit, an event as large decoded, an error longer than kept.
    event = {"blob": "é" * (RAW_LIMIT_BYTES // 2 - 20)}
    raw = orjson.dumps(event)
    assert len(raw) <= RAW_LIMIT_BYTES
    letter = dead_letter(ORIGIN, "e" * 50_000, raw, agent="drift", index=7, event=event)
    assert not letter.raw_truncated and letter.event == event
    assert len(letter.error) < ERROR_CHARS + 100 and "more characters" in letter.error
    assert len(letter.model_dump_json()) < KAFKA_DEFAULT_MAX


def test_the_codec_refuses_an_oversized_message_with_a_bounded_letter() -> None:
    codec = Codec(PredictionEvent, max_message_bytes=1_000_000, agent="drift")
    raw = orjson.dumps({"events": [], "pad": "p" * 1_200_000})
    (letter,) = codec.decode(raw, ORIGIN).dead
    assert "over the limit of 1000000" in letter.error
    assert letter.raw_truncated and letter.raw_size == len(raw)
    assert raw.startswith(base64.b64decode(letter.raw))


def test_the_schema_exports_the_new_fields() -> None:
    fields = json_schemas()["DeadLetter"]["properties"]
    assert {"raw_size", "raw_sha256", "raw_truncated", "agent"} <= set(fields)
    # Letters written before these fields still read.
    old = {"topic": "t", "partition": 0, "offset": 1, "error": "e", "raw": "", "agent": "drift"}
    assert DeadLetter.model_validate(old).raw_sha256 is None


def test_the_tail_line_says_which_agent_wrote_the_letter() -> None:
    raw = b"z" * (RAW_LIMIT_BYTES + 10)
    drift = dead_letter(ORIGIN, "not valid JSON", raw, agent="drift").model_dump_json()
    kpi = dead_letter(ORIGIN, "not valid JSON", raw, agent="kpi").model_dump_json()
    lines = [view.render("deadletter", v.encode()) for v in (drift, kpi)]
    assert lines[0].startswith("DEADLETTER drift: predictions[3]@1234  not valid JSON")
    assert lines[1].startswith("DEADLETTER kpi: predictions[3]@1234  not valid JSON")
    assert f"first {RAW_LIMIT_BYTES} of {len(raw)} bytes" in lines[0]
    assert "driftline deadletter fetch" in lines[0]
