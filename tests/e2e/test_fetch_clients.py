"""End to end: the worker fetching with confluent-kafka (the default) and with aiokafka
(DRIFTLINE_FETCH=aiokafka) turns the same messages into the same reports and dead
letters. Every other end-to-end test runs the default."""

from __future__ import annotations

from typing import Any

import pytest

from agents.dev import simulate
from agents.operator import tail

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60
PER_WINDOW = 2000


def _messages() -> list[bytes]:
    traffic = simulate.FraudTraffic(seed=11)
    messages: list[bytes] = []
    for index in range(3):
        events = traffic.events(PER_WINDOW, start_s=T0 + 60 * index, span_s=60, shifted=index == 2)
        messages += simulate.batches(events, 500)
    messages.insert(3, b'{"events": [')  # a poison message among them
    closer = traffic.events(1, start_s=T0 + 3 * 60 + 1, span_s=1)
    return messages + list(simulate.batches(closer, 500))


def _outputs(worker: Any, messages: list[bytes]) -> tuple[list[Any], list[Any]]:
    simulate.publish(
        simulate.make_producer(worker.settings.bootstrap),
        worker.topic("predictions"),
        "fraud-detector",
        messages,
    )
    reports = tail.collect(
        worker.settings.bootstrap, worker.topic("drift"), lambda seen: len(seen) >= 3, timeout_s=90
    )
    letters = tail.collect(
        worker.settings.bootstrap,
        worker.topic("deadletter"),
        lambda seen: len(seen) >= 1,
        timeout_s=30,
    )
    assert len(reports) == 3, worker.log()
    kept = [
        {k: r[k] for k in ("window_start", "n", "status", "drifted_features", "features")}
        for r in sorted(reports, key=lambda r: r["window_start"])
    ]
    return kept, [(d["offset"], d["error"]) for d in letters]


def test_both_fetch_clients_give_the_same_reports(worker_factory: Any) -> None:
    messages = _messages()
    confluent = worker_factory(POLICY)
    aio = worker_factory(POLICY, env={"DRIFTLINE_FETCH": "aiokafka"})
    by_confluent, by_aio = _outputs(confluent, messages), _outputs(aio, messages)
    assert by_confluent == by_aio
    reports, letters = by_confluent
    assert [r["n"] for r in reports] == [PER_WINDOW] * 3
    assert reports[2]["status"] == "drift"
    assert letters == [(3, letters[0][1])] and "not valid UTF-8 JSON" in letters[0][1]
