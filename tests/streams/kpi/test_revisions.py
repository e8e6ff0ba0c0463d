"""When a KPI window is reported: event time, processing time (``now_ms``), retirement."""

from __future__ import annotations

import pytest

from streams.kpi.revisions import WindowMark, due

TIMES = {
    "window_ms": 60_000,
    "allowed_lateness_ms": 10_000,
    "label_ttl_ms": 600_000,
    "revision_delay_ms": 5_000,
}


#: processing time of the window's last change (kept by the caller, not in the mark)
CHANGED_MS = 1_000_000


def mark(rev: int, *, dirty: bool = True, emitted_ms: int = 70_000) -> WindowMark:
    return {"rev": rev, "dirty": dirty, "emitted_ms": emitted_ms}


@pytest.mark.parametrize(
    ("m", "predictions_ms", "labels_ms", "now_ms", "expected"),
    [
        # nothing seen yet
        (mark(-1), None, None, None, None),
        # first report once predictions pass end + allowed lateness, never before
        (mark(-1), 69_999, None, 10**12, None),
        (mark(-1), 70_000, None, None, "report"),
        # first-reported, changed: not on event time within a window of the last report ...
        (mark(0), 70_000, 129_999, None, None),
        # ... but a window of event time later
        (mark(0), 70_000, 130_000, None, "report"),
        # quiet stream: processing time reports it revision_delay after its last change
        (mark(0), 70_000, 100_000, 1_004_999, None),
        (mark(0), 70_000, 100_000, 1_005_000, "report"),
        # unchanged since the last report: nothing, however late
        (mark(0, dirty=False), 70_000, 100_000, 10**12, None),
        # retired: labels' clock label_ttl past the end; final even when unchanged ...
        (mark(3, dirty=False), 70_000, 660_001, None, "final"),
        # ... and even when never reported (labels ran far ahead of the predictions)
        (mark(-1), 70_000, 660_001, None, "final"),
        # labels exactly label_ttl past the end: not yet
        (mark(0, dirty=False), 70_000, 660_000, None, None),
        # labels stalled for good: the predictions' clock twice label_ttl past the end
        (mark(0, dirty=False), 1_260_001, None, None, "final"),
        # the labels' clock alone never retires a window the predictions have not passed
        (mark(-1), 60_000, 10**9, None, None),
    ],
)
def test_due(
    m: WindowMark,
    predictions_ms: int | None,
    labels_ms: int | None,
    now_ms: int | None,
    expected: str | None,
) -> None:
    assert (
        due(
            m,
            start_ms=0,
            predictions_ms=predictions_ms,
            labels_ms=labels_ms,
            now_ms=now_ms,
            changed_ms=CHANGED_MS,
            **TIMES,
        )
        == expected
    )


def test_a_change_of_unknown_time_is_never_due_on_the_timer() -> None:
    # the caller knows when it changed, or records the first look (agents.kpi.handler)
    assert due(mark(0), start_ms=0, predictions_ms=70_000, labels_ms=100_000, now_ms=10**12,
               changed_ms=None, **TIMES) is None


def test_zero_delay_reports_at_the_next_tick() -> None:
    assert (
        due(
            mark(0),
            start_ms=0,
            predictions_ms=70_000,
            labels_ms=71_000,
            now_ms=1_000_000,
            changed_ms=CHANGED_MS,
            **{**TIMES, "revision_delay_ms": 0},
        )
        == "report"
    )
