"""Drift windows that are calendar periods of a time zone, or every N events of a version
(schemas.windows), in the drift monitor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.runtime import state_codec
from schemas.policy import DriftPolicy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import VersionState

PARIS = ZoneInfo("Europe/Paris")
H = 3_600_000


def _midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=PARIS).timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _traffic(ts: np.ndarray, seed: int = 3, shift_from: int | None = None) -> FeatureBatch:
    rng = np.random.default_rng(seed)
    n = len(ts)
    shift = np.zeros(n) if shift_from is None else (np.arange(n) >= shift_from) * 1.5
    cols: dict[str, list[Any]] = {
        "amount": (rng.normal(0, 1, n) + shift).tolist(),
        "age": rng.normal(0, 1, n).tolist(),
        "tenure": rng.normal(0, 1, n).tolist(),
        "channel": rng.choice(["web", "app", "pos"], n).tolist(),
    }
    return FeatureBatch(ts_ms=np.asarray(ts, dtype=np.int64), columns=cols)


def _feed(monitor: DriftMonitor, batch: FeatureBatch, sizes: Sequence[int],
          state: VersionState | None = None, *, stored: bool = False,
          ) -> tuple[VersionState, list[DriftReport]]:
    """``batch`` in consecutive parts of ``sizes`` (the last one repeated); ``stored``:
    the state goes through the table's codec between parts, as across a restart."""
    state = state or monitor.initialize("m", "v1")
    reports: list[DriftReport] = []
    lo, i = 0, 0
    while lo < len(batch):
        mask = np.zeros(len(batch), dtype=bool)
        size = sizes[min(i, len(sizes) - 1)]
        mask[lo : lo + size] = True
        lo, i = lo + size, i + 1
        state = monitor.update(state, batch.select(mask))
        state, closed = monitor.close_ready(state)
        reports += closed
        if stored:
            state = state_codec.loads(state_codec.dumps(state))
    return state, reports


# -- calendar windows ------------------------------------------------------------------

CALENDAR = DriftPolicy(
    window={"calendar": "day", "time_zone": "Europe/Paris"}, allowed_lateness="1h",
    min_reference_events=300, min_window_events=100,
)
DAYS = [date(2024, 3, 29) + timedelta(days=i) for i in range(5)]  # 03-31 has 23 hours


def _days(per_day: int = 400) -> FeatureBatch:
    ts = np.concatenate([
        np.linspace(_midnight(d), _midnight(d + timedelta(days=1)) - 1, per_day).astype(np.int64)
        for d in DAYS
    ])
    return _traffic(ts)


def test_calendar_days_are_reported_with_their_local_bounds_across_a_dst_change() -> None:
    monitor = DriftMonitor(policy=CALENDAR)
    state, reports = _feed(monitor, _days(), [97])
    # the last day stays open: the watermark has not passed its end plus the lateness
    assert [(r.window_start, r.window_end, r.n) for r in reports] == [
        (_at(_midnight(d)), _at(_midnight(d + timedelta(days=1))), 400) for d in DAYS[:-1]
    ]
    hours = [(r.window_end - r.window_start).total_seconds() / 3600 for r in reports]
    assert hours == [24, 24, 23, 24]
    assert list(state["windows"]) == [str(_midnight(DAYS[-1]))]
    assert reports[0].reference.kind == "warmup" and reports[2].reference.kind == "warmup"
    assert all(r.window_index is None for r in reports)


def test_calendar_late_events_count_after_the_day_closed_plus_lateness() -> None:
    monitor = DriftMonitor(policy=CALENDAR)
    state, _ = _feed(monitor, _days(), [400])
    # day 1 closed; an event stamped on it is late, reported with the next window
    state = monitor.update(state, _traffic(np.array([_midnight(DAYS[0]) + H])))
    assert state["late"] == 1
    end = _midnight(DAYS[-1] + timedelta(days=1))
    state = monitor.update(state, _traffic(np.array([end + H - 1])))  # within the lateness
    state, reports = monitor.close_ready(state)
    assert reports == []
    state = monitor.update(state, _traffic(np.array([end + H])))
    state, [last] = monitor.close_ready(state)
    assert (last.window_start, last.late, last.n) == (_at(_midnight(DAYS[-1])), 1, 400)


def test_calendar_reports_do_not_depend_on_batching_or_restarts() -> None:
    batch = _days()
    one = _feed(DriftMonitor(policy=CALENDAR), batch, [97])[1]
    again = _feed(DriftMonitor(policy=CALENDAR), batch, [97], stored=True)[1]
    other = _feed(DriftMonitor(policy=CALENDAR), batch, [400, 13, 211])[1]
    assert [r.model_dump_json() for r in again] == [r.model_dump_json() for r in one]
    assert [r.model_dump_json() for r in other] == [r.model_dump_json() for r in one]


