"""A series' windows: first report, late and lost counts, revisions, retirement."""

from __future__ import annotations

from schemas.policy import KpiPolicy
from streams.kpi import series
from streams.kpi.window import KpiResult

POLICY = KpiPolicy.model_validate(
    {"window": "60s", "allowed_lateness": "10s", "label_ttl": "600s", "revision_delay": "5s"}
)


def opened(*starts: int) -> series.SeriesState:
    state = series.initialize()
    for start in starts:
        assert series.arrive(state, start) == "open"
        assert series.open_window(state, start)
    return state


def test_a_window_is_first_reported_once_predictions_pass_its_end_and_lateness() -> None:
    state = opened(0, 60_000)
    assert series.close(state, POLICY, predictions_ms=69_999, labels_ms=None) == []
    [first] = series.close(state, POLICY, predictions_ms=70_000, labels_ms=None)
    assert (first.start_ms, first.revision, first.final) == (0, 0, False)
    assert state["closed_until_ms"] == 60_000
    # reported and unchanged: nothing more on event time
    assert series.close(state, POLICY, predictions_ms=129_999, labels_ms=None) == []


def test_late_predictions_are_folded_in_counted_and_carried_by_the_next_report() -> None:
    state = opened(0)
    series.close(state, POLICY, predictions_ms=70_000, labels_ms=None)
    assert series.arrive(state, 0, n=3) == "late"
    series.touch(state, 0)
    [revision] = series.close(state, POLICY, predictions_ms=130_000, labels_ms=None)
    assert (revision.revision, revision.late) == (1, 3)
    assert state["late"] == 0  # a count is reported once


def test_a_quiet_window_is_revised_revision_delay_after_its_last_change() -> None:
    state = opened(0)
    series.close(state, POLICY, predictions_ms=70_000, labels_ms=None)
    series.touch(state, 0)
    assert series.changed(state) == [0]
    quiet = {"predictions_ms": 70_000, "labels_ms": 80_000, "changed_ms": {0: 1_000}}
    assert series.close(state, POLICY, now_ms=5_999, **quiet) == []  # type: ignore[arg-type]
    [revision] = series.close(state, POLICY, now_ms=6_000, **quiet)  # type: ignore[arg-type]
    assert revision.revision == 1 and not revision.final
    assert series.changed(state) == []


def test_a_window_retires_with_one_final_report_and_later_predictions_are_lost() -> None:
    state = opened(0, 60_000)
    dues = series.close(state, POLICY, predictions_ms=130_000, labels_ms=660_001)
    assert [(d.start_ms, d.final) for d in dues] == [(0, True), (60_000, False)]
    assert not series.is_open(state, 0) and series.retired(state, 0)
    assert series.arrive(state, 0, n=2) == "lost"
    [carried] = series.close(state, POLICY, predictions_ms=200_000, labels_ms=720_001)
    assert (carried.start_ms, carried.final, carried.lost) == (60_000, True, 2)
    assert state["windows"] == {}


def test_the_report_says_what_it_cannot_show() -> None:
    result = KpiResult(
        n_predictions=10, n_labeled=8, metrics={"accuracy": 0.75}, concept_drift=False, status="ok"
    )
    due = series.Due(start_ms=0, revision=4, final=True, late=1, lost=2)
    report = series.report("fraud", "v1", "canary", result, due, window_ms=60_000, orphans=5)
    assert (report.window_start.isoformat(), report.window_end.isoformat()) == (
        "1970-01-01T00:00:00+00:00",
        "1970-01-01T00:01:00+00:00",
    )
    assert (report.revision, report.final, report.late, report.variant) == (4, True, 1, "canary")
    assert [n.split(" ")[0] for n in report.notes] == ["2", "5", "final"]
