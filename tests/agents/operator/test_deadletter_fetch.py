"""``driftline deadletter fetch`` reads a dead letter's original from the embedded broker,
byte for byte, checked against the letter's length and SHA-256 (agents.operator.deadletter)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents import cli
from agents.config import Settings
from agents.inputs.codec import RAW_LIMIT_BYTES, Origin, dead_letter
from agents.operator import deadletter
from agents.operator.deadletter import FetchError, fetch

ORIGINAL = random.Random(7).randbytes(2_500_000)  # larger than a dead letter keeps


def _setup(bootstrap: str) -> Settings:
    """Topics ``<prefix>predictions`` (offset 0: b"first", 1: ORIGINAL) and
    ``<prefix>deadletter`` (0: ORIGINAL's letter, 1: a letter whose original changed)."""
    settings = Settings(broker=bootstrap, topic_prefix=f"f{uuid.uuid4().hex[:8]}.")
    predictions, deadletter = settings.topic("predictions"), settings.topic("deadletter")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(predictions, 1, 1), NewTopic(deadletter, 1, 1)]
    ).values():
        future.result(timeout=10)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 8 << 20})
    for value in (b"first", ORIGINAL):
        producer.produce(predictions, key=b"m", value=value)
        producer.flush(30)
    letters = [
        dead_letter(Origin(predictions, 0, 1, b"m"), "too big", ORIGINAL, agent="drift"),
        dead_letter(Origin(predictions, 0, 0, b"m"), "bad", b"what was there once", agent="kpi"),
    ]
    for letter in letters:
        producer.produce(deadletter, key=b"m", value=letter.model_dump_json().encode())
        producer.flush(30)
    return settings


@pytest.fixture(scope="module")
def settings(broker: Any) -> Settings:
    return _setup(broker.bootstrap)


def test_the_original_of_a_truncated_letter_comes_back_whole(settings: Settings) -> None:
    got = fetch(settings, letter=0)
    assert got.letter is not None and got.letter.raw_truncated
    assert len(got.letter.raw) < RAW_LIMIT_BYTES * 4 // 3 + 4
    assert got.value == ORIGINAL
    assert (got.topic, got.partition, got.offset) == (settings.topic("predictions"), 0, 1)
    assert got.check() == "length and sha256 match the dead letter"


def test_by_topic_partition_and_offset_with_or_without_the_prefix(settings: Settings) -> None:
    assert fetch(settings, topic="predictions", partition=0, offset=1).value == ORIGINAL
    got = fetch(settings, topic=settings.topic("predictions"), partition=0, offset=0)
    assert got.value == b"first"
    assert got.check() == "no dead letter to check it against"


def test_another_message_at_the_offset_is_refused(settings: Settings) -> None:
    got = fetch(settings, letter=1)
    with pytest.raises(FetchError, match="now holds another message"):
        got.check()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ({"topic": "predictions", "offset": 2}, "does not exist: the partition ends before it"),
        ({"topic": "nowhere", "offset": 0}, "no such topic or partition"),
        ({"letter": 5}, "does not exist"),
    ],
)
def test_what_is_not_there_is_one_clear_error(
    settings: Settings, where: dict[str, Any], why: str
) -> None:
    with pytest.raises(FetchError, match=why):
        fetch(settings, **where)


class _Trimmed:
    """A confluent-kafka Consumer of a partition whose retention removed offsets 0-4.
    (The embedded broker, Tansu 0.6.0, neither expires records nor survives a
    DeleteRecords request: it drops the connection and exits.)"""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        partition = SimpleNamespace(error=None)
        info = SimpleNamespace(error=None, partitions={0: partition})
        return SimpleNamespace(topics={topic: info})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 5, 10

    def close(self) -> None:
        self.closed = True


def test_a_message_past_retention_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "Consumer", _Trimmed)
    with pytest.raises(FetchError) as caught:
        deadletter.read_at("127.0.0.1:1", "predictions", 0, 3)
    assert str(caught.value) == (
        "predictions[0]@3 is no longer on the broker: the partition now starts at offset 5 "
        "(its retention removed older messages); the dead letter's raw is what is left"
    )


def test_the_cli_writes_the_exact_bytes(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "original.bin"
    common = ["--broker", settings.broker, "--topic-prefix", settings.topic_prefix]
    code = cli.main(["deadletter", "fetch", "--letter", "0", "-o", str(out), *common])
    assert code == 0 and out.read_bytes() == ORIGINAL
    err = capsys.readouterr().err
    assert f"{len(ORIGINAL)} bytes of {settings.topic('predictions')}[0]@1 written to" in err
    assert "length and sha256 match the dead letter" in err

    code = cli.main(["deadletter", "fetch", "--topic", "predictions", "--offset", "9", *common])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not exist" in err
