"""``driftline deadletter fetch``: the original message of a dead letter, from its input topic.

A dead letter holds its message's bytes whole up to ``agents.inputs.codec.RAW_LIMIT_BYTES``;
of a larger message only the first bytes (``raw_truncated``), with the whole one's
length and SHA-256 and where it is: ``topic``, ``partition``, ``offset``. The
message stays there as long as the topic's retention keeps it. This reads it back,
byte for byte, and checks it against the dead letter's length and SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from agents.config import Settings
from agents.kafka import client_config, read_range
from schemas.errors import DriftlineError
from schemas.reports import DeadLetter

logger = logging.getLogger(__name__)

#: how long reading one message may take (a large one comes in one fetch)
TIMEOUT_S = 30.0


class FetchError(DriftlineError):
    """The message asked for cannot be read, or is not the one the dead letter names."""


@dataclass(frozen=True)
class Fetched:
    """A message read back: its exact bytes, where it was, and the dead letter (if any)."""

    value: bytes
    topic: str
    partition: int
    offset: int
    letter: DeadLetter | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.value).hexdigest()

    def check(self) -> str:
        """What was checked against the dead letter; raises FetchError on a mismatch."""
        letter = self.letter
        if letter is None:
            return "no dead letter to check it against"
        if letter.index is not None:
            return (
                f"the dead letter is for event {letter.index} of this batch: nothing "
                "to check the whole message against"
            )
        if letter.raw_size is not None and letter.raw_sha256 is not None:
            if (len(self.value), self.sha256) != (letter.raw_size, letter.raw_sha256):
                raise FetchError(
                    f"{_where(self)} is {len(self.value)} bytes with SHA-256 "
                    f"{self.sha256[:16]}..., the dead letter recorded {letter.raw_size} bytes "
                    f"with {letter.raw_sha256[:16]}...: the offset now holds another message "
                    "(was the topic deleted and created again?)"
                )
            return "length and sha256 match the dead letter"
        return "no length or sha256 in the dead letter to check it against"


def _where(m: Fetched | DeadLetter) -> str:
    return f"{m.topic}[{m.partition}]@{m.offset}"


def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    """The value of the message at ``topic[partition]@offset``; FetchError when it is not
    there (past retention, beyond the end, compacted away) or the broker cannot say."""
    group = "driftline-deadletter-fetch"  # assigned, never joined or committed
    consumer = Consumer({**client_config(bootstrap), "group.id": group})
    tp = TopicPartition(topic, partition)
    where = f"{topic}[{partition}]@{offset}"
    try:
        try:
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if info is None or info.error is not None or partition not in info.partitions:
                raise FetchError(f"cannot read {where}: no such topic or partition on {bootstrap}")
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            raise FetchError(
                f"cannot read {where}: the broker at {bootstrap} did not answer "
                f"({exc.args[0].str() if exc.args else exc})"
            ) from exc
    finally:
        consumer.close()
    if offset < low:
        raise FetchError(
            f"{where} is no longer on the broker: the partition now starts at offset {low} "
            "(its retention removed older messages); the dead letter's raw is what is left"
        )
    if offset >= high:
        raise FetchError(
            f"{where} does not exist: the partition ends before it (next offset {high})"
        )
    try:
        found, complete = read_range(
            bootstrap,
            topic,
            partition,
            offset,
            offset + 1,
            group=group,
            timeout_s=TIMEOUT_S,
            config={"auto.offset.reset": "error"},
        )
    except KafkaException as exc:
        raise FetchError(f"cannot read {where}: {exc.args[0].str()}") from exc
    if found:
        value: bytes | None = found[0].value()
        return value
    if complete:
        raise FetchError(f"{where} does not exist (compacted away, or a transaction marker)")
    raise FetchError(f"cannot read {where}: nothing came within {TIMEOUT_S:.0f} s")


def letter_at(settings: Settings, partition: int, offset: int) -> DeadLetter:
    """The dead letter at ``offset`` of ``partition`` of the ``deadletter`` topic."""
    topic = settings.topic("deadletter")
    raw = read_at(settings.bootstrap, topic, partition, offset)
    try:
        return DeadLetter.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise FetchError(
            f"{topic}[{partition}]@{offset} is not a DeadLetter ({exc.error_count()} errors)"
        ) from exc


def fetch(
    settings: Settings,
    *,
    letter: int | None = None,
    letter_partition: int = 0,
    topic: str | None = None,
    partition: int = 0,
    offset: int | None = None,
) -> Fetched:
    """The original message of the dead letter at offset ``letter`` of ``deadletter``
    (checked against it, see :meth:`Fetched.check`), or the message at
    ``topic[partition]@offset`` as a dead letter names it (``topic`` with or without
    the topic prefix)."""
    if letter is not None:
        found = letter_at(settings, letter_partition, letter)
        value = read_at(settings.bootstrap, found.topic, found.partition, found.offset)
        return Fetched(value or b"", found.topic, found.partition, found.offset, found)
    if topic is None or offset is None:
        raise FetchError(
            "say which message: --letter OFFSET (on deadletter), or --topic, "
            "--partition and --offset as the dead letter gives them"
        )
    if not topic.startswith(settings.topic_prefix):
        topic = settings.topic(topic)
    value = read_at(settings.bootstrap, topic, partition, offset)
    return Fetched(value or b"", topic, partition, offset)
