"""The KPI worker imports its concept detectors before the first label needs them.

River's detectors take 2-3 s to import (``streams.kpi.concept.DETECTORS``); imported
at the first joined label, they stalled the label partition (a quarter of
``driftline bench --labels``' label phase). The worker's handler imports them at its
first message (``prepare``): predictions come before labels.
"""

from __future__ import annotations

import sys

import orjson

from agents.inputs.codec import Origin
from agents.kpi.agent import import_detectors
from agents.kpi.handler import KpiHandler
from schemas.policy import parse_policy

POLICY = parse_policy("kpi: {window: 60s, concept_detector: page_hinkley}\n")


def test_prepare_runs_once_at_the_first_message() -> None:
    calls: list[int] = []
    handler = KpiHandler(policy=POLICY, predictions_topic="p", labels_topic="l",
                         max_message_bytes=1 << 20, prepare=lambda: calls.append(1))
    assert calls == []
    table: dict[bytes, bytes] = {}
    for offset in range(3):
        raw = orjson.dumps({"request_id": f"r{offset}", "model": "m", "ts": 1_800_000_000,
                            "label": 1})
        handler.handle(raw, Origin("l", 0, offset, b"m"), table)
    assert calls == [1]


def test_the_workers_prepare_imports_the_policys_detectors() -> None:
    import_detectors(POLICY)()
    assert "river.drift" in sys.modules
