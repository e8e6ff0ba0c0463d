"""The worker's messages fetched by confluent-kafka (librdkafka) inside Faust.

Why: on this machine aiokafka, Faust's Kafka client, costs 0.5-0.65 µs of Python per
event of a 5,000-event Arrow message (copies through asyncio's streams, record
parsing, the batch's CRC-32C), under the GIL the agents need; librdkafka fetches,
checks CRCs and parses in its own C threads, at a third of that CPU and without the
GIL (docs/performance.md). Faust's own ``confluent`` transport cannot be used as it
is (it drops message headers, creates no topics, ignores Faust's partition assignor).

What changes and what does not: only where records come from. aiokafka still does
everything else it did for the worker: it joins the group with Faust's assignor,
heartbeats, resolves each partition's starting position (the group's commit, else
``auto_offset_reset``), takes Faust's seeks and commits the offsets Faust computes;
its fetcher is kept idle by pausing every partition it is assigned (a paused
partition still gets its position resolved: ``aiokafka.consumer.fetcher``,
``_get_actions_per_node``). aiokafka's record of each partition's position stays the
one truth of where reading stands:

1. each fetch plans, for every partition Faust wants read now (its active
   partitions), the position aiokafka holds; a partition whose position is not known
   yet waits;
2. a librdkafka consumer with no group (``assign`` with explicit offsets; it never
   commits) is assigned those positions again whenever the plan differs from where it
   stands (a rebalance, a seek, a recovery, a partition paused by Faust), and returns
   what it has fetched;
3. a message is taken only if its partition is in the plan and its offset is at or
   past where that partition stands (librdkafka drops what it fetched before a
   reassignment itself; this is the second line); taking it moves the partition on;
4. back in aiokafka's thread, if a partition's position changed while librdkafka was
   being read (Faust sought it), its messages are dropped and it is reassigned next
   time; else aiokafka's position moves past what was taken, as aiokafka's own
   fetcher does when it hands records over (``consumed_to``).

So a message reaches Faust once, in order, from the position Faust's seeks and the
group's commit give, exactly as with aiokafka's fetcher; the crash, restart,
rebalance, recovery and catch-up tests run the worker this way.

Memory: librdkafka's prefetch holds at most ``queued.max.messages.kbytes`` (twice
one partition's fetch, ``consumer_max_fetch_size``: 32 MB at the default) plus the
fetch in flight (``fetch.max.bytes``, as much), and one fetch hands Faust at most
one partition's fetch plus one message, as aiokafka's did; Faust's stream buffers
bound the rest (DRIFTLINE_STREAM_BUFFER_MESSAGES).

All librdkafka calls run in one thread of their own (a one-thread executor): a
``consume`` that waits for messages does not hold up aiokafka's heartbeats, and the
confluent consumer is never used from two threads at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiokafka
from aiokafka.consumer.subscription_state import TopicPartitionState
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import TopicPartition as ConfluentPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage

from agents.kafka import client_config
from agents.runtime import inflight

logger = logging.getLogger("driftline.fetch")

#: the most messages one fetch hands to Faust (Faust's stream buffers bound the rest)
MAX_MESSAGES_PER_FETCH = 1024
#: the most messages taken from librdkafka's queue at a time, without waiting, once
#: one came
CHUNK = 16
#: the longest one fetch waits for a message (Faust asks with 1 s), which is also how
#: long a worker's stop may wait for the fetch thread: with 1 s, SIGTERM to exit took
#: 2.0 s against aiokafka's 1.1 (three starts each); with 0.2, 1.2 s
MAX_WAIT_S = 0.2
#: how long a fetch with no partition to read waits before Faust asks again
NO_PLAN_WAIT_S = 0.05


class FetchChanged(RuntimeError):
    """An aiokafka internal this module relies on is missing or has another shape."""


def check() -> None:
    """Raise ``FetchChanged`` naming what an aiokafka release renamed or removed."""
    for name in ("consumed_to", "has_valid_position", "position", "paused", "highwater"):
        if not hasattr(TopicPartitionState, name) and (
            name not in TopicPartitionState.__init__.__code__.co_names  # an instance's
        ):
            raise FetchChanged(
                f"aiokafka {aiokafka.__version__}: TopicPartitionState has "
                f"no {name}; set DRIFTLINE_FETCH=aiokafka"
            )


def check_consumer(consumer: aiokafka.AIOKafkaConsumer) -> None:
    """Raise ``FetchChanged`` if the consumer lacks the attributes each fetch reads (an
    instance's, so ``check`` cannot see them before one exists)."""
    subscription = getattr(consumer, "_subscription", None)
    for owner, name in (
        (consumer, "_closed"),
        (subscription, "fetch_context"),
        (subscription, "subscription"),
    ):
        if not hasattr(owner, name):
            raise FetchChanged(
                f"aiokafka {aiokafka.__version__}: AIOKafkaConsumer has no "
                f"{'_subscription.' if owner is subscription else ''}{name}; "
                "set DRIFTLINE_FETCH=aiokafka"
            )


def _states(consumer: aiokafka.AIOKafkaConsumer) -> Any:
    """aiokafka's per-partition states of the current assignment (None: none)."""
    subscription = consumer._subscription.subscription
    return None if subscription is None else subscription.assignment


Key = tuple[str, int]


def planned(states: Any, active: Iterable[TP]) -> tuple[dict[Key, int], dict[Key, TP]]:
    """Where each of Faust's active partitions stands in aiokafka (those whose position
    is known), and Faust's TP for each."""
    plan: dict[Key, int] = {}
    tps: dict[Key, TP] = {}
    for tp in active:
        state = states.state_value(aiokafka.TopicPartition(tp.topic, tp.partition))
        if state is not None and state.has_valid_position:
            key = (tp.topic, tp.partition)
            plan[key] = state.position
            tps[key] = tp
    return plan, tps


def taken(
    states: Any,
    plan: Mapping[Key, int],
    tps: Mapping[Key, TP],
    got: Mapping[Key, list[Any]],
    forget: Any,
) -> dict[TP, list[Any]]:
    """The messages Faust gets, each partition's aiokafka position moved past them; a
    partition whose position moved while librdkafka was read (sought, revoked, reset)
    gets none, and ``forget(key)`` makes the next fetch reassign it."""
    records: dict[TP, list[Any]] = {}
    for key, messages in got.items():
        state = None if states is None else states.state_value(aiokafka.TopicPartition(*key))
        if state is None or not state.has_valid_position or state.position != plan[key]:
            forget(key)
            continue
        state.consumed_to(messages[-1].offset() + 1)
        records[tps[key]] = messages
    return records


class Fetcher:
    """The librdkafka side: a group-less consumer that follows a plan of positions.

    Used only from its one thread (``call``)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self.max_bytes = int(self._config["max.partition.fetch.bytes"])
        self._consumer: ConfluentConsumer | None = None
        self._at: dict[Key, int] = {}  # where librdkafka stands, per partition
        self.high: dict[Key, int] = {}  # one past the last message, when known
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="driftline-fetch")

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def poll(
        self,
        plan: Mapping[Key, int],
        wait_s: float,
    ) -> dict[Key, list[Any]]:
        """Messages from each planned partition's position on, taken in order."""
        if self._consumer is None:
            self._consumer = ConfluentConsumer(self._config)
        if plan != self._at:
            # Positions moved by somebody else (a seek, a rebalance) or partitions
            # paused/resumed: take the plan as it is. librdkafka discards what it had
            # fetched for the old assignment.
            self._consumer.assign(
                [ConfluentPartition(t, p, offset) for (t, p), offset in plan.items()]
            )
            self._at = dict(plan)
        if not plan:
            return {}
        got: dict[Key, list[Any]] = {}
        for message in self._take(wait_s):
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            key: Key = (message.topic(), message.partition())  # type: ignore[assignment]
            at = self._at.get(key)
            offset: int = message.offset()  # type: ignore[assignment]
            if at is None or offset < at:
                continue  # not planned, or fetched before a reassignment
            got.setdefault(key, []).append(message)
            self._at[key] = offset + 1
        for key in plan:
            _, high = self._consumer.get_watermark_offsets(ConfluentPartition(*key), cached=True)
            if high >= 0:
                self.high[key] = high
        return got

    def _take(self, wait_s: float) -> list[Any]:
        """What librdkafka has fetched, waiting at most ``wait_s`` for the first message,
        up to ``max_bytes`` plus one message (as one aiokafka fetch of a partition) and
        MAX_MESSAGES_PER_FETCH. (librdkafka's ``consume(n, timeout)`` waits until it has
        n messages or the timeout passed: a latency of up to ``wait_s`` at low traffic,
        and n messages in hand at high traffic.)"""
        assert self._consumer is not None
        messages = self._consumer.consume(1, wait_s)
        size = sum(map(len, messages))
        while messages and size < self.max_bytes and len(messages) < MAX_MESSAGES_PER_FETCH:
            # as many as fit in what is left at the mean size so far: at most
            # ``max_bytes`` plus one message in hand
            fit = (self.max_bytes - size) * len(messages) // max(size, 1)
            more = self._consumer.consume(
                max(1, min(fit, CHUNK, MAX_MESSAGES_PER_FETCH - len(messages))), 0
            )
            if not more:
                break
            messages += more
            size += sum(map(len, more))
        return messages

    def forget(self, key: Key) -> None:
        """The partition's position moved while it was read: reassign it next time."""
        self._at.pop(key, None)

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        # Transport errors, a broker restarting, ...: librdkafka retries by itself.
        logger.warning("fetching: %s", error.str())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def fetch_config(conf: Any, bootstrap: str) -> dict[str, Any]:
    """librdkafka's settings for the worker's fetching, from the Faust app's (``conf``)."""
    per_partition = int(conf.consumer_max_fetch_size)
    return {
        **client_config(bootstrap),
        # Required by librdkafka's consumer; unused: it never joins nor commits.
        "group.id": f"{conf.id}-fetch",
        "client.id": f"{conf.broker_client_id}-fetch",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": conf.consumer_auto_offset_reset,
        "check.crcs": bool(conf.broker_check_crcs),
        "max.partition.fetch.bytes": per_partition,
        "fetch.max.bytes": 2 * per_partition,
        "receive.message.max.bytes": 2 * per_partition + 1_048_576,
        "queued.max.messages.kbytes": 2 * per_partition // 1024,
        "isolation.level": "read_uncommitted",
    }


class FetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, its records fetched by ``Fetcher``."""

    _fetcher: Fetcher | None = None

    async def on_start(self) -> None:
        await super().on_start()
        if not self.app.client_only:
            transport: Any = self.transport
            servers = faust_aiokafka.server_list(transport.url, transport.default_port)
            check_consumer(self._ensure_consumer())
            self._fetcher = Fetcher(fetch_config(self.app.conf, ",".join(servers)))

    async def on_thread_stop(self) -> None:
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            await fetcher.call(fetcher.close)
            fetcher.shutdown()
        await super().on_thread_stop()

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        if self._fetcher is not None:
            self._idle_aiokafka()
        await super().on_partitions_assigned(assigned, generation_id)

    def _idle_aiokafka(self) -> None:
        """Pause every assigned partition in aiokafka: its fetcher then only resolves
        positions and fetches no records."""
        consumer = self._ensure_consumer()
        unpaused = consumer.assignment() - consumer.paused()
        if unpaused:
            consumer.pause(*unpaused)

    def highwater(self, tp: TP) -> int:
        if self._fetcher is None:
            return super().highwater(tp)
        return self._fetcher.high.get((tp.topic, tp.partition))  # type: ignore[return-value]

    def _verify_aiokafka_event_path(self, now: float, tp: TP) -> bool:
        # Faust's check that aiokafka's fetcher keeps sending fetch requests: it
        # sends none here by design. The stream and commit checks stay.
        return self._fetcher is None and super()._verify_aiokafka_event_path(now, tp)

    def verify_event_path(self, now: float, tp: TP) -> None:
        # Faust's checks that a partition's stream and commit keep up (every few
        # seconds, for every assigned partition) read its highwater from aiokafka's
        # record, which only aiokafka's fetcher writes: without it, each partition got
        # an error "Highwater not yet available" every 2.5 s from five minutes after
        # start on (stream_processing_timeout; 600 lines in a 10-minute soak). So the
        # checks get the highwater librdkafka's fetches saw; a partition this worker has
        # not fetched (a table's changelog once recovered, the assignor's topic) has
        # none, and is not checked, as aiokafka's fetcher would not have fetched it
        # either; nor is one whose position is being resolved again (after a seek to
        # an end, say), on which Faust's check would fail: it reads the position, as
        # aiokafka's fetcher, which sets the highwater, has one.
        fetcher = self._fetcher
        if fetcher is not None:
            high = fetcher.high.get((tp.topic, tp.partition))
            states = _states(self._ensure_consumer())
            state = None if states is None else states.state_value(
                aiokafka.TopicPartition(tp.topic, tp.partition))
            if high is None or state is None or not state.has_valid_position:
                return
            state.highwater = high
        super().verify_event_path(now, tp)

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Mapping[TP, list[Any]]:
        fetcher = self._fetcher
        if fetcher is None:
            return await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
        if not self.consumer.flow_active:
            return {}
        if consumer._closed:
            raise aiokafka.errors.ConsumerStoppedError()
        self._idle_aiokafka()
        # aiokafka leaves the group if nothing is consumed for max_poll_interval: it
        # reads that from this context, as around its own fetches.
        with consumer._subscription.fetch_context():
            states = _states(consumer)
            if states is None:
                return {}
            plan, tps = planned(states, active_partitions)
            wait = min(timeout if timeout is not None else MAX_WAIT_S, MAX_WAIT_S)
            if not plan:
                # No position known yet (aiokafka is resolving them) or nothing active:
                # wait a little, as aiokafka's own fetch would, instead of spinning.
                await asyncio.sleep(min(wait, NO_PLAN_WAIT_S))
            got = await fetcher.call(fetcher.poll, plan, wait)
            return taken(_states(consumer), plan, tps, got, fetcher.forget)


#: librdkafka's timestamp types, as aiokafka numbers them (0 create, 1 log append)
_TIMESTAMP_TYPE = {1: 0, 2: 1}


def to_message(tp: TP, record: Any, generation_id: int) -> ConsumerMessage:
    """Faust's message for a confluent-kafka one, with the fields aiokafka's record gives."""
    kind, stamp = record.timestamp()
    key, value = record.key(), record.value()
    return ConsumerMessage(
        tp.topic,
        tp.partition,
        record.offset(),
        None if kind == TIMESTAMP_NOT_AVAILABLE else stamp / 1000.0,  # type: ignore[arg-type]
        _TIMESTAMP_TYPE.get(kind, 0),
        record.headers() or [],
        key,
        value,
        None,
        len(key) if key else 0,
        len(value) if value else 0,
        tp,
        generation_id=generation_id,
    )


class FetchConsumer(inflight.Consumer):
    """Faust's aiokafka consumer whose records are confluent-kafka messages (and whose
    stop waits as agents.runtime.inflight says)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return FetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        if isinstance(record, aiokafka.ConsumerRecord):  # a client-only app
            return super()._to_message(tp, record)
        return to_message(tp, record, self.app.consumer_generation_id)


class FetchTransport(inflight.Transport):
    """Faust's aiokafka transport with ``FetchConsumer``: producing, topic creation and
    group membership are aiokafka's as before."""

    Consumer = FetchConsumer


def install(app: Any) -> None:
    """Make the app's consumer fetch with librdkafka (before the app starts)."""
    check()
    app.transport = FetchTransport(app.conf.broker_consumer, app)
