"""Canary and challenger comparisons on KPI count windows: a variant's window against the
champion's windows overlapping it in time, pooled (streams.policy.pairing)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.rules import DecisionPolicy
from streams.policy.decide import decide
from streams.policy.state import MAX_POOLED, ModelState
from tests.streams.policy.cases import T0, deployed, kpi

S = timedelta(seconds=1)


def window(
    variant: str, version: str, index: int, start_s: float, end_s: float, *,
    accuracy: float = 0.9, n_labeled: int = 1000, revision: int = 0,
) -> Any:
    """KPI count window ``index`` of ``version`` as ``variant``, its predictions' times
    from ``start_s`` to ``end_s`` seconds past T0."""
    return kpi(0, variant=variant, version=version, accuracy=accuracy, n_labeled=n_labeled,
               revision=revision).model_copy(update={
                   "window_index": index, "window_start": T0 + start_s * S,
                   "window_end": T0 + end_s * S})


def champion(first: int, count: int, span_s: float = 10.0, **kw: Any) -> list[Any]:
    """Champion windows ``first``.. one after the other, ``span_s`` seconds each."""
    kw.setdefault("n_labeled", 300)
    return [window("champion", "v1", i, i * span_s, (i + 1) * span_s, **kw)
            for i in range(first, first + count)]


def canary(index: int, start_s: float, end_s: float, **kw: Any) -> Any:
    return window("canary", "v2", index, start_s, end_s, **kw)


def run(events: list[Any]) -> tuple[list[Any], list[str], ModelState]:
    state, commands, held = ModelState(), [], []
    for event in events:
        out = decide(state, event, DecisionPolicy())
        state, commands, held = out.state, commands + out.commands, held + out.held
    return commands, held, state


def test_a_healthy_canary_steps_up_against_the_pooled_champion_windows() -> None:
    # at weight 0.1 a canary window of N predictions spans ten of the champion's
    commands, _, _ = run([deployed("v1", canary="v2", weight=0.1),
                          *champion(0, 10), canary(0, 0, 100),
                          *champion(10, 10), canary(1, 100, 200)])
    [step] = commands
    assert (step.type, step.to_version, step.canary_weight) == ("set_canary_weight", "v2", 0.5)
    assert [(e["variant"], e["window_index"]) for e in step.evidence] == [
        ("canary", 1), *(("champion", i) for i in range(10, 20))]
    assert "champion v1 windows #10, #11" in step.reason
    assert "pooled: 300 errors in 3000 labeled" in step.reason
    assert step.issued_at == T0 + 200 * S


def test_a_healthy_canary_at_the_last_step_is_promoted() -> None:
    commands, _, _ = run([deployed("v1", canary="v2", weight=0.5),
                          *champion(0, 2, 50), canary(0, 0, 100),
                          *champion(2, 2, 50), canary(1, 100, 200)])
    assert [(c.type, c.from_version, c.to_version) for c in commands] == [
        ("promote", "v1", "v2")]


def test_a_worse_canary_is_rolled_back_with_the_pooled_numbers() -> None:
    commands, _, _ = run([deployed("v1", canary="v2", weight=0.1, lkg="v1"),
                          *champion(0, 10), canary(0, 0, 100, accuracy=0.8)])
    [rollback] = commands
    assert (rollback.type, rollback.from_version, rollback.to_version) == (
        "rollback", "v2", "v1")
    assert rollback.reason.startswith("canary worse than the champion: v2 error rate 0.2000 "
                                      "vs v1 0.1000")
    assert ("canary v2 window #0: 200 errors in 1000 labeled; champion v1 windows #0, #1, "
            "#2, #3, #4, #5, #6, #7, #8, #9 overlapping it, pooled: 300 errors in 3000 "
            "labeled") in rollback.reason


def test_the_pairing_waits_for_the_champion_to_pass_the_window_s_end() -> None:
    # the champion's windows cover half the canary's span: no verdict on half the evidence
    events = [deployed("v1", canary="v2", weight=0.1, lkg="v1"),
              *champion(0, 5), canary(0, 0, 100, accuracy=0.8)]
    assert run(events)[0] == []
    [rollback] = run([*events, *champion(5, 5)])[0]
    assert [e["window_index"] for e in rollback.evidence] == [0, *range(10)]


def test_either_side_s_report_completes_the_pairing_with_the_same_command() -> None:
    start = [deployed("v1", canary="v2", weight=0.1)]
    first = [*champion(0, 10), canary(0, 0, 100)]
    canary_last = run([*start, *first, *champion(10, 10), canary(1, 100, 200)])[0]
    champion_last = run([*start, *first, canary(1, 100, 200), *champion(10, 10)])[0]
    in_between = run([*start, *first, *champion(10, 4), canary(1, 100, 200),
                      *champion(14, 6)])[0]
    assert len(canary_last) == 1
    assert champion_last == canary_last == in_between  # same id, evidence, reason, time


def test_revisions_do_not_count_a_window_twice() -> None:
    events = [deployed("v1", canary="v2", weight=0.1), *champion(0, 10), canary(0, 0, 100),
              canary(0, 0, 100, revision=1, n_labeled=1100),
              *champion(0, 10, revision=1, n_labeled=310)]
    commands, _, state = run(events)
    assert commands == [] and state.canary_healthy == 1
    assert state.canary_judged_counts == [("v2", 0)]


def test_a_late_older_revision_is_not_judged_in_place_of_the_newer_one() -> None:
    events = [deployed("v1", canary="v2", weight=0.1), *champion(0, 10),
              canary(0, 0, 100, revision=1, n_labeled=150), canary(0, 0, 100)]
    _, _, state = run(events)
    assert state.kpi["canary"][0].revision == 1 and state.canary_healthy == 0


def test_too_few_labels_wait_for_a_revision_then_count_once() -> None:
    events = [deployed("v1", canary="v2", weight=0.1), *champion(0, 10),
              canary(0, 0, 100, n_labeled=150)]
    assert run(events)[2].canary_healthy == 0  # under min_labeled (200): not judged yet
    events += [canary(0, 0, 100, revision=1), *champion(10, 10), canary(1, 100, 200)]
    [step] = run(events)[0]
    assert step.type == "set_canary_weight"


def test_a_comparison_needing_a_window_let_go_is_held_not_judged() -> None:
    # weight 0.01: one canary window spans more champion windows than are kept
    many = MAX_POOLED + 6
    commands, held, state = run([deployed("v1", canary="v2", weight=0.01, lkg="v1"),
                                 *champion(0, many, 1.0),
                                 canary(0, 0, many, accuracy=0.5),
                                 *champion(many, 3, 1.0)])  # said once, not per report
    assert commands == [] and len(state.kpi["champion"]) == MAX_POOLED
    assert held == ["canary v2 window #0 not compared: champion windows that may overlap "
                    f"it were let go (the policy agent keeps the champion's newest "
                    f"{MAX_POOLED} count windows)"]


def test_a_challenger_beating_the_pooled_champion_is_promoted() -> None:
    events: list[Any] = [deployed("v1")]
    for k in range(3):
        events += [*champion(10 * k, 10, accuracy=0.85),
                   window("challenger", "v3", k, 100 * k, 100 * (k + 1))]
    events.append(window("challenger", "v3", 2, 200, 300, revision=1))  # judged once
    commands, _, _ = run(events)
    [promote] = commands
    assert (promote.type, promote.from_version, promote.to_version) == ("promote", "v1", "v3")
    assert "beat the champion in 3 windows in a row" in promote.reason
    assert "pooled: 450 errors in 3000 labeled" in promote.reason


def test_windows_of_time_still_pair_by_their_start_only() -> None:
    # overlapping, not of the same start: no pair (as before count windows paired)
    shifted = kpi(0, variant="canary", version="v2", accuracy=0.5).model_copy(
        update={"window_start": T0 + 60 * S, "window_end": T0 + 360 * S})
    assert run([deployed("v1", canary="v2", weight=0.1, lkg="v1"), kpi(0), kpi(1),
                shifted])[0] == []
    [rollback] = run([deployed("v1", canary="v2", weight=0.1, lkg="v1"), kpi(0),
                      kpi(0, variant="canary", version="v2", accuracy=0.5)])[0]
    assert "pooled" not in rollback.reason
    assert [e["variant"] for e in rollback.evidence] == ["canary", "champion"]


def test_a_canary_deployed_again_is_judged_afresh_from_window_0() -> None:
    # its count starts again at 0: the window numbers judged before do not count
    again = [window("canary", "v2", i, 200 + 100 * i, 300 + 100 * i) for i in range(2)]
    commands, _, _ = run([deployed("v1", canary="v2", weight=0.1, lkg="v1"),
                          *champion(0, 10), canary(0, 0, 100),
                          deployed("v1", lkg="v1"), deployed("v1", canary="v2", weight=0.1),
                          *champion(10, 30), *again])
    assert [(c.type, c.canary_weight) for c in commands] == [("set_canary_weight", 0.5)]
    assert [e["window_index"] for e in commands[0].evidence[:1]] == [1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=32, max_size=32))
def test_any_interleaving_of_the_two_sides_gives_the_same_commands(
        canary_first: list[bool]) -> None:
    # each side's reports in their own order, the two merged in any order
    champions, canaries = champion(0, 30), [canary(i, 100 * i, 100 * (i + 1))
                                            for i in range(3)]
    merged: list[Any] = [deployed("v1", canary="v2", weight=0.1)]
    for pick in canary_first:
        side = canaries if (pick and canaries) or not champions else champions
        if side:
            merged.append(side.pop(0))
    merged += champions + canaries
    commands, _, _ = run(merged)
    assert commands == run([deployed("v1", canary="v2", weight=0.1), *champion(0, 30),
                            *(canary(i, 100 * i, 100 * (i + 1)) for i in range(3))])[0]
    assert [c.type for c in commands] == ["set_canary_weight"]
