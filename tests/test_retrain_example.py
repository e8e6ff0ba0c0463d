"""scripts/retrain_example.py records its evaluation as ``--evaluation`` takes it."""

from __future__ import annotations

import importlib.util
import random
import sys
from typing import Any

from schemas.evaluation import parse_evaluation
from schemas.model_card import card_problem
from tests.conftest import ROOT


def _load_script() -> Any:
    path = ROOT / "scripts" / "retrain_example.py"
    spec = importlib.util.spec_from_file_location("retrain_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrain_example"] = module
    spec.loader.exec_module(module)
    return module


def test_the_retrain_example_records_held_out_metrics_digest_and_size() -> None:
    script = _load_script()
    rnd = random.Random(3)
    rows = []
    for i in range(500):
        amount = rnd.gauss(0, 1)
        rows.append(
            {
                "record_id": f"r{i}",
                "features": {"amount": amount, "note": None},
                "label": int(amount + rnd.gauss(0, 0.5) > 0),
            }
        )
    _, evaluation = script.train(rows)
    ev = parse_evaluation(evaluation)
    assert ev.held_out is not None and ev.held_out.size == 100  # 20 % of 500
    from sklearn.model_selection import train_test_split

    _, held_out = train_test_split(rows, test_size=0.2, random_state=0)  # the script's split
    assert ev.held_out.sha256 == script.digest(held_out) != script.digest(rows)
    assert set(ev.metrics) == {"accuracy", "roc_auc"} and ev.metrics["roc_auc"] > 0.8
    assert evaluation["train_records"] == 400
    assert card_problem({"owner": "risk-ml", "risk_tier": "high", "evaluation": evaluation}) is None
