"""The Kafka client alone, for ``driftline bench``: how fast a bare consumer reads a
form's messages from the broker, and what that costs in CPU, with nothing else done.

The worker's floor (``agents.dev.bench_floor``) is Kafka, Faust and the runner together;
this splits off the first part. Two clients read the same messages, each from the
beginning of one partition, one after the other:

* ``aiokafka``, the client inside the worker (Faust's transport), with the worker's
  fetch settings (``max_partition_fetch_bytes`` as ``agents.app`` sets it, CRCs
  checked as Faust does). It runs in this thread's event loop, so its CPU is this
  thread's CPU time;
* ``confluent-kafka`` (librdkafka), the alternative fetch path the issue names, with
  the same fetch sizes and librdkafka's defaults otherwise. Its fetching runs in
  librdkafka's threads, so its CPU is this process's (every thread), read while
  nothing else in the process works.

And, when the broker is the embedded one, the broker's own CPU per event while the
aiokafka client reads (``/proc/PID/stat``). The broker shares the machine's cores
with the worker: a worker can only be as fast as the cores the broker leaves it.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents.config import Settings
from agents.dev import simulate
from agents.dev.bench import cpu_s
from agents.dev.broker import EmbeddedBroker
from agents.kafka import client_config

#: the worker's per-partition fetch limit (agents.app: consumer_max_fetch_size)
FETCH_BYTES = 16 * 1_048_576
READ_TIMEOUT_S = 120.0


@dataclass
class ClientRun:
    aiokafka_events_per_s: float
    aiokafka_cpu_us_per_event: float
    confluent_events_per_s: float
    confluent_cpu_us_per_event: float
    broker_cpu_us_per_event: float  # NaN when the broker is not the embedded one


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pid_cpu_s(pid: int | None) -> float:
    return float("nan") if pid is None else cpu_s(pid)


def _deadline(start: float, client: str, got: int, count: int) -> None:
    if time.perf_counter() - start > READ_TIMEOUT_S:
        raise RuntimeError(f"{client} read {got:,} of {count:,} messages within "
                           f"{READ_TIMEOUT_S:.0f} s")


async def _read_aiokafka(bootstrap: str, topic: str, count: int) -> float:
    """Seconds to read ``count`` messages of ``topic[0]`` from its beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
        check_crcs=True,
    )
    await consumer.start()
    try:
        start = time.perf_counter()
        consumer.assign([AioPartition(topic, 0)])
        await consumer.seek_to_beginning()
        got = 0
        while got < count:
            records = await consumer.getmany(timeout_ms=1000)
            got += sum(len(r) for r in records.values())
            _deadline(start, "aiokafka", got, count)
        return time.perf_counter() - start
    finally:
        await consumer.stop()


def _read_confluent(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(
        {
            **client_config(bootstrap),
            "group.id": f"bench-client-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "max.partition.fetch.bytes": FETCH_BYTES,
            "fetch.max.bytes": 4 * FETCH_BYTES,
            "receive.message.max.bytes": 4 * FETCH_BYTES + 1_048_576,
        }
    )
    try:
        consumer.list_topics(topic, timeout=10)  # connected, as aiokafka's start() is
        start = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = 0
        while got < count:
            # at most what is left, else consume() waits out its timeout for more
            got += len(consumer.consume(min(100, count - got), 0.1))
            _deadline(start, "confluent-kafka", got, count)
        return time.perf_counter() - start
    finally:
        consumer.close()


def client_rates(
    messages: list[bytes], events: int, broker_address: str | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> ClientRun:
    """Publish ``messages`` (``events`` events in all) to a fresh one-partition topic
    and read them back with each client."""
    embedded = None if broker_address else EmbeddedBroker().start()
    bootstrap = broker_address or embedded.bootstrap  # type: ignore[union-attr]
    try:
        topic = f"bench-client-{uuid.uuid4().hex[:8]}"
        # As the worker's input topics (agents.topics): Apache Kafka limits a record
        # batch, and the producer puts several messages in one.
        limit = str(max(Settings.from_env().max_message_bytes, *map(len, messages)) + 65_536)
        admin = AdminClient(client_config(bootstrap))  # alive until its futures are done
        created = admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": limit})])
        for future in created.values():
            future.result(30)
        simulate.publish(simulate.make_producer(bootstrap), topic, "bench", messages,
                         headers=headers)
        pid = embedded.pid if embedded is not None else None

        cpu, broker = time.thread_time(), _pid_cpu_s(pid)
        aio_s = asyncio.run(_read_aiokafka(bootstrap, topic, len(messages)))
        aio_cpu, broker_cpu = time.thread_time() - cpu, _pid_cpu_s(pid) - broker

        cpu = _process_cpu_s()
        confluent_s = _read_confluent(bootstrap, topic, len(messages))
        confluent_cpu = _process_cpu_s() - cpu
        return ClientRun(
            aiokafka_events_per_s=events / aio_s,
            aiokafka_cpu_us_per_event=aio_cpu * 1e6 / events,
            confluent_events_per_s=events / confluent_s,
            confluent_cpu_us_per_event=confluent_cpu * 1e6 / events,
            broker_cpu_us_per_event=broker_cpu * 1e6 / events,
        )
    finally:
        if embedded is not None:
            embedded.stop()
