"""Hopping drift windows (``drift.hop``), counted in panes (streams/windows.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.policy import DriftPolicy, PolicyError, parse_policy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift import reference_switch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import Reference, VersionState
from streams.windows import closable, hopping_closable
from tests.streams.drift.test_monitor import W, _at, _chunks, _feed, _single, _window

MINUTE = W


def _policy(**overrides: Any) -> DriftPolicy:
    values: dict[str, Any] = {
        "window": "2m",
        "hop": "1m",
        "allowed_lateness": "0s",
        "min_reference_events": 1000,
        "min_window_events": 200,
    }
    values.update(overrides)
    return DriftPolicy(**values)


def _reference() -> Reference:
    """A warm-up reference built by a tumbling monitor from 3,000 unshifted events."""
    rng = np.random.default_rng(40)
    monitor = DriftMonitor(policy=DriftPolicy(window="60s", allowed_lateness=0,
                                              min_reference_events=1000))
    state, _ = _feed(monitor, monitor.initialize("m", "v1"),
                     [_window(rng, 0, 3000), _single(W, f0=0.0)])
    assert state["reference"] is not None
    return state["reference"]


def _judging(monitor: DriftMonitor) -> VersionState:
    """A fresh state that judges on ``_reference()`` from its first window."""
    return reference_switch.switch(
        monitor.initialize("m", "v1"), _reference(), None, pane_ms=monitor.policy.pane
    )


def _minutes(seed: int, count: int, *, first: int = 10, **kw: Any) -> list[FeatureBatch]:
    rng = np.random.default_rng(seed)
    return [_window(rng, first + i, 600, **kw) for i in range(count)]


# -- closing --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    panes=st.lists(st.integers(0, 30), unique=True, max_size=12),
    closed=st.one_of(st.none(), st.integers(0, 30)),
    watermark=st.integers(0, 40),
    lateness=st.integers(0, 3),
    max_open=st.integers(1, 6),
)
def test_hopping_with_hop_equal_to_window_is_tumbling(
    panes: list[int], closed: int | None, watermark: int, lateness: int, max_open: int
) -> None:
    panes = [p for p in panes if closed is None or p >= closed]  # late panes are never kept
    w = 1000
    assert hopping_closable(
        [p * w for p in panes], closed_until_ms=None if closed is None else closed * w,
        watermark_ms=watermark * w, window_ms=w, hop_ms=w,
        allowed_lateness_ms=lateness * w, max_panes=max_open,
    ) == closable([p * w for p in panes], watermark_ms=watermark * w, window_ms=w,
                  allowed_lateness_ms=lateness * w, max_open=max_open)


@settings(max_examples=200, deadline=None)
@given(
    panes=st.lists(st.integers(0, 30), unique=True, min_size=1, max_size=12),
    k=st.integers(2, 5),
    watermark=st.integers(0, 40),
    max_panes=st.integers(1, 12),
)
def test_hopping_windows_close_in_order_and_keep_the_pane_bound(
    panes: list[int], k: int, watermark: int, max_panes: int
) -> None:
    hop = 1000
    due = hopping_closable([p * hop for p in panes], closed_until_ms=None,
                           watermark_ms=watermark * hop, window_ms=k * hop, hop_ms=hop,
                           allowed_lateness_ms=0, max_panes=max_panes)
    assert due == sorted(due)
    # every window holding a pane whose end the watermark passed is closed
    for p in panes:
        for s in range(p - k + 1, p + 1):
            if (s + k) <= watermark:
                assert s * hop in due
    # the panes left (those after the last window closed) respect the bound
    left = [p for p in panes if not due or p * hop > due[-1]]
    assert len(left) <= max_panes
    # nothing closes that holds no pane
    assert all(any(s <= p * hop < s + k * hop for p in panes) for s in due)


# -- counting -------------------------------------------------------------------------


def test_each_event_is_in_window_over_hop_windows() -> None:
    monitor = DriftMonitor(policy=_policy(window="3m", hop="1m"))
    batches = _minutes(1, 6)
    state, reports = _feed(monitor, _judging(monitor),
                           [*batches, _single(30 * MINUTE, f0=0.0)])
    starts = [r.window_start for r in reports]
    # windows start every minute, from the first one that holds minute 10
    assert starts == [_at(s * MINUTE) for s in range(8, 16)]
    assert [r.n for r in reports] == [600, 1200, 1800, 1800, 1800, 1800, 1200, 600]
    assert sum(r.n for r in reports) == 3 * 6 * 600
    assert state["windows"] == {str(30 * MINUTE): state["windows"][str(30 * MINUTE)]}


def test_a_hopping_window_equals_the_tumbling_window_of_the_same_span() -> None:
    """Merged panes give the same counts, metrics and statuses as counting at once."""
    batches = _minutes(2, 6, shift={"f1": 0.4})
    closer = [_single(30 * MINUTE, f0=0.0)]
    tumbling = DriftMonitor(policy=_policy(hop=None))
    hopping = DriftMonitor(policy=_policy())
    _, tumbled = _feed(tumbling, _judging(tumbling), [*batches, *closer])
    _, hopped = _feed(hopping, _judging(hopping), [*batches, *closer])
    by_start = {r.window_start: r for r in hopped}
    assert len(hopped) == 7 and len(tumbled) == 3  # minutes 10-15: starts 9..15; 10, 12, 14
    for t in tumbled:
        h = by_start[t.window_start]
        assert h.window_end == t.window_end and h.n == t.n == 1200
        for name, feature in t.features.items():
            assert h.features[name].metrics == pytest.approx(feature.metrics, rel=1e-12), name
        assert h.multivariate is not None and t.multivariate is not None
        assert h.multivariate.reconstruction_error == pytest.approx(
            t.multivariate.reconstruction_error, rel=1e-12)
        assert h.drifted_features[:1] == t.drifted_features[:1] == ["f1"]


def test_a_shift_is_flagged_in_the_first_window_that_holds_it() -> None:
    monitor = DriftMonitor(policy=_policy(window="4m", hop="1m", min_window_events=200))
    calm = _minutes(3, 4)
    shifted = _minutes(4, 3, first=14, shift={"f2": 1.0, "f3": 1.0})
    _, reports = _feed(monitor, _judging(monitor), [*calm, *shifted,
                                                      _single(40 * MINUTE, f0=0.0)])
    by_start = {r.window_start: r for r in reports}
    assert by_start[_at(10 * MINUTE)].status == "ok"  # minutes 10-13: no shift
    first = by_start[_at(11 * MINUTE)]  # minutes 11-14: a quarter shifted
    assert first.status in ("warn", "drift")
    assert set(first.drifted_features[:2]) == {"f2", "f3"}


def test_late_events_are_counted_in_none_of_their_windows() -> None:
    monitor = DriftMonitor(policy=_policy(window="3m", hop="1m"))
    rng = np.random.default_rng(5)
    state, reports = _feed(monitor, _judging(monitor),
                           [_window(rng, 10, 300), _window(rng, 11, 300)])
    # the watermark is in minute 11: only the window of minutes 8-10 has closed
    assert [r.window_start for r in reports] == [_at(8 * MINUTE)]
    assert state["closed_until_ms"] == 11 * MINUTE
    # An event of minute 10 is late now (its first window, 8-10, has been reported),
    # although the windows starting at 9 and 10 are still open: it is counted in none.
    state = monitor.update(state, _single(10 * MINUTE + 5, f0=0.0))
    assert state["late"] == 1
    state, reports = _feed(monitor, state, [_single(20 * MINUTE, f0=0.0)])
    assert [(r.window_start, r.n, r.late) for r in reports[:3]] == [
        (_at(9 * MINUTE), 600, 1), (_at(10 * MINUTE), 600, 0), (_at(11 * MINUTE), 300, 0)]


def test_open_panes_are_bounded_by_the_policy() -> None:
    monitor = DriftMonitor(policy=_policy(window="3m", hop="1m", allowed_lateness="1h",
                                          max_open_windows=2))
    assert monitor.max_panes == 4  # two windows' worth: 2 + 3 - 1 panes
    state = _judging(monitor)
    for minute in range(10, 30):
        state, _ = _feed(monitor, state, [_single(minute * MINUTE, f0=0.0)])
        assert len(state["windows"]) <= monitor.max_panes


# -- warm-up and references -------------------------------------------------------------


def test_warm_up_counts_each_event_once() -> None:
    monitor = DriftMonitor(policy=_policy(window="3m", hop="1m", min_reference_events=1500))
    rng = np.random.default_rng(6)
    batches = [_window(rng, m, 600) for m in range(0, 6)]
    state, reports = _feed(monitor, monitor.initialize("m", "v1"),
                           [*batches, _single(30 * MINUTE, f0=0.0)])
    ref = state["reference"]
    assert ref is not None
    # panes of minutes 0, 1, 2: 1,800 events (windows overlapping them hold 5,400)
    assert ref["n"] == 1800 and (ref["start_ms"], ref["end_ms"]) == (0, 3 * MINUTE)
    done = next(r for r in reports if any("completes the warm-up" in n for n in r.notes))
    assert done.window_start == _at(2 * MINUTE) and done.n == 1800
    assert done.reference.note == "the first 1m of this window are part of the reference"
    # windows after it are judged (their panes were sketched, then compared on the bins)
    later = [r for r in reports if r.window_start >= _at(3 * MINUTE) and r.n >= 1200]
    assert later and all(r.reference.kind == "warmup" and r.features for r in later)
    assert all(r.status == "ok" for r in later)


def test_a_window_spanning_a_new_reference_is_reported_not_judged() -> None:
    monitor = DriftMonitor(policy=_policy(window="2m", hop="1m"))
    state = _judging(monitor)
    rng = np.random.default_rng(8)
    state, _ = _feed(monitor, state, [_window(rng, 10, 600)])
    state = reference_switch.switch(
        state, _reference(), state["reference"], pane_ms=monitor.policy.pane
    )
    assert state.get("reference_from_ms") == 11 * MINUTE
    state, reports = _feed(monitor, state, [_window(rng, 11, 600), _window(rng, 12, 600),
                                            _single(20 * MINUTE, f0=0.0)])
    by_start = {r.window_start: r for r in reports}
    spanning = by_start[_at(10 * MINUTE)]  # minutes 10 (old bins) and 11 (new bins)
    assert spanning.n == 600 and spanning.status == "ok"
    assert any("reference changed during this window" in n for n in spanning.notes)
    assert all(f.streak == 0 for f in spanning.features.values())
    after = by_start[_at(11 * MINUTE)]
    assert after.n == 1200 and not any("reference changed" in n for n in after.notes)
    assert state.get("reference_from_ms") is None


def test_replay_gives_identical_hopping_reports_through_stored_state() -> None:
    """Identical reports on replay, also when the state goes through JSON (the table)
    after every batch and the events come in other batches."""

    def run(chunk: int, stored: bool) -> list[DriftReport]:
        monitor = DriftMonitor(policy=_policy(window="3m", hop="1m", min_reference_events=900))
        rng = np.random.default_rng(9)
        batches = [_window(rng, m, 500, shift={"f0": 0.5 * (m > 6)}) for m in range(10)]
        state = monitor.initialize("m", "v1")
        reports: list[DriftReport] = []
        for batch in [*batches, _single(30 * MINUTE, f0=0.0)]:
            for part in _chunks(batch, chunk):
                state, closed = _feed(monitor, state, [part])
                reports.extend(closed)
                if stored:
                    state = orjson.loads(orjson.dumps(state))
        return reports

    first = run(500, stored=False)
    assert len(first) == 12 and any(r.status == "drift" for r in first)
    for again in (run(500, stored=False), run(170, stored=True)):
        assert [r.model_dump_json() for r in again] == [r.model_dump_json() for r in first]


# -- the policy -------------------------------------------------------------------------


@pytest.mark.parametrize(("hop", "reason"), [
    ("2m", "drift.hop: 2m does not divide the window (5m)"),
    ("10m", "drift.hop: 10m is longer than the window (5m)"),
    ("1s", "drift.hop: 1s puts each event in 300 windows of 5m; at most 60 are allowed"),
])
def test_a_bad_hop_is_refused_with_the_field_and_the_reason(hop: str, reason: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(f"drift:\n  window: 5m\n  hop: {hop}\n", source="p.yaml")
    assert str(err.value) == f"p.yaml:3: {reason}"


def test_hop_equal_to_the_window_is_tumbling() -> None:
    policy = parse_policy("drift:\n  window: 5m\n  hop: 5m\n", source="p.yaml").drift
    assert policy.pane == policy.window == 300_000
    assert DriftMonitor(policy=policy).max_panes == policy.max_open_windows
