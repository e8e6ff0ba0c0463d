"""The Faust internals behind agents.runtime.faust_internals: present, with their
shape, and doing what the runner relies on. A faust-streaming release that changes
them fails here, by name, instead of in a watch that logs an error every 5 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

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


@pytest.mark.parametrize("name", ["_add_gap", "__annotations__"])
def test_a_faust_without_an_internal_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name == "_add_gap":
        monkeypatch.delattr(Consumer, "_add_gap")
        expected = "Consumer._add_gap is not a coroutine function"
    else:  # a release that stops keeping the read offsets
        annotations = dict(Consumer.__annotations__)
        del annotations["_read_offset"]
        monkeypatch.setattr(Consumer, "__annotations__", annotations)
        expected = "declares no _read_offset"
    with pytest.raises(FaustChanged) as refused:
        faust_internals.check()
    assert expected in str(refused.value)
    assert "faust-streaming 0." in str(refused.value)


def test_a_changed_signature_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _add_gap(self: Consumer, tp: TP, offsets: range) -> None: ...

    monkeypatch.setattr(Consumer, "_add_gap", _add_gap)
    assert any("does not take (tp, offset_from, offset_to)" in p
               for p in faust_internals.problems())


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


def test_settle_gap_marks_offsets_done_for_the_commit(app: faust.App) -> None:
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 3
    asyncio.run(faust_internals.settle_gap(consumer, tp, 2, 9))
    # Faust's commit passes over the gap: offsets 4..9 (those after the commit).
    assert [(i.begin, i.end) for i in sorted(consumer._gap[tp])] == [(4, 10)]


def test_acknowledge_takes_the_commit_past_a_hole_at_the_end(app: faust.App) -> None:
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 3
    consumer.ack(_Message(tp, 3))  # handed over by the stream and acknowledged
    asyncio.run(faust_internals.settle_gap(consumer, tp, 0, 9))  # read directly: a gap
    # The gap is merged only below the largest acknowledged offset: the commit stops
    # at 4, and the rest waits for a later message.
    assert consumer._new_offset(tp) == 4
    consumer._committed_offset[tp] = 4
    assert faust_internals.committed_offset(consumer, tp) == 4
    assert faust_internals.acknowledge(consumer, tp, 9) == 6
    assert consumer._new_offset(tp) == 10
    consumer._committed_offset[tp] = 10  # as the commit of that offset does
    assert faust_internals.acknowledge(consumer, tp, 9) == 0, "committed already"


def test_acknowledge_leaves_no_offset_twice(app: faust.App) -> None:
    # An offset both in a gap and acknowledged ends Faust's run of consecutive
    # offsets: the commit would advance by one or two offsets at a time.
    consumer = app.consumer
    tp = TP("in", 0)
    consumer._committed_offset[tp] = 0
    asyncio.run(faust_internals.settle_gap(consumer, tp, 0, 20))
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
