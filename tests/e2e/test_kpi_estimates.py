"""End to end: performance estimated before the labels come, then realized beside it.

The real worker (KPI and policy agents) on the embedded broker. A reference
profile built by ``driftline reference build``'s code from labeled traffic
carries the score's calibration; it is published on ``references`` (key
``model@version``) and the KPI agent keeps it. Four windows of predictions
follow with no label: each first report (revision 0) carries the estimated
metrics with their band, and their estimated AUC misses the policy's
estimated target, so the status is a breach that rests on estimates and the
policy agent retrains on it. Fraud changes its rule (P(y|x)) from the third
window on; when the labels come, the realized AUC of the first two windows
sits beside the estimate, and that of the last two falls far below it: the
estimate cannot see concept drift (docs/kpi.md). The same profile carries KPI
bands from the reference's own windows (``kpi.reference_bands``): the last two
windows breach the AUC's band, the first two stay in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.operator import reference_build, tail
from schemas.policy import DriftPolicy, parse_policy

pytestmark = pytest.mark.e2e

MODEL = "fraud-detector"
POLICY = """
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
  min_estimated: 1000
  estimated_targets:
    roc_auc: {min: 0.85}
  reference_bands: {metrics: [roc_auc], window_events: 3000}
decisions:
  retrain: {kpi_breach_windows: 2, drift_windows: 0}
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60
PER_WINDOW = 3000
WINDOWS = 4
CHANGE = 2


def _profile(tmp_path: Path) -> bytes:
    preds, labels = simulate.FraudTraffic(seed=5).events_with_labels(
        20_000, start_s=T0 - 86_400, span_s=3600, concept=False, label_delay_s=20, label_share=1.0
    )
    truth = {e["request_id"]: e["label"] for e in labels}
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    **p["features"],
                    "score": p["score"],
                    "prediction": p["prediction"],
                    "label": truth[p["request_id"]],
                }
            )
            + b"\n"
            for p in preds
            if p["request_id"] in truth
        )
    )
    profile = reference_build.build(
        path, model=MODEL, version="v1", policy=DriftPolicy(), kpi=parse_policy(POLICY).kpi
    )
    assert profile.calibration is not None and profile.concept is not None
    assert profile.bands is not None and profile.bands.window_events == PER_WINDOW
    return profile.model_dump_json().encode()


def _start(w: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + 60 * w, tz=UTC).isoformat().replace("+00:00", "Z")


def test_estimates_before_labels_then_realized_beside_them(
    worker_factory: Any, tmp_path: Path
) -> None:
    worker = worker_factory(POLICY, agents="kpi,policy")
    s = worker.settings
    producer = simulate.make_producer(s.bootstrap)
    simulate.publish(producer, worker.topic("references"), f"{MODEL}@v1", [_profile(tmp_path)])
    # the profile is handled before the windows it estimates (the topics have no order
    # between them): wait for the worker's group to commit it
    worker.wait_committed("references", 1, timeout_s=120)

    traffic = simulate.FraudTraffic(seed=9)
    labels: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        p, lab = traffic.events_with_labels(
            PER_WINDOW,
            start_s=T0 + 60 * w,
            span_s=60,
            concept=w >= CHANGE,
            label_delay_s=20.0,
            label_share=1.0,
        )
        labels += lab
        simulate.publish(
            producer, worker.topic("predictions"), MODEL, list(simulate.batches(p, 1000))
        )
    closer = simulate.FraudTraffic(seed=3).events(1, start_s=T0 + 60 * WINDOWS + 1, span_s=1)
    simulate.publish(
        producer, worker.topic("predictions"), MODEL, [orjson.dumps({"events": closer})]
    )
    starts = [_start(w) for w in range(WINDOWS)]

    def firsts(seen: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["window_start"]: r for r in seen if r["revision"] == 0}

    kpi = tail.collect(
        s.bootstrap,
        worker.topic("kpi"),
        lambda seen: set(starts) <= set(firsts(seen)),
        timeout_s=120,
    )
    first = firsts(kpi)
    assert set(starts) <= set(first), f"{sorted(first)}\n{worker.log()[-4000:]}"
    for start in starts:
        r = first[start]
        est = r["estimated_metrics"]["roc_auc"]
        assert r["n_labeled"] == 0 and "roc_auc" not in r["metrics"]
        assert est["lower"] <= est["value"] <= est["upper"] < 0.85, est
        assert r["status"] == "breach" and r["estimated"], r
        assert r["breaches"][0].startswith("estimated roc_auc")

    commands = tail.collect(
        s.bootstrap,
        worker.topic("commands"),
        lambda seen: any(c["type"] == "retrain" for c in seen),
        timeout_s=60,
    )
    retrain = next(c for c in commands if c["type"] == "retrain")
    assert "on estimates from scores, before labels" in retrain["reason"], retrain["reason"]

    # the labels come; a late label retires every window with all of its labels
    end = T0 + 60 * WINDOWS + 700
    labels.append({"request_id": "closer", "model": MODEL, "ts": end, "label": 0})
    simulate.publish(producer, worker.topic("labels"), MODEL, list(simulate.batches(labels, 1000)))
    simulate.publish(
        producer,
        worker.topic("predictions"),
        MODEL,
        [
            orjson.dumps(
                {"events": (simulate.FraudTraffic(seed=4).events(1, start_s=end, span_s=1))}
            )
        ],
    )

    def finals(seen: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["window_start"]: r for r in seen if r["final"]}

    kpi = tail.collect(
        s.bootstrap,
        worker.topic("kpi"),
        lambda seen: set(starts) <= set(finals(seen)),
        timeout_s=120,
    )
    final = finals(kpi)
    assert set(starts) <= set(final), f"{sorted(final)}\n{worker.log()[-4000:]}"
    for w, start in enumerate(starts):
        r = final[start]
        est, realized = r["estimated_metrics"]["roc_auc"], r["metrics"]["roc_auc"]
        assert r["n_labeled"] == PER_WINDOW and not r["estimated"]
        assert r["concept"]["calibrated"], r["concept"]  # from the published profile
        assert r["bands"]["applied"], r["bands"]  # from the published profile too
        band = next(t for t in r["thresholds"]["roc_auc"] if t["source"] == "reference")
        assert band["judged"]
        if w < CHANGE:  # P(y|x) as in the reference: the estimate holds
            assert abs(est["value"] - realized) < 0.03, (w, est, realized)
            assert not band["breached"] and r["status"] != "breach", r["breaches"]
        else:  # concept drift: the scores do not move, the realized AUC does
            assert realized < est["lower"] - 0.2, (w, est, realized)
            assert band["breached"] and realized < band["lower"], (band, realized)
            assert any("below its reference band" in b for b in r["breaches"])
