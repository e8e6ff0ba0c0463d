"""The controller's pure rules: transitions, signatures, the hash chain."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import Command, DeploymentState
from streams.policy.chain import GENESIS, event_hash, verify_chain
from streams.policy.commands import command_id, sign, verify
from streams.policy.transitions import transition
from tests.streams.policy.cases import T0

VERSIONS = {"v1", "v2", "v3"}


def cmd(type_: str, **kw: Any) -> Command:
    return Command(command_id="id", type=type_, model="fraud", reason="test",  # type: ignore[arg-type]
                   issued_at=T0, **kw)


S = DeploymentState


@pytest.mark.parametrize(
    ("state", "command", "expected", "verify_version"),
    [
        (S(champion="v1"), cmd("canary", to_version="v2", canary_weight=0.1),
         S(champion="v1", canary="v2", canary_weight=0.1), "v2"),
        (S(champion="v1", canary="v2", canary_weight=0.1),
         cmd("set_canary_weight", to_version="v2", canary_weight=0.5),
         S(champion="v1", canary="v2", canary_weight=0.5), None),
        (S(champion="v1", canary="v2", canary_weight=0.5),
         cmd("promote", from_version="v1", to_version="v2"),
         S(champion="v2", last_known_good="v1"), "v2"),
        (S(champion="v1", canary="v2", canary_weight=0.5), cmd("rollback", from_version="v2"),
         S(champion="v1"), None),
        (S(champion="v2", last_known_good="v1"), cmd("rollback", from_version="v2"),
         S(champion="v1", last_known_good="v1"), "v1"),
        (S(champion="v1"), cmd("retrain"), S(champion="v1"), None),
        (S(champion="v1"), cmd("hold"), S(champion="v1"), None),
    ],
)
def test_transitions_that_apply(state: S, command: Command, expected: S,
                                verify_version: str | None) -> None:
    result = transition(state, command, VERSIONS)
    assert result.ok, result.refused
    assert result.state == expected
    assert result.verify == verify_version


@pytest.mark.parametrize(
    ("state", "command", "reason"),
    [
        (S(champion="v1"), cmd("rollback"), "no previous good version"),
        (S(champion="v1"), cmd("promote", to_version="v9"), "no such version"),
        (S(champion="v1"), cmd("promote", to_version="v1"), "already the champion"),
        (S(champion="v2"), cmd("promote", from_version="v1", to_version="v3"),
         "decided on a state that has changed"),
        (S(champion="v1"), cmd("canary", to_version="v7"), "no such version"),
        (S(champion="v1"), cmd("canary", to_version="v2", canary_weight=1.5), "not in (0, 1]"),
        (S(champion="v1"), cmd("set_canary_weight", canary_weight=0.5), "no canary"),
        (S(champion="v1", canary="v2"), cmd("set_canary_weight", to_version="v3",
                                            canary_weight=0.5), "is not the canary"),
        (S(champion="v2", last_known_good="v9"), cmd("rollback"), "no such version"),
        (S(champion="v2", last_known_good="v1"), cmd("rollback", from_version="v3"),
         "neither the champion"),
        (S(champion="v1"), cmd("approve", approves="x"), "not a deployment change"),
    ],
)
def test_transitions_that_make_no_sense_are_refused(state: S, command: Command,
                                                    reason: str) -> None:
    result = transition(state, command, VERSIONS)
    assert not result.ok and reason in result.refused
    assert result.state == state


def test_signatures_detect_any_change_and_the_wrong_key() -> None:
    key = b"k" * 32
    signed = sign(cmd("rollback", from_version="v2", evidence=[{"kind": "kpi", "n": 1}]), key)
    assert len(signed.signature) == 64 and verify(signed, key)
    assert not verify(signed, b"other-key")
    assert not verify(cmd("rollback", from_version="v2"), key)  # unsigned
    for change in ({"from_version": "v3"}, {"reason": "other"}, {"evidence": []},
                   {"type": "promote"}, {"approval_required": True}):
        assert not verify(signed.model_copy(update=change), key), change
    # a JSON round trip (what Kafka carries) keeps it valid
    assert verify(Command.model_validate_json(signed.model_dump_json()), key)


def test_command_ids_depend_on_the_evidence_identity_only() -> None:
    evidence = [{"kind": "drift", "model": "fraud", "window_start": 1, "status": "drift",
                 "why": ["a"]}]
    same = [{**evidence[0], "why": ["b"]}]
    later = [{**evidence[0], "window_start": 2}]
    base = command_id("retrain", "fraud", evidence=evidence)
    assert base == command_id("retrain", "fraud", evidence=same)
    assert base != command_id("retrain", "fraud", evidence=later)
    assert base != command_id("retrain", "fraud", evidence=evidence, nonce="op-1")


def _chain(n: int, model: str = "fraud") -> list[dict[str, Any]]:
    events, head = [], GENESIS
    for i in range(n):
        event: dict[str, Any] = {"model": model, "command_id": f"c{i}", "status": "applied",
                                 "prev_hash": head}
        event["hash"] = head = event_hash(event)
        events.append(event)
    return events


def test_an_intact_chain_verifies_with_interleaved_models_and_redeliveries() -> None:
    a, b = _chain(4, "a"), _chain(3, "b")
    events = [a[0], b[0], a[1], a[1], b[1], a[2], b[2], a[3]]
    check = verify_chain(events)
    assert check.intact and check.events == 8 and check.models == 2 and check.duplicates == 1


@pytest.mark.parametrize(
    ("tamper", "position", "words"),
    [
        (lambda ev: ev[2].update(status="rejected"), 2, "was altered"),
        (lambda ev: ev.pop(2), 2, "does not follow"),
        (lambda ev: ev.insert(1, ev.pop(3)), 1, "does not follow"),
    ],
)
def test_a_broken_chain_names_the_first_broken_link(tamper: Any, position: int,
                                                    words: str) -> None:
    events = _chain(6)
    tamper(events)
    check = verify_chain(events)
    assert not check.intact and check.broken_at == position and words in check.reason
