"""End to end: a worker stopped (SIGTERM) in the middle of a backlog exits at once and
loses nothing, with either fetch client.

The drift and KPI agents both read ``predictions``: each message is one event in
both agents' queues. When the worker stops, Faust clears those queues and waits
until every message an agent took is acknowledged; a message one agent had
handled while it still waited in the other's queue was never acknowledged, and
the worker waited for it until it was killed (agents.runtime.inflight). Here the
stop comes while both agents are working through a backlog at their own pace:
the worker must exit 0 well inside its shutdown grace, and the next process must
report every window exactly once, with every prediction in it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from agents.dev import simulate
from agents.operator import tail
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 200}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 10m, min_labeled: 50}
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a window boundary
WINDOWS = 16
PER_WINDOW = 3_000
PER_MESSAGE = 50  # small messages: a backlog of many, handled at each agent's pace
MODEL = "fraud-detector"
#: the worker's own limit from SIGTERM to a forced exit (exit 70) is 25 s
STOP_WITHIN_S = 15.0


def _start_s(report: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(report["window_start"]).timestamp())


@pytest.mark.parametrize("fetch", ["confluent", "aiokafka"])
def test_a_stop_in_a_backlog_exits_at_once_and_loses_nothing(
    worker_factory: Any, fetch: str
) -> None:
    worker: WorkerProcess = worker_factory(
        POLICY, agents="drift,kpi", log_level="info", env={"DRIFTLINE_FETCH": fetch}
    )
    bootstrap = worker.settings.bootstrap
    traffic = simulate.FraudTraffic(seed=21, model=MODEL)
    events: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        events += traffic.events(PER_WINDOW, start_s=T0 + 60 * w, span_s=60)
    events += traffic.events(1, start_s=T0 + 60 * WINDOWS + 1, span_s=1)  # closes the last
    worker.wait_ready(timeout_s=90)
    producer = simulate.make_producer(bootstrap)
    simulate.publish(producer, worker.topic("predictions"), MODEL,
                     list(simulate.batches(events, PER_MESSAGE)))

    # Stop as soon as the drift agent has reported a first window: both agents are
    # still in the backlog (the KPI agent reports when the drift agent does, or later).
    first = tail.collect(bootstrap, worker.topic("drift"), lambda seen: len(seen) >= 1,
                         timeout_s=120)
    assert first, f"no drift report\n{worker.log()[-4000:]}"
    started = time.monotonic()
    code = worker.restart()
    took = time.monotonic() - started
    assert code == 0, f"the worker did not stop cleanly on SIGTERM ({code})\n{worker.log()}"
    assert took < STOP_WITHIN_S, f"the stop took {took:.1f} s\n{worker.log()}"
    assert "wait_empty: Waiting for tasks" not in worker.log()
    worker.wait_ready(timeout_s=90)

    starts = {T0 + 60 * w for w in range(WINDOWS)}

    def drift_done(seen: list[dict[str, Any]]) -> bool:
        return {_start_s(r) for r in seen} >= starts

    def kpi_done(seen: list[dict[str, Any]]) -> bool:
        return {_start_s(r) for r in seen if r["revision"] == 0} >= starts

    drift = tail.collect(bootstrap, worker.topic("drift"), drift_done, timeout_s=120)
    kpi = tail.collect(bootstrap, worker.topic("kpi"), kpi_done, timeout_s=120)
    assert drift_done(drift), f"drift windows {sorted(_start_s(r) for r in drift)}"
    assert kpi_done(kpi), f"kpi windows {sorted(_start_s(r) for r in kpi)}"
    # Every window once, with every prediction: nothing lost, nothing counted twice.
    assert sorted((_start_s(r), r["n"]) for r in drift) == [
        (s, PER_WINDOW) for s in sorted(starts)
    ]
    first_revisions = [(_start_s(r), r["n_predictions"]) for r in kpi if r["revision"] == 0]
    assert sorted(first_revisions) == [(s, PER_WINDOW) for s in sorted(starts)]