def test_calendar_weeks_keep_max_open_windows() -> None:
    policy = DriftPolicy(window={"calendar": "week", "time_zone": "UTC"}, allowed_lateness=0,
                         max_open_windows=2, min_reference_events=10, min_window_events=1)
    monitor = DriftMonitor(policy=policy)
    monday = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp() * 1000)
    week = 7 * 24 * H
    # three weeks' events arrive in reverse order: no watermark passes an end early
    state = monitor.update(monitor.initialize("m", "v1"),
                           _traffic(np.array([monday + 2 * week, monday + week, monday])))
    state, reports = monitor.close_ready(state)
    # the week of the watermark stays open, and the oldest beyond the bound closes early
    assert [r.window_start for r in reports] == [_at(monday), _at(monday + week)]
    assert list(state["windows"]) == [str(monday + 2 * week)]


# -- count windows ---------------------------------------------------------------------

COUNT = DriftPolicy(window={"events": 250}, min_reference_events=500, min_window_events=200)
T0 = 1_800_000_000_000


def _stream(n: int = 2_100) -> FeatureBatch:
    rng = np.random.default_rng(11)
    # times jitter backwards and forwards: a count window has no late events
    ts = T0 + np.arange(n) * 1_000 + rng.integers(-30_000, 30_000, n)
    return _traffic(ts, shift_from=1_500)


def test_every_n_events_of_the_stream_form_one_window_in_arrival_order() -> None:
    batch = _stream()
    state, reports = _feed(DriftMonitor(policy=COUNT), batch, [97])
    assert [r.window_index for r in reports] == list(range(8))
    assert all(r.n == 250 and r.late == 0 for r in reports)
    for k, r in enumerate(reports):
        chunk = batch.ts_ms[250 * k : 250 * (k + 1)]
        assert (r.window_start, r.window_end) == (_at(int(chunk.min())),
                                                  _at(int(chunk.max()) + 1))
    assert [r.status for r in reports[:6]] == ["ok"] * 6
    assert "amount" in reports[6].drifted_features  # events 1500.. are shifted
    assert reports[1].notes[-1].startswith("the window number 2 will not be judged")
    # the warm-up: its span in event time, not in chunk numbers
    warm = reports[1].reference
    assert warm.kind == "warmup" and warm.n == 500
    assert (warm.window_start, warm.window_end) == (
        _at(int(batch.ts_ms[:500].min())), _at(int(batch.ts_ms[:500].max()) + 1))
    assert reports[5].reference.window_start == warm.window_start
    # state: the one partial window, 100 events of it, and the count
    assert state["counted"] == 2_100 and [w["n"] for w in state["windows"].values()] == [100]


def _shape(report: DriftReport) -> tuple[Any, ...]:
    mv = report.multivariate
    return (report.window_index, report.window_start, report.window_end, report.n,
            report.status, report.drifted_features, report.reference.window_start,
            None if mv is None else mv.n, [(n, f.n) for n, f in report.features.items()])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 250), min_size=1, max_size=6))
def test_count_windows_do_not_depend_on_batching_or_restarts(sizes: list[int]) -> None:
    """The same windows, of the same events, whatever the batches of at most N events.
    (Which events a window holds is exact; the sums of a few summaries differ in the
    last bits, and a version's first batch sets its numeric sketches' anchors, as with
    any window: equal batches give equal reports, to the bit, restarts or not.)"""
    batch = _stream()
    want = _feed(DriftMonitor(policy=COUNT), batch, [300, 250])[1]
    got = _feed(DriftMonitor(policy=COUNT), batch, [300, *sizes])[1]
    assert [_shape(r) for r in got] == [_shape(r) for r in want]
    # the chunk after the warm-up is never judged by the multivariate signal, whether
    # or not its first events were counted before the reference was complete
    assert [r.multivariate is None for r in got[:3]] == [True, True, True]
    stored = _feed(DriftMonitor(policy=COUNT), batch, [300, *sizes], stored=True)[1]
    assert [r.model_dump_json() for r in stored] == [r.model_dump_json() for r in got]


def test_count_windows_close_with_their_nth_event_and_say_how_much_to_wait() -> None:
    monitor = DriftMonitor(policy=COUNT)
    state = monitor.update(monitor.initialize("m", "v1"), _stream(249))
    assert monitor.close_ready(state)[1] == []
    assert not monitor.would_close(state, set(), T0, pending=0)
    assert monitor.would_close(state, set(), T0, pending=1)
    state = monitor.update(state, _traffic(np.array([T0])))
    state, [report] = monitor.close_ready(state)
    assert (report.window_index, report.n) == (0, 250)


@pytest.mark.parametrize(("window", "field"), [
    ({"calendar": "day"}, "hop"),
    ({"events": 500}, "hop"),
])
def test_calendar_and_count_windows_refuse_a_hop(window: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match="hopping windows need a duration window"):
        DriftPolicy(window=window, hop="1h")
