"""Quiet streams and bad clocks on the KPI and drift handlers (dict tables, explicit times).

* a window's revision follows its labels within ``revision_delay`` of processing
  time (``tick``) when no later event moves event time;
* every window ends with exactly one report marked final, changed or not;
* one event stamped far ahead (a bad client clock) is dead-lettered instead of
  expiring every pending prediction (KPI) or closing every open window (drift).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from schemas.policy import parse_policy
from schemas.reports import KpiReport
from tests.agents.kpi.test_handler import BASE, MODEL, T0, in_time_order, traffic, window_of

POLICY = parse_policy(BASE + "  revision_delay: 5s\n")
DAY_S = 86_400
Event = dict[str, Any]


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Quiet:
    """A KPI handler with a hand-driven processing clock, its table and its output."""

    def __init__(self, *, max_future_ms: int = 3_600_000) -> None:
        self.clock = Clock(1_000_000)
        self.handler = KpiHandler(
            policy=POLICY,
            predictions_topic="predictions",
            labels_topic="labels",
            max_message_bytes=1 << 26,
            max_future_ms=max_future_ms,
            clock_ms=self.clock,
        )
        self.table: dict[bytes, bytes] = {}
        self.reports: list[KpiReport] = []
        self.dead: list[Any] = []
        self.offset = 0

    def send(self, topic: str, events: list[Event]) -> None:
        self.offset += 1
        out = self.handler.handle(
            orjson.dumps({"events": events}),
            Origin(topic, 0, self.offset, MODEL.encode()),
            self.table,
        )
        self.reports += out.reports  # type: ignore[arg-type]
        self.dead += out.dead

    def send_all(self, topic: str, events: list[Event]) -> None:
        for i in range(0, len(events), 500):
            self.send(topic, events[i : i + 500])

    def tick(self, now_ms: int) -> list[KpiReport]:
        out = self.handler.tick(now_ms, 0, self.table)
        assert not out.dead
        self.reports += out.reports  # type: ignore[arg-type]
        return out.reports  # type: ignore[return-value]

    def latest(self) -> dict[int, KpiReport]:
        out: dict[int, KpiReport] = {}
        for r in self.reports:
            w = int((r.window_start.timestamp() - T0) // 60)
            if w not in out or r.revision > out[w].revision:
                out[w] = r
        return out


def labeled_per_window(preds: list[Event], labels: list[Event]) -> dict[int, int]:
    truth = {e["request_id"] for e in labels}
    return dict(Counter(window_of(p) for p in preds if p["request_id"] in truth))


def test_labels_after_their_predictions_are_reported_within_the_delay() -> None:
    run = Quiet()
    # Labels a few seconds after their predictions: the labels' clock stays within a
    # window of the first revisions, so event time alone re-reports nothing more.
    preds, labels = traffic(3, seed=11, delay_s=2.0)
    run.send_all("predictions", preds)
    run.send_all("labels", sorted(labels, key=lambda e: e["ts"]))
    want = labeled_per_window(preds, labels)
    # Windows 0 and 1 are closed (the predictions passed them); window 2 is open in
    # event time. The labels' own clock leaves the last ones unreported:
    before = run.latest()
    assert sorted(before) == [0, 1]
    assert any(before[w].n_labeled < want[w] for w in (0, 1)), "the quiet-stream gap"
    last_change = run.clock.ms
    table = dict(run.table)
    assert run.tick(last_change + 4_999) == [], "not before revision_delay"
    assert run.table == table, "a tick that reports nothing writes nothing"
    sent = run.tick(last_change + 5_000)
    after = run.latest()
    assert {w: after[w].n_labeled for w in (0, 1)} == {0: want[0], 1: want[1]}
    assert {r.window_start for r in sent} == {
        before[w].window_start for w in (0, 1) if before[w].n_labeled < want[w]
    }
    assert all(
        r.revision == before[int((r.window_start.timestamp() - T0) // 60)].revision + 1
        and not r.final
        for r in sent
    )
    assert run.tick(last_change + 60_000) == [], "unchanged since: no further revision"


def test_every_window_ends_with_exactly_one_final_report() -> None:
    run = Quiet()
    # Every prediction labeled: retiring a window then changes nothing in it.
    preds, labels = traffic(3, seed=12, delay_s=2.0, share=1.0)
    run.send_all("predictions", preds)
    run.send_all("labels", sorted(labels, key=lambda e: e["ts"]))
    run.tick(run.clock.ms + 5_000)  # windows 0 and 1 reported in full: unchanged since
    unchanged = run.latest()
    # Event time moves every window past label_ttl (10 min): all three retire.
    end = T0 + 3 * 60 + 700
    run.send("predictions", simulate.FraudTraffic(seed=99).events(1, start_s=end, span_s=1))
    run.send("labels", [{"request_id": "closer", "model": MODEL, "ts": end, "label": 0}])
    want = labeled_per_window(preds, labels)
    finals = [r for r in run.reports if r.final]
    windows = Counter(r.window_start for r in finals)
    assert len(windows) == 3 and set(windows.values()) == {1}, windows
    for r in finals:
        w = int((r.window_start.timestamp() - T0) // 60)
        assert r.n_labeled == want[w]
        assert r.revision == max(
            x.revision for x in run.reports if x.window_start == r.window_start
        ), "the last report"
        if w in unchanged:  # unchanged since its last revision: the same numbers, final
            assert r.revision == unchanged[w].revision + 1
            assert (r.n_predictions, r.n_labeled, r.metrics) == (
                unchanged[w].n_predictions,
                unchanged[w].n_labeled,
                unchanged[w].metrics,
            )
    assert not [
        r
        for r in run.reports
        if r.window_start in windows
        and not r.final
        and r.revision > max(x.revision for x in finals if x.window_start == r.window_start)
    ]
    assert run.tick(run.clock.ms + 10**9) == []
    kept = [int(k.rsplit(b"|", 1)[1]) // 1000 for k in run.table if k[:2] == b"w|"]
    assert kept == [end - end % 60], "the three windows are gone; the closer's is open"


def test_windows_unchanged_since_their_last_revision_still_end_final() -> None:
    # Labels in time order, every prediction labeled: most windows' last revision
    # already holds everything when they retire (before: 5 of 6 retired silently).
    run = Quiet()
    preds, labels = traffic(6, seed=12, share=1.0)
    for topic, chunk in in_time_order(preds, labels):
        run.send(topic, chunk)
    end = T0 + 6 * 60 + 700
    run.send("predictions", simulate.FraudTraffic(seed=99).events(1, start_s=end, span_s=1))
    run.send("labels", [{"request_id": "closer", "model": MODEL, "ts": end, "label": 0}])
    finals = Counter(r.window_start for r in run.reports if r.final)
    assert len(finals) == 6 and set(finals.values()) == {1}, finals


def test_a_prediction_fourteen_days_ahead_expires_nothing() -> None:
    run = Quiet()
    preds, labels = traffic(2, seed=13)
    bad = simulate.FraudTraffic(seed=98).events(1, start_s=T0 + 14 * DAY_S, span_s=1)[0]
    bad["request_id"] = "bad-clock"
    half = len(preds) // 2
    run.send_all("predictions", preds[:half])
    run.send("predictions", [bad])  # a client with a bad clock, in a message of its own
    run.send_all("predictions", preds[half:])
    run.send_all("labels", sorted(labels, key=lambda e: e["ts"]))
    run.tick(run.clock.ms + 5_000)
    want = labeled_per_window(preds, labels)
    latest = run.latest()
    assert latest[0].n_labeled == want[0], "window 0's labels all met their predictions"
    assert latest[0].metrics["unlabeled_expired"] == 0
    assert not any("orphan" in n for r in run.reports for n in r.notes), "no orphan labels"
    (letter,) = run.dead
    assert letter.topic == "predictions" and letter.index == 0
    assert letter.event["request_id"] == "bad-clock"
    assert "336.0 h ahead of its stream's time" in letter.error
    assert "DRIFTLINE_MAX_FUTURE_S" in letter.error
    assert sum(
        r.n_predictions for r in latest.values() if r.window_start.timestamp() < T0 + 86_400
    ) <= len(preds)


def test_one_bad_event_inside_a_batch_is_dead_lettered_alone() -> None:
    run = Quiet()
    preds, _ = traffic(2, seed=14)
    bad = dict(preds[700])
    bad.update(request_id="bad-clock", ts=T0 + 14 * DAY_S)
    batch = [*preds[500:1000], bad]
    run.send_all("predictions", preds[:500])
    run.send("predictions", batch)
    (letter,) = run.dead
    assert letter.index == len(batch) - 1
    assert letter.event["request_id"] == "bad-clock"


def test_drift_windows_stay_open_when_one_event_runs_far_ahead() -> None:
    policy = parse_policy(BASE)
    handler = DriftHandler(
        policy=policy,
        predictions_topic="predictions",
        features_topic="features",
        max_message_bytes=1 << 26,
    )
    table: dict[bytes, bytes] = {}
    reports: list[Any] = []
    dead: list[Any] = []
    gen = simulate.FraudTraffic(seed=3)
    offset = 0

    def send(events: list[Event]) -> None:
        nonlocal offset
        offset += 1
        out = handler.handle(
            orjson.dumps({"events": events}),
            Origin("predictions", 0, offset, MODEL.encode()),
            table,
        )
        reports.extend(out.reports)
        dead.extend(out.dead)

    for minute in range(3):
        events = gen.events(1500, start_s=T0 + 60 * minute, span_s=60)
        for i in range(0, 1500, 500):
            send(events[i : i + 500])
            if minute == 0 and i == 0:  # would close window 0 with a third of its events
                send(gen.events(1, start_s=T0 + 14 * DAY_S, span_s=1))
    (letter,) = dead
    assert "ahead of its stream's time" in letter.error
    # Only windows the real traffic passed are closed, each with all its events.
    assert [(r.window_start.timestamp() - T0, r.n, r.late) for r in reports] == [
        (0, 1500, 0),
        (60, 1500, 0),
    ]


@pytest.mark.parametrize("max_future_s", [60, 3600])
def test_the_bound_is_configurable(max_future_s: int) -> None:
    run = Quiet(max_future_ms=max_future_s * 1000)
    preds, _ = traffic(1, seed=15)
    run.send_all("predictions", preds[:500])
    ahead = dict(preds[600])
    ahead.update(request_id="ahead", ts=preds[499]["ts"] + 120)
    run.send("predictions", [ahead])
    assert len(run.dead) == (1 if max_future_s == 60 else 0)


def test_the_timer_of_a_partition_revises_its_own_models_listed_ones_included() -> None:
    # A model the policy lists is admitted without a record of its partition.
    policy = parse_policy(BASE + "  revision_delay: 5s\nmodels:\n  fraud-detector: {}\n")
    clock = Clock(1_000_000)
    handler = KpiHandler(
        policy=policy,
        predictions_topic="predictions",
        labels_topic="labels",
        max_message_bytes=1 << 26,
        clock_ms=clock,
    )
    table: dict[bytes, bytes] = {}
    preds, labels = traffic(2, seed=16, delay_s=2.0)
    offset = 0
    for topic, events in (("predictions", preds), ("labels", labels)):
        for i in range(0, len(events), 500):
            offset += 1
            handler.handle(
                orjson.dumps({"events": events[i : i + 500]}),
                Origin(topic, 1, offset, MODEL.encode()),
                table,
            )
    assert handler.tick(clock.ms + 5_000, 0, table).reports == [], "not partition 0's model"
    revised = handler.tick(clock.ms + 5_000, 1, table).reports
    assert [r.window_start.timestamp() - T0 for r in revised] == [0]
