"""The agent runner without Faust: redelivered messages skipped, holes read directly
(before a later message, or at the end of what was sent: ``catch_up``).

The stream is a list of messages as Faust hands them over after a restart
(some again, some never); the table is a dict; the hole is read from a real
topic on the embedded broker by agents.runtime.backfill.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import TP

from agents.dev import simulate
from agents.inputs.codec import Origin
from agents.runtime.backfill import Backfill
from agents.runtime.redo import RedoLog
from agents.runtime.runner import Outcome, acknowledge_applied, commit_end, handler_agent


class Counter:
    """Adds each message's number to a running total in the table; remembers the order."""

    AGENT = "test"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, raw: bytes | None, origin: Origin,
               table: MutableMapping[bytes, bytes]) -> Outcome:
        n = orjson.loads(raw or b"0")
        self.seen.append(origin.offset)
        table[b"total"] = orjson.dumps(orjson.loads(table.get(b"total", b"0")) + n)
        return Outcome(counted=1)


class Sink:
    """A Faust topic's ``send``: records, and returns an already acknowledged future."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Event:
    message: Message


class App:
    """What the runner reads of a Faust app through its stream: its identity."""


class Stream:
    """A Faust stream's ``events()`` (one at a time) and ``take_events`` (the messages in
    lists of ``max_``; with ``sizes``, lists of those sizes instead, then of ``max_``),
    its processors run on each message as it enters, as Faust's are."""

    def __init__(self, messages: list[Message], sizes: list[int] | None = None) -> None:
        self.messages = messages
        self.sizes = sizes or []
        self.taken: list[list[int]] = []  # the offsets of each list handed over
        self.acked: list[int] = []  # of those, the ones asked past (Faust acks them then)
        self.app = App()
        self._processors: list[Callable[[Any], Any]] = []

    def add_processor(self, processor: Callable[[Any], Any]) -> None:
        self._processors.append(processor)

    def _enter(self, m: Message) -> Event:
        value: Any = m.value
        for processor in self._processors:
            value = processor(value)
        return Event(m)

    async def events(self) -> Any:
        for m in self.messages:
            yield self._enter(m)

    async def take_events(self, max_: int, within: float) -> Any:
        assert within > 0, "no timeout: Faust's take_events would wait for a full buffer"
        rest, sizes = list(self.messages), list(self.sizes)
        while rest:
            n = min(sizes.pop(0) if sizes else max_, max_)
            part, rest = rest[:n], rest[n:]
            self.taken.append([m.offset for m in part])
            yield [self._enter(m) for m in part]
            self.acked += [m.offset for m in part]


def _run(handler: Counter, table: dict[bytes, bytes], messages: list[Message],
         backfill: Backfill | None) -> list[tuple[str, int, int, int]]:
    """Run the agent over ``messages``; the holes it settled with the consumer."""
    settled: list[tuple[str, int, int, int]] = []

    async def settle(*hole: Any) -> None:
        settled.append(hole)

    runner = handler_agent(handler, table=table, reports=Sink(), deadletter=Sink(),  # type: ignore[arg-type]
                           log=RedoLog(table), backfill=backfill, settle=settle)
    asyncio.run(runner.body(Stream(messages)))
    return settled


def test_redelivered_messages_are_skipped_and_a_hole_is_read_from_the_partition(
        broker: Any) -> None:
    topic = f"runner-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    values = [orjson.dumps(n) for n in range(1, 11)]  # offsets 0..9 hold 1..10
    simulate.publish(simulate.make_producer(broker.bootstrap), topic, "m", values)
    messages = [Message(topic, 0, o, b"m", v) for o, v in enumerate(values)]
    handler, table = Counter(), {}
    backfill = Backfill(broker.bootstrap, group="test-backfill")

    _run(handler, table, messages[:4], backfill)  # the first worker handles 0..3
    # A restart: Faust hands 2..3 again (not committed), then drops 4..6 and goes on at 7.
    settled = _run(handler, table, messages[2:4] + messages[7:], backfill)
    assert handler.seen == list(range(10)), "each offset handled once, in order"
    # the consumer is told offsets 4-6 are done, and every offset before them (0:
    # the start of the partition; the consumer ignores what it committed already)
    assert settled == [(topic, 0, 0, 2), (topic, 0, 0, 3), (topic, 0, 0, 7)]
    assert orjson.loads(table[b"total"]) == sum(range(1, 11))


def test_messages_applied_before_a_restart_and_dropped_after_it_are_settled() -> None:
    # The first worker applied 0..9; after its restart Faust hands 2 again, drops 3..8
    # (its flow stopped for the recovery) and hands 9: both skipped as applied. No hole
    # for the agent, but its consumer never saw 3..8 acknowledged: without being told,
    # the group's offset commit would stay at 3 for good (seen on Apache Kafka).
    messages = [Message("t", 0, o, b"m", orjson.dumps(1)) for o in range(10)]
    handler, table = Counter(), {}
    _run(handler, table, messages, None)
    settled = _run(handler, table, messages[2:3] + messages[9:], None)
    assert handler.seen == list(range(10))
    assert settled == [("t", 0, 0, 2), ("t", 0, 0, 9)]


