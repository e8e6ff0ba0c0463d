"""The policy agent's handler: reports in, signed commands out, state in its table."""

from __future__ import annotations

from agents.config import Settings
from agents.inputs.admission import models_key
from agents.inputs.codec import Origin
from agents.policy.agent import PolicyHandler
from schemas.commands import Command
from schemas.policy import Policy
from streams.policy.commands import verify
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
