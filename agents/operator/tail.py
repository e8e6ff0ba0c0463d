"""Read a topic from the start or the end, with filters, until told to stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from agents.kafka import client_config, poll_to_ends
from schemas.errors import DriftlineError

METADATA_WAIT_S = 10.0


class TopicMissing(DriftlineError):
    """The topic to read does not exist on the broker."""


def _assigned_consumer(bootstrap: str, topics: str | list[str], *,
                       from_beginning: bool) -> Consumer:
    # Partitions are assigned directly: no consumer group, so nothing to join
    # and no offsets committed on the operators' behalf.
    consumer = Consumer({
        **client_config(bootstrap),
        "group.id": "driftline-tail",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    names = [topics] if isinstance(topics, str) else topics
    partitions: list[tuple[str, int]] = []
    for topic in names:
        # A topic just created may take a moment to show in metadata: wait for it.
        deadline = time.monotonic() + METADATA_WAIT_S
        while True:
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if info is not None and info.error is None and info.partitions:
                break
            if time.monotonic() > deadline:
                consumer.close()
                raise TopicMissing(f"topic {topic!r} does not exist on {bootstrap}")
            time.sleep(0.2)
        partitions += [(topic, p) for p in sorted(info.partitions)]
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for topic, p in partitions])
    return consumer


def messages(
    bootstrap: str, topic: str | list[str], *, from_beginning: bool = True,
    stop: Callable[[], bool] | None = None, idle_timeout_s: float | None = None,
) -> Iterator[Any]:
    """Yield confluent-kafka messages until ``stop()`` or ``idle_timeout_s`` without any."""
    consumer = _assigned_consumer(bootstrap, topic, from_beginning=from_beginning)
    last = time.monotonic()
    try:
        while stop is None or not stop():
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            if msg.error():
                raise KafkaException(msg.error())
            last = time.monotonic()
            yield msg
    finally:
        consumer.close()


def matches(value: bytes, *, model: str | None, status: str | None) -> bool:
    if model is None and status is None:
        return True
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    if model is not None and doc.get("model") != model:
        return False
    return status is None or doc.get("status") == status


def collect(
    bootstrap: str, topic: str, predicate: Callable[[list[dict[str, Any]]], bool], *,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Read a topic from the start until ``predicate(all_values)`` holds or the deadline.

    Returns the decoded values read; the caller asserts on them. This is the
    wait-for-a-condition-with-a-deadline used by tests and the demo.
    """
    deadline = time.monotonic() + timeout_s
    seen: list[dict[str, Any]] = []
    for msg in messages(bootstrap, topic, stop=lambda: time.monotonic() > deadline):
        seen.append(orjson.loads(msg.value()))
        if predicate(seen):
            break
    return seen


def read_to_end(bootstrap: str, topic: str, *, quiet_s: float = 1.0,
                timeout_s: float = 60.0) -> list[bytes]:
    """Every value on ``topic`` up to now, in partition order (see :func:`read_messages`)."""
    return [m.value() for m in read_messages(bootstrap, [topic], quiet_s=quiet_s,
                                             timeout_s=timeout_s)]


def read_messages(bootstrap: str, topics: list[str], *, quiet_s: float = 1.0,
                  timeout_s: float = 60.0) -> list[Any]:
    """Every message on ``topics`` up to now (confluent-kafka Message objects), topic
    by topic and partition by partition, in offset order.

    Reads each partition up to its high watermark as of the start, and then
    for ``quiet_s`` more (the embedded broker can report a watermark short of
    the last records of a multi-record batch; the extra second covers that).
    A topic that keeps receiving messages does not keep it reading.
    """
    consumer = _assigned_consumer(bootstrap, topics, from_beginning=True)
    by_partition: dict[tuple[str, int], list[Any]] = {}
    try:
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in consumer.assignment()}
        for msg in poll_to_ends(consumer, ends, quiet_s=quiet_s, timeout_s=timeout_s):
            by_partition.setdefault((msg.topic(), msg.partition()), []).append(msg)
    finally:
        consumer.close()
    return [m for where in sorted(by_partition) for m in by_partition[where]]
