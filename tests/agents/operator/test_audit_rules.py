"""The rule each command applied, read back from commands the policy agent really issues.

The commands come from ``streams.policy.decide`` on the cases of its own tests,
so a reworded reason fails here rather than showing "no known rule" in a report.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.operator.audit_rules import rule_applied
from agents.operator.audit_sections import evidence_text
from schemas.rules import DecisionPolicy
from tests.streams.policy.cases import deployed, drift, kpi, poisoning
from tests.streams.policy.test_count_pairing import canary, champion
from tests.streams.policy.test_count_pairing import run as run_counted
from tests.streams.policy.test_decide import CANARY, run

RULES = DecisionPolicy()


@pytest.mark.parametrize(
    ("events", "rules", "expected"),
    [
        (
            [drift(0, "drift"), drift(1, "drift"), drift(2, "drift")],
            RULES,
            "retrain on sustained drift: decisions.retrain.drift_windows = 3 in the policy given.",
        ),
        (
            [kpi(0, status="breach"), kpi(1, status="breach")],
            RULES,
            "retrain on KPI breaches: decisions.retrain.kpi_breach_windows = 2, "
            "decisions.retrain.on_estimated_breach = true",
        ),
        ([kpi(0), kpi(1, concept=True)], RULES, "decisions.retrain.on_concept_drift = true"),
        (
            [deployed("v2", lkg="v1"), kpi(0, version="v2", error_rate=0.2)],
            RULES,
            "roll back on the serving error rate: decisions.rollback.max_error_rate = 0.05",
        ),
        (
            [*CANARY, kpi(0), kpi(0, variant="canary", version="v2", accuracy=0.8)],
            RULES,
            "decisions.rollback.margin = 0.02, decisions.rollback.alpha = 0.01, "
            "decisions.rollback.min_labeled = 200",
        ),
        (
            [
                *CANARY,
                kpi(0),
                kpi(0, variant="canary", version="v2"),
                kpi(1),
                kpi(1, variant="canary", version="v2"),
            ],
            RULES,
            "progressive delivery of a healthy canary: decisions.delivery.healthy_windows = 2, "
            "decisions.delivery.canary_steps = [0.1, 0.5, 1.0]",
        ),
        (
            [deployed("v1")]
            + [
                e
                for i in range(3)
                for e in (
                    kpi(i, accuracy=0.85),
                    kpi(i, variant="challenger", version="v3", accuracy=0.93),
                )
            ],
            RULES,
            "decisions.delivery.challenger_windows = 3",
        ),
        (
            [poisoning(0, passed=30_000), poisoning(1, passed=30_000)],
            DecisionPolicy.model_validate({"retrain": {"new_clean_labels": 50_000}}),
            "retrain on new clean labels: decisions.retrain.new_clean_labels = 50000",
        ),
        (
            [
                deployed("v1"),
                poisoning(0, "campaign"),
                drift(0, "drift"),
                drift(1, "drift"),
                drift(2, "drift"),
            ],
            RULES,
            "No retrain while the poisoning guard reports a campaign (built in); the retrain was "
            "due by: retrain on sustained drift: decisions.retrain.drift_windows = 3",
        ),
    ],
)
def test_every_rule_of_the_policy_agent_is_named_with_its_setting(
    events: list[Any], rules: DecisionPolicy, expected: str
) -> None:
    commands, _, _ = run(events, rules)
    assert commands, "the case issues a command"
    said = rule_applied(commands[-1].model_dump(mode="json"), rules)
    assert expected in said, said


def test_a_command_decided_under_another_policy_says_so() -> None:
    commands, _, _ = run([drift(0, "drift"), drift(1, "drift"), drift(2, "drift")])
    now = DecisionPolicy.model_validate({"retrain": {"drift_windows": 5}})
    said = rule_applied(commands[0].model_dump(mode="json"), now)
    assert "decisions.retrain.drift_windows = 5 in the policy given" in said
    assert "The command states 3: it was decided under another policy." in said


def test_operators_approvals_and_unknown_reasons() -> None:
    manual = {"type": "rollback", "issued_by": "operator:ana", "reason": "paged"}
    assert rule_applied(manual, RULES).startswith(
        "An operator's command (operator:ana): no policy rule"
    )
    approve = {"type": "approve", "issued_by": "operator:ana", "approves": "c1", "reason": ""}
    assert rule_applied(approve, RULES) == "An operator's approval (operator:ana) of command c1."
    odd = {"type": "retrain", "issued_by": "policy", "reason": "because", "approval_required": True}
    said = rule_applied(odd, RULES)
    assert said.startswith("no known rule of the policy agent matches this retrain command")
    assert "Waits for an operator's approval (decisions.approval_tiers ['high']" in said


def test_a_step_on_pooled_count_windows_names_its_rule_and_each_window() -> None:
    commands, _, _ = run_counted([*CANARY, *champion(0, 10), canary(0, 0, 100),
                                  *champion(10, 10), canary(1, 100, 200)])
    [step] = [c.model_dump(mode="json") for c in commands]
    assert "progressive delivery of a healthy canary" in rule_applied(step, RULES)
    said = [evidence_text(e) for e in step["evidence"]]
    assert said[0].startswith("kpi v2/canary window #1 ")
    assert [s.split(" ")[3] for s in said[1:]] == [f"#{i}" for i in range(10, 20)]
