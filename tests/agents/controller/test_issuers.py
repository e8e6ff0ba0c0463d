"""Per-issuer authorisation of controller commands (issuers file), on a real file registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents import cli
from agents.config import Settings
from agents.controller import issuers
from agents.controller.handler import Controller
from agents.controller.registry import open_registry
from agents.operator.commands import operator_command
from schemas.commands import Command, DeploymentEvent
from schemas.issuers import IssuersError, parse_issuers
from schemas.policy import Policy, parse_policy
from streams.policy.chain import verify_chain
from streams.policy.commands import verify
from tests.agents.controller.cards import CARD
from tests.agents.controller.conftest import KEY, command, feed

ALICE = b"alice-key-0123456789abcdef"
BOB = b"bob-key-0123456789abcdef"
CAROL = b"carol-key-0123456789abcdef"

ISSUERS = """\
# who may command the controller
"operator:alice":
  key_file: alice.key
  models: ["fraud*"]
"operator:bob":
  key_file: bob.key
  models: ["churn-*"]
"operator:carol":
  key_env: CAROL_KEY
  commands: [rollback, approve]
"""


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "alice.key").write_bytes(ALICE + b"\n")
    (tmp_path / "bob.key").write_bytes(BOB)
    monkeypatch.setenv("CAROL_KEY", CAROL.decode())
    path = tmp_path / "issuers.yaml"
    path.write_text(ISSUERS)
    registry = open_registry(str(tmp_path / "registry"))
    for version in ("v1", "v2"):
        artifact = tmp_path / f"{version}.bin"
        artifact.write_bytes(version.encode())
        registry.register("fraud", version, artifact, model_card=CARD)
    settings = Settings(issuers=str(path), command_key=KEY.decode())
    return {"registry": registry, "settings": settings, "path": path, "tmp": tmp_path,
            "issuers": issuers.load(settings, worker_key=KEY)}


def controller(setup: dict[str, Any], policy: Policy | None = None) -> Controller:
    return Controller(setup["registry"], KEY, policy or Policy(), issuers=setup["issuers"])


def chained(events: list[DeploymentEvent]) -> bool:
    return verify_chain([e.model_dump(mode="json") for e in events]).intact


def test_an_issuer_within_its_rules_is_applied(setup: dict[str, Any]) -> None:
    events = feed(controller(setup),
                  command("promote", to_version="v1", key=ALICE, issued_by="operator:alice"),
                  command("canary", to_version="v2", canary_weight=0.1, key=CAROL,
                          issued_by="operator:carol"),  # not allowed: canary
                  command("rollback", from_version="v2", key=KEY))  # policy: the command key
    assert [e.status for e in events] == ["applied", "rejected", "rejected"]
    assert "issuer operator:carol may not issue canary commands" in events[1].reason
    assert "(its commands in the issuers file: rollback, approve)" in events[1].reason
    assert chained(events)


def test_a_model_outside_the_issuers_patterns_is_refused_recorded_and_cannot_preempt(
        setup: dict[str, Any]) -> None:
    ctl = controller(setup)
    by_bob = command("promote", to_version="v1", key=BOB, issued_by="operator:bob")
    events = feed(ctl, by_bob)
    assert events[0].status == "rejected" and events[0].prev_hash  # recorded in the chain
    assert events[0].reason == ("refused: issuer operator:bob may not touch model 'fraud' "
                                "(its models in the issuers file: churn-*)")
    assert setup["registry"].load("fraud")[0].champion is None
    # the same decision by an issuer allowed to make it still applies (same command id)
    by_alice = command("promote", to_version="v1", key=ALICE, issued_by="operator:alice")
    assert by_alice.command_id == by_bob.command_id
    events += feed(ctl, by_alice)
    assert events[-1].status == "applied" and chained(events)


def test_a_command_type_the_issuer_may_not_issue_is_refused(setup: dict[str, Any]) -> None:
    events = feed(controller(setup),
                  command("promote", to_version="v1", key=CAROL, issued_by="operator:carol"))
    assert events[0].status == "rejected"
    assert "issuer operator:carol may not issue promote commands" in events[0].reason


def test_a_claimed_issuer_signed_with_another_issuers_key_does_not_verify(
        setup: dict[str, Any]) -> None:
    events = feed(controller(setup),
                  command("promote", to_version="v1", key=BOB, issued_by="operator:alice"),
                  command("promote", to_version="v1", key=KEY, issued_by="operator:alice"),
                  command("promote", to_version="v1", key=None, issued_by="operator:alice"))
    assert [e.status for e in events] == ["rejected"] * 3
    assert "does not verify under issuer operator:alice's key" in events[0].reason
    assert "does not verify under issuer operator:alice's key" in events[1].reason
    assert events[2].reason == "refused: no signature"
    assert setup["registry"].load("fraud")[0].champion is None


def test_an_unknown_issuer_is_refused_even_with_the_command_key(setup: dict[str, Any]) -> None:
    events = feed(controller(setup),
                  command("promote", to_version="v1", key=KEY, issued_by="operator:mallory"),
                  command("promote", model="ghost", to_version="v1", key=KEY,
                          issued_by="operator:mallory"))
    assert events[0].reason == "refused: issuer 'operator:mallory' is not in the issuers file"
    assert events[0].prev_hash and events[1].prev_hash == ""  # unknown model: unchained
    # the worker's own issuers sign with the command key when the file does not list them
    events = feed(controller(setup), command("promote", to_version="v1", key=KEY,
                                             issued_by="retrain-hook"))
    assert events[0].status == "applied"


def test_feature_off_is_the_shared_key_as_before(tmp_path: Path) -> None:
    assert issuers.load(Settings()) is None
    registry = open_registry(str(tmp_path / "registry"))
    (tmp_path / "v1.bin").write_bytes(b"v1")
    registry.register("fraud", "v1", tmp_path / "v1.bin", model_card=CARD)
    ctl = Controller(registry, KEY, Policy())
    events = feed(ctl,
                  command("promote", to_version="v1", key=ALICE, issued_by="operator:alice"),
                  command("promote", to_version="v1", key=KEY, issued_by="operator:mallory"))
    assert [e.status for e in events] == ["rejected", "applied"]
    assert "not signed with the controller's key" in events[0].reason


def test_approve_is_authorised_against_the_approved_commands_model(
        setup: dict[str, Any]) -> None:
    ctl = controller(setup, parse_policy("models: {fraud: {decisions: {risk_tier: high}}}"))
    proposal = command("promote", to_version="v1", key=KEY)  # the policy agent's
    events = feed(ctl, proposal)
    assert events[0].status == "pending_approval"
    by_bob = command("approve", approves=proposal.command_id, key=BOB, issued_by="operator:bob")
    events += feed(ctl, by_bob)
    assert events[-1].status == "rejected" and "may not touch model 'fraud'" in events[-1].reason
    _, journal = setup["registry"].load("fraud")
    assert proposal.command_id in journal["pending"]  # still waiting
    by_carol = command("approve", approves=proposal.command_id, key=CAROL,
                       issued_by="operator:carol")  # may approve, though not promote
    events += feed(ctl, by_carol)
    assert events[-1].status == "applied" and "approved by operator:carol" in events[-1].reason
    assert setup["registry"].load("fraud")[0].champion == "v1" and chained(events)


@pytest.mark.parametrize(("text", "expected"), [
    ('"operator:a":\n  models: [x]\n', "i.yaml:2: operator:a: Value error, give exactly one of "
     "key_file and key_env"),
    ('"operator:a":\n  key_file: a\n  key_env: A\n', "i.yaml:2: operator:a: Value error, give "
     "exactly one of key_file and key_env"),
    ('"operator:a":\n  key_env: A\n  commands: [deploy]\n',
     "i.yaml:3: operator:a.commands.0: Input should be 'retrain', "),
    ('"operator:a":\n  key_env: A\n  model: [x]\n', "i.yaml:3: operator:a.model: Extra inputs"),
    ('"operator:a":\n  key_env: A\n  models: []\n', "i.yaml:3: operator:a.models: List should"),
    ('"operator a":\n  key_env: A\n', "i.yaml:1: operator a: not an issuer name"),
    ("- policy\n", "i.yaml: the top level must be a mapping"),
])
def test_a_bad_issuers_file_is_refused_with_line_field_and_reason(text: str,
                                                                  expected: str) -> None:
    with pytest.raises(IssuersError) as info:
        parse_issuers(text, source="i.yaml")
    assert expected in str(info.value)


def test_unusable_keys_stop_the_worker_with_file_line_and_field(
        setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    path, settings = setup["path"], setup["settings"]

    def refused(text: str) -> str:
        path.write_text(text)
        with pytest.raises(IssuersError) as info:
            issuers.load(settings, worker_key=KEY)
        return str(info.value)

    assert refused(ISSUERS.replace("bob.key", "missing.key")).startswith(
        f"{path}:6: operator:bob.key_file: cannot read issuer operator:bob's key file ")
    monkeypatch.delenv("CAROL_KEY")
    assert "9: operator:carol.key_env: the environment variable CAROL_KEY is not set" in \
        refused(ISSUERS)
    monkeypatch.setenv("CAROL_KEY", "short")
    assert "shorter than 16 characters" in refused(ISSUERS)
    monkeypatch.setenv("CAROL_KEY", ALICE.decode())
    assert "operator:carol.key_env: the same key as issuer operator:alice" in refused(ISSUERS)
    monkeypatch.setenv("CAROL_KEY", KEY.decode())
    assert "operator:carol.key_env: the command key (the worker's own)" in refused(ISSUERS)
    # and `driftline worker` refuses it before touching Kafka
    monkeypatch.setenv("DRIFTLINE_COMMAND_KEY", KEY.decode())
    assert cli.main(["worker", "--issuers", str(path), "--broker", "127.0.0.1:1"]) == 2


def test_the_policy_agent_operators_and_the_hook_sign_with_their_own_keys(
        setup: dict[str, Any]) -> None:
    settings, tmp = setup["settings"], setup["tmp"]
    assert issuers.signing_key(settings, "policy") == KEY  # no entry: the command key
    setup["path"].write_text(ISSUERS + '"policy":\n  key_file: policy.key\n')
    (tmp / "policy.key").write_text("policy-key-0123456789abcdef")
    assert issuers.signing_key(settings, "policy") == b"policy-key-0123456789abcdef"
    assert issuers.signing_key(settings, "retrain-hook") == KEY
    by_cli: Command = operator_command(settings, "rollback", "fraud", issuer="operator:alice",
                                       key_file=str(tmp / "alice.key"))
    assert by_cli.issued_by == "operator:alice" and verify(by_cli, ALICE)
    # without --key-file an issuer the local issuers file lists signs with its own key
    assert verify(operator_command(settings, "rollback", "fraud", issuer="bob"), BOB)
    args = cli.parser().parse_args(["command", "approve", "abc", "--model", "fraud",
                                    "--issuer", "ana", "--key-file", "/k"])
    assert (args.issuer, args.key_file) == ("ana", "/k")


def test_the_example_issuers_file_is_valid() -> None:
    from tests.conftest import ROOT

    example = ROOT / "deploy" / "issuers.example.yaml"
    file = parse_issuers(example.read_text(), source=str(example))
    assert set(file.issuers) == {"policy", "retrain-hook", "operator:alice", "operator:bob"}
    assert file.issuers["operator:bob"].refusal("operator:bob", "promote", "churn")
    assert file.issuers["operator:alice"].refusal("operator:alice", "promote", "fraud-eu") is None
