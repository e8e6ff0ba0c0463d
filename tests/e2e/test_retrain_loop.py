"""End to end: drift triggers a retrain, the new version goes canary and is promoted.

The real worker (all four agents) on the embedded broker and a real file
registry; the serving app (the simulator) follows the deployment state. Two
features drift; after two drift windows the policy agent issues a retrain;
the controller starts ``scripts/retrain_example.py``, which trains a
scikit-learn model on ``training-data.clean``, registers v2 and sends a
signed canary command; the canary's KPI windows are no worse than the
champion's, so it is promoted.
"""

from __future__ import annotations

import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import tail
from tests.agents.controller.cards import CARD

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud-detector"
POLICY = f"""
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 2000
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 3m
  min_labeled: 100
decisions:
  retrain:
    drift_windows: 2
    kpi_breach_windows: 0
    on_concept_drift: false
    hook_command: "{sys.executable} {ROOT / 'scripts' / 'retrain_example.py'} --min-records 500"
  rollback: {{min_labeled: 100}}
  delivery: {{canary_steps: [0.5, 1.0], healthy_windows: 1}}
"""


def test_drift_retrains_and_the_new_version_is_promoted_through_a_canary(
        worker_factory: Any, tmp_path: Path) -> None:
    worker = worker_factory(POLICY, agents="drift,kpi,policy,controller")
    s = worker.settings
    artifact = tmp_path / "v1.bin"
    artifact.write_bytes(b"the first model")
    registry = open_registry(s.registry)
    registry.register(MODEL, "v1", artifact, model_card=CARD)
    operator.send(s, operator.operator_command(s, "promote", MODEL, to_version="v1"))

    follower = simulate.DeploymentFollower(s.bootstrap, worker.topic("deployments"))
    promoted = threading.Event()
    sim = threading.Thread(target=simulate.run, daemon=True, kwargs=dict(
        bootstrap=s.bootstrap, topic=worker.topic("predictions"), rate=3000, duration_s=150,
        scenario="drift", shift_at=0.1, time_scale=30, seed=4, model=MODEL,
        labels_topic=worker.topic("labels"), label_delay_s=5.0, label_share=1.0,
        follower=follower, training_topic=worker.topic("training-data.clean"),
        should_stop=promoted.is_set))
    sim.start()

    def done(seen: list[dict[str, Any]]) -> bool:
        return any(e["action"] == "promote" and e["status"] == "applied"
                   and e["state"]["champion"] == "v2" for e in seen)

    try:
        seen = tail.collect(s.bootstrap, worker.topic("deployments"), done, timeout_s=150)
    finally:
        promoted.set()
        sim.join(timeout=15)
        follower.close()
    assert done(seen), f"{[(e['action'], e['status'], e['reason']) for e in seen]}\n" \
                       f"{worker.log()[-3000:]}"
    applied = [(e["action"], e["state"]["champion"], e["state"]["canary"])
               for e in seen if e["status"] == "applied"]
    assert applied[:2] == [("promote", "v1", None), ("retrain", "v1", None)], applied
    assert ("canary", "v1", "v2") in applied and applied[-1] == ("promote", "v2", None)
    retrain = next(e for e in seen if e["action"] == "retrain")
    assert "sustained drift" in retrain["reason"] and "retrain hook started" in retrain["reason"]

    version = registry.get(MODEL, "v2")
    assert version is not None and version.metadata["records"] >= 500
    assert registry.verify(MODEL, "v2") is None
    card = version.model_card  # owner and tier kept from v1, the training data hashed
    assert (card["owner"], card["risk_tier"]) == (CARD["owner"], CARD["risk_tier"])
    assert len(card["training_data"]["sha256"]) == 64
    held_out = card["evaluation"]["held_out"]  # the evaluation as --evaluation takes it
    assert len(held_out["sha256"]) == 64 and held_out["size"] >= 100
    assert 0.5 <= card["evaluation"]["metrics"]["accuracy"] <= 1
    model = pickle.loads(next(Path(version.uri).rglob("model.pkl")).read_bytes()
                         if Path(version.uri).is_dir() else Path(version.uri).read_bytes())
    assert hasattr(model, "predict_proba")
    state, _ = registry.load(MODEL)
    assert (state.champion, state.last_known_good) == ("v2", "v1")
    check, _ = operator.audit(s)
    assert check.intact, check.reason
