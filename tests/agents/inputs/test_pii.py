"""Fields named as PII never reach state, reports or references: keyed tokens replace them."""

from __future__ import annotations

from pathlib import Path

import orjson

from agents.dev import simulate
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.inputs.pii import Pseudonymizer
from agents.kpi.handler import KpiHandler
from agents.operator import reference_build
from schemas.policy import parse_policy

KEY = b"0123456789abcdef0123456789abcdef"
POLICY = parse_policy("""
pii: [country, customer_email]
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 500}
kpi: {window: 60s, allowed_lateness: 0s, min_labeled: 10, segments: [country]}
""")
T0 = 1_800_000_000 - 1_800_000_000 % 60
ORIGIN = Origin("predictions", 0, 0, b"fraud-detector")


def test_tokens_are_keyed_stable_and_leave_other_fields_alone() -> None:
    pii = Pseudonymizer(["email"], KEY)
    rows = [{"features": {"email": "ana@example.org", "amount": 3.0},
             "segment": {"email": "ana@example.org"}},
            {"features": {"email": "ana@example.org", "amount": None}}]
    pii.apply(rows)
    token = rows[0]["features"]["email"]
    assert token.startswith("pii:") and len(token) == 20
    assert rows[1]["features"]["email"] == token == rows[0]["segment"]["email"]
    assert rows[0]["features"]["amount"] == 3.0
    assert Pseudonymizer(["email"], b"another-key-0123456789").token("ana@example.org") != token
    assert pii.token(None) is None


def test_no_state_report_or_reference_holds_the_raw_values(tmp_path: Path) -> None:
    traffic = simulate.FraudTraffic(seed=3)
    tables: dict[str, dict[bytes, bytes]] = {"drift": {}, "kpi": {}}
    drift = DriftHandler(policy=POLICY, predictions_topic="predictions", features_topic="f",
                         max_message_bytes=1 << 24, references_topic="r", pii_key=KEY)
    kpi = KpiHandler(policy=POLICY, predictions_topic="predictions", labels_topic="labels",
                     max_message_bytes=1 << 24, pii_key=KEY)
    reports = []
    for w in range(4):
        preds, labels = traffic.events_with_labels(1000, start_s=T0 + 60 * w, span_s=60,
                                                   label_delay_s=0)
        for event in preds:
            event["features"]["customer_email"] = f"user{event['request_id']}@example.org"
        raw = orjson.dumps({"events": preds})
        reports += drift.handle(raw, ORIGIN, tables["drift"]).reports
        reports += kpi.handle(raw, ORIGIN, tables["kpi"]).reports
        reports += kpi.handle(orjson.dumps({"events": labels}),
                              Origin("labels", 0, w, b"fraud-detector"), tables["kpi"]).reports
    assert reports, "windows were reported"
    everything = b"".join(r.model_dump_json().encode() for r in reports)
    everything += b"".join(v for t in tables.values() for v in t.values())
    for raw_value in (b'"DE"', b'"FR"', b"@example.org"):
        assert raw_value not in everything, raw_value
    assert b"pii:" in everything
    kpi_report = next(r for r in reports if getattr(r, "segments", None))
    assert all(v.startswith("pii:") or v == "other" for v in kpi_report.segments["country"])

    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({"country": c, "amount": float(i), "label": i % 2})
                                for i, c in enumerate(["DE", "FR"] * 300)))
    profile = reference_build.build(data, model="fraud-detector", version="v1",
                                    policy=POLICY.drift_for("fraud-detector"),
                                    pii=Pseudonymizer(POLICY.pii, KEY))
    text = profile.model_dump_json()
    assert '"DE"' not in text and Pseudonymizer(POLICY.pii, KEY).token("DE") in text
