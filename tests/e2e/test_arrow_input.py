"""End to end: Arrow IPC messages of predictions and labels through the real worker.

The same traffic as JSON and as Arrow gives the same drift and KPI reports; a bad
row of an Arrow message is dead-lettered by itself, with its row index, and the
rest of its message is counted; an unreadable Arrow message is dead-lettered whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from schemas import arrow
from tests.conftest import WorkerProcess
from tests.e2e.helpers import MODEL, T0, collect, publish

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 2m
  min_labeled: 100
"""
PER_WINDOW = 1500
WINDOWS = 3


def _traffic() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    traffic = simulate.FraudTraffic(seed=8)
    predictions: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    for w in range(WINDOWS):
        p, lab = traffic.events_with_labels(
            PER_WINDOW, start_s=T0 + 60 * w, span_s=60, label_delay_s=5.0, label_share=0.5
        )
        predictions += p
        labels += lab
    # just past the last window: every drift window closes, every KPI window is reported
    predictions += simulate.FraudTraffic(seed=9).events(1, start_s=T0 + 60 * WINDOWS + 6, span_s=1)
    return predictions, labels


def _publish(worker: WorkerProcess, encode: Callable[[list[dict[str, Any]]], bytes]) -> None:
    """Labels (they wait for their predictions), then predictions, in messages of 1,000
    events, with one bad row at index 3 of the first message (refused as JSON and as
    Arrow) and, in Arrow, one unreadable message at the end."""
    predictions, labels = _traffic()
    bad = dict(predictions[3], variant="blue")
    predictions = [*predictions[:3], bad, *predictions[3:]]
    headers = [arrow.HEADER] if encode is arrow.to_ipc else None

    def messages(events: list[dict[str, Any]]) -> list[bytes]:
        return [encode(events[i : i + 1000]) for i in range(0, len(events), 1000)]

    publish(worker, "labels", messages(labels), headers=headers)
    publish(worker, "predictions", messages(predictions), headers=headers)
    if encode is arrow.to_ipc:
        unreadable = arrow.MAGIC + b"\x10\x00\x00\x00not arrow at all"
        publish(worker, "predictions", [unreadable], headers=headers)


def _collect(worker: WorkerProcess, *, arrow_input: bool) -> tuple[list[dict[str, Any]], ...]:
    """Once every window is reported, a label far ahead retires them all: the same
    joins however the worker interleaves the two topics."""
    drift = collect(worker, "drift", lambda seen: len(seen) >= WINDOWS, timeout_s=120)
    collect(
        worker,
        "kpi",
        lambda seen: len({r["window_start"] for r in seen}) >= WINDOWS,
        timeout_s=120,
    )
    closer = {"request_id": "closer", "model": MODEL, "ts": T0 + 3600, "label": 0}
    encode = arrow.to_ipc if arrow_input else lambda events: orjson.dumps({"events": events})
    publish(worker, "labels", [encode([closer])], headers=[arrow.HEADER] if arrow_input else None)
    kpi = collect(
        worker,
        "kpi",
        lambda seen: sum(bool(r.get("final")) for r in seen) >= WINDOWS,
        timeout_s=120,
    )
    want_dead = 4 if arrow_input else 2  # the drift and KPI agents each
    dead = collect(worker, "deadletter", lambda seen: len(seen) >= want_dead, timeout_s=60)
    return drift, kpi, dead


def _summary(drift: list[dict[str, object]], kpi: list[dict[str, object]]) -> object:
    finals = sorted(
        (r["window_start"], r["n_predictions"], r["n_labeled"], r["metrics"])
        for r in kpi
        if r.get("final")
    )
    windows = sorted((r["window_start"], r["n"], r["status"], r["features"]) for r in drift)[
        :WINDOWS
    ]
    return windows, finals


def test_arrow_messages_give_the_reports_of_the_same_json(worker_factory: Any) -> None:
    # Two workers (topic prefixes of their own), side by side: the same traffic as
    # JSON to one, as Arrow to the other.
    json_worker = worker_factory(POLICY, agents="drift,kpi")
    arrow_worker = worker_factory(POLICY, agents="drift,kpi")
    _publish(json_worker, lambda events: orjson.dumps({"events": events}))
    _publish(arrow_worker, arrow.to_ipc)
    as_json = _collect(json_worker, arrow_input=False)
    as_arrow = _collect(arrow_worker, arrow_input=True)
    json_drift, json_kpi, json_dead = as_json
    drift, kpi, dead = as_arrow
    assert _summary(drift, kpi) == _summary(json_drift, json_kpi)
    windows, finals = _summary(drift, kpi)
    assert [n for _, n, _, _ in windows] == [PER_WINDOW] * WINDOWS  # the bad row alone is out
    assert all(labeled > 400 for _, _, labeled, _ in finals[:WINDOWS]), finals
    for agent in ("drift", "kpi"):
        row = [d for d in dead if d.get("index") is not None and d["agent"] == agent]
        assert [(d["index"], d["offset"]) for d in row] == [(3, 0)], dead
        assert "row 3 of the Arrow stream is not a valid PredictionEvent" in row[0]["error"]
        assert "variant" in row[0]["error"]
        whole = [d for d in dead if d.get("index") is None and d["agent"] == agent]
        assert len(whole) == 1 and "cannot be read" in whole[0]["error"], dead
        assert [(d["index"], d["offset"]) for d in json_dead if d["agent"] == agent] == [(3, 0)]
