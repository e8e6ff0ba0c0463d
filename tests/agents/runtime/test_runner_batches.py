"""The runner's batches (agents.runtime.batches) without Faust: what a taken batch becomes.

One handler call and one redo record per sub-batch; a batch spanning two partitions
writes each partition's records to its own changelog partition; applied messages
inside a batch are skipped, holes inside it filled before the messages after them;
a message the handler raises on is dead-lettered alone while its neighbours go on.
The stream, topics and table are test_runner's stand-ins; the hole reader here
returns messages from a list (agents.runtime.backfill reads them from the partition:
tests/agents/runtime/test_runner.py and the end-to-end tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from faust.streams import current_event
from pydantic import BaseModel

from agents import metrics
from agents.config import Settings
from agents.inputs.codec import Origin
from agents.runtime.backfill import Input
from agents.runtime.batches import Bounds
from agents.runtime.redo import Redo, RedoLog, redo_key
from agents.runtime.runner import HandlerAgent, Outcome, handler_agent
from schemas.errors import DriftlineError
from tests.agents.runtime.test_runner import Message, Sink, Stream
from tests.agents.runtime.test_runner_send import Topic, too_large


class Adder:
    """Adds each message's number to a total per partition; remembers each call's offsets.
    A message holding "poison" makes it raise. No ``handle_batch``: the runner's default."""

    AGENT = "batch-test"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []  # offsets of each handle_batch / handle call
        self.forgotten = 0

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        if raw == b'"poison"':
            raise ValueError("cannot add poison")
        key = b"total|%d" % origin.partition
        table[key] = orjson.dumps(orjson.loads(table.get(key, b"0")) + orjson.loads(raw or b"0"))
        return Outcome(counted=1)

    def forget(self) -> None:
        self.forgotten += 1


class Batching(Adder):
    """The same, with its own ``handle_batch`` (which raises as ``handle`` does)."""

    def handle_batch(
        self, messages: list[tuple[bytes | None, Origin]], table: MutableMapping[bytes, bytes]
    ) -> list[Outcome]:
        self.calls.append([origin.offset for _, origin in messages])
        return [self.handle(raw, origin, table) for raw, origin in messages]


class Recording(dict[bytes, bytes]):
    """A table that records, for each write, the partition Faust would send it to: the
    one of the event being processed (``faust.streams.current_event``)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, int | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        event = current_event()
        self.writes.append((key, None if event is None else event.message.partition))
        super().__setitem__(key, value)

    def records(self) -> list[tuple[bytes, int | None]]:
        return [(k, p) for k, p in self.writes if k.startswith(b"\x00driftline|redo|")]


class Holes:
    """Backfill's ``read`` from a list of messages."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.reads: list[tuple[str, int, int, int]] = []

    def read(self, topic: str, partition: int, start: int, end: int) -> list[Input]:
        self.reads.append((topic, partition, start, end))
        return [
            Input(m.topic, m.partition, m.offset, m.key, m.value)
            for m in self.messages
            if (m.topic, m.partition) == (topic, partition) and start <= m.offset < end
        ]


def runner(
    handler: Adder,
    table: dict[bytes, bytes],
    *,
    bounds: Bounds | None = None,
    backfill: Any = None,
    deadletter: Any = None,
    settled: list[tuple[Any, ...]] | None = None,
) -> HandlerAgent:
    async def settle(*hole: Any) -> None:
        if settled is not None:
            settled.append(hole)

    return handler_agent(
        handler,
        table=table,
        reports=Sink(),  # type: ignore[arg-type]
        deadletter=deadletter or Sink(),
        log=RedoLog(table),
        backfill=backfill,
        settle=settle,
        bounds=bounds,
    )


def numbers(
    topic: str, partition: int, offsets: range | list[int], value: bytes = b"1"
) -> list[Message]:
    return [Message(topic, partition, o, b"m", value) for o in offsets]


def test_one_handler_call_and_one_redo_record_per_sub_batch() -> None:
    handler, table = Batching(), Recording()
    stream = Stream(numbers("t", 0, range(10), b"10"))
    # 10 messages taken at once; 2 bytes each, at most 12 bytes a call: 6 + 4
    asyncio.run(runner(handler, table, bounds=Bounds(64, 12, 0.01)).body(stream))
    assert stream.taken == [list(range(10))], "the stream was asked for a batch"
    assert handler.calls == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert len(table.records()) == 2, "one redo record per sub-batch"
    record = Redo.loads(table[redo_key(0)])
    assert record.applied == {"t": 9} and record.last == ("t", 9)
    assert record.writes == {b"total|0": b"100"}, "the sub-batch's writes, one per key"
    assert [k for k, _ in table.writes].count(b"total|0") == 2, "one state write per call"


def test_one_message_at_a_time_with_a_bound_of_one() -> None:
    handler, table = Batching(), Recording()
    stream = Stream(numbers("t", 0, range(4)))
    asyncio.run(runner(handler, table, bounds=Bounds(max_messages=1)).body(stream))
    assert stream.taken == [], "read with events(), as before batches"
    assert handler.calls == [[0], [1], [2], [3]]
    assert len(table.records()) == 4


