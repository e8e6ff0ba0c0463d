"""Training records that arrive before their model's trusted set wait, bounded, and are
screened when it arrives; beyond the bounds they are quarantined unscreened and counted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents import metrics
from agents.poisoning.handler import NO_TRUSTED_SET, PoisoningHandler
from schemas.policy import parse_policy
from tests.agents.poisoning.test_handler import MODEL, T0, handle, records, reference, routed

__all__ = ["reference"]  # the fixture, imported


def _handler(policy: str = "poisoning: {window: 60s, allowed_lateness: 0s}") -> PoisoningHandler:
    return PoisoningHandler(
        parse_policy(policy),
        training_topic="training-data",
        references_topic="references",
        max_message_bytes=1 << 24,
    )


def _batch(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"events": rows})


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"model": MODEL}) or 0.0


def test_records_before_the_trusted_set_are_screened_in_order_when_it_arrives(
    reference: bytes,
) -> None:
    handler, table = _handler(), {}
    before = {k: _sample(f"driftline_poisoning_{k}_total") for k in ("held", "released")}
    first, second = records(2, 40, T0, "crm"), records(3, 60, T0 + 5, "shop")
    for offset, rows in enumerate((first, second)):
        out = handle(handler, table, "training-data", _batch(rows), offset)
        assert out.routed == [] and out.reports == [] and out.counted == len(rows)
    assert _sample("driftline_poisoning_waiting") == 100

    out = handle(handler, table, "references", reference, 2)
    clean = routed(out, "training-data.clean")
    quarantined = routed(out, "training-data.quarantine")
    assert len(clean) + len(quarantined) == 100
    assert not any(NO_TRUSTED_SET in q["reasons"] for q in quarantined)
    assert [r["record_id"] for r in clean] == [
        r["record_id"]
        for r in first + second
        if r["record_id"] not in {q["record"]["record_id"] for q in quarantined}
    ]
    assert not any(k.startswith((b"h|", b"hq|")) for k in table), "nothing is left held"
    assert _sample("driftline_poisoning_held_total") - before["held"] == 100
    assert _sample("driftline_poisoning_released_total") - before["released"] == 100
    assert _sample("driftline_poisoning_waiting") == 0

    closer = handle(handler, table, "training-data", _batch(records(4, 5, T0 + 120, "crm")), 3)
    reports = out.reports + closer.reports
    assert sum(r.held for r in reports) == sum(r.released for r in reports) == 100
    assert sum(r.unscreened for r in reports) == 0
    assert sum(r.sources["shop"].seen for r in reports if "shop" in r.sources) == 60
    (report,) = [r for r in reports if r.window_start.timestamp() == T0]
    assert report.sources["crm"].seen == 40 and report.held == 40 + report.sources["shop"].seen
    assert f"{report.held} records waited for the trusted set" in report.reason


def test_held_records_survive_a_restart_in_the_table(reference: bytes) -> None:
    table: dict[bytes, bytes] = {}
    handle(_handler(), table, "training-data", _batch(records(2, 30, T0, "crm")))
    out = handle(_handler(), table, "references", reference, 1)  # a new process
    assert (
        len(routed(out, "training-data.clean")) + len(routed(out, "training-data.quarantine")) == 30
    )


def test_beyond_the_record_cap_the_oldest_leave_unscreened_and_are_reported() -> None:
    handler = _handler("poisoning: {window: 60s, allowed_lateness: 0s, hold_max_records: 50}")
    table: dict[bytes, bytes] = {}
    before = _sample("driftline_poisoning_unscreened_total")
    oldest = records(2, 30, T0, "crm")
    assert handle(handler, table, "training-data", _batch(oldest)).routed == []
    out = handle(handler, table, "training-data", _batch(records(3, 30, T0 + 1, "crm")), 1)
    gone = routed(out, "training-data.quarantine")
    assert [q["record"]["record_id"] for q in gone] == [r["record_id"] for r in oldest]
    assert all(q["reasons"] == [NO_TRUSTED_SET] for q in gone)
    (report,) = out.reports
    assert report.unscreened == report.held == 30 and report.released == 0
    assert report.sources["crm"].quarantined == {NO_TRUSTED_SET: 30}
    assert report.status == "suspect" and "hold_max_records (50)" in report.reason
    assert _sample("driftline_poisoning_unscreened_total") - before == 30
    assert _sample("driftline_poisoning_waiting") == 30


def test_held_records_leave_once_their_model_moved_on_past_the_age_limit() -> None:
    handler = _handler("poisoning: {window: 60s, allowed_lateness: 0s, hold_max_age: 10m}")
    table: dict[bytes, bytes] = {}
    handle(handler, table, "training-data", _batch(records(2, 20, T0, "crm")))
    within = handle(handler, table, "training-data", _batch(records(3, 5, T0 + 500, "crm")), 1)
    assert within.routed == []  # 500 s of event time later: still waiting
    past = handle(handler, table, "training-data", _batch(records(4, 5, T0 + 700, "crm")), 2)
    gone = routed(past, "training-data.quarantine")
    assert len(gone) == 20 and all(q["reasons"] == [NO_TRUSTED_SET] for q in gone)
    assert "hold_max_age (600 s of event time)" in past.reports[0].reason


@pytest.mark.parametrize("cap", [0])
def test_a_cap_of_zero_quarantines_at_once(cap: int) -> None:
    handler = _handler(f"poisoning: {{window: 60s, hold_max_records: {cap}}}")
    out = handle(handler, {}, "training-data", _batch(records(2, 10, T0, "crm")))
    assert len(routed(out, "training-data.quarantine")) == 10 and out.reports[0].unscreened == 10
