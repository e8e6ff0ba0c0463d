"""The configuration of the topics a worker creates, as the broker describes it.

The topic contract: ``deployments`` and ``commands`` keep their records for ever
(retention.ms=-1: the audit chain must stay verifiable) and ``references`` is
compacted. Runs on both brokers. Apache Kafka describes every config of a topic,
with its source; the embedded broker (Tansu 0.6.0) describes only those set when
the topic was created, and calls them defaults: there a config it leaves out is
read as Kafka's default, and sources are not checked.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from agents.topics import NAMES
from tests.conftest import ApacheKafka, Broker, WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = "drift:\n  window: 60s\n"
WEEK_MS = "604800000"
#: Kafka's defaults (log.retention.hours=168, log.cleanup.policy=delete).
KAFKA_DEFAULTS = {"retention.ms": "604800000", "cleanup.policy": "delete"}
#: What each topic's role asks for, against Kafka's defaults for the rest.
EXPECTED = {
    "deployments": {"retention.ms": "-1", "cleanup.policy": "delete"},
    "commands": {"retention.ms": "-1", "cleanup.policy": "delete"},
    "references": {"cleanup.policy": "compact"},
    "predictions": KAFKA_DEFAULTS,
}


def test_topics_are_created_with_their_roles_configuration(broker: Broker, tmp_path: Path) -> None:
    worker = WorkerProcess(broker, tmp_path, POLICY, log_level="info")
    try:
        worker.start(create_topics=False).wait_ready(timeout_s=90)  # its own topics
    finally:
        worker.stop()
    kafka = isinstance(broker, ApacheKafka)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert {worker.topic(n) for n in NAMES} <= set(admin.list_topics(timeout=10).topics)

    resources = [ConfigResource("topic", worker.topic(name)) for name in EXPECTED]
    described = {
        r.name: f.result(timeout=10)
        for r, f in admin.describe_configs(resources, request_timeout=10).items()
    }
    for name, expected in EXPECTED.items():
        configs = described[worker.topic(name)]
        if kafka:  # Kafka answers every config; Tansu only those set at creation
            assert set(expected) <= set(configs), f"{name}: Kafka left out {sorted(configs)}"
        got = {
            key: configs[key].value if key in configs else KAFKA_DEFAULTS[key] for key in expected
        }
        assert got == expected, f"{name}: {got}"
        if kafka:  # what differs from Kafka's default is the topic's own setting
            for key, value in expected.items():
                if value != KAFKA_DEFAULTS[key]:
                    source = ConfigSource(configs[key].source)
                    assert source == ConfigSource.DYNAMIC_TOPIC_CONFIG, f"{name} {key}: {source}"


def test_worker_warns_when_the_audit_trail_would_be_deleted(
    worker_factory: Any, broker: Any
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    (future,) = admin.create_topics(
        [
            NewTopic(
                f"{prefix}deployments",
                num_partitions=1,
                replication_factor=-1,
                config={"retention.ms": WEEK_MS},
            )
        ]
    ).values()
    future.result(timeout=15)
    worker: WorkerProcess = worker_factory("drift: {window: 60s}", agents="drift", prefix=prefix)
    wanted = (
        f"topic {prefix}deployments deletes records older than 7 days "
        f"(retention.ms={WEEK_MS}): the audit chain cannot be verified"
    )
    fix = (
        f"kafka-configs.sh --bootstrap-server {broker.bootstrap} --alter --entity-type "
        f"topics --entity-name {prefix}deployments --add-config retention.ms=-1"
    )
    deadline = time.monotonic() + 60
    while wanted not in worker.log():
        assert time.monotonic() < deadline, f"no warning within 60 s\n{worker.log()}"
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        time.sleep(0.2)  # polling interval of the condition, not synchronisation
    assert fix in worker.log()
    assert f"{prefix}commands" not in worker.log(), "commands was created keeping its records"
