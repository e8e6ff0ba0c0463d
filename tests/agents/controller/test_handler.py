"""The deployment controller on a real file registry: signatures, transitions, exactly once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from agents.config import Settings
from agents.controller.hooks import RetrainHook
from agents.controller.registry import open_registry
from agents.inputs.codec import Origin
from schemas.commands import Command
from schemas.policy import parse_policy
from streams.policy.chain import verify_chain
from tests.agents.controller.cards import CARD
from tests.agents.controller.conftest import command, controller, feed


def test_a_canary_is_deployed_stepped_promoted_and_every_event_is_chained(registry: Any) -> None:
    ctl = controller(registry)
    events = feed(ctl,
                  command("promote", to_version="v1"),
                  command("canary", to_version="v2", canary_weight=0.1),
                  command("set_canary_weight", to_version="v2", canary_weight=0.5),
                  command("promote", from_version="v1", to_version="v2"))
    assert [e.status for e in events] == ["applied"] * 4
    state, _ = registry.load("fraud")
    assert (state.champion, state.canary, state.last_known_good) == ("v2", None, "v1")
    assert events[-1].state == state
    check = verify_chain([e.model_dump(mode="json") for e in events])
    assert check.intact and check.events == 4


def test_forged_and_unsigned_commands_are_refused_and_cannot_preempt_the_real_one(
        registry: Any) -> None:
    ctl = controller(registry)
    forged = command("promote", to_version="v3", key=b"not-the-key-at-all-0123456789")
    unsigned = command("promote", to_version="v3", key=None)
    altered = command("promote", to_version="v1").model_copy(update={"to_version": "v3"})
    events = feed(ctl, forged, unsigned, altered)
    assert [e.status for e in events] == ["rejected"] * 3
    assert "does not verify" in events[0].reason and "no signature" in events[1].reason
    assert "does not verify" in events[2].reason
    assert registry.load("fraud")[0].champion is None
    # the genuine command with the forged one's id still applies
    genuine = feed(ctl, command("promote", to_version="v3"))
    assert genuine[0].command_id == forged.command_id and genuine[0].status == "applied"
    assert verify_chain([e.model_dump(mode="json") for e in events + genuine]).intact


def test_commands_that_make_no_sense_are_refused_with_the_reason(registry: Any) -> None:
    ctl = controller(registry)
    events = feed(ctl, command("promote", to_version="v1"), command("rollback"),
                  command("promote", to_version="v9"), command("canary", to_version="v1"),
                  command("promote", model="ghost", to_version="v1"))
    assert [e.status for e in events] == ["applied", "rejected", "rejected", "rejected",
                                          "rejected"]
    assert "no previous good version" in events[1].reason
    assert "no such version" in events[2].reason
    assert "already the champion" in events[3].reason
    assert "no model 'ghost'" in events[4].reason and events[4].prev_hash == ""
    check = verify_chain([e.model_dump(mode="json") for e in events])
    assert check.intact and check.unchained == 1


def test_a_redelivered_command_is_applied_once_even_across_a_restart(registry: Any) -> None:
    first = controller(registry)
    promote = command("promote", to_version="v1")
    canary = command("canary", to_version="v2", canary_weight=0.1)
    rollback = command("rollback", from_version="v2", nonce="op-1")
    events = feed(first, promote, canary, rollback, at=100)
    # Kafka hands all three again to a restarted controller (no offset commit):
    # only the newest's event is published again, identical (it may have died
    # with the process); the older ones' were acknowledged already.
    restarted = controller(registry)  # the controller keeps nothing but the registry
    again = feed(restarted, promote, canary, rollback, at=100)
    assert again == [events[-1]]
    # The same command in a new message (sent twice, or replayed): refused, recorded.
    later = feed(restarted, canary, at=103)
    assert later[0].status == "rejected" and "already decided" in later[0].reason
    state, _ = registry.load("fraud")
    assert (state.champion, state.canary) == ("v1", None)
    check = verify_chain([e.model_dump(mode="json") for e in events + again + later])
    assert check.intact and check.duplicates == 1


def test_a_tampered_artifact_is_never_promoted_or_restored(registry: Any, tmp_path: Path) -> None:
    ctl = controller(registry)
    feed(ctl, command("promote", to_version="v1"), command("promote", to_version="v2"))
    stored = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path
              and p.read_bytes() == b"weights of v1"]
    assert stored, "the registry keeps a copy of the artifact"
    stored[0].write_bytes(b"weights of an attacker")
    events = feed(ctl, command("rollback", from_version="v2"),
                  command("promote", from_version="v2", to_version="v1"))
    assert [e.status for e in events] == ["rejected", "rejected"]
    assert all("checksum" in e.reason or "sha256" in e.reason.lower() for e in events)
    assert registry.load("fraud")[0].champion == "v2"


def test_high_risk_models_wait_for_an_operators_approval(registry: Any) -> None:
    policy = parse_policy("models: {fraud: {decisions: {risk_tier: high}}}")
    ctl = controller(registry, policy)
    feed(ctl, command("promote", to_version="v1", issued_by="operator:ana"))
    proposal = command("promote", from_version="v1", to_version="v2")  # from the policy agent
    events = feed(ctl, proposal)
    assert events[0].status == "pending_approval"
    assert registry.load("fraud")[0].champion == "v1"
    events += feed(ctl, command("approve", approves="nope", issued_by="operator:ana"),
                   command("approve", approves=proposal.command_id, issued_by="operator:ana"))
    assert [e.status for e in events] == ["pending_approval", "rejected", "applied"]
    assert "approved by operator:ana" in events[-1].reason
    assert registry.load("fraud")[0].champion == "v2"


def test_each_event_carries_the_policy_its_command_was_decided_under(registry: Any) -> None:
    """Through a wait for approval too (the pending command is kept whole); an operator's
    command has none, and its event has no such field, so it hashes as events did before."""
    policy = parse_policy("models: {fraud: {decisions: {risk_tier: high}}}")
    ctl = controller(registry, policy)
    digest = "ab" * 32
    proposal = command("promote", to_version="v2", policy_sha256=digest)
    events = feed(ctl, command("promote", to_version="v1", issued_by="operator:ana"), proposal,
                  command("approve", approves=proposal.command_id, issued_by="operator:ana"))
    assert [e.status for e in events] == ["applied", "pending_approval", "applied"]
    assert [e.policy_sha256 for e in events] == [None, digest, digest]
    as_json = [e.model_dump(mode="json") for e in events]
    assert "policy_sha256" not in as_json[0] and as_json[2]["policy_sha256"] == digest
    assert verify_chain(as_json).intact
    changed = {**as_json[2], "policy_sha256": "cd" * 32}  # the hash covers it
    assert not verify_chain([*as_json[:2], changed]).intact


def test_retrain_starts_the_hook_and_the_event_says_so(registry: Any, tmp_path: Path) -> None:
    marker = tmp_path / "retrained.json"
    script = tmp_path / "hook.py"
    script.write_text("import os, pathlib\n"
                      f"pathlib.Path({str(marker)!r}).write_text(os.environ['DRIFTLINE_COMMAND'])\n")
    policy = parse_policy(f"decisions: {{retrain: {{hook_command: '{sys.executable} {script}'}}}}")
    ctl = controller(registry, policy,
                     hook=RetrainHook(policy, Settings()))
    events = feed(ctl, command("promote", to_version="v1"),
                  command("retrain", from_version="v1"))
    assert events[-1].status == "applied" and "retrain hook started" in events[-1].reason
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Command.model_validate_json(marker.read_text()).type == "retrain"


def test_a_message_that_is_not_a_command_is_dead_lettered(registry: Any) -> None:
    outcome = controller(registry).handle(b'{"type": "promote"}', Origin("commands", 0, 7), {})
    assert outcome.reports == [] and len(outcome.dead) == 1
    assert "not a valid Command" in outcome.dead[0].error and outcome.dead[0].offset == 7


def test_the_journal_stays_bounded_and_fits_the_registry(tmp_path: Path) -> None:
    """On the file registry only: MLflow takes ~0.13 s per commit (several tag writes
    on SQLite), so 550 commits would take over a minute; the MLflow registry's own
    tests store journals far larger than this bound."""
    from agents.controller.handler import MAX_DECIDED, MAX_PENDING

    registry = open_registry(str(tmp_path / "registry"))
    artifact = tmp_path / "m.bin"
    artifact.write_bytes(b"m")
    registry.register("fraud", "v1", artifact, model_card=CARD)

    ctl = controller(registry, parse_policy("decisions: {risk_tier: high}"))
    holds = [command("hold", nonce=str(i), issued_by="operator:ana")
             for i in range(MAX_DECIDED + 50)]
    events = feed(ctl, *holds)
    assert all(e.status == "applied" for e in events)
    proposals = [command("retrain", nonce=f"p{i}",
                         evidence=[{"kind": "drift", "why": ["x" * 200] * 10}])
                 for i in range(MAX_PENDING + 1)]
    events = feed(ctl, *proposals)
    assert [e.status for e in events] == ["pending_approval"] * MAX_PENDING + ["rejected"]
    _, journal = registry.load("fraud")
    assert len(journal["decided"]) == MAX_DECIDED and len(journal["pending"]) == MAX_PENDING
    assert holds[-1].command_id in journal["decided"]
    assert holds[0].command_id not in journal["decided"]


def test_the_verdict_endpoint_answers_argo_and_flagger(registry: Any) -> None:
    import json
    import urllib.error
    import urllib.request

    from agents.controller import verdict

    ctl = controller(registry)
    feed(ctl, command("promote", to_version="v1"),
         command("canary", to_version="v2", canary_weight=0.1))
    server = verdict.serve(registry, port=0, token="s3cret", host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def call(path: str, body: dict[str, Any] | None = None, token: str = "s3cret",
             raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data,
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        assert call("/verdict/fraud/v2")[1]["verdict"] == "pass"
        assert call("/verdict/fraud/v3")[1]["verdict"] == "pending"
        assert call("/verdict/fraud/v9")[0] == 404
        assert call("/verdict/fraud/v2", token="wrong")[0] == 401
        assert call("/flagger", {"metadata": {"model": "fraud", "version": "v2"}})[0] == 200
        feed(ctl, command("rollback", from_version="v2"))
        status, body = call("/verdict/fraud/v2")
        assert (status, body["verdict"]) == (200, "fail") and "rolled back" in body["reason"]
        assert call("/flagger", {"metadata": {"model": "fraud", "version": "v2"}})[0] == 412
        assert call("/flagger", {"metadata": {}})[0] == 400
        assert call("/flagger", raw=b"x" * (verdict.MAX_BODY + 1))[0] == 413
    finally:
        server.shutdown()


def test_the_verdict_endpoint_limits_the_request_rate(registry: Any) -> None:
    import urllib.error
    import urllib.request

    from agents.controller import verdict

    server = verdict.serve(registry, port=0, host="127.0.0.1", rate=1.0)
    codes = []
    try:
        for _ in range(5):
            url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    codes.append(answer.status)
            except urllib.error.HTTPError as err:
                codes.append(err.code)
    finally:
        server.shutdown()
    assert codes[0] == 200 and 429 in codes


def test_retrain_posts_the_command_to_the_webhook(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/retrain"
        policy = parse_policy(f"decisions: {{retrain: {{hook_url: '{url}'}}}}")
        hook = RetrainHook(policy, Settings())
        answer = hook.start(command("retrain", from_version="v1"))
        assert answer == "retrain webhook answered 202"
        assert Command.model_validate_json(received[0]).from_version == "v1"
        server.shutdown()
        server.server_close()  # nothing listens any more
        failed = hook.start(command("retrain", from_version="v1"))
        assert failed.startswith("the retrain webhook failed")
    finally:
        server.server_close()
