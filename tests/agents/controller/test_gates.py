"""The controller judges evaluation gates before traffic, and before any human approval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents import cli
from agents.controller.registry import FileRegistry
from schemas.policy import parse_policy
from tests.agents.controller.conftest import (
    DIGEST,
    GATES,
    command,
    controller,
    evaluation,
    feed,
    gated_registry,
)


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    """The gated versions (conftest.gated_registry) instead of the three minimal ones."""
    return gated_registry(tmp_path)


def test_a_version_failing_its_gate_gets_no_canary_and_the_event_names_the_numbers(
    registry: Any,
) -> None:
    ctl = controller(registry, parse_policy(GATES))
    events = feed(
        ctl,
        command("promote", to_version="v1", issued_by="operator:ana"),
        command("canary", to_version="v2", canary_weight=0.1, issued_by="operator:ana"),
        command("canary", to_version="v4", canary_weight=0.1, issued_by="operator:ana"),
        command("canary", to_version="v3", canary_weight=0.1, issued_by="operator:ana"),
    )
    assert [e.status for e in events] == ["applied", "rejected", "rejected", "applied"]
    assert (
        "gate high passed: min_held_out_size held-out size 5000 >= 1000, min_metrics "
        "roc_auc 0.9 >= 0.85, max_loss roc_auc: no champion to compare against" in events[0].reason
    )
    assert events[1].reason == (
        "refused: gate high.min_metrics roc_auc 0.81 < 0.85; gate high.max_loss roc_auc 0.81 is "
        "0.09 below the champion v1's 0.9 (> 0.02 allowed)"
    )
    assert events[1].state.canary is None
    assert events[2].reason.startswith("refused: gate high: v4 has no evaluation")
    assert "max_loss roc_auc 0.89 is 0.01 below the champion v1's 0.9" in events[3].reason
    assert registry.load("fraud")[0].canary == "v3"
    # a promote is gated the same way; a rollback is not
    events = feed(
        ctl,
        command("promote", from_version="v1", to_version="v2", issued_by="operator:ana"),
        command("rollback", issued_by="operator:ana"),
    )
    assert [e.status for e in events] == ["rejected", "applied"]
    assert "gate high.min_metrics roc_auc 0.81 < 0.85" in events[0].reason
    # without gates (the default) nothing is judged: v4, with no evaluation, gets its canary
    events = feed(
        controller(registry),
        command(
            "canary", to_version="v4", canary_weight=0.1, nonce="again", issued_by="operator:ana"
        ),
    )
    assert events[0].status == "applied" and "gate" not in events[0].reason


def test_high_tier_gates_come_before_the_approval_not_instead_of_it(registry: Any) -> None:
    policy = parse_policy(GATES + "models: {fraud: {decisions: {risk_tier: high}}}")
    ctl = controller(registry, policy)
    feed(ctl, command("promote", to_version="v1", issued_by="operator:ana"))
    bad = command("canary", to_version="v2", canary_weight=0.1)  # from the policy agent
    good = command("canary", to_version="v3", canary_weight=0.1)
    events = feed(ctl, bad, good)
    assert [e.status for e in events] == ["rejected", "pending_approval"]  # v2 never waits
    assert "gate high.min_metrics roc_auc 0.81 < 0.85" in events[0].reason
    assert "gate high passed" in events[1].reason
    assert registry.load("fraud")[0].canary is None  # passing the gate is no approval
    events = feed(
        ctl,
        command("approve", approves=bad.command_id, issued_by="operator:ana"),
        command("approve", approves=good.command_id, issued_by="operator:ana"),
    )
    assert [e.status for e in events] == ["rejected", "applied"]
    assert "approved by operator:ana" in events[1].reason and "gate high passed" in events[1].reason
    assert registry.load("fraud")[0].canary == "v3"


def test_the_gate_is_judged_again_at_the_approval(registry: Any) -> None:
    """A champion promoted while a canary waited: its loss is judged against the new one."""
    policy = parse_policy(
        GATES.replace("0.02", "0.005") + "models: {fraud: {decisions: {risk_tier: high}}}"
    )
    ctl = controller(registry, policy)
    waiting = command("canary", to_version="v3", canary_weight=0.1)  # no champion: no loss
    assert feed(ctl, waiting)[0].status == "pending_approval"
    assert (
        feed(ctl, command("promote", to_version="v1", issued_by="operator:ana"))[0].status
        == "applied"
    )
    events = feed(ctl, command("approve", approves=waiting.command_id, issued_by="operator:ana"))
    assert events[0].status == "rejected" and events[0].command_id == waiting.command_id
    assert events[0].reason == (
        "refused at the approval by operator:ana: gate high.max_loss roc_auc 0.89 is 0.01 "
        "below the champion v1's 0.9 (> 0.005 allowed)"
    )
    state = registry.load("fraud")[0]
    assert (state.champion, state.canary) == ("v1", None)


def test_cli_refuses_a_bad_evaluation_file_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card, ev = tmp_path / "card.json", tmp_path / "eval.json"
    card.write_text(json.dumps({"owner": "risk-ml", "risk_tier": "high"}))
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"one")
    args = [
        "registry",
        "register",
        "--registry",
        str(tmp_path / "reg"),
        "--model",
        "fraud",
        "--version",
        "v1",
        "--artifact",
        str(artifact),
        "--model-card",
        str(card),
        "--evaluation",
        str(ev),
    ]
    ev.write_text(json.dumps({"metrics": {"roc_auc": 0.9}, "held_out": {"sha256": DIGEST}}))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"the evaluation file {ev} is refused: held_out.size: Field required" in err
    assert FileRegistry(tmp_path / "reg").get("fraud", "v1") is None  # nothing registered
    ev.write_text(json.dumps(evaluation(0.9)))
    assert cli.main(args) == 0
    found = FileRegistry(tmp_path / "reg").get("fraud", "v1")
    assert found is not None and found.model_card["evaluation"] == evaluation(0.9)
    assert "flat" not in capsys.readouterr().out
    ev.write_text(json.dumps({"roc_auc": 0.93, "dataset": "holdout 2026-02"}))  # the earlier form
    assert cli.main([*args[:7], "v2", *args[8:]]) == 0
    out = capsys.readouterr().out
    assert "registered fraud@v2" in out and "note: its evaluation is a flat" in out
