"""End to end: messages at the end of a partition that Faust's consumer never
hands over are read directly by the agent (the runner's watch, agents.runtime.runner).

faust-streaming drops, and acknowledges, messages it fetched while a rebalance
or a recovery had its flow stopped; when nothing is sent after them, no later
message reveals the hole, and the agent would wait for ever (2 of 80 runs of
tests/e2e/test_scale_out.py did, under load). This test makes that state on
purpose: a worker handles the first window and is stopped; the second window
and a closer are sent and the group's offset is committed past them, as Faust
commits what it dropped; a new worker process starts from there, and nothing
is sent after. Only the watch can find those messages: both windows must be
reported with every event counted.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from agents.dev import simulate
from agents.operator import tail
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = "drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 500}\n"
T0 = 1_800_000_000 - 1_800_000_000 % 60
PER_WINDOW = 1000


class _AsFaust(RoundRobinPartitionAssignor):
    """Round robin, under the name of Faust's assignor: a group keeps the protocol
    of its first members, and the embedded broker refuses any other (Kafka too,
    while the group has members)."""

    name = "faust"


def _commit(worker: WorkerProcess, topic: str, offset: int, timeout_s: float = 60) -> None:
    """Commit ``offset`` for the worker's (stopped) group, as a member of the group:
    the embedded broker refuses commits from outside it (Kafka takes them from
    outside an empty group; as a member works on both)."""

    async def commit() -> None:
        consumer = AIOKafkaConsumer(
            worker.topic(topic), bootstrap_servers=worker.settings.bootstrap,
            group_id=worker.settings.app_id, enable_auto_commit=False,
            partition_assignment_strategy=(_AsFaust,),
            # the workers' (tests/conftest.py): the embedded broker holds the join half of it
            session_timeout_ms=int(float(os.environ["DRIFTLINE_SESSION_TIMEOUT_S"]) * 1000))
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            while not consumer.assignment():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the group gave no partition within {timeout_s} s")
                await consumer.getmany(timeout_ms=500)
            await consumer.commit({TopicPartition(worker.topic(topic), 0): offset})
        finally:
            await consumer.stop()

    asyncio.run(commit())
    assert worker.committed(topic) == offset


def test_a_hole_at_the_end_of_a_partition_is_read_directly(worker_factory: object) -> None:
    worker: WorkerProcess = worker_factory(  # type: ignore[operator]
        POLICY, log_level="info")
    worker.wait_ready(timeout_s=60)
    traffic = simulate.FraudTraffic(seed=5)
    first = list(simulate.batches(traffic.events(PER_WINDOW, start_s=T0, span_s=60), 250))
    rest = list(simulate.batches(traffic.events(PER_WINDOW, start_s=T0 + 60, span_s=60), 250))
    rest += list(simulate.batches(traffic.events(1, start_s=T0 + 200, span_s=1), 250))
    producer = simulate.make_producer(worker.settings.bootstrap)
    simulate.publish(producer, worker.topic("predictions"), "fraud-detector", first)
    worker.wait_committed("predictions", len(first), timeout_s=60)

    assert worker.stop() == 0, worker.log()
    simulate.publish(producer, worker.topic("predictions"), "fraud-detector", rest)
    end = len(first) + len(rest)
    _commit(worker, "predictions", end)  # Faust's drop: acknowledged, never handed over
    worker.seal_changelogs()  # on the embedded broker only, see WorkerProcess.restart
    worker.start()

    reports = tail.collect(worker.settings.bootstrap, worker.topic("drift"),
                           lambda seen: len(seen) >= 2, timeout_s=90)
    counted = sorted((r["window_start"], r["n"]) for r in reports)
    assert [n for _, n in counted] == [PER_WINDOW, PER_WINDOW], f"{counted}\n{worker.log()}"
    log = worker.log()
    assert (f"drift: the consumer never handed over {worker.topic('predictions')}[0] offsets "
            f"{len(first)}-{end - 1}") in log, log[-3000:]
    # ... and applied: the table's redo record in the changelog says so.
    deadline = time.monotonic() + 30
    while (applied := worker.applied("drift-state", "predictions")) != end - 1:
        assert time.monotonic() < deadline, f"redo record at {applied}\n{log[-3000:]}"
        time.sleep(0.5)  # polling interval of the condition, not synchronisation