def test_without_a_reader_a_hole_stays_a_hole_and_nothing_is_counted_twice() -> None:
    messages = [Message("t", 0, o, b"m", orjson.dumps(1)) for o in range(6)]
    handler, table = Counter(), {}
    _run(handler, table, messages[:3] + messages[1:2] + messages[5:], None)
    assert handler.seen == [0, 1, 2, 5]
    assert orjson.loads(table[b"total"]) == 4


def test_catch_up_reads_a_hole_at_the_end_once(broker: Any) -> None:
    # Faust read offsets 0..9 but handed over only 0..3 (it dropped the rest when a
    # recovery resumed its flow): no later message reveals the hole; catch_up does.
    topic = f"runner-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    values = [orjson.dumps(n) for n in range(1, 11)]
    simulate.publish(simulate.make_producer(broker.bootstrap), topic, "m", values)
    messages = [Message(topic, 0, o, b"m", v) for o, v in enumerate(values)]
    handler, table = Counter(), {}
    settled: list[tuple[Any, ...]] = []

    async def settle(*hole: Any) -> None:
        settled.append(hole)

    runner = handler_agent(handler, table=table, reports=Sink(), deadletter=Sink(),  # type: ignore[arg-type]
                           log=RedoLog(table), backfill=Backfill(broker.bootstrap, group="t"),
                           settle=settle)

    async def scenario() -> list[int]:
        await runner.body(Stream(messages[:4]))
        caught = [await runner.catch_up(topic, 0, 9), await runner.catch_up(topic, 0, 9)]
        await runner.body(Stream(messages[8:]))  # handed over late after all: skipped
        return caught

    assert asyncio.run(scenario()) == [6, 0]
    assert handler.seen == list(range(10))
    assert settled == [(topic, 0, 0, 10), (topic, 0, 0, 8), (topic, 0, 0, 9)]
    assert orjson.loads(table[b"total"]) == sum(range(1, 11))


def test_a_hole_at_the_end_is_committed_once_every_agent_reading_it_applied_it(
        broker: Any) -> None:
    # Two agents of one app read the topic; Faust committed 0..3 and handed over
    # nothing after (test_crash, under load: the KPI agent's watch read 106-119 of 120,
    # and the group's commit stayed at 106 until a later message came).
    topic = f"runner-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    values = [orjson.dumps(n) for n in range(1, 11)]
    simulate.publish(simulate.make_producer(broker.bootstrap), topic, "m", values)
    messages = [Message(topic, 0, o, b"m", v) for o, v in enumerate(values)]
    consumer = faust.App("commit-end-test", broker="kafka://127.0.0.1:9", store="memory://",
                         web_enabled=False).consumer  # never started: no connection
    tp = TP(topic, 0)
    consumer._committed_offset[tp] = 4

    tables: list[dict[bytes, bytes]] = [{}, {}]
    logs = [RedoLog(t) for t in tables]

    async def settle(topic: str, partition: int, start: int, end: int) -> None:
        acknowledge_applied(consumer, logs, TP(topic, partition), end, start)

    runners = [handler_agent(Counter(), table=t, reports=Sink(), deadletter=Sink(),  # type: ignore[arg-type]
                             log=log, backfill=Backfill(broker.bootstrap, group="t"),
                             settle=settle) for t, log in zip(tables, logs, strict=True)]

    async def scenario() -> list[Any]:
        steps: list[Any] = []
        for runner in runners:
            await runner.body(Stream(messages[:4]))
        steps.append(await runners[0].catch_up(topic, 0, 9))
        # Read by one agent, the hole is not committable: the other is behind.
        steps.append(consumer._new_offset(tp))
        steps.append(commit_end(consumer, logs, tp, 10))
        steps.append(await runners[1].catch_up(topic, 0, 9))  # settled for both now
        steps.append(commit_end(consumer, logs, tp, 10))  # nothing left to add
        steps.append(consumer._new_offset(tp))  # what Faust's next commit takes
        return steps

    assert asyncio.run(scenario()) == [6, None, 0, 6, 0, 10]
    assert [orjson.loads(t[b"total"]) for t in tables] == [sum(range(1, 11))] * 2
    consumer._committed_offset[tp] = 10
    assert commit_end(consumer, logs, tp, 10) == 0, "committed already"


def test_catch_up_without_a_record_or_a_reader_does_nothing() -> None:
    handler, table = Counter(), {}
    runner = handler_agent(handler, table=table, reports=Sink(), deadletter=Sink(),  # type: ignore[arg-type]
                           log=RedoLog(table), backfill=None)
    assert asyncio.run(runner.catch_up("t", 0, 5)) == 0
    runner = handler_agent(handler, table=table, reports=Sink(), deadletter=Sink(),  # type: ignore[arg-type]
                           log=RedoLog(table), backfill=Backfill("127.0.0.1:1", group="t"))
    assert asyncio.run(runner.catch_up("t", 0, 5)) == 0, "nothing applied yet: no start"
    assert handler.seen == []
