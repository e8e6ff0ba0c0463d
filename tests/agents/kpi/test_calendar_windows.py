"""KPI windows that are calendar days of a time zone (``kpi.window: {calendar: day, ...}``),
through the KPI handler: local-midnight bounds across a DST change, every prediction in
its day's window, the same reports on a replay."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agents.kpi.handler import KpiHandler
from schemas.policy import PolicyError, parse_policy
from tests.agents.kpi.test_handler import Event, Run, close_all, in_time_order, traffic

PARIS = ZoneInfo("Europe/Paris")
POLICY = """
kpi:
  window: {calendar: day, time_zone: Europe/Paris}
  allowed_lateness: 0s
  label_ttl: 1h
  min_labeled: 50
"""
DAYS = [date(2024, 10, 26) + timedelta(days=i) for i in range(3)]  # 10-27 has 25 hours


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=PARIS).astimezone(UTC)


def _traffic() -> tuple[list[Event], list[Event]]:
    preds: list[Event] = []
    labels: list[Event] = []
    for i, d in enumerate(DAYS):
        start = _midnight(d).timestamp()
        span = (_midnight(d + timedelta(days=1)).timestamp() - start)
        p, lab = traffic(1, per_window=400, seed=20 + i, start_s=int(start))
        # spread the day's predictions (and their labels) over the whole local day
        for e in p:
            e["ts"] = start + (e["ts"] - start) / 60 * span
        moved = {e["request_id"]: e["ts"] for e in p}
        for e in lab:
            e["ts"] = moved[e["request_id"]] + 20
        preds += p
        labels += lab
    return preds, labels


def _run(preds: list[Event], labels: list[Event]) -> Run:
    run = Run(parse_policy(POLICY))
    # days of traffic in few messages: a future bound of days, not the default hour
    run.handler = KpiHandler(policy=parse_policy(POLICY), predictions_topic="predictions",
                             labels_topic="labels", max_message_bytes=1 << 26,
                             max_future_ms=10 * 86_400_000)
    for topic, chunk in in_time_order(preds, labels, size=100):
        run.send(topic, chunk)
    close_all(run, _midnight(DAYS[-1]).timestamp() + 5 * 86_400)
    return run


def test_each_local_day_is_one_window_with_its_predictions() -> None:
    preds, labels = _traffic()
    final = sorted(_run(preds, labels).final().values(), key=lambda r: r.window_start)
    assert [(r.window_start, r.window_end) for r in final] == [
        (_midnight(d), _midnight(d + timedelta(days=1))) for d in DAYS
    ]
    assert [(r.window_end - r.window_start).total_seconds() / 3600 for r in final] == [24, 25, 24]
    per_day = [
        sum(1 for p in preds
            if datetime.fromtimestamp(p["ts"], PARIS).date() == d) for d in DAYS
    ]
    assert [r.n_predictions for r in final] == per_day == [400, 400, 400]
    assert all(r.final for r in final)


def test_a_replay_gives_identical_reports() -> None:
    preds, labels = _traffic()
    first = [r.model_dump_json() for r in _run(preds, labels).reports]
    assert first == [r.model_dump_json() for r in _run(preds, labels).reports]


@pytest.mark.parametrize(("text", "said"), [
    ("kpi: {window: {calendar: day, time_zone: Europe/Pariss}}",
     "kpi.window: Value error, time_zone: 'Europe/Pariss' is not a time zone"),
    ("kpi: {window: {events: 10}}", "kpi.window.events: a window of 10 predictions never"),
])
def test_a_bad_kpi_window_is_refused_naming_the_field(text: str, said: str) -> None:
    with pytest.raises(PolicyError, match=said):
        parse_policy(text, source="p.yaml")
