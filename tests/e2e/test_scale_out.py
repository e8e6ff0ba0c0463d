"""End to end: two worker processes share a partitioned topic and report what one would.

One worker (drift and KPI agents) starts alone on topics of two partitions and
handles the first half of the predictions of four models; a second process of
the same app joins, the group rebalances, the table partition that moves is
recovered from its changelog by the newcomer, and both handle the rest, then
the labels. Every drift and KPI report equals the one-pass run of the same
handlers over the same input (agents.operator.replay.recompute, which
tests/e2e/test_replay.py shows equal to a live single worker), and each
process handled events (their Prometheus counters).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.operator import replay, tail
from schemas.policy import parse_policy
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.e2e

POLICY = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 500}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 5m, min_labeled: 50}
"""
MODELS = ("fraud-a", "fraud-b", "fraud-c", "fraud-d")
T0 = 1_800_000_000 - 1_800_000_000 % 60
WINDOWS = 6
PER_WINDOW = 300
#: seconds between two messages of the flowing predictions: 724 of them take about
#: 15 s, so that the second process joins while they flow (it is ready in 5-8 s)
FLOW_PACE_S = 0.02


def _warnings(worker: WorkerProcess) -> str:
    return "\n".join(line for line in worker.log().splitlines()
                     if "WARN" in line or "skipped" in line or "assigned" in line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events_counted(port: int, topic: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(r'driftline_events_total\{agent="drift",topic="' + re.escape(topic)
                       + r'"\} ([0-9.e+]+)', text)
    return float(found[0]) if found else 0.0


def _wait_all_committed(workers: WorkerProcess, topic: str, ends: dict[int, int]) -> None:
    for partition, end in ends.items():
        workers.wait_committed(topic, end, timeout_s=120, partition=partition)


def _ends(messages: list[Any], topic: str) -> dict[int, int]:
    """Per partition, one past the last offset of ``topic`` among ``messages``."""
    out: dict[int, int] = {}
    for m in messages:
        if m.topic() == topic:
            out[m.partition()] = max(out.get(m.partition(), 0), m.offset() + 1)
    return out


def _traffic(per_message: int) -> tuple[list[list[tuple[str, bytes]]],
                                        dict[str, list[dict[str, Any]]]]:
    """The predictions of every model in two halves (windows before and after the
    middle; the second ends with a far-future prediction per model that closes its
    windows), as (model, message) in publishing order, and each model's labels."""
    labels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    halves: list[list[tuple[str, bytes]]] = [[], []]
    for i, model in enumerate(MODELS):
        traffic = simulate.FraudTraffic(seed=40 + i, model=model)
        for w in range(WINDOWS):
            preds, labs = traffic.events_with_labels(
                PER_WINDOW, start_s=T0 + 60 * w, span_s=60, label_delay_s=10.0,
                shifted=(model == "fraud-b" and w >= 3))
            halves[w >= WINDOWS // 2] += [
                (model, b) for b in simulate.batches(preds, per_message)]
            labels[model] += labs
        # a far-future prediction closes every window of the model
        closer = simulate.FraudTraffic(seed=60 + i, model=model).events(
            1, start_s=T0 + 60 * WINDOWS + 700, span_s=1)
        halves[1].append((model, orjson.dumps({"events": closer})))
    return halves, labels


Publish = Callable[[str, list[tuple[str, bytes]]], None]


def _first_worker(worker_factory: Any) -> tuple[WorkerProcess, list[int], Publish]:
    """The first process (drift and KPI on two partitions, its metrics on a free port;
    the second's port picked too), ready, and ``publish(topic, [(model, message)])``
    to its topics, a message at a time."""
    ports = [_free_port(), _free_port()]
    first: WorkerProcess = worker_factory(
        POLICY, agents="drift,kpi", partitions=2, log_level="info",
        env={"DRIFTLINE_METRICS_PORT": str(ports[0])})
    first.wait_ready(timeout_s=60)
    producer = simulate.make_producer(first.settings.bootstrap)

    def publish(topic: str, payloads: list[tuple[str, bytes]]) -> None:
        for model, payload in payloads:
            simulate.publish(producer, first.topic(topic), model, [payload])

    return first, ports, publish


def test_two_workers_share_the_partitions_and_report_what_one_pass_does(
        worker_factory: Any, tmp_path: Path) -> None:
    first, ports, publish = _first_worker(worker_factory)
    s = first.settings
    halves, labels = _traffic(per_message=100)
    publish("predictions", halves[0])
    sent = tail.read_messages(s.bootstrap, [first.topic("predictions")])
    partitions = {m.partition() for m in sent}
    assert partitions == {0, 1}, f"the models' keys all landed on partitions {partitions}"
    _wait_all_committed(first, "predictions", _ends(sent, first.topic("predictions")))

    # The second process joins while the first is idle; on the embedded broker the
    # changelogs end with a one-record batch (see WorkerProcess.restart: its end offsets).
    second = first.peer(tmp_path / "second", env={"DRIFTLINE_METRICS_PORT": str(ports[1])})
    first.seal_changelogs()
    second.start()
    try:
        _second_half(first, second, halves[1], labels, publish, ports)
    finally:
        second.stop()


def _second_half(first: WorkerProcess, second: WorkerProcess,
                 half: list[tuple[str, bytes]], labels: dict[str, list[dict[str, Any]]],
                 publish: Any, ports: list[int]) -> None:
    second.wait_ready(timeout_s=90)
    publish("predictions", half)
    _labels_then_one_pass(first, second, labels, publish, ports)


def _labels_then_one_pass(first: WorkerProcess, second: WorkerProcess,
                          labels: dict[str, list[dict[str, Any]]], publish: Any,
                          ports: list[int]) -> None:
    """Once every prediction is committed, the labels; then every drift and KPI
    report must be the one-pass run's, and both processes must have counted events."""
    s = first.settings
    sent = tail.read_messages(s.bootstrap, [first.topic("predictions")])
    _wait_all_committed(first, "predictions", _ends(sent, first.topic("predictions")))
    for model in MODELS:
        publish("labels", [(model, b) for b in simulate.batches(
            sorted(labels[model], key=lambda e: e["ts"]), 100)])  # type: ignore[arg-type, return-value]
    inputs = tail.read_messages(s.bootstrap, [first.topic(t) for t in replay.INPUTS])
    _wait_all_committed(first, "labels", _ends(inputs, first.topic("labels")))

    # The one-pass run: per model, its predictions in order, then its labels.
    inputs.sort(key=lambda m: (m.topic() != first.topic("predictions"), m.partition(),
                               m.offset()))
    expected = replay.recompute(inputs, parse_policy(POLICY), s)
    assert {r["model"] for r in expected.drift} == set(MODELS)
    assert any(r["status"] != "ok" for r in expected.drift if r["model"] == "fraud-b")
    for kind, want in (("drift", expected.drift), ("kpi", expected.kpi)):
        wanted = {replay.identity(kind, r): r for r in want}

        def complete(seen: list[dict[str, Any]], wanted: dict[str, Any] = wanted,
                     kind: str = kind) -> bool:
            return set(wanted) <= {replay.identity(kind, r) for r in seen}

        live = tail.collect(s.bootstrap, first.topic(kind), complete, timeout_s=90)
        got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in live:
            got[replay.identity(kind, r)].append(r)
        assert set(got) == set(wanted), (
            f"{kind}: missing {sorted(set(wanted) - set(got))[:5]}, "
            f"unexpected {sorted(set(got) - set(wanted))[:5]}\n{first.log()[-3000:]}\n"
            f"{second.log()[-3000:]}")
        for key, copies in got.items():
            for c in copies:
                fields = replay._differing(c, wanted[key])
                assert not fields, (
                    f"{kind} {key} differs in {fields}: live n={c.get('n')}, one pass "
                    f"n={wanted[key].get('n')}\n{_warnings(first)}\n{_warnings(second)}")

    # Both processes did part of the work.
    counted = [_events_counted(port, first.topic("predictions")) for port in ports]
    assert all(c > 0 for c in counted), counted
    print(f"events counted by each worker since it started: {counted}")


def test_a_worker_joining_while_predictions_flow_changes_no_report(
        worker_factory: Any, tmp_path: Path) -> None:
    """The rebalance comes while the first worker's drift and KPI agents are both
    reading predictions (small messages, published as the second process starts):
    Faust drops what waits in their queues, the revocation lets go of what one agent
    had handled and the other not (agents.runtime.inflight: logged as "no agent will
    acknowledge"), and the partition's owner reads it again, skipped where applied.
    Every report must still be the one-pass run's: nothing lost, nothing counted
    twice, by either process."""
    first, ports, publish = _first_worker(worker_factory)
    halves, labels = _traffic(per_message=10)
    flowing = halves[0] + halves[1]
    done = threading.Event()

    def feed() -> None:
        try:
            for message in flowing:  # one message at a time, acknowledged each
                publish("predictions", [message])
                time.sleep(FLOW_PACE_S)  # the traffic's pace, not a synchronisation
        finally:
            done.set()

    second = first.peer(tmp_path / "second", env={"DRIFTLINE_METRICS_PORT": str(ports[1])})
    first.seal_changelogs()
    feeder = threading.Thread(target=feed, name="predictions")
    feeder.start()
    try:
        second.start()
        second.wait_ready(timeout_s=90)
        assert not done.is_set(), "the predictions were all sent before the second joined"
        feeder.join(timeout=120)
        assert done.is_set()
        _labels_then_one_pass(first, second, labels, publish, ports)
        for worker in (first, second):
            assert "wait_empty: Waiting for tasks" not in worker.log(), worker.log()[-3000:]
    finally:
        feeder.join(timeout=120)
        second.stop()
