"""The policy agent on count windows (``window: {events: N}``): numbered windows whose
times need not line up are ordered, told apart and found in a row by their number."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.rules import DecisionPolicy
from streams.policy.decide import decide
from streams.policy.state import ModelState
from tests.streams.policy.cases import deployed, drift, kpi


def counted(report: Any, index: int, start_s: int, end_s: int) -> Any:
    """``report`` as count window ``index``, spanning ``start_s`` to ``end_s`` past its
    original start (count windows overlap in time when events come out of order)."""
    start = report.window_start
    return report.model_copy(update={
        "window_index": index, "window_start": start + timedelta(seconds=start_s),
        "window_end": start + timedelta(seconds=end_s)})


def run(events: list[Any]) -> tuple[ModelState, list[Any]]:
    state, commands = ModelState(), []
    for event in events:
        out = decide(state, event, DecisionPolicy())
        state, commands = out.state, commands + out.commands
    return state, commands


def test_breached_count_windows_numbered_in_a_row_retrain() -> None:
    # window 1 starts before window 0 ends: not contiguous in time, but in number
    _, [command] = run([counted(kpi(0, status="breach"), 0, 0, 50),
                        counted(kpi(0, status="breach"), 1, 10, 90)])
    assert command.type == "retrain" and "missed in 2 windows in a row" in command.reason
    assert [e["window_index"] for e in command.evidence] == [0, 1]


def test_a_gap_in_the_numbers_breaks_the_streak() -> None:
    _, commands = run([counted(kpi(0, status="breach"), 0, 0, 50),
                       counted(kpi(1, status="breach"), 2, -60, 60)])
    assert commands == []


def test_drift_count_windows_in_a_row_retrain() -> None:
    _, [command] = run([counted(drift(0, "drift"), k, 5 - k, 30) for k in range(3)])
    assert command.type == "retrain"


def test_count_windows_with_one_start_are_kept_apart_and_ordered_by_number() -> None:
    state, _ = run([counted(kpi(0), 1, 0, 50), counted(kpi(0), 0, 0, 40),
                    counted(kpi(0, revision=1, n_labeled=1200), 0, 0, 40)])
    kept = state.kpi["champion"]
    assert [(s.window_index, s.revision) for s in kept] == [(0, 1), (1, 0)]


def test_a_time_window_s_evidence_reads_as_before() -> None:
    state, _ = run([kpi(0)])
    assert "window_index" not in state.kpi["champion"][0].evidence()


def test_a_new_champion_s_count_windows_are_the_newest_after_a_promotion() -> None:
    # v3 numbers its windows from 0 again: by number alone its windows would sort before
    # v1's 40 and be the first let go, and its breaches would never make a streak
    before = [counted(kpi(k), 20 + k, 0, 60) for k in range(40)]
    after = [counted(kpi(40 + k, version="v3", status="breach"), k, 0, 60) for k in range(2)]
    state, [command] = run([deployed("v1"), *before, deployed("v3"), *after])
    kept = state.kpi["champion"]
    assert [(s.model_version, s.window_index) for s in kept[-3:]] == [
        ("v1", 59), ("v3", 0), ("v3", 1)]
    assert command.type == "retrain" and "v3" in command.reason


def test_a_version_back_after_a_rollback_keeps_its_place_in_time() -> None:
    # v1, then v3, then v1 again: v1's newest windows are the newest of all
    events = [counted(kpi(k), k, 0, 60) for k in range(3)]
    events += [counted(kpi(3 + k, version="v3"), k, 0, 60) for k in range(3)]
    events += [counted(kpi(6 + k), 3 + k, 0, 60) for k in range(2)]
    state, _ = run(events)
    assert [(s.model_version, s.window_index) for s in state.kpi["champion"]] == [
        ("v1", 0), ("v1", 1), ("v1", 2), ("v3", 0), ("v3", 1), ("v3", 2), ("v1", 3), ("v1", 4)]


def test_two_count_windows_of_the_same_span_give_commands_of_their_own() -> None:
    # all events of windows 0..3 at one instant: the spans are equal, the numbers not
    _, [first] = run([counted(kpi(0, status="breach"), k, 0, 1) for k in range(2)])
    _, [second] = run([counted(kpi(0, status="breach"), k, 0, 1) for k in range(2, 4)])
    assert first.command_id != second.command_id
    _, [timed] = run([kpi(0, status="breach"), kpi(1, status="breach")])
    assert all("window_index" not in e for e in timed.evidence)
