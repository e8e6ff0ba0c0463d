"""Read the newest messages of topics, bounded: the last N of each partition, or all.

For operator tools that want "the latest report per model" without reading a
topic's whole history: :func:`scan` starts each partition at ``high - last_n``
(or at its low watermark, whichever is later), reads up to the high watermark
as of the start, and stops. A topic that keeps receiving messages does not keep
it reading. Partitions are assigned directly: no consumer group, no commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from agents.kafka import client_config, poll_to_ends

logger = logging.getLogger(__name__)


def scan(
    bootstrap: str,
    topics: list[str],
    *,
    last_n: int | None,
    quiet_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Iterator[Any]:
    """Yield confluent-kafka messages: each partition's last ``last_n`` (None: all), in
    offset order per partition (partitions interleave).

    Topics that do not exist are skipped (logged): an inventory of a cluster on
    which nothing ran yet is empty, not an error. After every partition has
    reached its end as of the start, it reads ``quiet_s`` more (the embedded
    broker can report a high watermark before the last records of a batch are
    readable, as ``tail.read_messages`` notes); ``timeout_s`` bounds the whole read.
    """
    if last_n is not None and last_n < 1:
        raise ValueError(f"last_n must be at least 1 (or None for all), got {last_n}")
    consumer = Consumer(
        {
            **client_config(bootstrap),
            "group.id": "driftline-scan",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        known = consumer.list_topics(timeout=10).topics
        assignment: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            info = known.get(topic)
            if info is None or info.error is not None:
                logger.info("topic %s does not exist; nothing read from it", topic)
                continue
            for partition in sorted(info.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                if high <= low:
                    continue
                start = low if last_n is None else max(low, high - last_n)
                assignment.append(TopicPartition(topic, partition, start))
                ends[(topic, partition)] = high
        if not assignment:
            return
        consumer.assign(assignment)
        yield from poll_to_ends(consumer, ends, quiet_s=quiet_s, timeout_s=timeout_s)
    finally:
        consumer.close()
