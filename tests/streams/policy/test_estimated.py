"""The policy agent on KPI breaches that rest on estimates before labels."""

from __future__ import annotations

from typing import Any

from schemas.reports import KpiReport
from schemas.rules import DecisionPolicy
from streams.policy.decide import decide
from streams.policy.state import ModelState
from tests.streams.policy.cases import kpi


def estimated(i: int) -> KpiReport:
    """A first revision with no label yet, breached on its estimated roc_auc."""
    return kpi(i, accuracy=None, n_labeled=0, status="breach").model_copy(
        update={
            "estimated": True,
            "breaches": [
                "estimated roc_auc 0.61 (95 % band 0.58 to 0.64, from scores) is below "
                "its estimated target 0.75"
            ],
        }
    )


def run(events: list[Any], rules: DecisionPolicy | None = None) -> list[Any]:
    state, commands = ModelState(), []
    for event in events:
        out = decide(state, event, rules or DecisionPolicy())
        state, commands = out.state, commands + out.commands
    return commands


def test_estimated_breaches_retrain_and_the_reason_says_they_are_estimates() -> None:
    [command] = run([estimated(0), estimated(1)])
    assert command.type == "retrain"
    assert "(2 of them on estimates from scores, before labels" in command.reason
    assert "estimated roc_auc 0.61" in command.reason
    assert [e["estimated"] for e in command.evidence] == [True, True]


def test_a_policy_may_only_alert_on_estimated_breaches() -> None:
    rules = DecisionPolicy.model_validate({"retrain": {"on_estimated_breach": False}})
    assert run([estimated(0), estimated(1), estimated(2)], rules) == []
    # realized breaches still retrain as before
    [command] = run([kpi(0, status="breach"), kpi(1, status="breach")], rules)
    assert command.type == "retrain" and "estimates" not in command.reason


def test_realized_breaches_read_as_before() -> None:
    [command] = run([kpi(0, status="breach"), kpi(1, status="breach")])
    assert command.reason == (
        "KPI targets of v1 missed in 2 windows in a row (policy: 2): roc_auc 0.61 below 0.75"
    )


def test_a_mixed_streak_says_how_many_rest_on_estimates() -> None:
    [command] = run([kpi(0, status="breach"), estimated(1)])
    assert "(1 of them on estimates" in command.reason


def test_labels_that_clear_an_estimated_breach_break_the_streak() -> None:
    assert run([estimated(0), kpi(0, revision=1), estimated(1)]) == []


def test_a_stored_state_without_the_field_still_reads() -> None:
    state = ModelState()
    state.remember(decide(state, kpi(0), DecisionPolicy()).state.kpi["champion"][0])
    raw = state.model_dump()
    for s in raw["kpi"]["champion"]:
        del s["estimated"]
    assert ModelState.model_validate(raw).kpi["champion"][0].estimated is False
