"""End to end: predictions and delayed labels through the real worker on the broker.

Fraud changes its pattern halfway (P(y|x) moves, P(x) does not): the drift
agent sees no feature drift, while the KPI agent's AUC falls, the target is
breached and the concept-drift detector fires — in the windows after the
change only.
"""

from __future__ import annotations

import heapq

import numpy as np
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from agents.dev import simulate
from tests.e2e.helpers import T0, close_windows, collect, publish

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
  targets:
    roc_auc: {min: 0.65}
"""
PER_WINDOW = 2000
WINDOWS = 6
CHANGE = 3  # windows 3, 4, 5 follow the new concept


def _timeline() -> tuple[list[tuple[str, bytes]], list[dict[str, object]], list[dict[str, object]]]:
    """Prediction and label messages in event-time order, as serving and a chargeback
    feed would publish them; the first 100 labels come before any prediction."""
    traffic = simulate.FraudTraffic(seed=5)
    predictions: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    for w in range(WINDOWS):
        p, lab = traffic.events_with_labels(
            PER_WINDOW, start_s=T0 + 60 * w, span_s=60, concept=w >= CHANGE,
            label_delay_s=20.0, label_share=0.9)
        predictions += p
        labels += lab
    labels.sort(key=lambda e: e["ts"])  # type: ignore[arg-type, return-value]
    early, labels_rest = labels[:100], labels[100:]
    messages: list[tuple[str, bytes]] = [("labels", m) for m in simulate.batches(early, 500)]
    queue: list[tuple[float, int, str, list[dict[str, object]]]] = []
    for i in range(0, len(predictions), 500):
        chunk = predictions[i:i + 500]
        heapq.heappush(queue, (float(chunk[-1]["ts"]), len(queue), "predictions", chunk))  # type: ignore[arg-type]
    for i in range(0, len(labels_rest), 500):
        chunk = labels_rest[i:i + 500]
        heapq.heappush(queue, (float(chunk[-1]["ts"]), len(queue), "labels", chunk))  # type: ignore[arg-type]
    while queue:
        _, _, topic, chunk = heapq.heappop(queue)
        messages.append((topic, orjson.dumps({"events": chunk})))
    return messages, predictions, labels


def test_concept_change_breaches_kpis_without_feature_drift(worker_factory: object) -> None:
    worker = worker_factory(POLICY, agents="drift,kpi")  # type: ignore[operator]
    messages, predictions, labels = _timeline()
    for topic, payload in messages:
        publish(worker, topic, [payload])
    # Far-future events at the end of both topics move both clocks past every
    # window's label_ttl: each window is retired with a last revision that holds
    # all of its labels, however the broker interleaves the two topics.
    close_windows(worker, T0 + 60 * WINDOWS + 700)

    truth = {e["request_id"]: e["label"] for e in labels}
    windows = []
    for w in range(WINDOWS):
        in_window = [p for p in predictions
                     if T0 + 60 * w <= p["ts"] < T0 + 60 * (w + 1)]  # type: ignore[operator]
        windows.append((in_window, [p for p in in_window if p["request_id"] in truth]))
    starts = _starts()

    def complete(seen: list[dict[str, object]]) -> bool:
        got = {(r["window_start"], r["n_labeled"]) for r in seen}
        return all((s, len(lab)) in got for s, (_, lab) in zip(starts, windows, strict=True))

    kpi = collect(worker, "kpi", complete, timeout_s=120)
    assert complete(kpi), (
        f"{[(r['window_start'], r['revision'], r['n_labeled']) for r in kpi]}\n{worker.log()}")
    for w, start in enumerate(starts):
        in_window, labeled = windows[w]
        mine = sorted((r for r in kpi if r["window_start"] == start), key=lambda r: r["revision"])
        assert [r["revision"] for r in mine] == list(range(len(mine))), "revisions in order"
        final = mine[-1]
        # Predictions that came after their window was first reported are in
        # later revisions (the two topics interleave as the broker serves them).
        assert final["n_predictions"] == len(in_window)
        assert final["n_labeled"] == len(labeled), "every label met its prediction"
        y = np.array([truth[p["request_id"]] for p in labeled])
        s = np.array([p["score"] for p in labeled])
        assert final["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=0.005)
        if w < CHANGE:
            assert final["status"] == "ok", final
        if w < CHANGE - 1:
            # A detection is filed under the window of the prediction whose label
            # tipped the detector. The two input topics interleave as the broker
            # serves them, so a late label of window CHANGE - 1 may be that one.
            assert not any(r["concept_drift"] for r in mine), mine[-1]
        if w >= CHANGE:
            assert final["status"] == "breach", final
            assert any("roc_auc" in b for b in final["breaches"])
    assert any(r["concept_drift"] for r in kpi if r["window_start"] in starts[CHANGE:])

    drift = collect(worker, "drift", lambda seen: len(seen) >= WINDOWS, timeout_s=60)
    assert len(drift) >= WINDOWS
    assert all(r["status"] == "ok" for r in drift), [r["drifted_features"] for r in drift]


def _starts() -> list[str]:
    from datetime import UTC, datetime

    return [datetime.fromtimestamp(T0 + 60 * w, tz=UTC).isoformat().replace("+00:00", "Z")
            for w in range(WINDOWS)]
