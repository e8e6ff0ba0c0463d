"""End to end: topics are created with their role's configuration; a worker on existing
topics that would delete the audit trail says so, naming the topic, setting and fix."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from agents.config import Settings
from agents.topics import check_configs, ensure_topics
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

WEEK_MS = "604800000"


def _configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([ConfigResource("topic", t) for t in topics])
    return {
        r.name: {k: v.value for k, v in f.result(timeout=15).items()} for r, f in futures.items()
    }


def test_created_topics_carry_their_role_configuration(broker: Any) -> None:
    settings = Settings(broker=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings)
    names = ["deployments", "commands", "references", "predictions"]
    got = _configs(broker.bootstrap, [settings.topic(n) for n in names])
    for name in ("deployments", "commands"):
        assert got[settings.topic(name)].get("retention.ms") == "-1", got
        assert got[settings.topic(name)].get("retention.bytes") == "-1", got
    assert got[settings.topic("references")].get("cleanup.policy") == "compact", got
    assert "retention.ms" not in got[settings.topic("predictions")], got
    assert check_configs(settings) == []


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
