"""Health signals: lag from the group's commit, progress while behind, crash counting,
and counters that alert rules watch created at 0 when a worker starts.

``GroupLag`` reads a real topic and real commits on the embedded broker; the
crash counter is driven through Faust's own supervisor restarting a crashed
service (tests/e2e/test_health_signals.py crashes a real agent in a worker).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import mode
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents import metrics
from agents.app import CrashCountingSupervisor, create_app
from agents.config import Settings
from agents.runtime.group_lag import GroupLag, PartitionLag
from schemas.commands import DeploymentEvent, DeploymentState
from schemas.policy import parse_policy


def value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def progress(agent: str, topic: str, partition: int = 0) -> float | None:
    return value(
        "driftline_seconds_since_progress", agent=agent, topic=topic, partition=str(partition)
    )


# -- lag and progress ---------------------------------------------------------------------


def test_lag_is_end_minus_committed_or_from_the_earliest_without_a_commit() -> None:
    assert PartitionLag("t", 0, end=10, committed=4, earliest=0).lag == 6
    assert PartitionLag("t", 0, end=10, committed=None, earliest=3).lag == 7
    assert PartitionLag("t", 0, end=10, committed=10, earliest=3).lag == 0


def test_progress_is_zero_when_caught_up_and_rises_while_behind_without_progress() -> None:
    health = metrics.Health()
    topic = f"h-{uuid.uuid4().hex[:6]}"
    agents = {topic: ["drift", "kpi"]}
    health.update([PartitionLag(topic, 0, end=5, committed=5, earliest=0)], agents, now=100.0)
    assert value("driftline_consumer_lag", topic=topic, partition="0") == 0
    assert progress("drift", topic) == 0

    # Behind, nothing handled: counted from when it was first seen behind.
    health.handled("kpi", topic, 0, offset=8, now=101.0)  # the KPI agent handled it all
    behind = PartitionLag(topic, 0, end=9, committed=5, earliest=0)
    health.update([behind], agents, now=110.0)
    assert value("driftline_consumer_lag", topic=topic, partition="0") == 4
    assert progress("drift", topic) == 0.0
    health.update([behind], agents, now=125.0)
    assert progress("drift", topic) == 15.0
    assert progress("kpi", topic) == 0, "the agent that handled the last message is caught up"

    # A handled message is progress; then it rises again from there.
    health.handled("drift", topic, 0, offset=5, now=126.0)
    health.update([behind], agents, now=130.0)
    assert progress("drift", topic) == 4.0
    health.update([PartitionLag(topic, 0, end=9, committed=9, earliest=0)], agents, now=131.0)
    assert progress("drift", topic) == 0


def test_series_of_partitions_no_longer_assigned_are_removed() -> None:
    health = metrics.Health()
    topic = f"h-{uuid.uuid4().hex[:6]}"
    agents = {topic: ["drift"]}
    health.update(
        [PartitionLag(topic, p, end=3, committed=None, earliest=0) for p in (0, 1)], agents, now=1.0
    )
    assert value("driftline_consumer_lag", topic=topic, partition="1") == 3
    health.update([PartitionLag(topic, 0, end=3, committed=3, earliest=0)], agents, now=2.0)
    assert value("driftline_consumer_lag", topic=topic, partition="1") is None
    assert progress("drift", topic, 1) is None
    assert value("driftline_consumer_lag", topic=topic, partition="0") == 0


def test_group_lag_reads_the_committed_and_end_offsets_from_the_broker(broker: Any) -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(5):  # one record batch each: the embedded broker's end offsets
        producer.produce(topic, value=b"%d" % i, partition=0)
        assert producer.flush(10) == 0
    reader = GroupLag(broker.bootstrap, group=group)
    try:
        (p0, p1) = reader.read([(topic, 0), (topic, 1)])
        assert (p0.end, p0.committed, p0.earliest, p0.lag) == (5, None, 0, 5)
        assert (p1.end, p1.committed, p1.lag) == (0, None, 0)

        committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        committer.close()
        (p0,) = reader.read([(topic, 0)])
        assert (p0.end, p0.committed, p0.lag) == (5, 2, 3)
        assert reader.read([]) == []
    finally:
        reader.close()


# -- counters created at 0 ----------------------------------------------------------------


def _event(model: str, action: str, status: str) -> DeploymentEvent:
    from datetime import UTC, datetime

    return DeploymentEvent(
        model=model,
        command_id="c",
        action=action,
        status=status,
        reason="",
        state=DeploymentState(),
        at=datetime.now(UTC),
        prev_hash="0" * 64,
        hash="0" * 64,
    )


def test_a_started_worker_has_the_alerting_counters_at_zero(tmp_path: Path) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        datadir=str(tmp_path), registry=str(tmp_path / "registry"), topic_prefix=f"{model}."
    )
    policy = parse_policy(f"models:\n  {model}: {{}}\n")
    create_app(settings, policy=policy, agents=["drift", "policy", "controller"])

    rollback = {"model": model, "type": "rollback", "status": "applied"}
    # Before any event: the series exist, at 0, so the first one is an increase.
    assert value("driftline_commands_total", **rollback) == 0
    for status in ("rejected", "pending_approval", "issued"):
        assert value("driftline_commands_total", model=model, type="promote", status=status) == 0
    for agent, topic in (
        ("drift", "predictions"),
        ("drift", "references"),
        ("controller", "commands"),
        ("policy", "deployments"),
    ):
        labels = {"topic": settings.topic(topic), "agent": agent}
        assert value("driftline_deadletters_total", **labels) == 0
        assert value("driftline_untracked_events_total", **labels) == 0
    assert value("driftline_agent_crashes_total", agent="controller") == 0

    metrics.observe(
        "controller",
        settings.topic("commands"),
        counted=0,
        dead=0,
        reports=[_event(model, "rollback", "applied")],
    )
    assert value("driftline_commands_total", **rollback) == 1


# -- crashes --------------------------------------------------------------------------------


class _Actor(mode.Service):
    """Stands for a Faust actor: a service that crashes, with its agent."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        super().__init__()

    async def run(self, exc: BaseException) -> None:
        await self.crash(exc)


def test_the_supervisor_counts_crashes_not_rebalance_restarts() -> None:
    agent_name = f"a-{uuid.uuid4().hex[:6]}"
    agent = type("Agent", (), {"name": agent_name})()
    replaced: list[_Actor] = []

    async def replacement(service: Any, index: int) -> _Actor:
        new = _Actor(agent)
        replaced.append(new)
        return new

    async def scenario() -> None:
        # Faust's rate limit (one restart per 10 ms) would stop two restarts in a row.
        supervisor = CrashCountingSupervisor(replacement=replacement, over=10.0)
        actor = _Actor(agent)
        supervisor.add(actor)
        await actor.run(RuntimeError("boom"))
        await supervisor.restart_service(actor)
        assert value("driftline_agent_crashes_total", agent=agent_name) == 1
        again = replaced[-1]
        await again.run(asyncio.CancelledError())  # Faust: "Restarting on rebalance"
        await supervisor.restart_service(again)
        assert value("driftline_agent_crashes_total", agent=agent_name) == 1
        assert len(replaced) == 2

    asyncio.run(scenario())
