"""The policy's rollback rules after a blue-green switch: judged as a canary is, with an
immediate switch back to the standby."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import DeploymentEvent, DeploymentState
from streams.policy.state import ModelState
from tests.streams.policy.cases import T0, deployed, kpi
from tests.streams.policy.test_decide import kinds, run


def switched(champion: str = "v2", standby: str | None = "v1") -> DeploymentEvent:
    """The controller's answer to ``switch``: all traffic on ``champion``, ``standby`` kept."""
    return DeploymentEvent(
        model="fraud",
        command_id="s",
        action="switch",
        status="applied",
        reason="",
        state=DeploymentState(champion=champion, standby=standby, last_known_good="v1"),
        at=T0,
        prev_hash="0" * 64,
        hash="0" * 64,
    )


BEFORE = [deployed("v1"), kpi(0, accuracy=0.95), kpi(1, accuracy=0.95)]


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        (
            "a switched champion worse than the standby before the switch is switched back",
            [*BEFORE, switched(), kpi(2, version="v2", accuracy=0.80)],
            [("rollback", "v2", "v1", None)],
        ),
        (
            "a switched champion as good as the standby stays",
            [
                *BEFORE,
                switched(),
                kpi(2, version="v2", accuracy=0.95),
                kpi(3, version="v2", accuracy=0.96),
            ],
            [],
        ),
        (
            "too few labels on the switched champion: not judged yet",
            [*BEFORE, switched(), kpi(2, version="v2", accuracy=0.80, n_labeled=50)],
            [],
        ),
        (
            "a switched champion over the serving error limit is switched back",
            [*BEFORE, switched(), kpi(2, version="v2", accuracy=None, error_rate=0.2)],
            [("rollback", "v2", "v1", None)],
        ),
        (
            "one rollback per failing version until the controller answers",
            [
                *BEFORE,
                switched(),
                kpi(2, version="v2", accuracy=0.80),
                kpi(2, version="v2", accuracy=0.79, revision=1),
            ],
            [("rollback", "v2", "v1", None)],
        ),
        (
            "no standby (a promotion, not a switch): the champion is not compared",
            [*BEFORE, switched(standby=None), kpi(2, version="v2", accuracy=0.80)],
            [],
        ),
    ],
)
def test_rollback_rules_after_a_switch(name: str, events: list[Any], expected: list[Any]) -> None:
    commands, _, _ = run(events)
    assert kinds(commands) == expected, name


def test_the_switch_back_carries_both_windows_and_says_why() -> None:
    commands, _, state = run([*BEFORE, switched(), kpi(2, version="v2", accuracy=0.80)])
    (rollback,) = commands
    assert rollback.reason.startswith(
        "switched champion v2 worse than the standby v1 before "
        "the switch: v2 error rate 0.2000 vs v1 0.0500"
    )
    assert rollback.reason.endswith("; switch back to v1")
    assert [(e["model_version"], e["window_start"]) for e in rollback.evidence] == [
        ("v2", kpi(2).window_start.timestamp() * 1000),
        ("v1", kpi(1).window_start.timestamp() * 1000),
    ]
    assert state.standby == "v1" and state.rollback_pending == "v2"
    # the controller's answer (all traffic back on v1, no standby) ends the comparison
    back = switched("v1", standby=None).model_copy(update={"action": "rollback"})
    commands, _, state = run(
        [
            *BEFORE,
            switched(),
            kpi(2, version="v2", accuracy=0.80),
            back,
            kpi(3, version="v1", accuracy=0.95),
        ]
    )
    assert kinds(commands) == [("rollback", "v2", "v1", None)]
    assert (state.champion, state.standby, state.rollback_pending) == ("v1", None, None)
    assert ModelState.model_validate(state.model_dump()) == state
