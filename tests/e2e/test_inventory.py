"""End to end: `driftline inventory --json` on the real broker, a real file registry and a
real controller worker.

Two models are registered through the CLI (cards with owner and risk tier), the
controller applies an operator's promote and canary, reports are published on
drift, kpi and poisoning, a quarantined record waits, and an unregistered model's
predictions arrive. The inventory must show all of it, and the unregistered model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import cli
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import tail

pytestmark = pytest.mark.e2e

FRAUD, CHURN, GHOST = "fraud-detector", "churn", "ghost-model"
WINDOW = {"window_start": "2026-12-03T10:00:00+00:00", "window_end": "2026-12-03T10:05:00+00:00"}
POLICY = "decisions: {risk_tier: high}\n"  # fraud's commands wait for an operator's approve


def _register(registry: Path, tmp: Path, model: str, version: str, card: dict[str, Any],
              capsys: pytest.CaptureFixture[str]) -> None:
    artifact, card_file = tmp / f"{model}-{version}.bin", tmp / f"{model}-{version}.json"
    artifact.write_bytes(f"{model} {version}".encode())
    card_file.write_text(json.dumps(card))
    assert cli.main(["registry", "register", "--registry", str(registry), "--model", model,
                     "--version", version, "--artifact", str(artifact),
                     "--model-card", str(card_file)]) == 0, capsys.readouterr().err


def test_inventory_json_on_the_real_broker(worker_factory: Any, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    worker = worker_factory("decisions: {risk_tier: low}\n", agents="controller")
    s = worker.settings
    registry = Path(s.registry)
    fraud_card = {"owner": "risk-ml", "risk_tier": "high", "purpose": "card fraud scores",
                  "training_data": {"description": "payments 2026-01", "sha256": "cd" * 32},
                  "evaluation": {"roc_auc": 0.91}}
    for version in ("v1", "v2"):
        _register(registry, tmp_path, FRAUD, version, fraud_card, capsys)
    _register(registry, tmp_path, CHURN, "v1", {"owner": "growth", "risk_tier": "minimal"},
              capsys)
    assert cli.main(["registry", "register", "--registry", str(registry), "--model", CHURN,
                     "--version", "v2", "--artifact", str(tmp_path / "churn-v1.bin")]) == 2
    assert "owner and risk_tier are required" in capsys.readouterr().err

    operator.send(s, operator.operator_command(s, "promote", FRAUD, to_version="v1"))
    operator.send(s, operator.operator_command(s, "canary", FRAUD, to_version="v2", weight=0.25))
    seen = tail.collect(s.bootstrap, worker.topic("deployments"),
                        lambda seen: sum(e["status"] == "applied" for e in seen) >= 2,
                        timeout_s=60)
    assert sum(e["status"] == "applied" for e in seen) >= 2, worker.log()[-3000:]

    reference = {"kind": "warmup", "n": 100}
    operator.publish(s, "drift", FRAUD, [orjson.dumps(
        {"model": FRAUD, "model_version": "v1", **WINDOW, "n": 500, "reference": reference,
         "features": {}, "status": "drift", "drifted_features": ["amount"]})])
    operator.publish(s, "kpi", FRAUD, [orjson.dumps(
        {"model": FRAUD, "model_version": "v2", "variant": "canary", **WINDOW,
         "n_predictions": 100, "n_labeled": 80, "metrics": {"accuracy": 0.93},
         "concept_drift": False, "status": "ok"})])
    operator.publish(s, "poisoning", CHURN, [orjson.dumps(
        {"model": CHURN, **WINDOW, "sources": {}, "status": "campaign"})])
    operator.publish(s, "training-data.quarantine", CHURN, [orjson.dumps(
        {"record": {"record_id": "r1", "model": CHURN, "ts": 1_800_000_000, "source": "bot",
                    "features": {"x": 1.0}, "label": 1},
         "reasons": ["label_flip"], "scores": {"label_flip": 0.99}})])
    ghost = simulate.FraudTraffic(seed=3, model=GHOST, version="x1")
    preds, _ = ghost.events_with_labels(20, start_s=1_800_000_000, span_s=60, label_delay_s=0)
    simulate.publish(simulate.make_producer(s.bootstrap), worker.topic("predictions"), GHOST,
                     list(simulate.batches(preds, 10)))

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    capsys.readouterr()
    assert cli.main(["inventory", "--json", "--broker", s.bootstrap, "--topic-prefix",
                     s.topic_prefix, "--registry", str(registry), "--policy", str(policy),
                     "--html", str(tmp_path / "inventory.html")]) == 0
    doc = json.loads(capsys.readouterr().out)
    models = {m["model"]: m for m in doc["models"]}
    assert set(models) == {FRAUD, CHURN, GHOST}
    fraud = models[FRAUD]
    assert (fraud["owner"], fraud["risk_tier"], fraud["purpose"]) == (
        "risk-ml", "high", "card fraud scores")
    assert (fraud["champion"], fraud["canary"], fraud["canary_weight"], fraud["state_from"]) \
        == ("v1", "v2", 0.25, "deployments")
    v1, v2 = fraud["versions"]
    assert v1["sha256"] == hashlib.sha256(f"{FRAUD} v1".encode()).hexdigest()
    assert (v1["serving"], v1["weight"], v2["serving"], v2["weight"]) == (
        "champion", 0.75, "canary", 0.25)
    assert v1["drift"]["status"] == "drift" and v1["drift"]["drifted_features"] == ["amount"]
    assert [(k["variant"], k["status"]) for k in v2["kpi"]] == [("canary", "ok")]
    assert v1["evaluation"] == {"roc_auc": 0.91}
    assert v1["training_data_sha256"] == "cd" * 32
    assert fraud["approval_required"] and fraud["notes"] == []
    churn = models[CHURN]
    assert (churn["owner"], churn["risk_tier"], churn["quarantine_open"]) == (
        "growth", "minimal", 1)
    assert churn["poisoning"]["status"] == "campaign"
    assert [v["version"] for v in churn["versions"]] == ["v1"]  # v2 was refused
    assert not models[GHOST]["registered"] and models[GHOST]["seen_on"] == ["predictions"]
    assert doc["audit"]["intact"] and doc["audit"]["events"] >= 2
    assert doc["policy_sha256"] == hashlib.sha256(POLICY.encode()).hexdigest()
    page = (tmp_path / "inventory.html").read_text()
    assert "ghost-model <span class=bad>(unregistered)</span>" in page