def test_a_batch_of_two_partitions_writes_each_to_its_own_partition() -> None:
    handler, table = Batching(), Recording()
    messages = [
        m
        for pair in zip(numbers("t", 0, range(3)), numbers("u", 1, range(3)), strict=True)
        for m in pair
    ]
    asyncio.run(runner(handler, table).body(Stream(messages)))
    assert handler.calls == [[0, 1, 2], [0, 1, 2]], "one call per partition, in order"
    assert sorted(table.records()) == [(redo_key(0), 0), (redo_key(1), 1)]
    assert (b"total|0", 0) in table.writes and (b"total|1", 1) in table.writes
    assert {p for _, p in table.writes} == {0, 1}, "no write without its partition"
    assert Redo.loads(table[redo_key(1)]).applied == {"u": 2}


def test_applied_messages_inside_a_batch_are_skipped_and_settled() -> None:
    handler, table = Batching(), Recording()
    asyncio.run(runner(handler, table).body(Stream(numbers("a", 0, range(4)))))
    before = (
        metrics.REGISTRY.get_sample_value(
            "driftline_redelivered_total", {"topic": "a", "agent": "batch-test"}
        )
        or 0.0
    )
    settled: list[tuple[Any, ...]] = []
    # After a restart: b@0, then a@3 again (applied), then b@1 and a@4 (new)
    again = [
        *numbers("b", 0, [0]),
        *numbers("a", 0, [3]),
        *numbers("b", 0, [1]),
        *numbers("a", 0, [4]),
    ]
    asyncio.run(runner(handler, table, settled=settled).body(Stream(again)))
    assert handler.calls == [[0, 1, 2, 3], [0, 1, 4]], "the skip does not split the call"
    assert settled == [("a", 0, 0, 3)]
    assert (
        metrics.REGISTRY.get_sample_value(
            "driftline_redelivered_total", {"topic": "a", "agent": "batch-test"}
        )
        == before + 1
    )
    assert Redo.loads(table[redo_key(0)]).applied == {"a": 4, "b": 1}
    assert orjson.loads(table[b"total|0"]) == 7, "each message counted once"


def test_a_hole_inside_a_batch_is_filled_before_the_messages_after_it() -> None:
    handler, table = Batching(), Recording()
    messages = numbers("a", 0, range(7))
    holes = Holes(messages)
    settled: list[tuple[Any, ...]] = []
    # Faust hands 0, 1, then 4..6 in one batch: 2 and 3 dropped
    stream = Stream(messages[:2] + messages[4:])
    asyncio.run(runner(handler, table, backfill=holes, settled=settled).body(stream))
    assert handler.calls == [[0, 1], [2], [3], [4, 5, 6]], "split at the hole, filled first"
    assert holes.reads == [("a", 0, 2, 4)]
    assert settled == [("a", 0, 0, 4)]
    assert Redo.loads(table[redo_key(0)]).applied == {"a": 6}
    assert orjson.loads(table[b"total|0"]) == 7


def counter(name: str, topic: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"topic": topic, "agent": "batch-test"}) or 0.0


def test_a_message_the_handler_raises_on_is_dead_lettered_alone() -> None:
    for handler in (Batching(), Adder()):  # its own handle_batch; the runner's default
        topic = f"poison-{type(handler).__name__}"
        table: dict[bytes, bytes] = {}
        letters = Sink()
        events, dead = (
            counter("driftline_events_total", topic),
            counter("driftline_deadletters_total", topic),
        )
        stream = Stream(
            [
                Message(topic, 0, 0, b"m", b"1"),
                Message(topic, 0, 1, b"m", b"2"),
                Message(topic, 0, 2, b"m", b'"poison"'),
                Message(topic, 0, 3, b"m", b"4"),
            ]
        )
        asyncio.run(runner(handler, table, deadletter=letters).body(stream))
        (letter,) = (orjson.loads(v) for v in letters.sent)
        assert (letter["topic"], letter["offset"]) == (topic, 2)
        assert "driftline bug" in letter["error"] and "cannot add poison" in letter["error"]
        assert counter("driftline_events_total", topic) - events == 3, "its neighbours count"
        assert counter("driftline_deadletters_total", topic) - dead == 1
        assert orjson.loads(table[b"total|0"]) == 7, "their writes, once; none of its own"
        assert Redo.loads(table[redo_key(0)]).applied == {topic: 3}
        assert handler.forgotten >= 1, "working sets the failed call touched are dropped"


class Report(BaseModel):
    model: str
    n: int


class Reporting(Adder):
    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        return Outcome(reports=[Report(model="m", n=origin.offset)], counted=1)


