"""Policy decisions on tables of cases: event sequences in, commands out."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.rules import DecisionPolicy
from streams.policy.decide import decide
from streams.policy.state import MAX_WINDOWS, ModelState
from tests.streams.policy.cases import deployed, drift, kpi, poisoning

RULES = DecisionPolicy()


def run(
    events: list[Any], rules: DecisionPolicy = RULES
) -> tuple[list[Any], list[str], ModelState]:
    state, commands, held = ModelState(), [], []
    for event in events:
        before = state.model_dump_json()
        out = decide(state, event, rules)
        assert state.model_dump_json() == before  # the state given is left as it was
        state = out.state
        commands += out.commands
        held += out.held
    return commands, held, state


def kinds(commands: list[Any]) -> list[tuple[str, str | None, str | None, float | None]]:
    return [(c.type, c.from_version, c.to_version, c.canary_weight) for c in commands]


CANARY = [deployed("v1", canary="v2", weight=0.1)]


def answered(status: str, canary: str | None = "v2") -> Any:
    """The controller's answer to the canary's rollback (applied: no canary after it)."""
    event = deployed("v1", canary=canary, weight=0.1 if canary else 0.0)
    return event.model_copy(update={"action": "rollback", "status": status})


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        ("stationary drift windows", [drift(i) for i in range(10)], []),
        ("two drift windows are not enough (policy 3)",
         [drift(0, "drift"), drift(1, "drift"), drift(2)], []),
        ("three drift windows in a row retrain",
         [drift(0, "drift"), drift(1, "drift"), drift(2, "drift")],
         [("retrain", "v1", None, None)]),
        ("an ok window breaks the streak",
         [drift(0, "drift"), drift(1, "drift"), drift(2), drift(3, "drift"), drift(4, "drift")],
         []),
        ("a gap in event time breaks the streak",
         [drift(0, "drift"), drift(1, "drift"), drift(3, "drift")], []),
        ("warn windows are not drift",
         [drift(i, "warn") for i in range(5)], []),
        ("drift of another version than the champion is not the champion's",
         [deployed("v1"), drift(0, "drift", version="v2"), drift(1, "drift", version="v2"),
          drift(2, "drift", version="v2")], []),
        ("concept drift retrains",
         [kpi(0), kpi(1, concept=True)], [("retrain", "v1", None, None)]),
        ("two breach windows retrain",
         [kpi(0, status="breach"), kpi(1, status="breach")], [("retrain", "v1", None, None)]),
        ("a breach that shows in a revision counts",
         [kpi(0, status="breach"), kpi(1), kpi(1, status="breach", revision=1)],
         [("retrain", "v1", None, None)]),
        ("champion over the serving error limit rolls back to the last known good",
         [deployed("v2", lkg="v1"), kpi(0, version="v2", error_rate=0.2)],
         [("rollback", "v2", "v1", None)]),
        ("no last known good: no rollback",
         [deployed("v1"), kpi(0, error_rate=0.2)], []),
        ("canary over the serving error limit is rolled back",
         [*CANARY, kpi(0, variant="canary", version="v2", error_rate=0.2)],
         [("rollback", "v2", "v1", None)]),
        ("canary significantly worse than the champion is rolled back",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.8)],
         [("rollback", "v2", "v1", None)]),
        ("revisions of a failing canary's window issue one rollback until it is answered",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.8),
          kpi(0, variant="canary", version="v2", accuracy=0.79, revision=1),
          kpi(0, variant="canary", version="v2", accuracy=0.78, n_labeled=1100, revision=2)],
         [("rollback", "v2", "v1", None)]),
        ("a rollback refused by the controller may be issued again on new evidence",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.8),
          answered("rejected"), kpi(0, variant="canary", version="v2", accuracy=0.79,
                                    revision=1)],
         [("rollback", "v2", "v1", None), ("rollback", "v2", "v1", None)]),
        ("revisions of a canary's window after its rollback was applied issue nothing",
         [*CANARY, kpi(0, variant="canary", version="v2", error_rate=0.2),
          deployed("v1", canary=None, lkg="v1"),
          kpi(0, variant="canary", version="v2", error_rate=0.25, revision=1),
          kpi(1, variant="canary", version="v2", error_rate=0.3)],
         [("rollback", "v2", "v1", None)]),
        ("the champion's report arriving second triggers the comparison as well",
         [*CANARY, kpi(0, variant="canary", version="v2", accuracy=0.8), kpi(0)],
         [("rollback", "v2", "v1", None)]),
        ("a small difference within the margin is not worse",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.89)], []),
        ("a big gap on few labels is not judged",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.5, n_labeled=50)],
         []),
        ("a healthy canary steps up after two windows",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2"),
          kpi(1), kpi(1, variant="canary", version="v2")],
         [("set_canary_weight", None, "v2", 0.5)]),
        ("a revision of a judged window is not counted again",
         [*CANARY, kpi(0), kpi(0, variant="canary", version="v2"),
          kpi(0, variant="canary", version="v2", revision=1)], []),
        ("after the last step below 1.0 the canary is promoted",
         [deployed("v1", canary="v2", weight=0.5), kpi(0), kpi(0, variant="canary", version="v2"),
          kpi(1), kpi(1, variant="canary", version="v2")],
         [("promote", "v1", "v2", None)]),
        ("a challenger that beats the champion three windows in a row is promoted",
         [deployed("v1")] + [e for i in range(3) for e in
                             (kpi(i, accuracy=0.85), kpi(i, variant="challenger", version="v3",
                                                         accuracy=0.93))],
         [("promote", "v1", "v3", None)]),
        ("a challenger that only ties is never promoted",
         [deployed("v1")] + [e for i in range(6) for e in
                             (kpi(i), kpi(i, variant="challenger", version="v3"))], []),
        ("enough new clean labels retrain",
         [poisoning(0, passed=30_000), poisoning(1, passed=30_000)], []),
    ],
)
def test_decisions(name: str, events: list[Any], expected: list[Any]) -> None:
    commands, _, _ = run(events)
    assert kinds(commands) == expected, name


def test_new_clean_labels_trigger_when_configured() -> None:
    rules = DecisionPolicy.model_validate({"retrain": {"new_clean_labels": 50_000}})
    commands, _, state = run([poisoning(0, passed=30_000), poisoning(1, passed=30_000),
                              poisoning(2, passed=10_000)], rules)
    assert kinds(commands) == [("retrain", None, None, None)]
    assert "60000 new clean labeled records" in commands[0].reason
    assert state.clean_since_retrain == 10_000  # counting restarts after the retrain


def test_enough_clean_labels_during_a_campaign_hold_then_retrain_after_it() -> None:
    rules = DecisionPolicy.model_validate({"retrain": {"new_clean_labels": 1000}})
    commands, _, _ = run([deployed("v1"), poisoning(0, "campaign", passed=1500),
                          poisoning(1, "campaign", passed=10), poisoning(2, "ok", passed=10)],
                         rules)
    assert kinds(commands) == [("hold", "v1", None, None), ("retrain", "v1", None, None)]
    assert "1520 new clean labeled records" in commands[1].reason


def test_retrain_is_blocked_during_a_poisoning_campaign_and_says_so_once() -> None:
    events = [deployed("v1"), poisoning(0, "campaign"),
              drift(0, "drift"), drift(1, "drift"), drift(2, "drift"), drift(3, "drift")]
    commands, _, _ = run(events)
    assert kinds(commands) == [("hold", "v1", None, None)]
    assert "poisoning guard reports a campaign" in commands[0].reason
    assert "source crm: 31% quarantined" in commands[0].reason
    # once the campaign is over, the sustained drift retrains
    more, _, _ = run([*events, poisoning(4, "ok"), drift(4, "drift")])
    assert kinds(more)[-1] == ("retrain", "v1", None, None)


def test_cooldown_and_hourly_cap_hold_commands_back_but_never_a_rollback() -> None:
    rules = DecisionPolicy.model_validate({"cooldown": "1h", "retrain": {"drift_windows": 1}})
    commands, held, _ = run([drift(0, "drift"), drift(1, "drift"), drift(2, "drift")], rules)
    assert kinds(commands) == [("retrain", "v1", None, None)]
    # windows 1 and 2 start a new streak after the retrain, and are held back by the cooldown
    assert len(held) == 2 and all("cooldown is 3600 s" in h for h in held)
    commands, held, _ = run([kpi(0, concept=True), kpi(1, concept=True)], rules)
    assert kinds(commands) == [("retrain", "v1", None, None)]
    assert held and "cooldown" in held[0]
    capped = DecisionPolicy.model_validate({"cooldown": 0, "max_commands_per_hour": 1})
    commands, held, _ = run([deployed("v2", canary="v3", weight=0.1, lkg="v1"),
                             kpi(0, version="v2", concept=True),
                             kpi(1, variant="canary", version="v3", error_rate=0.3)], capped)
    assert kinds(commands) == [("retrain", "v2", None, None), ("rollback", "v3", "v2", None)]


def test_commands_are_deterministic_and_carry_their_evidence() -> None:
    events = [drift(0, "drift"), drift(1, "drift"), drift(2, "drift")]
    first, _, _ = run(events)
    again, _, _ = run(events)
    assert [c.model_dump() for c in first] == [c.model_dump() for c in again]
    command = first[0]
    assert [e["window_start"] for e in command.evidence] == sorted(
        e["window_start"] for e in command.evidence)
    assert len(command.evidence) == 3 and all(e["status"] == "drift" for e in command.evidence)
    assert command.issued_at == drift(2).window_end  # event time: a replay issues the same
    assert "amount" in command.reason and not command.signature


def test_high_risk_models_need_approval() -> None:
    rules = DecisionPolicy.model_validate({"risk_tier": "high"})
    commands, _, _ = run([kpi(0, concept=True)], rules)
    assert commands[0].approval_required
    commands, _, _ = run([kpi(0, concept=True)])
    assert not commands[0].approval_required


def test_deployment_events_reset_the_canary_streak() -> None:
    commands, _, state = run([*CANARY, kpi(0), kpi(0, variant="canary", version="v2"),
                              deployed("v1", canary="v2", weight=0.5),
                              kpi(1), kpi(1, variant="canary", version="v2")])
    assert commands == [] and state.canary_healthy == 1 and state.canary_weight == 0.5


def test_state_is_bounded_and_round_trips() -> None:
    events: list[Any] = [deployed("v1", canary="v2", weight=0.1)]
    for i in range(200):
        events += [drift(i, "warn"), kpi(i), kpi(i, variant="canary", version="v2",
                                               accuracy=0.9), kpi(i, variant="challenger",
                                                                  version="v3")]
    _, _, state = run(events, DecisionPolicy.model_validate(
        {"delivery": {"healthy_windows": 1000}}))
    assert len(state.drift) == MAX_WINDOWS
    assert all(len(v) == MAX_WINDOWS for v in state.kpi.values())
    assert len(state.canary_judged) == MAX_WINDOWS
    assert len(state.challenger_judged) == MAX_WINDOWS
    assert ModelState.model_validate_json(state.model_dump_json()) == state


def test_a_canary_deployed_again_after_its_rollback_is_judged_on_its_new_windows_only() -> None:
    # Late revisions of its earlier windows (the KPI timer's) keep coming after it is
    # deployed again: they are the earlier deployment's, and judge nothing now.
    before = [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.8),
              answered("applied", canary=None), deployed("v1", canary="v2", weight=0.1),
              kpi(0, variant="canary", version="v2", accuracy=0.79, revision=1)]
    commands, _, state = run(before)
    assert kinds(commands) == [("rollback", "v2", "v1", None)]
    assert state.canary_from_ms is not None
    commands, _, _ = run([*before, kpi(1), kpi(1, variant="canary", version="v2",
                                                   accuracy=0.8)])
    assert kinds(commands) == [("rollback", "v2", "v1", None)] * 2
    assert {e["window_start"] for e in commands[1].evidence} == {
        kpi(1).window_start.timestamp() * 1000}
