"""The Faust (and aiokafka) internals behind agents.runtime.faust_internals: present, with their
shape, and doing what the runner relies on. A faust-streaming release that changes
them fails here, by name, instead of in a watch that logs an error every 5 s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from agents.runtime import faust_internals
from agents.runtime.faust_internals import FaustChanged


@dataclass(eq=False)
class _Message:
    """What ``Consumer.ack`` reads of a message."""

    tp: TP
    offset: int
    acked: bool = False

    @property
    def topic(self) -> str:
        return self.tp.topic


@pytest.fixture
def app() -> Iterator[faust.App]:
    # Never started: creating its consumer opens no connection.
    app = faust.App("faust-internals-test", broker="kafka://127.0.0.1:9", store="memory://",
                    web_enabled=False)
    app.topics._acking_topics.add("in")  # as subscribing an agent to "in" would
    yield app


def test_the_installed_faust_has_every_internal(app: faust.App) -> None:
    assert faust_internals.problems(app.consumer) == []
    faust_internals.check(app.consumer)


@pytest.mark.parametrize("name", ["_read_offset", "_gap", "_acked_index", "_unacked_messages"])
def test_a_faust_without_an_internal_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # a release that stops keeping one of the consumer's offsets
    annotations = dict(Consumer.__annotations__)
    del annotations[name]
    monkeypatch.setattr(Consumer, "__annotations__", annotations)
    with pytest.raises(FaustChanged) as refused:
        faust_internals.check()
    assert f"declares no {name}" in str(refused.value)
    assert "faust-streaming 0." in str(refused.value)


def test_the_context_variable_is_refused_when_it_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust.streams, "_current_event", None)
    assert "faust.streams._current_event is not a context variable" in faust_internals.problems()


def test_in_partition_is_the_event_faust_s_tables_read(app: faust.App) -> None:
    table = app.Table("t", partitions=4, key_type=bytes, value_type=bytes)
    assert faust.current_event() is None
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table.partition_for_key(b"k")  # where a write of b"k" would go
    tp = TP("in", 2)
    with faust_internals.in_partition(tp):
        event = faust.current_event()
        assert event is not None and event.message == tp
        assert table.partition_for_key(b"k") == 2
    assert faust.current_event() is None


def test_acknowledge_marks_offsets_done_from_the_commit(app: faust.App) -> None:
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 3
    assert faust_internals.acknowledge(consumer, tp, 9, 2) == 7  # 3..9: from the commit
    assert faust_internals.acknowledge(consumer, tp, 12, 11) == 2  # a hole stays a hole
    assert consumer._new_offset(tp) == 10  # the next offset to read


def test_skipped_then_acknowledged_by_the_stream_commits_at_once(app: faust.App) -> None:
    # After a restart the stream hands over messages applied before it: each is
    # skipped, every offset before it acknowledged, then the stream acknowledges it.
    # With Faust's gaps an offset was counted twice and the commit advanced by one
    # offset per commit interval (to 12 of 30 here); all at once now.
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 10
    for offset in range(10, 30):
        faust_internals.acknowledge(consumer, tp, offset - 1)
        consumer.ack(_Message(tp, offset))
    assert consumer._new_offset(tp) == 30


def test_acknowledge_takes_the_commit_past_a_hole_at_the_end(app: faust.App) -> None:
    # Offsets read directly at the end of a partition: Faust's gaps would be merged
    # only below the largest acknowledged offset (the commit stopping at 4 here);
    # acknowledged, the commit takes them all.
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 3
    consumer.ack(_Message(tp, 3))  # handed over by the stream and acknowledged
    assert faust_internals.committed_offset(consumer, tp) == 3
    assert faust_internals.acknowledge(consumer, tp, 9) == 6
    assert consumer._new_offset(tp) == 10
    consumer._committed_offset[tp] = 10  # as the commit of that offset does
    assert faust_internals.acknowledge(consumer, tp, 9) == 0, "committed already"


def test_acknowledge_leaves_no_offset_twice(app: faust.App) -> None:
    # An offset both in one of Faust's gaps (offsets it skipped itself) and
    # acknowledged ends Faust's run of consecutive offsets: the commit would advance
    # by one or two offsets at a time.
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 0
    asyncio.run(consumer._add_gap(tp, 0, 20))
    assert faust_internals.acknowledge(consumer, tp, 9) == 10
    consumer.ack(_Message(tp, 25))
    assert consumer._new_offset(tp) == 21, "the rest of the gap is kept and merged"


def test_read_offset_follows_the_consumer_s_seek(
    app: faust.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = app.consumer
    tp = TP("in", 1)
    assert faust_internals.read_offset(consumer, tp) is None

    async def no_broker(partition: TP, offset: int) -> None: ...

    monkeypatch.setattr(consumer, "_seek", no_broker)
    asyncio.run(consumer.seek(tp, 42))
    assert faust_internals.read_offset(consumer, tp) == 42


def test_a_consumer_without_its_acknowledgement_state_is_refused(app: faust.App) -> None:
    consumer = app.consumer
    del consumer._acked_index
    assert "the consumer keeps no _acked_index per partition (Consumer.ack's state)" in \
        faust_internals.problems(consumer)


def test_acknowledge_goes_on_from_where_it_reached_until_faust_revokes(app: faust.App) -> None:
    # After a restart the runner acknowledges up to each skipped message: scanning
    # from the commit every time was quadratic (0.58 s for 5,000 messages).
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 0
    for offset in range(5000):
        faust_internals.acknowledge(consumer, tp, offset - 1)
        consumer.ack(_Message(tp, offset))
    assert consumer._new_offset(tp) == 5000
    consumer._committed_offset[tp] = 5000
    # A hole the stream never handed over stays a hole for a later call from a start
    # past the hint ...
    faust_internals.acknowledge(consumer, tp, 5003, 5002)
    consumer.ack(_Message(tp, 5005))
    assert consumer._new_offset(tp) is None, "5000-5001 were never acknowledged"
    # ... and is filled from the commit.
    assert faust_internals.acknowledge(consumer, tp, 5004) == 3  # 5000, 5001, 5004
    assert consumer._new_offset(tp) == 5006
    # Revoked and assigned again, Faust starts a new set: the hint no longer applies.
    consumer._committed_offset[tp] = 10
    consumer._acked.pop(tp)
    consumer._acked_index.pop(tp)
    assert faust_internals.acknowledge(consumer, tp, 19) == 10
    assert consumer._new_offset(tp) == 20


def test_a_faust_producer_without_its_aiokafka_producer_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    annotations = dict(faust_aiokafka.Producer.__annotations__)
    del annotations["_producer"]
    monkeypatch.setattr(faust_aiokafka.Producer, "__annotations__", annotations)
    with pytest.raises(FaustChanged, match="aiokafka Producer declares no _producer"):
        faust_internals.check()


def test_send_now_sends_what_the_producer_would_linger_on(broker: Any) -> None:
    # A linger of a minute: without send_now the record would wait that long.
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"send-now-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)

    async def main() -> None:
        app = faust.App(f"send-now-{topic}", broker=f"kafka://{broker.bootstrap}",
                        store="memory://", web_enabled=False, producer_linger=60.0)
        faust_internals.send_now(app.producer)  # not started: nothing to send, no error
        await app.producer.start()
        try:
            sent = await app.producer.send(topic, b"k", b"v", partition=0, timestamp=None,
                                           headers=None)
            assert not sent.done()
            faust_internals.send_now(app.producer)
            await asyncio.wait_for(sent, timeout=30)  # not the minute of linger
        finally:
            await app.producer.stop()

    asyncio.run(main())
