"""End to end: a worker on input topics that already exist with another partition count.

A cluster with pre-created topics, or a broker that auto-created them when a
serving app published first, gives the worker topics whose partition count is
not its ``--partitions``. It works with the counts it finds (each agent's table
and changelog get its inputs' count), or, when topics read together disagree,
exits non-zero at start with one sentence naming each topic and its count; it
never stays up with agents that cannot write their state.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from agents.dev import simulate
from agents.operator import tail
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 200}
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a window boundary
PER_WINDOW = 400
#: the topics the drift and KPI agents and the poisoning guard read, pre-created
INPUTS = ("predictions", "features", "labels", "references", "training-data")


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


def _create(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=-1) for t, n in topics.items()]
    )
    for future in futures.values():
        future.result(timeout=15)


def _wait_exit(worker: WorkerProcess, timeout_s: float) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the worker was still running after {timeout_s:.0f} s, with "
            f"topics it cannot work with\n{worker.log()[-4000:]}"
        ) from None


def test_worker_works_with_the_partition_count_it_finds(worker_factory: Any, broker: Any) -> None:
    prefix = _prefix()
    _create(broker.bootstrap, {f"{prefix}{t}": 3 for t in INPUTS})
    # Every agent: drift, KPI and poisoning on 3 partitions, policy and controller on
    # the topics created with 1.
    worker: WorkerProcess = worker_factory(
        POLICY,
        agents="drift,kpi,poisoning,policy,controller",
        partitions=1,
        prefix=prefix,
        log_level="info",
    )
    worker.wait_ready(timeout_s=90)
    for agent in ("drift", "kpi", "poisoning"):
        assert f"the {agent} agent works with the 3 partitions of its input topics" in worker.log()

    # One model per partition: a warm-up window, a window compared with it, a closer.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    models = [f"model-p{p}" for p in range(3)]
    for partition, model in enumerate(models):
        traffic = simulate.FraudTraffic(seed=10 + partition, model=model)
        events = traffic.events(2 * PER_WINDOW, start_s=T0, span_s=120)
        events += traffic.events(1, start_s=T0 + 121, span_s=1)
        for payload in simulate.batches(events, 200):
            producer.produce(
                worker.topic("predictions"), key=model.encode(), value=payload, partition=partition
            )
    assert producer.flush(30) == 0

    wanted = {(m, s) for m in models for s in (T0, T0 + 60)}

    def complete(seen: list[dict[str, Any]]) -> bool:
        return {(r["model"], _start_s(r)) for r in seen} >= wanted

    reports = tail.collect(broker.bootstrap, worker.topic("drift"), complete, timeout_s=120)
    got = {(r["model"], _start_s(r)): r["n"] for r in reports}
    assert complete(reports), (
        f"drift reports for {sorted(got)}, expected both windows of {models}\n"
        f"{worker.log()[-4000:]}"
    )
    assert all(got[key] == PER_WINDOW for key in wanted), got
    assert worker.proc is not None and worker.proc.poll() is None, "the worker stays up"
    assert "PartitionsMismatch" not in worker.log()


def test_worker_refuses_inputs_read_together_with_different_counts(
    worker_factory: Any, broker: Any
) -> None:
    prefix = _prefix()
    _create(broker.bootstrap, {f"{prefix}predictions": 3, f"{prefix}features": 2})
    worker: WorkerProcess = worker_factory(POLICY, agents="drift", partitions=1, prefix=prefix)
    code = _wait_exit(worker, timeout_s=60)
    log = worker.log()
    assert code != 0, log
    assert (
        f"the drift agent reads {prefix}predictions (3 partitions), {prefix}features "
        f"(2 partitions) and {prefix}references (1 partition) in one stream"
    ) in log, log
    assert "--partitions 3" in log, log  # what to do
    assert "Traceback" not in log, log  # one sentence, not a stack


def test_worker_refuses_a_changelog_kept_for_another_count(
    worker_factory: Any, broker: Any
) -> None:
    prefix = _prefix()
    changelog = f"driftline-{prefix.rstrip('.')}-kpi-state-changelog"
    _create(broker.bootstrap, {**{f"{prefix}{t}": 3 for t in INPUTS}, changelog: 1})
    worker: WorkerProcess = worker_factory(POLICY, agents="kpi", partitions=1, prefix=prefix)
    code = _wait_exit(worker, timeout_s=60)
    log = worker.log()
    assert code != 0, log
    assert (
        f"the kpi agent's state topic {changelog} has 1 partition but its input topics "
        f"({prefix}predictions, {prefix}labels, {prefix}references) have 3"
    ) in log, log


def _start_s(report: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(report["window_start"]).timestamp())
