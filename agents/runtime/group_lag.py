"""The consumer group's lag, read from the broker as Kafka's own tools read it.

``kafka-consumer-groups --describe`` shows, per partition, LOG-END-OFFSET (the
partition's end: the offset the next message will get) minus CURRENT-OFFSET
(the offset the group committed: the next message it will read after a
restart). Faust's consumer reads ahead of what its agents have handled and
commits only what they acknowledged, so its fetch position says nothing about
a stalled agent; the committed offset does.

:class:`GroupLag` asks the broker for both with its own confluent-kafka
consumer (the worker's group id, never subscribed: it joins no group and
commits nothing): one OffsetFetch for all partitions and one ListOffsets per
partition. Blocking; the worker calls it off its event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from agents.kafka import client_config

logger = logging.getLogger(__name__)

#: how long one request to the broker may take
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    #: the partition's end offset (one past its last message)
    end: int
    #: the group's committed offset; None: nothing committed yet
    committed: int | None
    #: the partition's earliest offset (where the group starts without a commit)
    earliest: int

    @property
    def start(self) -> int:
        """Where the group goes on from: its committed offset, else the earliest."""
        return self.earliest if self.committed is None else self.committed

    @property
    def lag(self) -> int:
        """Messages after the group's committed offset (from the earliest without one)."""
        return max(0, self.end - self.start)


class GroupLag:
    """Committed and end offsets of ``group`` on the partitions asked for."""

    def __init__(self, bootstrap: str, *, group: str) -> None:
        self.bootstrap, self.group = bootstrap, group
        self._consumer: Any = None

    def read(self, partitions: Iterable[tuple[str, int]]) -> list[PartitionLag]:
        """Each partition's end, committed and earliest offsets; raises KafkaException
        when the broker does not answer within ``TIMEOUT_S``."""
        asked = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not asked:
            return []
        consumer = self._client()
        out = []
        for tp in consumer.committed(asked, timeout=TIMEOUT_S):
            if tp.error is not None:
                raise KafkaException(tp.error)
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=TIMEOUT_S, cached=False
            )
            out.append(
                PartitionLag(
                    tp.topic,
                    tp.partition,
                    end=high,
                    committed=tp.offset if tp.offset >= 0 else None,
                    earliest=low,
                )
            )
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **client_config(self.bootstrap),
                    "group.id": self.group,  # to read its commits; never subscribed
                    "enable.auto.commit": False,
                }
            )
        return self._consumer
