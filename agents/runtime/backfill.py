"""Read the input messages Faust's consumer skipped, straight from the partition.

faust-streaming 0.15 can hand an agent a partition's messages with a hole in
them: messages fetched while a rebalance or a table recovery has the flow
stopped are dropped *and acknowledged* (faust/streams.py skips a message when
``flow_control`` is inactive or its generation is stale, then acks it), so its
offset commit moves past them and no restart brings them back. Seen here in
tests/e2e/test_crash.py: after a SIGKILL and restart with traffic flowing,
offsets 117-119 were never handed to the agent while 120 was.

The runner knows, per partition and topic, the last offset it applied (the
redo record, agents.runtime.redo). A message more than one past it means a hole: the
runner reads the missing range with this reader (its own confluent-kafka
consumer, assigned to the one partition, no group, nothing committed) and
handles those messages first, in order. A hole at the end of what was sent
has no later message: the runner's periodic check (``runner.register``'s
``watch``) finds the agent idle behind the end of the partition and reads it
the same way. Offsets that do not exist (a compacted topic, transaction
markers) simply are not returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException

from agents.kafka import read_range

#: how long reading one hole may take before the runner gives up on it (logged)
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Input:
    """One input message, from Faust's stream or from this reader."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Backfill:
    def __init__(self, bootstrap: str, *, group: str) -> None:
        self.bootstrap, self.group = bootstrap, group

    def read(self, topic: str, partition: int, start: int, end: int) -> list[Input]:
        """The messages of ``topic[partition]`` at offsets ``start <= offset < end``
        (those read within TIMEOUT_S)."""
        try:
            found, _ = read_range(
                self.bootstrap, topic, partition, start, end, group=self.group, timeout_s=TIMEOUT_S
            )
        except KafkaException as exc:
            raise RuntimeError(f"cannot read {topic}[{partition}]: {exc.args[0]}") from exc
        return [Input(topic, partition, m.offset(), m.key(), m.value()) for m in found]
