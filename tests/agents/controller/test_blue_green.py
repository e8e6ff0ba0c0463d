"""Blue-green ``switch`` and ``shadow``: the serving-state transitions on both registries,
the refusals, the gate, the switch back, the verdict endpoint and the inventory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.controller import verdict
from agents.dev import simulate
from agents.operator import inventory
from schemas.commands import DeploymentState
from schemas.policy import Policy, parse_policy
from streams.policy.chain import verify_chain
from tests.agents.controller.conftest import GATES, command, controller, feed, gated_registry


def chained(events: list[Any]) -> bool:
    return verify_chain([e.model_dump(mode="json") for e in events]).intact


def test_a_switch_moves_all_traffic_and_a_rollback_switches_straight_back(registry: Any) -> None:
    ctl = controller(registry)
    events = feed(
        ctl,
        command("promote", to_version="v1"),
        command("canary", to_version="v3", canary_weight=0.1),
        command("switch", from_version="v1", to_version="v2"),
    )
    assert [e.status for e in events] == ["applied"] * 3
    switched = events[-1]
    assert switched.action == "switch"
    # all traffic at once: the canary is ended; v1 is kept ready, and is the last known good
    assert switched.state == DeploymentState(champion="v2", standby="v1", last_known_good="v1")
    assert registry.load("fraud")[0] == switched.state  # committed, and read back, as such
    # the policy's champion rollback (from the switched champion to the last known good)
    back = feed(ctl, command("rollback", from_version="v2", to_version="v1"))[0]
    assert back.status == "applied"
    assert back.state == DeploymentState(champion="v1", last_known_good="v1")
    assert registry.load("fraud")[0] == back.state
    assert verdict.verdict(registry, "fraud", "v2")[1]["reason"] == "v2 was rolled back"
    # an operator's bare rollback after a switch finds the standby too
    events += [back, *feed(ctl, command("switch", to_version="v3"), command("rollback"))]
    assert events[-1].status == "applied" and events[-1].state.champion == "v1"
    assert events[-1].state.standby is None
    assert chained(events)


def test_a_shadow_runs_beside_the_champion_and_stops(registry: Any) -> None:
    ctl = controller(registry)
    events = feed(ctl, command("promote", to_version="v1"), command("shadow", to_version="v2"))
    assert [e.status for e in events] == ["applied", "applied"]
    on = events[-1]
    assert on.action == "shadow" and on.model_dump(mode="json")["state"]["shadow"] == "v2"
    assert (on.state.champion, on.state.canary, on.state.shadow) == ("v1", None, "v2")
    assert registry.load("fraud")[0].shadow == "v2"
    # a canary of another version keeps the shadow; a switch to the shadow ends it
    events += feed(ctl, command("canary", to_version="v3", canary_weight=0.2))
    assert (events[-1].state.canary, events[-1].state.shadow) == ("v3", "v2")
    events += feed(ctl, command("shadow", nonce="stop"))  # no to_version: stop
    assert events[-1].status == "applied" and events[-1].state.shadow is None
    assert "shadow" not in events[-1].model_dump(mode="json")["state"]
    assert registry.load("fraud")[0].shadow is None
    events += feed(
        ctl, command("shadow", to_version="v2", nonce="again"), command("switch", to_version="v2")
    )
    assert events[-1].state == DeploymentState(champion="v2", standby="v1", last_known_good="v1")
    assert chained(events)


def test_transitions_that_make_no_sense_are_refused_and_change_nothing(registry: Any) -> None:
    ctl = controller(registry)
    events = feed(
        ctl,
        command("switch", to_version="v2"),  # no champion to switch from
        command("shadow", to_version="v2"),
    )  # no champion to shadow
    events += feed(
        ctl,
        command("promote", to_version="v1"),
        command("switch", to_version="v1"),
        command("switch", to_version="v9"),
        command("switch", from_version="v3", to_version="v2"),
        command("shadow", to_version="v1"),
        command("shadow", to_version="v9"),
        command("shadow", nonce="stop"),
    )
    assert [e.status for e in events] == ["rejected"] * 2 + ["applied"] + ["rejected"] * 6
    reasons = [e.reason for e in events]
    assert "nothing to switch from: promote v2 instead" in reasons[0]
    assert "a shadow needs one" in reasons[1]
    assert reasons[3] == "refused: v1 is already the champion: nothing to switch"
    assert reasons[4] == "refused: cannot switch to 'v9': the registry has no such version of fraud"
    assert "decided on a state that has changed" in reasons[5]
    assert "v1 is already the champion: a shadow runs beside the champion" in reasons[6]
    assert "cannot deploy 'v9' as shadow: the registry has no such version" in reasons[7]
    assert reasons[8] == "refused: fraud has no shadow to stop"
    assert registry.load("fraud")[0] == DeploymentState(champion="v1")
    assert chained(events)


def test_a_switch_to_a_version_failing_its_gate_is_refused_with_the_gates_reason(
    tmp_path: Path,
) -> None:
    reg = gated_registry(tmp_path)
    ctl = controller(reg, parse_policy(GATES))
    events = feed(
        ctl,
        *(
            command(kind, to_version=v, issued_by="operator:ana")
            for kind, v in (
                ("promote", "v1"),
                ("switch", "v2"),
                ("switch", "v4"),
                ("shadow", "v2"),
                ("shadow", "v3"),
                ("switch", "v3"),
            )
        ),
    )
    assert [e.status for e in events] == [
        "applied",
        "rejected",
        "rejected",
        "rejected",
        "applied",
        "applied",
    ]
    assert events[1].reason == (
        "refused: gate high.min_metrics roc_auc 0.81 < 0.85; gate high.max_loss roc_auc 0.81 is "
        "0.09 below the champion v1's 0.9 (> 0.02 allowed)"
    )
    assert events[2].reason.startswith("refused: gate high: v4 has no evaluation")
    assert events[3].reason.startswith("refused: gate high.min_metrics roc_auc 0.81")
    assert "gate high passed: " in events[4].reason and "gate high passed: " in events[5].reason
    assert reg.load("fraud")[0] == DeploymentState(
        champion="v3", standby="v1", last_known_good="v1"
    )
    # stopping a shadow and switching back are not gated
    stop = feed(
        ctl,
        command("shadow", to_version="v2", nonce="x", issued_by="operator:ana"),
        command("rollback", issued_by="operator:ana"),
    )
    assert stop[0].status == "rejected" and stop[1].status == "applied"
    assert "gate" not in stop[1].reason and stop[1].state.champion == "v1"


def test_the_verdict_and_the_inventory_show_shadow_and_standby(registry: Any) -> None:
    ctl = controller(registry)
    feed(
        ctl,
        command("promote", to_version="v1"),
        command("switch", to_version="v2"),
        command("shadow", to_version="v3"),
    )
    status, body = verdict.verdict(registry, "fraud", "v1")
    assert (status, body["verdict"]) == (200, "pass")
    assert body["reason"] == (
        "v1 is on standby since the switch to v2: a rollback returns all traffic to it"
    )
    status, body = verdict.verdict(registry, "fraud", "v3")
    assert body["verdict"] == "pass" and body["reason"].startswith("v3 is the shadow")
    assert body["state"]["shadow"] == "v3" and body["state"]["standby"] == "v1"
    entry = inventory.describe_model("fraud", registry, Policy())
    assert entry is not None and (entry.champion, entry.shadow, entry.standby) == ("v2", "v3", "v1")
    assert {v.version: (v.serving, v.weight) for v in entry.versions} == {
        "v1": ("standby", None),
        "v2": ("champion", 1.0),
        "v3": ("shadow", None),
    }


class _Follower:
    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state(self, model: str) -> dict[str, Any]:
        return self._state


def test_the_simulator_serves_the_shadow_on_the_champions_requests() -> None:
    state = {"champion": "v1", "canary": "v3", "canary_weight": 0.2, "shadow": "v2"}
    follower: Any = _Follower(state)
    fleet = simulate._Fleet(
        seed=3, model="fraud", version="v1", bad_versions={"v2"}, follower=follower
    )
    events: list[dict[str, Any]] = []
    for traffic, variant, n, shadow in fleet.split(100):
        traffic.variant = variant
        events += traffic.events_with_labels(
            n, start_s=1_800_000_000.0, span_s=60.0, shadow=shadow
        )[0]
    served = [e for e in events if e["variant"] == "champion"]
    shadows = [e for e in events if e["variant"] == "shadow"]
    canary = [e for e in events if e["variant"] == "canary"]
    assert (len(served), len(shadows), len(canary)) == (80, 80, 20)
    assert [e["request_id"] for e in shadows] == [e["request_id"] for e in served]
    assert {e["model_version"] for e in shadows} == {"v2"}
    for champ, shadow in zip(served, shadows, strict=True):
        assert (shadow["ts"], shadow["features"]) == (champ["ts"], champ["features"])
    # v2 is a bad version: its answers differ from the champion's on the same requests
    assert sum(c["prediction"] != s["prediction"] for c, s in zip(served, shadows, strict=True)) > 0
    # the champion's own events do not depend on whether a shadow is deployed
    alone = simulate.FraudTraffic(seed=3, model="fraud", version="v1")
    again = alone.events_with_labels(80, start_s=1_800_000_000.0, span_s=60.0)[0]
    assert [e["score"] for e in again] == [e["score"] for e in served]


@pytest.mark.parametrize("given", [[], ["--version", "v2", "--off"]])
def test_cli_shadow_needs_a_version_or_off_and_sends_nothing_otherwise(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from agents import cli

    # an unreachable broker: the arguments are refused before any connection is tried
    assert (
        cli.main(["command", "shadow", "--model", "fraud", "--broker", "127.0.0.1:9", *given]) == 2
    )
    assert capsys.readouterr().err == (
        "driftline: driftline command shadow needs --version V (start a shadow) or --off (stop "
        "it), not both; the command was NOT sent\n"
    )


def test_an_event_written_before_shadow_and_standby_existed_hashes_as_it_did() -> None:
    """The controller re-publishes its newest event from the journal after a crash: an
    event of an older driftline must come out byte for byte, or the chain would break."""
    from schemas.commands import DeploymentEvent
    from streams.policy.chain import event_hash

    old = {
        "model": "fraud", "command_id": "c1", "action": "promote", "status": "applied",
        "reason": "r", "at": "2026-11-01T00:00:00Z", "prev_hash": "0" * 64,
        "state": {"champion": "v1", "canary": None, "canary_weight": 0.0,
                  "last_known_good": None},
    }  # fmt: skip
    old["hash"] = event_hash(old)
    again = DeploymentEvent.model_validate(old).model_dump(mode="json")
    assert again == old and event_hash(again) == old["hash"]