def test_outputs_lost_in_a_batch_are_named_in_each_message_s_dead_letter() -> None:
    reports, letters = Topic("r-batch", too_large), Topic("dl-batch")
    table: dict[bytes, bytes] = {}
    run = handler_agent(
        Reporting(),
        table=table,
        reports=reports,  # type: ignore[arg-type]
        deadletter=letters,
        log=RedoLog(table),
        send_backoff_s=0.001,
    )
    asyncio.run(run.body(Stream([Message("in", 0, o, b"k%d" % o, b"%d" % o) for o in range(3)])))
    assert reports.tries == 3, "one send of the batch's outputs, nothing tried again"
    notes = [orjson.loads(v) for v in letters.sent]
    assert [n["offset"] for n in notes] == [0, 1, 2], "one note per message, its own"
    assert all("could not send the Report of model 'm'" in n["error"] for n in notes)
    assert [n["key"] for n in notes] == ["k0", "k1", "k2"]
    assert Redo.loads(table[redo_key(0)]).applied == {"in": 2}


def test_bounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_BATCH_MAX_MESSAGES", "8")
    monkeypatch.setenv("DRIFTLINE_BATCH_MAX_BYTES", "1000")
    monkeypatch.setenv("DRIFTLINE_BATCH_MAX_WAIT_MS", "25")
    assert Bounds.of(Settings.from_env()) == Bounds(8, 1000, 0.025)
    assert Bounds.of(Settings()) == Bounds(64, 16 * 1024 * 1024, 0.010)
    monkeypatch.setenv("DRIFTLINE_BATCH_MAX_MESSAGES", "0")
    with pytest.raises(DriftlineError, match="DRIFTLINE_BATCH_MAX_MESSAGES must be 1 or more"):
        Settings.from_env()


class Failing(dict[bytes, bytes]):
    """A table whose redo record cannot be read the first ``times`` times (an outage, say:
    an exception out of the runner, not the handler)."""

    def __init__(self, times: int, stream: Stream) -> None:
        super().__init__()
        self.times, self.stream = times, stream
        self.acked_at_failure: list[list[int]] = []

    def get(self, key: bytes, default: Any = None) -> Any:
        if key == redo_key(0) and self.times:
            self.times -= 1
            self.acked_at_failure.append(list(self.stream.acked))
            raise ConnectionError("the store is not there")
        return super().get(key, default)


def test_a_failed_batch_is_tried_again_unacknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.runtime.runner.RETRY_S", 0.001)
    handler, stream = (
        Batching(),
        Stream(numbers("t", 0, range(3)) + numbers("t", 0, [3]), sizes=[3]),
    )
    table = Failing(2, stream)
    crashes = (
        metrics.REGISTRY.get_sample_value("driftline_agent_crashes_total", {"agent": "batch-test"})
        or 0.0
    )
    asyncio.run(runner(handler, table).body(stream))
    assert table.acked_at_failure == [[], []], "nothing acknowledged while it fails"
    assert handler.calls == [[0, 1, 2], [3]], "then handled once"
    assert stream.acked == [0, 1, 2, 3]
    assert (
        metrics.REGISTRY.get_sample_value("driftline_agent_crashes_total", {"agent": "batch-test"})
        == crashes + 2
    )


def test_one_at_a_time_a_failure_ends_the_agent_as_before() -> None:
    stream = Stream(numbers("t", 0, range(2)))
    table = Failing(1, stream)
    with pytest.raises(ConnectionError):  # Faust's supervisor restarts the agent
        asyncio.run(runner(Batching(), table, bounds=Bounds(max_messages=1)).body(stream))


def test_a_failed_batch_is_let_go_in_a_rebalance() -> None:
    handler, stream = (
        Batching(),
        Stream(numbers("t", 0, range(2)) + numbers("t", 0, [2]), sizes=[2]),
    )
    table = Failing(1, stream)
    run = handler_agent(
        handler,
        table=table,
        reports=Sink(),  # type: ignore[arg-type]
        deadletter=Sink(),
        log=RedoLog(table),
        active=lambda: False,
    )
    asyncio.run(run.body(stream))
    assert handler.calls == [[2]], "0 and 1 are left to be read again (a hole)"


class Writer(Batching):
    """Writes 60 bytes under a key of its own per message."""

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        table[b"k%d" % origin.offset] = b"x" * 60
        return Outcome(counted=1)


def test_a_sub_batch_writing_more_than_the_bound_is_handled_again_in_halves() -> None:
    # Its redo record holds its writes: a broker takes records up to a limit.
    handler, table = Writer(), Recording()
    bounds = Bounds(max_messages=64, max_bytes=150, max_wait_s=0.01)  # 63 bytes a message
    asyncio.run(runner(handler, table, bounds=bounds).body(Stream(numbers("t", 0, range(4)))))
    assert handler.calls == [[0, 1, 2, 3], [0, 1], [2, 3]]
    assert handler.forgotten == 1
    assert len(table.records()) == 2, "one redo record per half"
    assert Redo.loads(table[redo_key(0)]).applied == {"t": 3}
    assert sorted(k for k in table if not k.startswith(b"\x00")) == [b"k0", b"k1", b"k2", b"k3"]
