"""Prepare the simulated model before `driftline simulate` sends its traffic (compose).

docker-compose.yml's simulator runs this first, so the policy's commands have a
model to act on: it registers version v1 of the model in the controller's
registry (a placeholder artifact), publishes v1's reference profile (drift
reference and the poisoning guard's trusted set, from simulated training data)
and sends a signed ``promote`` so that v1 is the champion. Each step is skipped
when already done, so a restarted simulator changes nothing.

Settings come from the environment as for every client (DRIFTLINE_BROKER,
_REGISTRY, _POLICY, _COMMAND_KEY_FILE, _TOPIC_PREFIX).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson

from agents.config import Settings
from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import reference_build
from agents.operator.tail import read_messages
from schemas.policy import Policy, load_policy


def _has_reference(settings: Settings, model: str, version: str) -> bool:
    want = f"{model}@{version}".encode()
    messages = read_messages(settings.bootstrap, [settings.topic("references")])
    return any(m.key() == want and m.value() for m in messages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fraud-detector")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--training-events", type=int, default=20_000)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    policy = load_policy(settings.policy) if settings.policy else Policy()
    model, version = args.model, args.version

    registry = open_registry(settings.registry)
    with tempfile.TemporaryDirectory() as tmp:
        if registry.get(model, version) is None:
            artifact = Path(tmp) / f"{model}-{version}.bin"
            artifact.write_bytes(f"simulated model {model} {version}".encode())
            registry.register(
                model,
                version,
                artifact,
                model_card={"owner": "simulator", "risk_tier": "minimal",
                            "purpose": "simulated fraud scores for the compose demo",
                            "note": "simulated traffic"},
            )
            print(f"registered {model} {version}")
        if not _has_reference(settings, model, version):
            traffic = simulate.FraudTraffic(seed=99, model=model, version=version)
            preds, labels = traffic.events_with_labels(
                args.training_events, start_s=0.0, span_s=3600.0, label_delay_s=0.0
            )
            data = Path(tmp) / "training.jsonl"
            data.write_bytes(
                b"\n".join(
                    orjson.dumps({**r["features"], "label": r["label"]})
                    for r in simulate.training_records(labels, preds)
                )
            )
            profile = reference_build.build(
                data, model=model, version=version, policy=policy.drift_for(model)
            )
            reference_build.publish(profile, settings)
            print(f"published the reference profile of {model} {version}")
    if registry.load(model)[0].champion is None:
        operator.send(
            settings,
            operator.operator_command(
                settings,
                "promote",
                model,
                to_version=version,
                issuer="simulator",
                reason="the simulator's model",
            ),
        )
        print(f"sent promote {model} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
