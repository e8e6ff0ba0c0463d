"""End to end: a worker whose drift agent crashes on every message is seen to be stuck.

The drift agent's table holds a redo record per partition (agents.runtime.redo); the
runner reads it before every message. The test stops a worker that has handled a
few messages, appends an unreadable redo record to the table's changelog and
starts it again: the recovered table holds it, and every message now makes the
agent raise out of its body (a real crash: Faust's supervisor restarts the agent,
about every 5 s, and acknowledges the message it crashed on). With twenty
messages published behind the crashing agent, ``/metrics`` must show

* ``driftline_consumer_lag`` equal to the partition's end offset minus the group's
  committed offset, both read from the broker (Faust's fetch position, which the
  lag was read from before, runs ahead of the agent and showed 0);
* ``driftline_seconds_since_progress`` of the drift agent rising;
* ``driftline_agent_crashes_total{agent="drift"}`` counting the crashes.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from agents.dev.broker import free_port
from agents.runtime.redo import redo_key
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = "drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}\n"
MODEL = "health-model"
T0 = 1_800_000_000


def _payload(i: int) -> bytes:
    return orjson.dumps(
        {
            "request_id": f"r{i}",
            "model": MODEL,
            "model_version": "v1",
            "ts": T0 + i,
            "prediction": 1,
            "score": 0.5,
            "features": {"amount": float(i)},
        }
    )


def _publish(worker: WorkerProcess, topic: str, first: int, n: int) -> None:
    """``n`` messages, each in a record batch of its own (the embedded broker reports a
    partition's end offset right only after one-record batches: tests/conftest.py)."""
    producer = Producer({"bootstrap.servers": worker.settings.bootstrap, "linger.ms": 0})
    for i in range(first, first + n):
        producer.produce(worker.topic(topic), key=MODEL.encode(), value=_payload(i))
        assert producer.flush(10) == 0, "the broker did not take the message"


def _end_offset(worker: WorkerProcess, topic: str) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": worker.settings.bootstrap,
            "group.id": f"{worker.settings.app_id}-test-reader",
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(worker.topic(topic), 0), timeout=10, cached=False
        )
        return int(high)
    finally:
        consumer.close()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the worker's ``/metrics``: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(port: int, name: str, **labels: str) -> float | None:
    try:
        return scrape(port).get((name, frozenset(labels.items())))
    except OSError:  # not serving yet
        return None


def wait_for(
    what: str, condition: Callable[[], Any], worker: WorkerProcess, timeout_s: float = 90.0
) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := condition()):
        if worker.proc is None or worker.proc.poll() is not None:
            raise AssertionError(
                f"the worker exited while waiting for {what}\n{worker.log()[-4000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:.0f} s\n{worker.log()[-4000:]}")
        time.sleep(0.5)  # polling interval of the condition, not synchronisation
    return got


def test_a_crash_looping_agent_shows_lag_from_the_commit_rising_stall_and_crashes(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    worker = worker_factory(
        POLICY, agents="drift", log_level="info", env={"DRIFTLINE_METRICS_PORT": str(port)}
    )
    worker.wait_ready()
    predictions = worker.topic("predictions")
    lag_labels = {"topic": predictions, "partition": "0"}
    progress_labels = {"agent": "drift", **lag_labels}

    # Healthy: three messages handled and committed, nothing behind.
    _publish(worker, "predictions", 0, 3)
    worker.wait_committed("predictions", 3, timeout_s=60)
    wait_for(
        "lag 0 and progress 0 when caught up",
        lambda: (
            sample(port, "driftline_consumer_lag", **lag_labels) == 0
            and sample(port, "driftline_seconds_since_progress", **progress_labels) == 0
        ),
        worker,
    )
    assert sample(port, "driftline_agent_crashes_total", agent="drift") == 0

    # An unreadable redo record in the drift table's changelog: after a restart,
    # every message makes the agent raise before its handler runs.
    worker.stop()
    changelog = f"{worker.settings.app_id}-drift-state-changelog"
    producer = Producer({"bootstrap.servers": worker.settings.bootstrap, "linger.ms": 0})
    producer.produce(changelog, key=redo_key(0), value=b"not a redo record", partition=0)
    assert producer.flush(10) == 0
    worker.restart()
    worker.wait_ready()
    committed = worker.committed("predictions")
    assert committed == 3

    # Twenty more messages: the agent crashes on each (Faust's supervisor restarts it
    # about every 5 s, and acks the message it crashed on), so the group stays
    # behind for a minute or more.
    _publish(worker, "predictions", 3, 20)
    end = _end_offset(worker, "predictions")
    assert end == 23
    wait_for(
        "a counted crash",
        lambda: (sample(port, "driftline_agent_crashes_total", agent="drift") or 0) >= 1,
        worker,
    )
    # The counter moves after the reason is logged; the log file is written by the
    # worker's process, so read it until it shows (a deadline, not a sleep).
    wait_for("the crash's reason in the log",
             lambda: "not a driftline redo record" in worker.log(), worker)

    # The lag the worker shows is the broker's end minus the group's commit (the
    # commit moves on as the agent crashes: compare while it holds still).
    def lag_is_end_minus_committed() -> bool:
        committed = worker.committed("predictions")
        lag = sample(port, "driftline_consumer_lag", **lag_labels)
        return (
            committed is not None
            and lag is not None
            and lag > 0
            and lag == end - committed == end - worker.committed("predictions")
        )

    wait_for("lag = end - committed > 0", lag_is_end_minus_committed, worker)

    # No progress while behind: the signal rises from one sample to the next.
    first = wait_for(
        "the stall to show",
        lambda: sample(port, "driftline_seconds_since_progress", **progress_labels) or 0,
        worker,
    )
    wait_for(
        "the stall to grow",
        lambda: (
            (sample(port, "driftline_seconds_since_progress", **progress_labels) or 0) >= first + 4
        ),
        worker,
    )

    # The crashes go on, and are counted.
    crashes = sample(port, "driftline_agent_crashes_total", agent="drift") or 0
    wait_for(
        "another crash",
        lambda: (sample(port, "driftline_agent_crashes_total", agent="drift") or 0) > crashes,
        worker,
    )
    start = sample(port, "driftline_worker_start_time_seconds")
    assert start is not None and time.time() - 600 < start <= time.time()
