"""The policy's shadow rule: a shadow healthy beside the champion for N windows in a
row becomes the canary; off by default; the reason states the numbers."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import DeploymentEvent, DeploymentState
from schemas.policy import PolicyError, parse_policy
from schemas.reports import KpiReport, ShadowComparison
from schemas.rules import DecisionPolicy
from tests.streams.policy.cases import T0, kpi
from tests.streams.policy.test_decide import kinds, run

ON = DecisionPolicy.model_validate({"shadow": {"healthy_windows": 2}})


def shadowing(
    champion: str = "v1", shadow: str | None = "v2", canary: str | None = None
) -> DeploymentEvent:
    return DeploymentEvent(
        model="fraud",
        command_id="s",
        action="shadow",
        status="applied",
        reason="",
        state=DeploymentState(
            champion=champion,
            shadow=shadow,
            canary=canary,
            canary_weight=0.1 if canary else 0.0,
            last_known_good=champion,
        ),
        at=T0,
        prev_hash="0" * 64,
        hash="0" * 64,
    )


def shadow_kpi(
    i: int,
    *,
    agreement: float = 0.97,
    score_diff: float = 0.03,
    pairs: int = 1000,
    labeled: int = 1000,
    shadow_errors: float = 80,
    served_errors: float = 90,
    status: str = "ok",
    version: str = "v2",
    versus: str = "v1",
    revision: int = 0,
) -> KpiReport:
    report = kpi(i, variant="shadow", version=version, status=status, revision=revision)
    compared = ShadowComparison(
        versus=versus,
        pairs=pairs,
        agreement=agreement,
        scored_pairs=pairs,
        score_mean_abs_diff=score_diff,
        score_max_abs_diff=score_diff * 5,
        score_mean_diff=0.0,
        labeled_pairs=labeled,
        served_metrics={"accuracy": 1 - served_errors / labeled, "errors": served_errors}
        if labeled
        else {},
        shadow_metrics={"accuracy": 1 - shadow_errors / labeled, "errors": shadow_errors}
        if labeled
        else {},
    )
    return report.model_copy(update={"shadow": [compared]})


HEALTHY = [shadowing(), shadow_kpi(0), shadow_kpi(1)]


@pytest.mark.parametrize(
    ("name", "events", "rules", "expected"),
    [
        ("off by default", HEALTHY, DecisionPolicy(), []),
        ("two healthy windows in a row: canary", HEALTHY, ON, [("canary", "v1", "v2", 0.1)]),
        ("one healthy window is not enough", HEALTHY[:2], ON, []),
        (
            "low agreement breaks the streak",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, agreement=0.7), shadow_kpi(2)],
            ON,
            [],
        ),
        (
            "score drift breaks the streak",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, score_diff=0.3), shadow_kpi(2)],
            ON,
            [],
        ),
        (
            "a KPI breach breaks the streak",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, status="breach"), shadow_kpi(2)],
            ON,
            [],
        ),
        (
            "worse than the champion on the same labeled requests breaks the streak",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, shadow_errors=200), shadow_kpi(2)],
            ON,
            [],
        ),
        (
            "a window without enough pairs is not judged",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, pairs=50), shadow_kpi(2)],
            ON,
            [("canary", "v1", "v2", 0.1)],
        ),
        (
            "a window waits for its labeled pairs, then counts",
            [shadowing(), shadow_kpi(0), shadow_kpi(1, labeled=0), shadow_kpi(1, revision=1)],
            ON,
            [("canary", "v1", "v2", 0.1)],
        ),
        (
            "a revision of a judged window is not judged again",
            [shadowing(), shadow_kpi(0), shadow_kpi(0, revision=1)],
            ON,
            [],
        ),
        (
            "no second canary beside one",
            [shadowing(canary="v3"), shadow_kpi(0), shadow_kpi(1)],
            ON,
            [],
        ),
        (
            "a stopped shadow's late windows are ignored",
            [shadowing(shadow=None), shadow_kpi(0), shadow_kpi(1)],
            ON,
            [],
        ),
        (
            "judged without labels when min_labeled_pairs is 0",
            [shadowing(), shadow_kpi(0, labeled=0), shadow_kpi(1, labeled=0)],
            DecisionPolicy.model_validate(
                {"shadow": {"healthy_windows": 2, "min_labeled_pairs": 0}}
            ),
            [("canary", "v1", "v2", 0.1)],
        ),
    ],
)
def test_shadow_rule(
    name: str, events: list[Any], rules: DecisionPolicy, expected: list[Any]
) -> None:
    commands, _, _ = run(events, rules)
    assert kinds(commands) == expected, name


def test_the_reason_states_the_numbers_and_the_evidence_the_windows() -> None:
    commands, _, state = run(HEALTHY, ON)
    (command,) = commands
    assert command.reason == (
        "shadow v2 healthy for 2 window(s) in a row (policy: 2) beside v1: 1000 paired "
        "requests, agreement 0.9700, mean |score difference| 0.0300, on 1000 labeled pairs "
        "errors 80 vs 90; KPI status ok"
    )
    assert [e["window_start"] for e in command.evidence] == [
        s.window_start for s in state.kpi["shadow"]
    ]
    assert all(e["agreement"] == 0.97 for e in command.evidence)
    assert state.shadow_healthy == 0


def test_why_a_window_is_not_healthy_is_said() -> None:
    _, held, _ = run([shadowing(), shadow_kpi(0, agreement=0.7)], ON)
    assert held == [
        "shadow v2 not healthy in the window from "
        f"{int(T0.timestamp() * 1000)}: agreement 0.7000 with v1 below 0.9"
    ]


def test_summaries_of_other_reports_keep_their_evidence_as_before() -> None:
    """Command ids are made from the evidence: a champion's summary has no shadow keys."""
    commands, _, _ = run([kpi(0, status="breach"), kpi(1, status="breach")])
    assert commands and all("pairs" not in e for c in commands for e in c.evidence)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("decisions:\n  shadow:\n    min_agreement: 1.5\n", "decisions.shadow.min_agreement"),
        ("decisions:\n  shadow:\n    canary_weight: 0\n", "decisions.shadow.canary_weight"),
        ("decisions:\n  shadow:\n    healthy_windows: -1\n", "decisions.shadow.healthy_windows"),
        ("decisions:\n  shadow:\n    windows: 2\n", "decisions.shadow.windows"),
    ],
)
def test_a_bad_shadow_rule_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
        parse_policy(text, source="p.yaml")
