"""The poisoning guard's handler: trusted set from a reference, screening, routing, reports."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.inputs.codec import Origin
from agents.operator import reference_build
from agents.poisoning.handler import NO_TRUSTED_SET, PoisoningHandler
from schemas.policy import parse_policy

MODEL = "fraud-detector"
POLICY = parse_policy("poisoning: {window: 60s, allowed_lateness: 0s}")
T0 = 1_800_000_000 - 1_800_000_000 % 60


def records(seed: int, n: int, start_s: float, source: str) -> list[dict[str, Any]]:
    traffic = simulate.FraudTraffic(seed=seed, model=MODEL)
    preds, labels = traffic.events_with_labels(n, start_s=start_s, span_s=60, label_delay_s=0)
    out = simulate.training_records(labels, preds, source=source)
    for r in out:
        r["record_id"] = f"{source}-{r['record_id']}"
    return out


@pytest.fixture
def reference(tmp_path: Path) -> bytes:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**r["features"], "label": r["label"]})
                                for r in records(1, 6000, T0 - 3600, "history")))
    profile = reference_build.build(path, model=MODEL, version="v1",
                                    policy=POLICY.drift_for(MODEL), trusted_rows=3000)
    assert profile.trusted is not None and len(profile.trusted.labels) == 3000
    return profile.model_dump_json().encode()


def handle(handler: PoisoningHandler, table: dict[bytes, bytes], topic: str, value: bytes,
           offset: int = 0) -> Any:
    return handler.handle(value, Origin(topic, 0, offset, MODEL.encode()), table)


def routed(outcome: Any, name: str) -> list[dict[str, Any]]:
    docs = [orjson.loads(v) for n, _, v in outcome.routed if n == name]
    return [e for d in docs for e in d.get("events", [d])]


def test_records_are_screened_against_the_trusted_set_and_a_flood_is_quarantined(
        reference: bytes) -> None:
    handler = PoisoningHandler(POLICY, training_topic="training-data",
                               references_topic="references", max_message_bytes=1 << 24)
    table: dict[bytes, bytes] = {}
    early = handle(handler, table, "training-data",
                   orjson.dumps({"events": records(2, 50, T0, "crm")}))
    assert early.routed == [] and early.reports == []  # held until the trusted set arrives

    released = handle(handler, table, "references", reference)
    screened = routed(released, "training-data.clean") + routed(
        released, "training-data.quarantine")
    assert len(screened) == 50 and not any(
        NO_TRUSTED_SET in q["reasons"] for q in routed(released, "training-data.quarantine"))
    honest = records(3, 1500, T0, "crm") + records(4, 1500, T0, "shop")
    flood = [dict(records(5, 1, T0, "bot")[0], record_id=f"bot-{i}") for i in range(300)]
    out = handle(handler, table, "training-data", orjson.dumps({"events": honest + flood}), 1)
    clean = routed(out, "training-data.clean")
    quarantined = routed(out, "training-data.quarantine")
    assert len(clean) + len(quarantined) == len(honest) + len(flood)
    from_bot = [q for q in quarantined if q["record"]["source"] == "bot"]
    assert len(from_bot) >= 290 and all("duplicate_flood" in q["reasons"] for q in from_bot[1:])
    honest_held = [q for q in quarantined if q["record"]["source"] != "bot"]
    assert len(honest_held) <= 0.02 * len(honest), Counter(
        r for q in honest_held for r in q["reasons"])
    assert out.reports == []  # the window is still open

    later = handle(handler, table, "training-data",
                   orjson.dumps({"events": records(6, 100, T0 + 120, "crm")}), 2)
    report = next(r for r in later.reports if r.window_start.timestamp() == T0)
    assert report.status == "campaign" and "bot" in report.reason
    assert report.sources["bot"].quarantined.get("duplicate_flood", 0) >= 290
    assert report.sources["crm"].seen == 1550  # with the 50 that waited for the trusted set
    assert report.held == report.released == 50 and report.unscreened == 0


def test_a_restarted_handler_rebuilds_its_guard_from_the_table(reference: bytes) -> None:
    table: dict[bytes, bytes] = {}
    first = PoisoningHandler(POLICY, training_topic="training-data",
                             references_topic="references", max_message_bytes=1 << 24)
    handle(first, table, "references", reference)
    second = PoisoningHandler(POLICY, training_topic="training-data",
                              references_topic="references", max_message_bytes=1 << 24)
    out = handle(second, table, "training-data",
                 orjson.dumps({"events": records(7, 200, T0, "crm")}))
    assert len(routed(out, "training-data.clean")) >= 190
