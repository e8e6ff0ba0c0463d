"""The inventory's join of registry and topics, and its JSON, CSV and HTML forms.

The topics are stood in for by a fake ``scan`` (the bounded reader itself runs
against the real broker in tests/e2e/test_inventory.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import Settings
from agents.controller.registry import FileRegistry
from agents.operator import inventory, inventory_render
from agents.operator.audit_report import CSP
from schemas.commands import DeploymentState
from streams.policy.chain import GENESIS, event_hash

HIGH = {"owner": "risk-ml", "risk_tier": "high", "purpose": "fraud scores",
        "training_data": {"description": "payments 2026-01", "sha256": "ab" * 32},
        "evaluation": {"roc_auc": 0.91, "dataset": "holdout"}}
MINIMAL = {"owner": "growth <script>alert(1)</script>", "risk_tier": "minimal",
           "purpose": "=SUM(1+1)"}


@dataclass
class Msg:
    _topic: str
    _value: bytes
    _key: bytes | None = None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key


def _chain(model: str, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events, prev = [], GENESIS
    for i, state in enumerate(states):
        event = {"model": model, "command_id": f"c{i}", "action": "promote", "status": "applied",
                 "reason": "by hand", "state": state, "at": f"2026-12-0{i + 1}T10:00:00+00:00",
                 "prev_hash": prev}
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def _report(kind: str, model: str, version: str | None, end: str, status: str,
            **extra: Any) -> dict[str, Any]:
    doc = {"model": model, "window_start": end.replace(":05:", ":04:"), "window_end": end,
           "status": status, **extra}
    if version is not None:
        doc["model_version"] = version
    return doc


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, FileRegistry,
                                                                    dict[str, list[Msg]]]:
    registry = FileRegistry(tmp_path / "registry")
    artifact = tmp_path / "m.bin"
    artifact.write_bytes(b"weights")
    registry.register("fraud", "v1", artifact, model_card=HIGH)
    registry.register("fraud", "v2", artifact, model_card={**HIGH, "evaluation": None})
    registry.register("churn", "v1", artifact, model_card=MINIMAL)
    legacy = tmp_path / "registry" / "old" / "versions" / "v1" / "version.json"
    registry.register("old", "v1", artifact, model_card=MINIMAL)
    record = json.loads(legacy.read_text())
    legacy.write_text(json.dumps({**record, "model_card": {"note": "from 2025"}}))
    registry.commit("fraud", DeploymentState(champion="v1", canary="v2", canary_weight=0.2), {})
    policy = tmp_path / "policy.yaml"
    policy.write_text("decisions: {risk_tier: medium}\n")
    settings = Settings(broker="x:1", registry=str(tmp_path / "registry"), policy=str(policy))
    state = {"champion": "v1", "canary": "v2", "canary_weight": 0.2, "last_known_good": None}
    trail = _chain("fraud", [{**state, "canary": None, "canary_weight": 0.0}, state])
    topics: dict[str, list[Msg]] = {
        "deployments": [Msg("deployments", orjson.dumps(e)) for e in trail],
        "drift": [Msg("drift", orjson.dumps(d)) for d in (
            _report("drift", "fraud", "v1", "2026-12-03T10:05:00+00:00", "drift"),
            _report("drift", "fraud", "v1", "2026-12-03T09:05:00+00:00", "ok"),  # older, later
        )],
        "kpi": [Msg("kpi", orjson.dumps(d)) for d in (
            _report("kpi", "fraud", "v2", "2026-12-03T10:05:00+00:00", "ok", variant="canary",
                    revision=0, metrics={"accuracy": 0.9}),
            _report("kpi", "fraud", "v2", "2026-12-03T10:05:00+00:00", "breach",
                    variant="canary", revision=1, metrics={"accuracy": 0.7}),
            _report("kpi", "churn", "v1", "2026-12-03T10:05:00+00:00", "ok", variant="shadow"),
        )],
        "poisoning": [Msg("poisoning", orjson.dumps(
            _report("poisoning", "churn", None, "2026-12-03T10:05:00+00:00", "suspect")))],
        "predictions": [Msg("predictions", b'{"events": []}', b"ghost"),
                        Msg("predictions", orjson.dumps({"events": [{"model": "unkeyed"}]}))],
        "training-data.quarantine": [Msg("training-data.quarantine", orjson.dumps(q)) for q in (
            {"record": {"model": "churn", "record_id": "r1"}},
            {"record": {"model": "churn", "record_id": "r2"}},
            {"record": {"model": "churn", "record_id": "r2"}},  # redelivered
            {"record": {"model": "churn", "record_id": "r1"}, "released_by": "operator:x"},
            {"record": {"model": "churn", "record_id": "r3"}},
        )],
    }

    def fake_scan(bootstrap: str, names: list[str], *, last_n: int | None) -> Iterator[Msg]:
        for name in names:
            yield from topics[name]

    monkeypatch.setattr(inventory, "scan", fake_scan)
    return settings, registry, topics


def test_the_inventory_joins_registry_trail_reports_and_quarantine(setup: Any) -> None:
    settings, registry, _ = setup
    found = inventory.collect(settings, registry)
    by_model = {m.model: m for m in found.models}
    assert list(by_model) == ["churn", "fraud", "old", "ghost", "unkeyed"]
    fraud = by_model["fraud"]
    assert (fraud.owner, fraud.risk_tier, fraud.purpose) == ("risk-ml", "high", "fraud scores")
    assert (fraud.champion, fraud.canary, fraud.canary_weight, fraud.state_from) == (
        "v1", "v2", 0.2, "deployments")
    v1, v2 = fraud.versions
    assert (v1.serving, v1.weight, v2.serving, v2.weight) == ("champion", 0.8, "canary", 0.2)
    assert v1.drift is not None and v1.drift["status"] == "drift"  # newest window, not last read
    assert [(r["variant"], r["status"], r["revision"]) for r in v2.kpi] == [("canary", "breach", 1)]
    assert v1.evaluation == {"roc_auc": 0.91}
    assert (v1.training_data, v1.training_data_sha256) == ("payments 2026-01", "ab" * 32)
    assert v1.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert any("risk tier high but the policy applies its commands without approval" in n
               for n in fraud.notes)
    assert (fraud.policy_tier, fraud.approval_required) == ("medium", False)
    churn = by_model["churn"]
    assert churn.quarantine_open == 2  # r2 (once) and r3; r1 released
    assert churn.poisoning is not None and churn.poisoning["status"] == "suspect"
    assert churn.versions[0].serving == "shadow"
    assert churn.state_from == "none"
    old = by_model["old"]
    assert old.owner is None and old.versions[0].card_problem == "owner is missing: name the " \
        "team or person answering for the model"
    assert any(n.startswith("owner: missing") for n in old.notes)
    ghost = by_model["ghost"]
    assert not ghost.registered and ghost.seen_on == ["predictions"] and not ghost.versions
    assert found.audit["intact"] and found.audit["events"] == 2
    assert found.policy_sha256 == hashlib.sha256(Path(settings.policy).read_bytes()).hexdigest()


def test_a_broken_chain_is_reported(setup: Any) -> None:
    settings, registry, topics = setup
    tampered = orjson.loads(topics["deployments"][0].value())
    tampered["reason"] = "rewritten"
    topics["deployments"][0] = Msg("deployments", orjson.dumps(tampered))
    found = inventory.collect(settings, registry)
    assert not found.audit["intact"] and "was altered" in found.audit["reason"]
    assert "BROKEN at event 0" in inventory_render.to_csv(found)


def test_json_csv_and_html_forms(setup: Any) -> None:
    settings, registry, _ = setup
    found = inventory.collect(settings, registry)
    doc = json.loads(inventory_render.to_json(found))
    assert doc["models"][1]["versions"][0]["evaluation"] == {"roc_auc": 0.91}
    assert doc["policy_sha256"] == found.policy_sha256

    rows = list(csv.DictReader(io.StringIO(inventory_render.to_csv(found))))
    assert tuple(rows[0]) == inventory_render.CSV_COLUMNS
    assert [(r["model"], r["version"]) for r in rows] == [
        ("churn", "v1"), ("fraud", "v1"), ("fraud", "v2"), ("old", "v1"), ("ghost", ""),
        ("unkeyed", "")]
    fraud_v1 = rows[1]
    assert (fraud_v1["owner"], fraud_v1["risk_tier"], fraud_v1["serving"], fraud_v1["weight"],
            fraud_v1["drift_status"], fraud_v1["evaluation"]) == (
        "risk-ml", "high", "champion", "0.8", "drift", "roc_auc=0.91")
    assert rows[3]["owner"] == "missing" and rows[4]["registered"] == "False"
    assert rows[0]["purpose"] == "'=SUM(1+1)"  # shown, not run as a formula

    page = inventory_render.to_html(found)
    assert f'content="{CSP}"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # escaped owner
    assert "http://" not in page and "https://" not in page and " src=" not in page
    assert "2026-12-03 10:05 UTC" in page  # readable UTC times
    assert "<h2 id='ghost'>ghost <span class=bad>(unregistered)</span></h2>" in page
    assert "<tr><th>owner</th><td><span class=bad>missing</span></td></tr>" in page  # old

    lines = inventory_render.text(found).splitlines()
    assert "ghost (UNREGISTERED)  owner: missing  risk: missing" in "\n".join(lines)
    assert any(line.startswith("old  owner: missing  risk: missing") for line in lines)
    assert lines[-1] == "audit chain: intact (2 events, 1 models)"


def test_a_bad_card_or_evaluation_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "card.json"
    bad.write_text("[1]")
    with pytest.raises(inventory.DriftlineError, match="must hold a JSON object, not list"):
        inventory.read_card(str(bad))
    card = tmp_path / "ok.json"
    card.write_text(json.dumps({**MINIMAL, "evaluation": {"auc": 0.5}}))
    results = tmp_path / "eval.json"
    results.write_text(json.dumps({"auc": 0.6}))
    with pytest.raises(inventory.DriftlineError, match="already has an evaluation"):
        inventory.read_card(str(card), evaluation=str(results))
