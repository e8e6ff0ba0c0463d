"""A KPI series under count windows (``streams.kpi.series``): a window is first due with
its Nth prediction, and windows retire in number order, each at the label join's bucket
end of the latest prediction time among it and the open windows before it."""

from __future__ import annotations

from schemas.policy import parse_policy
from streams.kpi import series as lifecycle

POLICY = parse_policy("kpi: {window: {events: 3}, label_ttl: 10m, min_labeled: 1}").kpi


def _series(last_ms: list[int]) -> lifecycle.SeriesState:
    """Three predictions per window; window k's at 0 and ``last_ms[k]``."""
    state = lifecycle.initialize()
    for k, last in enumerate(last_ms):
        keys = {lifecycle.count_key(state, 3) for _ in range(3)}
        assert keys == {k}
        lifecycle.open_window(state, k)
        lifecycle.span(state, k, 0, last)
    return state


def test_a_count_window_is_due_with_its_nth_prediction_only() -> None:
    state = _series([100_000])
    lifecycle.count_key(state, 3)  # one prediction of window 1
    lifecycle.open_window(state, 1)
    lifecycle.span(state, 1, 5_000, 5_000)
    due = lifecycle.close(state, POLICY, predictions_ms=100_000, labels_ms=None)
    assert [(d.window_index, d.revision, d.final, d.first_ms, d.end_ms) for d in due] == [
        (0, 0, False, 0, 100_001)
    ]
    assert list(state["windows"]) == ["0", "1"]


def test_count_windows_retire_in_number_order() -> None:
    # window 0's latest prediction (700 s) is later than window 1's (100 s)
    state = _series([700_000, 100_000])
    bucket = lifecycle.bucket_ms(POLICY)
    assert bucket == 600_000  # label_ttl below an hour
    first = lifecycle.close(state, POLICY, predictions_ms=700_000, labels_ms=None)
    assert [(d.window_index, d.final) for d in first] == [(0, False), (1, False)]
    # the labels' clock is label_ttl past window 1's own bucket, not window 0's: neither
    # retires (window 1 would leave a hole before it)
    assert lifecycle.close(state, POLICY, predictions_ms=700_000,
                           labels_ms=600_000 + 600_001) == []
    last = lifecycle.close(state, POLICY, predictions_ms=700_000,
                           labels_ms=1_200_000 + 600_001)
    assert [(d.window_index, d.final) for d in last] == [(0, True), (1, True)]
    assert state["windows"] == {} and state["retired_until_ms"] == 2
    assert lifecycle.arrive(state, 2) == "open"  # the next window is not lost
