"""End to end: the poisoning guard screens training data and blocks retraining during a campaign.

The real worker (poisoning, policy and controller agents) on the embedded
broker: a reference with a trusted set is published; two honest sources and
one flooding bot send training records. The bot's copies are quarantined with
their reasons, the honest records reach ``training-data.clean``, the window is
reported as a campaign, and the retrain that the new clean labels call for is
held back until a clean window; an operator releases one record by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import reference_build, tail
from schemas.policy import parse_policy
from tests.agents.controller.cards import CARD
from tests.agents.poisoning.test_handler import MODEL, T0, records

pytestmark = pytest.mark.e2e

POLICY = """
poisoning: {window: 60s, allowed_lateness: 0s}
decisions:
  retrain: {new_clean_labels: 1000, drift_windows: 0, kpi_breach_windows: 0}
"""


def test_a_flood_is_quarantined_and_blocks_retraining_until_the_campaign_ends(
        worker_factory: Any, tmp_path: Path) -> None:
    worker = worker_factory(POLICY, agents="poisoning,policy,controller")
    s = worker.settings
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({**r["features"], "label": r["label"]})
                                for r in records(1, 5000, T0 - 3600, "history")))
    profile = reference_build.build(data, model=MODEL, version="v1",
                                    policy=parse_policy(POLICY).drift_for(MODEL),
                                    trusted_rows=3000)
    reference_build.publish(profile, s)
    artifact = tmp_path / "v1.bin"
    artifact.write_bytes(b"v1")
    open_registry(s.registry).register(MODEL, "v1", artifact, model_card=CARD)
    operator.send(s, operator.operator_command(s, "promote", MODEL, to_version="v1"))
    tail.collect(s.bootstrap, worker.topic("deployments"), lambda seen: len(seen) >= 1,
                 timeout_s=60)

    honest = records(3, 1000, T0, "crm") + records(4, 1000, T0, "shop")
    flood = [dict(records(5, 1, T0, "bot")[0], record_id=f"bot-{i}") for i in range(300)]
    producer = simulate.make_producer(s.bootstrap)
    batches = [honest[:1000] + flood[:150], honest[1000:] + flood[150:],
               records(6, 1200, T0 + 60, "crm"), records(7, 10, T0 + 120, "crm")]
    for batch in batches:
        simulate.publish(producer, worker.topic("training-data"), MODEL,
                         [orjson.dumps({"events": batch})])

    def settled(seen: list[dict[str, Any]]) -> bool:
        return any(e["action"] == "retrain" and e["status"] == "applied" for e in seen)

    deployments = tail.collect(s.bootstrap, worker.topic("deployments"), settled, timeout_s=90)
    assert settled(deployments), [(e["action"], e["reason"]) for e in deployments]
    actions = [e["action"] for e in deployments if e["status"] == "applied"]
    assert actions == ["promote", "hold", "retrain"], actions
    hold = next(e for e in deployments if e["action"] == "hold")
    assert "campaign" in hold["reason"] and "bot" in hold["reason"]

    reports = tail.collect(s.bootstrap, worker.topic("poisoning"),
                           lambda seen: len(seen) >= 2, timeout_s=30)
    assert [r["status"] for r in reports[:2]] == ["campaign", "ok"]
    assert reports[0]["sources"]["bot"]["quarantined"]["duplicate_flood"] >= 290
    quarantined = tail.collect(s.bootstrap, worker.topic("training-data.quarantine"),
                               lambda seen: sum(q["record"]["source"] == "bot"
                                                for q in seen) >= 300, timeout_s=30)
    bot = [q for q in quarantined if q["record"]["source"] == "bot"]
    assert len(bot) == 300 and all("duplicate_flood" in q["reasons"] for q in bot[1:])
    assert len(quarantined) - len(bot) <= 0.02 * (len(honest) + 1200)

    env = {**os.environ, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix, "DRIFTLINE_BROKER": s.bootstrap}
    cli = [sys.executable, "-m", "agents", "quarantine"]
    listed = subprocess.run([*cli, "list", "--model", MODEL, "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    held = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(held) >= len(quarantined)
    target = held[0]["record_id"]
    subprocess.run([*cli, "release", target, "--model", MODEL, "--reason", "checked by hand"],
                   env=env, capture_output=True, text=True, timeout=60, check=True)
    again = subprocess.run([*cli, "list", "--model", MODEL, "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert len(again.stdout.splitlines()) == len(held) - 1
    clean = tail.collect(s.bootstrap, worker.topic("training-data.clean"),
                         lambda seen: any(e["record_id"] == target for m in seen
                                          for e in m.get("events", [m])), timeout_s=30)
    assert any(e["record_id"] == target for m in clean for e in m.get("events", [m]))
