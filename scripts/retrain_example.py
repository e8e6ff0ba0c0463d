"""An example retrain hook: train a new version on the clean training data, deploy it as canary.

The controller starts it on a ``retrain`` command (policy:
``decisions.retrain.hook_command: "python scripts/retrain_example.py"``) with
the worker's settings in the environment (DRIFTLINE_BROKER, _TOPIC_PREFIX,
_REGISTRY, _DATADIR) and DRIFTLINE_MODEL / DRIFTLINE_TRAINING_TOPIC. It

1. reads the model's newest records (``--max-records``) from
   ``training-data.clean`` (only what the poisoning guard let through:
   quarantined records never reach it);
2. fits a scikit-learn pipeline (DictVectorizer -> StandardScaler ->
   LogisticRegression) on them and evaluates it on a 20 % hold-out;
3. registers it as the next version (v1 -> v2) in the controller's registry,
   with the training facts as metadata and model-card fields: owner, risk tier
   and purpose kept from the version it replaces, training data described and
   hashed (SHA-256 of the records as trained on), and the evaluation in the
   form ``--evaluation`` takes (``schemas.evaluation``): ``metrics`` on the
   hold-out (accuracy, and roc_auc for two classes), ``held_out`` with the
   SHA-256 of the held-out records and their number;
4. publishes a signed ``canary`` command at the policy's first canary step,
   so the new version gets a share of traffic and must earn its promotion
   (the controller refuses it when the version fails the policy's evaluation
   gate for its risk tier: the script's output says so, the deployments topic why).

Run by hand: ``python scripts/retrain_example.py --model fraud-detector``.
Needs scikit-learn (in the dev extra).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from agents.controller.registry import open_registry
from agents.operator import commands as operator
from agents.operator.tail import read_to_end
from schemas.policy import Policy, load_policy


def records(settings: Settings, topic: str, model: str) -> list[dict[str, Any]]:
    out = []
    for value in read_to_end(settings.bootstrap, topic):
        doc = orjson.loads(value)
        for record in doc.get("events", [doc]) if isinstance(doc, dict) else []:
            if record.get("model") == model:
                out.append(record)
    return out


def digest(rows: list[dict[str, Any]]) -> str:
    """SHA-256 of records as used: one sorted-key JSON line each."""
    return hashlib.sha256(b"\n".join(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)).hexdigest()


def train(rows: list[dict[str, Any]], seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The fitted pipeline and its evaluation on a 20 % hold-out (schemas.evaluation's form)."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def x(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r["features"].items() if v is not None} for r in part]

    def y(part: list[dict[str, Any]]) -> list[str]:
        return [str(r["label"]) for r in part]

    train_rows, held_out = train_test_split(rows, test_size=0.2, random_state=seed)
    pipeline = make_pipeline(DictVectorizer(), StandardScaler(with_mean=False),
                             LogisticRegression(max_iter=500))
    pipeline.fit(x(train_rows), y(train_rows))
    metrics = {"accuracy": float(pipeline.score(x(held_out), y(held_out)))}
    classes = list(pipeline.classes_)
    if len(classes) == 2 and len(set(y(held_out))) == 2:  # roc_auc needs both classes
        positive = pipeline.predict_proba(x(held_out))[:, 1]
        metrics["roc_auc"] = float(roc_auc_score(
            [label == classes[1] for label in y(held_out)], positive))
    return pipeline, {
        "metrics": metrics,
        "held_out": {"sha256": digest(held_out), "size": len(held_out),
                     "description": f"20 % of the {len(rows)} records (random split, "
                                    f"seed {seed}), never trained on"},
        "train_records": len(train_rows),
    }


def inherited_card(previous: dict[str, Any]) -> dict[str, Any]:
    """What a retrained version keeps of the card of the version it replaces: its owner,
    risk tier and purpose (the same system, retrained). A first version, or one whose
    predecessor's card lacks them, needs --owner and --risk-tier: the registry refuses
    a card without them."""
    return {k: previous[k] for k in ("owner", "risk_tier", "purpose") if k in previous}


def next_version(existing: list[str]) -> str:
    numbers = [int(m.group(1)) for v in existing if (m := re.fullmatch(r"v(\d+)", v))]
    return f"v{max(numbers, default=0) + 1}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("DRIFTLINE_MODEL"))
    ap.add_argument("--min-records", type=int, default=500)
    ap.add_argument("--owner", help="the new version's owner (default: the previous version's)")
    ap.add_argument("--risk-tier", choices=["minimal", "limited", "high"],
                    help="its risk tier (default: the previous version's)")
    ap.add_argument("--max-records", type=int, default=20_000,
                    help="train on the newest this many records (the current distribution)")
    args = ap.parse_args(argv)
    if not args.model:
        ap.error("--model (or DRIFTLINE_MODEL) is required")
    settings = Settings.from_env()
    policy = load_policy(settings.policy) if settings.policy else Policy()
    topic = os.environ.get("DRIFTLINE_TRAINING_TOPIC", settings.topic("training-data.clean"))
    rows = records(settings, topic, args.model)[-args.max_records:]
    if len(rows) < args.min_records:
        print(f"retrain of {args.model}: only {len(rows)} clean records on {topic} "
              f"(need {args.min_records}); nothing trained", file=sys.stderr)
        return 1
    pipeline, evaluation = train(rows)
    registry = open_registry(settings.registry)
    existing = registry.versions(args.model)
    version = next_version([v.version for v in existing])
    card = inherited_card(existing[-1].model_card if existing else {})
    card.update({k: v for k, v in (("owner", args.owner), ("risk_tier", args.risk_tier)) if v})
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "model.pkl"
        artifact.write_bytes(pickle.dumps(pipeline))
        registry.register(
            args.model, version, artifact,
            metadata={"training_topic": topic, "records": len(rows),
                      "train_records": evaluation["train_records"],
                      "retrained_from": os.environ.get("DRIFTLINE_FROM_VERSION", "")},
            model_card={**card, "trained_by": "scripts/retrain_example.py",
                        "training_data": {
                            "description": f"{len(rows)} newest records of {topic} (screened "
                                           "by the poisoning guard)",
                            "sha256": digest(rows)},
                        "evaluation": evaluation})
    weight = policy.decisions_for(args.model).delivery.canary_steps[0]
    command = operator.operator_command(
        settings, "canary", args.model, to_version=version, weight=weight,
        reason=f"retrained on {len(rows)} clean records (hold-out of "
               f"{evaluation['held_out']['size']}: "
               + ", ".join(f"{k} {v:.3f}" for k, v in evaluation["metrics"].items())
               + f"); deployed as canary at {weight:g}",
        issued_by="retrain-hook")
    operator.send(settings, command)
    print(f"retrained {args.model} -> {version} on {len(rows)} records; canary command "
          f"{command.command_id} sent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
