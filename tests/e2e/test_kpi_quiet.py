"""End to end: quiet streams and a bad client clock on the real worker and broker.

Predictions, then their labels, then nothing: each closed window's revision
reaches its full label count within ``revision_delay`` (the KPI agent's
timer), with no later event. Event time then moves past ``label_ttl``: every
window ends with exactly one final report, and a replay gives the same final
numbers. One prediction stamped 14 days ahead is dead-lettered with the reason,
and the labels of the others still meet their predictions.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.operator import replay, tail
from schemas.policy import parse_policy

pytestmark = pytest.mark.e2e

POLICY = """
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 100
  revision_delay: 2s
"""
MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 60
PER_WINDOW = 2000
WINDOWS = 3  # the predictions' clock ends in window 2: windows 0 and 1 are closed


def _traffic(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    gen = simulate.FraudTraffic(seed=seed)
    preds: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        # labels a few seconds after their predictions: the labels' event time never
        # moves a whole window past the first revisions, so only the timer re-reports
        p, lab = gen.events_with_labels(
            PER_WINDOW, start_s=T0 + 60 * w, span_s=60, label_delay_s=2.0, label_share=0.9
        )
        preds += p
        labels += lab
    return preds, sorted(labels, key=lambda e: e["ts"])


def _start(w: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + 60 * w, tz=UTC).isoformat().replace("+00:00", "Z")


def _labeled(preds: list[dict[str, Any]], labels: list[dict[str, Any]]) -> dict[str, int]:
    truth = {e["request_id"] for e in labels}
    return dict(
        Counter(_start(int((p["ts"] - T0) // 60)) for p in preds if p["request_id"] in truth)
    )


def _latest(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in reports:
        if r["window_start"] not in out or r["revision"] > out[r["window_start"]]["revision"]:
            out[r["window_start"]] = r
    return out


def _show(reports: list[dict[str, Any]]) -> list[tuple[str, int, int, bool]]:
    return [
        (r["window_start"][11:16], r["revision"], r["n_labeled"], r.get("final", False))
        for r in reports
    ]


def test_quiet_windows_are_revised_then_end_final_and_replay_agrees(worker_factory: Any) -> None:
    worker = worker_factory(POLICY, agents="kpi")
    s = worker.settings
    preds, labels = _traffic(seed=31)
    want = _labeled(preds, labels)
    published = worker.publish_predictions_then_labels(
        MODEL, list(simulate.batches(preds, 500)), list(simulate.batches(labels, 500)))
    closed = [_start(0), _start(1)]

    def revised(seen: list[dict[str, Any]]) -> bool:
        last = _latest(seen)
        return all(w in last and last[w]["n_labeled"] == want[w] for w in closed)

    # Nothing is published after the labels: only the timer can send these.
    kpi = tail.collect(s.bootstrap, worker.topic("kpi"), revised, timeout_s=120)
    took = time.monotonic() - published
    assert revised(kpi), f"{_show(kpi)}\n{worker.log()[-3000:]}"
    assert not any(r["final"] for r in kpi), _show(kpi)
    assert _start(2) not in _latest(kpi), "window 2 is open in event time: not reported yet"
    print(f"full revisions of the closed windows {took:.1f} s after the labels were published")

    # Event time moves every window past label_ttl: each retires with one final report.
    end = T0 + 60 * WINDOWS + 700
    closer = simulate.FraudTraffic(seed=32).events(1, start_s=end, span_s=1)
    producer = simulate.make_producer(s.bootstrap)
    simulate.publish(
        producer, worker.topic("predictions"), MODEL, [orjson.dumps({"events": closer})]
    )
    simulate.publish(
        producer,
        worker.topic("labels"),
        MODEL,
        [orjson.dumps({"request_id": "closer", "model": MODEL, "ts": end, "label": 0})],
    )
    windows = [_start(w) for w in range(WINDOWS)]

    def finals(seen: list[dict[str, Any]]) -> bool:
        return {r["window_start"] for r in seen if r["final"]} >= set(windows)

    kpi = tail.collect(s.bootstrap, worker.topic("kpi"), finals, timeout_s=120)
    assert finals(kpi), _show(kpi)
    # Everything the worker sent, to the end (a second final would show here).
    worker.wait_committed("labels", len(list(simulate.batches(labels, 500))) + 1, timeout_s=60)
    kpi = [orjson.loads(v) for v in tail.read_to_end(s.bootstrap, worker.topic("kpi"), quiet_s=3.0)]
    count = Counter(r["window_start"] for r in kpi if r["final"])
    assert {w: count[w] for w in windows} == dict.fromkeys(windows, 1), _show(kpi)
    last = _latest([r for r in kpi if r["window_start"] in windows])
    for w in windows:
        assert last[w]["final"], f"the final report is the window's last: {_show(kpi)}"
        assert last[w]["n_labeled"] == want[w]
        assert last[w]["n_predictions"] == PER_WINDOW

    # A replay of the topics gives the same final numbers.
    result = replay.run(s, parse_policy(POLICY), from_ms=0, to_ms=2**62, verify=True)
    differences = [d for d in result.differences if d.key.startswith("kpi/")]
    if differences:  # say which metrics, with both values
        mine = _latest(result.kpi)
        for w in windows:
            a, b = mine[w]["metrics"], last[w]["metrics"]
            print(w, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)})
    assert differences == [], differences
    again = _latest([r for r in result.kpi if r["window_start"] in windows])
    for w in windows:
        assert again[w]["final"]
        for field in ("n_predictions", "n_labeled", "breaches", "segments"):
            assert again[w][field] == last[w][field], (w, field)
        # the same sums, folded in another grouping when the topics interleaved otherwise
        assert again[w]["metrics"] == pytest.approx(last[w]["metrics"], rel=1e-9), w


def test_a_prediction_fourteen_days_ahead_is_dead_lettered_and_expires_nothing(
    worker_factory: Any,
) -> None:
    worker = worker_factory(POLICY, agents="kpi")
    s = worker.settings
    preds, labels = _traffic(seed=33)
    want = _labeled(preds, labels)
    bad = simulate.FraudTraffic(seed=34).events(1, start_s=T0 + 14 * 86_400, span_s=1)[0]
    bad["request_id"] = "bad-clock"
    half = len(preds) // 2
    messages = [
        *simulate.batches(preds[:half], 500),
        orjson.dumps(bad),
        *simulate.batches(preds[half:], 500),
    ]
    worker.publish_predictions_then_labels(MODEL, messages,
                                           list(simulate.batches(labels, 500)))
    closed = [_start(0), _start(1)]

    def joined(seen: list[dict[str, Any]]) -> bool:
        last = _latest(seen)
        return all(w in last and last[w]["n_labeled"] == want[w] for w in closed)

    kpi = tail.collect(s.bootstrap, worker.topic("kpi"), joined, timeout_s=120)
    assert joined(kpi), f"{_show(kpi)}\n{worker.log()[-3000:]}"
    last = _latest(kpi)
    assert all(last[w]["metrics"]["unlabeled_expired"] == 0 for w in closed)
    assert not any("orphan" in n for r in kpi for n in r["notes"]), "no label lost its prediction"
    letters = tail.collect(
        s.bootstrap, worker.topic("deadletter"), lambda seen: len(seen) >= 1, timeout_s=60
    )
    (letter,) = letters
    assert letter["topic"] == worker.topic("predictions") and letter["agent"] == "kpi"
    assert letter["event"]["request_id"] == "bad-clock"
    assert "336.0 h ahead of its stream's time" in letter["error"], letter["error"]
    assert "DRIFTLINE_MAX_FUTURE_S" in letter["error"]
