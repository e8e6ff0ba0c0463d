"""The policy agent's handler: reports in, signed commands out, state in its table."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from agents.config import Settings
from agents.inputs.admission import models_key
from agents.inputs.codec import Origin
from agents.policy.agent import PolicyHandler, count_window_warnings
from schemas.commands import Command
from schemas.policy import Policy, load_policy, parse_policy
from streams.policy.commands import canonical, verify
from tests.streams.policy.cases import deployed, drift, kpi

KEY = b"0123456789abcdef0123456789abcdef"


def test_reports_become_signed_commands_and_state_survives_in_the_table() -> None:
    handler = PolicyHandler(Policy(), KEY, Settings(topic_prefix="t."))
    table: dict[bytes, bytes] = {}
    sent: list[Command] = []
    inputs = [("t.deployments", deployed("v1", canary="v2", weight=0.1))]
    inputs += [("t.drift", drift(i, "drift")) for i in range(3)]
    inputs += [("t.kpi", kpi(0)), ("t.kpi", kpi(0, variant="canary", version="v2",
                                                 accuracy=0.7))]
    for offset, (topic, report) in enumerate(inputs):
        out = handler.handle(report.model_dump_json().encode(), Origin(topic, 0, offset), table)
        assert not out.dead
        sent += out.reports  # type: ignore[arg-type]
    assert [(c.type, c.from_version) for c in sent] == [("retrain", "v1"), ("rollback", "v2")]
    assert all(verify(c, KEY) for c in sent)
    assert set(table) == {b"p|fraud", models_key(0)}


def test_a_report_that_does_not_parse_is_dead_lettered() -> None:
    handler = PolicyHandler(Policy(), KEY, Settings())
    out = handler.handle(b'{"model": "fraud"}', Origin("kpi", 0, 3), {})
    assert out.reports == [] and len(out.dead) == 1
    assert "not a valid KpiReport" in out.dead[0].error


def _retrain(handler: PolicyHandler) -> Command:
    """The retrain the handler issues after three drift windows of v1."""
    table: dict[bytes, bytes] = {}
    sent: list[Command] = []
    inputs = [("deployments", deployed("v1"))] + [("drift", drift(i, "drift")) for i in range(3)]
    for offset, (topic, report) in enumerate(inputs):
        out = handler.handle(report.model_dump_json().encode(), Origin(topic, 0, offset), table)
        sent += out.reports  # type: ignore[arg-type]
    assert [c.type for c in sent] == ["retrain"]
    return sent[0]


def test_each_command_carries_the_policy_file_it_was_decided_under(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"decisions:\r\n  retrain: {drift_windows: 3}\r\n")  # hashed as bytes
    command = _retrain(PolicyHandler(load_policy(str(path)), KEY, Settings(policy=str(path))))
    assert command.policy_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify(command, KEY)  # signed with the rest: another hash no longer verifies
    other = command.model_copy(update={"policy_sha256": "0" * 64})
    assert not verify(other, KEY)
    assert verify(Command.model_validate_json(command.model_dump_json()), KEY)
    # the built-in defaults: no file, no hash, and no field in the JSON
    plain = _retrain(PolicyHandler(Policy(), KEY, Settings()))
    assert plain.policy_sha256 is None and "policy_sha256" not in plain.model_dump(mode="json")
    assert plain.command_id == command.command_id  # the hash is not a decision input


def test_a_command_signed_before_commands_recorded_the_policy_still_verifies() -> None:
    """Signed over its JSON as it was then, without the field: the body and so the
    signature must come out byte for byte."""
    old = {
        "command_id": "c1", "type": "rollback", "model": "fraud", "from_version": "v2",
        "to_version": None, "canary_weight": None, "approves": None, "reason": "r",
        "evidence": [{"kind": "kpi", "window_start": 1}], "approval_required": False,
        "issued_by": "operator:ana", "issued_at": "2026-11-01T00:00:00Z",
    }  # fmt: skip
    old["signature"] = hmac.new(KEY, canonical(old), hashlib.sha256).hexdigest()
    command = Command.model_validate(old)
    assert verify(command, KEY)
    assert command.model_dump(mode="json") == old
    assert verify(Command.model_validate_json(command.model_dump_json()), KEY)


def test_kpi_count_windows_warn_of_canary_weights_too_small_to_compare() -> None:
    # A canary's count window is compared with the champion's overlapping windows, of
    # which the policy agent keeps MAX_POOLED: at weight 0.01 one canary window spans
    # about 100 of them, and its comparison is never made; the worker says so at start.
    assert count_window_warnings(parse_policy("kpi: {window: 60s}\n")) == []
    assert count_window_warnings(parse_policy(
        "kpi: {window: {events: 2000}, min_labeled: 50}\n")) == []  # steps 0.1, 0.5, 1.0
    policy = parse_policy(
        "kpi: {window: {events: 2000}, min_labeled: 50}\n"
        "decisions: {delivery: {canary_steps: [0.01, 0.5, 1.0]}}\n"
        "models:\n"
        "  a: {drift: {window: 30s}}\n"  # no kpi or decisions of its own: the default's
        "  b: {kpi: {window: 5m}}\n"  # windows of time pair by their start
        "  c: {decisions: {delivery: {canary_steps: [0.1, 1.0]}}}\n"
        "  d: {decisions: {shadow: {healthy_windows: 2, canary_weight: 0.005}}}\n")
    warnings = count_window_warnings(policy)
    assert [w.split(":")[0] for w in warnings] == ["the default policy", "model d"]
    assert "(2000 predictions) and a canary at weight 0.01 spans about 100" in warnings[0]
    assert "weight 0.005 spans about 200" in warnings[1]
