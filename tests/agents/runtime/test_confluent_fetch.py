"""The worker's fetching by confluent-kafka (agents.runtime.confluent_fetch): librdkafka
follows the positions aiokafka holds, each message is handed over once and in order,
and aiokafka's positions move past what was handed over. On the real broker; the
worker's end-to-end tests (crash, restart, scale-out, catch-up) run this path too."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.consumer.subscription_state import SubscriptionState
from confluent_kafka.admin import AdminClient, NewTopic
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as AioThread
from faust.transport.drivers.aiokafka import Transport as AioTransport
from faust.types import TP

from agents.app import create_app
from agents.config import Settings
from agents.dev import simulate
from agents.runtime import confluent_fetch, inflight
from agents.runtime.confluent_fetch import FetchChanged, Fetcher, FetchTransport
from schemas.errors import DriftlineError
from schemas.policy import Policy

CONF = SimpleNamespace(
    id="fetch-test",
    broker_client_id="test",
    consumer_max_fetch_size=1 << 20,
    consumer_auto_offset_reset="earliest",
    broker_check_crcs=True,
)


def _topic(broker: Any, partitions: int, count: int) -> str:
    """A fresh topic whose partition p holds ``count`` messages b"p:i" (i = offset)."""
    topic = f"fetch-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=10)
    producer = simulate.make_producer(broker.bootstrap)
    for p in range(partitions):
        for i in range(count):
            producer.produce(
                topic,
                b"%d:%d" % (p, i),
                key=b"k",
                partition=p,
                headers=[("content-type", b"x/y")],
                timestamp=1_700_000_000_000 + i,
            )
    producer.flush(10)
    return topic


def _read(
    fetcher: Fetcher,
    plan: dict[tuple[str, int], int],
    want: int,
) -> dict[tuple[str, int], list[Any]]:
    """Poll with ``plan`` (moved on as messages come, as aiokafka's positions are)
    until ``want`` messages came or 20 s passed."""
    got: dict[tuple[str, int], list[Any]] = {}
    deadline = time.monotonic() + 20
    while sum(map(len, got.values())) < want and time.monotonic() < deadline:
        for key, messages in fetcher.poll(plan, 0.2).items():
            got.setdefault(key, []).extend(messages)
            plan[key] = messages[-1].offset() + 1
    return got


@pytest.fixture
def fetcher(broker: Any) -> Any:
    f = Fetcher(confluent_fetch.fetch_config(CONF, broker.bootstrap))
    yield f
    f.close()
    f.shutdown()


def test_reads_each_message_once_in_order_from_the_planned_position(
    broker: Any, fetcher: Fetcher
) -> None:
    topic = _topic(broker, 1, 30)
    got = _read(fetcher, {(topic, 0): 0}, 30)
    assert [m.offset() for m in got[(topic, 0)]] == list(range(30))
    assert [m.value() for m in got[(topic, 0)]] == [b"0:%d" % i for i in range(30)]
    assert fetcher.high[(topic, 0)] == 30
    # nothing more, and nothing again, at the position after the last
    assert fetcher.poll({(topic, 0): 30}, 0.3) == {}


def test_a_plan_moved_back_or_forward_reads_from_there(broker: Any, fetcher: Fetcher) -> None:
    # What a Faust seek does (a recovery, the runner's catch-up): aiokafka's position
    # moves, the next plan carries it, librdkafka is reassigned there.
    topic = _topic(broker, 1, 30)
    _read(fetcher, {(topic, 0): 0}, 30)
    back = _read(fetcher, {(topic, 0): 10}, 20)
    assert [m.offset() for m in back[(topic, 0)]] == list(range(10, 30))
    forward = _read(fetcher, {(topic, 0): 25}, 5)
    assert [m.offset() for m in forward[(topic, 0)]] == list(range(25, 30))


def test_a_fetch_returns_what_came_without_waiting_for_more(
    broker: Any,
    fetcher: Fetcher,
) -> None:
    # librdkafka's consume(n, timeout) waits for n messages or the timeout: one report
    # of a quiet stream would wait the whole timeout at every fetch.
    topic = _topic(broker, 1, 1)
    start = time.monotonic()
    got = fetcher.poll({(topic, 0): 0}, 30.0)
    assert [m.offset() for m in got[(topic, 0)]] == [0]
    assert time.monotonic() - start < 15, "the fetch waited out its timeout"


def test_a_fetch_holds_at_most_its_bytes_plus_one_message(broker: Any) -> None:
    topic = f"fetch-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    producer = simulate.make_producer(broker.bootstrap)
    for i in range(12):
        producer.produce(topic, bytes([i]) * 300_000, partition=0)
    producer.flush(10)
    fetcher = Fetcher(confluent_fetch.fetch_config(CONF, broker.bootstrap))  # 1 MiB
    try:
        sizes: list[int] = []
        plan = {(topic, 0): 0}
        deadline = time.monotonic() + 20
        while sum(sizes) < 12 and time.monotonic() < deadline:
            for key, messages in fetcher.poll(plan, 0.5).items():
                assert sum(map(len, messages)) <= fetcher.max_bytes + 300_000
                sizes.append(len(messages))
                plan[key] = messages[-1].offset() + 1
        assert sum(sizes) == 12 and max(sizes) <= 4
    finally:
        fetcher.close()
        fetcher.shutdown()


def test_only_planned_partitions_are_read(broker: Any, fetcher: Fetcher) -> None:
    # A partition Faust paused (a recovery) or lost (a rebalance) is not in the plan.
    topic = _topic(broker, 2, 10)
    got = _read(fetcher, {(topic, 1): 4}, 6)
    assert list(got) == [(topic, 1)]
    assert [m.value() for m in got[(topic, 1)]] == [b"1:%d" % i for i in range(4, 10)]
    both = _read(fetcher, {(topic, 0): 0, (topic, 1): 10}, 10)
    assert list(both) == [(topic, 0)]


def _states(*positions: tuple[TP, int | None]) -> Any:
    """aiokafka's real per-partition states, assigned by hand, at these positions."""
    subscription = SubscriptionState()
    subscription.assign_from_user(
        {aiokafka.TopicPartition(tp.topic, tp.partition) for tp, _ in positions}
    )
    assignment = subscription.subscription.assignment
    for tp, at in positions:
        if at is not None:
            assignment.state_value(aiokafka.TopicPartition(tp.topic, tp.partition)).seek(at)
    return assignment


class _Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


def test_the_plan_is_aiokafkas_known_positions_of_active_partitions() -> None:
    asyncio.run(_plan_case())


async def _plan_case() -> None:  # aiokafka's states need a running loop
    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    states = _states((a, 5), (b, None), (c, 7))  # b: position not resolved yet
    plan, tps = confluent_fetch.planned(states, {a, b})
    assert plan == {("t", 0): 5}
    assert tps == {("t", 0): a}


def test_taken_moves_aiokafka_past_the_messages_unless_its_position_moved_meanwhile() -> None:
    asyncio.run(_taken_case())


async def _taken_case() -> None:
    a, b = TP("t", 0), TP("t", 1)
    states = _states((a, 5), (b, 2))
    plan, tps = confluent_fetch.planned(states, {a, b})
    # While librdkafka was read, Faust sought b back to 0.
    states.state_value(aiokafka.TopicPartition("t", 1)).seek(0)
    forgotten: list[tuple[str, int]] = []
    got = {("t", 0): [_Msg(5), _Msg(6)], ("t", 1): [_Msg(2)]}
    records = confluent_fetch.taken(states, plan, tps, got, forgotten.append)
    assert list(records) == [a] and [m.offset() for m in records[a]] == [5, 6]
    assert states.state_value(aiokafka.TopicPartition("t", 0)).position == 7
    assert states.state_value(aiokafka.TopicPartition("t", 1)).position == 0  # as sought
    assert forgotten == [("t", 1)]


def test_faust_gets_the_message_aiokafka_would_give(broker: Any, fetcher: Fetcher) -> None:
    topic = _topic(broker, 1, 3)
    record = _read(fetcher, {(topic, 0): 2}, 1)[(topic, 0)][0]
    tp = TP(topic, 0)
    message = confluent_fetch.to_message(tp, record, generation_id=4)
    assert (message.topic, message.partition, message.offset) == (topic, 0, 2)
    assert (message.key, message.value) == (b"k", b"0:2")
    assert message.timestamp == pytest.approx(1_700_000_000.002)
    assert message.timestamp_type == 0  # create time, as aiokafka numbers it
    assert list(message.headers) == [("content-type", b"x/y")]
    assert message.serialized_value_size == 3 and message.tp == tp
    assert message.generation_id == 4


def test_the_worker_fetches_with_confluent_by_default_and_aiokafka_when_asked() -> None:
    settings = Settings(app_id=f"fetch-{uuid.uuid4().hex[:6]}")
    assert isinstance(create_app(settings, policy=Policy(), agents=()).transport, FetchTransport)
    aio = create_app(
        Settings(app_id=f"fetch-{uuid.uuid4().hex[:6]}", fetch="aiokafka"),
        policy=Policy(),
        agents=(),
    )
    # aiokafka's own fetch, with the stop's wait of agents.runtime.inflight
    assert type(aio.transport) is inflight.Transport
    assert isinstance(aio.transport, AioTransport)
    assert issubclass(FetchTransport, inflight.Transport)


def test_an_unknown_fetch_client_is_refused_by_name() -> None:
    with pytest.raises(
        DriftlineError,
        match="DRIFTLINE_FETCH must be one of confluent, aiokafka, got 'kafka-python'",
    ):
        Settings(fetch="kafka-python")


def test_an_aiokafka_without_what_the_fetch_path_uses_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.consumer.subscription_state import TopicPartitionState

    monkeypatch.delattr(TopicPartitionState, "consumed_to")
    with pytest.raises(FetchChanged, match="consumed_to; set DRIFTLINE_FETCH=aiokafka"):
        confluent_fetch.check()


def test_a_consumer_without_what_each_fetch_reads_is_refused() -> None:
    asyncio.run(_consumer_case())


async def _consumer_case() -> None:  # aiokafka's consumer needs a running loop
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    confluent_fetch.check_consumer(consumer)  # today's aiokafka has them all
    del consumer._subscription
    with pytest.raises(FetchChanged, match=r"no _subscription\.fetch_context; set DRIFTLINE_FETCH"):
        confluent_fetch.check_consumer(consumer)


def test_faust_s_partition_checks_read_the_highwater_librdkafka_saw(
    broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Faust checks every assigned partition every few seconds and, from
    # stream_processing_timeout (5 min) after start, logged an error for each
    # partition whose highwater aiokafka's record lacked: all of them, with this fetch.
    topic = _topic(broker, 1, 3)
    asyncio.run(_highwater_case(broker, topic, caplog))


async def _highwater_case(broker: Any, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(app_id=f"fetch-{uuid.uuid4().hex[:6]}"), policy=Policy(), agents=())
    thread = app.consumer._thread
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        thread._consumer = consumer  # as Faust's thread holds it once started
        thread._fetcher = Fetcher(confluent_fetch.fetch_config(CONF, broker.bootstrap))
        partition = aiokafka.TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)  # a known position, as once aiokafka resolved it
        thread.time_started = time.monotonic() - 3600  # long past Faust's timeouts
        state = confluent_fetch._states(consumer).state_value(partition)
        tp = TP(topic, 0)
        with caplog.at_level(logging.ERROR):
            thread.verify_event_path(time.monotonic(), tp)  # not fetched yet: not checked
            assert state.highwater is None
            got = await thread._fetcher.call(_read, thread._fetcher, {(topic, 0): 0}, 3)
            assert len(got[topic, 0]) == 3
            thread.verify_event_path(time.monotonic(), tp)
            assert state.highwater == 3, "Faust's checks see the highwater librdkafka saw"
            # a position being resolved again (Faust's check would fail on it)
            state.await_reset(OffsetResetStrategy.LATEST)
            assert not state.has_valid_position
            thread.verify_event_path(time.monotonic(), tp)
        assert "Highwater not yet available" not in caplog.text
        # Faust's own check, given no highwater, as it ran before: the error above
        consumer.seek(partition, 0)
        with caplog.at_level(logging.ERROR):
            state.highwater = None
            AioThread.verify_event_path(thread, time.monotonic(), tp)
        assert "Highwater not yet available" in caplog.text, "the check this test relies on"
    finally:
        await consumer.stop()
