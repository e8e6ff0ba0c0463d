"""End to end: count windows (drift and KPI) and calendar windows (KPI) through the real
worker."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from agents.dev import simulate
from tests.e2e.helpers import MODEL, T0, close_windows, collect, iso, publish

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: {events: 1000}
  min_reference_events: 1000
  min_window_events: 500
kpi:
  window: {calendar: day, time_zone: Asia/Kolkata}
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 50
"""
#: a second model whose KPI windows are counts (the same traffic under its name)
COUNTED = "fraud-counted"
COUNT_POLICY = f"""
models:
  {COUNTED}:
    kpi: {{window: {{events: 1000}}, label_ttl: 10m, min_labeled: 50, revision_delay: 1s}}
"""


def test_count_and_calendar_windows_through_the_worker(worker_factory: object) -> None:
    # a day ahead must be accepted: the closing events end a Kolkata day
    worker = worker_factory(  # type: ignore[operator]
        POLICY + COUNT_POLICY, agents="drift,kpi",
        env={"DRIFTLINE_MAX_FUTURE_S": str(3 * 86_400)},
    )
    traffic = simulate.FraudTraffic(seed=5)
    events = traffic.events(2000, start_s=T0, span_s=120) + traffic.events(
        1500, start_s=T0 + 120, span_s=90, shifted=True
    )
    labels = [
        {"request_id": e["request_id"], "model": MODEL, "ts": e["ts"] + 5, "label": i % 2}
        for i, e in enumerate(events)
    ]
    for model in (MODEL, COUNTED):  # the same traffic for the model with count windows
        for i in range(0, len(events), 250):  # each label message after its predictions
            for topic, rows in (("predictions", events), ("labels", labels)):
                publish(worker, topic, [orjson.dumps({"events": [
                    {**e, "model": model} for e in rows[i : i + 250]]})], model=model)
    # Far-future events close the windows once the worker has read every label (it
    # reads the two topics at its own pace: one far ahead before them would expire
    # them): then the counted model's last full window (one partition, after the
    # first model's messages) has all of its labels.
    collect(worker, "kpi", lambda seen: any(
        r["model"] == COUNTED and r.get("window_index") == 2 and r["n_labeled"] == 1000
        for r in seen), timeout_s=60)
    close_windows(worker, T0 + 2 * 86_400)
    closer = {"request_id": "closer", "model": COUNTED, "ts": T0 + 86_400, "label": 0}
    publish(worker, "labels", [orjson.dumps(closer)], model=COUNTED)

    # drift: every 1,000 events of the version, in offset order; the rest stays open
    drift = collect(
        worker, "drift", lambda seen: sum(r["model"] == MODEL for r in seen) >= 3,
        timeout_s=60,
    )
    drift = [r for r in drift if r["model"] == MODEL]
    assert [(r["window_index"], r["n"], r["late"]) for r in drift] == [
        (k, 1000, 0) for k in range(3)
    ], worker.log()
    for k, report in enumerate(drift):
        chunk = [e["ts"] for e in events[1000 * k : 1000 * (k + 1)]]
        assert report["window_start"][:19] == iso(min(chunk))
    assert drift[0]["reference"]["kind"] == "warmup" and drift[1]["status"] == "ok"
    assert drift[2]["status"] == "drift" and set(simulate.SHIFTED) <= set(
        drift[2]["drifted_features"]
    )

    # KPI: the Kolkata day of T0 (2027-01-15), from its local midnight to the next
    midnight = datetime.fromtimestamp(T0, ZoneInfo("Asia/Kolkata")).replace(
        hour=0, minute=0, second=0
    )
    start, end = iso(midnight.timestamp()), iso(midnight.timestamp() + 86_400)
    def counted_final(seen: list[dict[str, object]]) -> int:
        return sum(bool(r["final"]) and r["model"] == COUNTED for r in seen)

    final = collect(
        worker, "kpi",
        lambda seen: counted_final(seen) >= 3
        and any(r["final"] and r["window_start"][:19] == start for r in seen),
        timeout_s=60,
    )
    day = next(r for r in final if r["final"] and r["window_start"][:19] == start
               and r["model"] == MODEL)
    assert day["window_end"][:19] == end
    assert (day["n_predictions"], day["n_labeled"]) == (3500, 3500)
    assert datetime.fromisoformat(start).replace(tzinfo=UTC).hour == 18  # 00:00 at +05:30
    assert all("window_index" not in r for r in final if r["model"] == MODEL)

    # KPI count windows: every 1,000 predictions of the version, each reported when its
    # 1,000th came, revised as labels joined, final once; the partial 500 never
    counted = [r for r in final if r["model"] == COUNTED]
    assert {r["window_index"] for r in counted} == {0, 1, 2}, worker.log()
    finals = sorted((r for r in counted if r["final"]), key=lambda r: r["window_index"])
    for k, report in enumerate(finals):
        chunk = [e["ts"] for e in events[1000 * k : 1000 * (k + 1)]]
        assert report["window_index"] == k and report["late"] == 0
        assert (report["n_predictions"], report["n_labeled"]) == (1000, 1000)
        assert report["window_start"][:19] == iso(min(chunk))
        end = datetime.fromisoformat(report["window_end"]).timestamp()
        assert abs(end - (max(chunk) + 0.001)) < 0.002  # 1 ms past the latest
        firsts = [r for r in counted if r["window_index"] == k and r["revision"] == 0]
        assert len(firsts) == 1 and firsts[0]["n_predictions"] == 1000


def test_count_windows_resume_at_the_same_event_after_a_sigkill(worker_factory: object) -> None:
    """The count is in the version's state (drift) and the series' (KPI): a killed
    worker's successor closes the chunks an uninterrupted run would have (a report may
    come twice, identical)."""
    worker = worker_factory(  # type: ignore[operator]
        POLICY.split("kpi:")[0] + "kpi: {window: {events: 1000}}\n", agents="drift,kpi"
    )
    events = simulate.FraudTraffic(seed=8).events(4000, start_s=T0, span_s=240)
    publish(worker, "predictions", simulate.batches(events[:2600], 100))
    collect(worker, "drift", lambda seen: len(seen) >= 2, timeout_s=60)
    assert worker.crash_restart() == -9
    publish(worker, "predictions", simulate.batches(events[2600:], 100))
    for topic, n in (("drift", "n"), ("kpi", "n_predictions")):
        reports = collect(
            worker, topic, lambda seen: {r["window_index"] for r in seen} >= {0, 1, 2, 3},
            timeout_s=60,
        )
        by_index: dict[int, list[dict[str, object]]] = {}
        for report in reports:
            by_index.setdefault(report["window_index"], []).append(report)
        assert sorted(by_index) == [0, 1, 2, 3], (topic, worker.log())
        for k, same in by_index.items():
            assert all(r == same[0] for r in same), "a repeated report is identical"
            chunk = [e["ts"] for e in events[1000 * k : 1000 * (k + 1)]]
            assert (same[0][n], same[0]["window_start"][:19]) == (1000, iso(min(chunk)))
