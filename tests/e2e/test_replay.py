"""End to end: a replay of the input topics gives the live run's drift reports exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import simulate, tail

pytestmark = pytest.mark.e2e

POLICY = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 5m, min_labeled: 100}
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60
WINDOWS = 6


def test_replay_matches_the_live_run_and_a_changed_policy_does_not(
        worker_factory: Any, tmp_path: Path) -> None:
    worker = worker_factory(POLICY, agents="drift,kpi")
    s = worker.settings
    traffic = simulate.FraudTraffic(seed=21)
    producer = simulate.make_producer(s.bootstrap)
    for w in range(WINDOWS + 1):
        preds, labels = traffic.events_with_labels(1500, start_s=T0 + 60 * w, span_s=60,
                                                   shifted=w >= 3, label_delay_s=0)
        simulate.publish(producer, worker.topic("predictions"), "fraud-detector",
                         list(simulate.batches(preds, 500)))
        simulate.publish(producer, worker.topic("labels"), "fraud-detector",
                         list(simulate.batches(labels, 500)))
    live = tail.collect(s.bootstrap, worker.topic("drift"),
                        lambda seen: len(seen) >= WINDOWS, timeout_s=90)
    assert len(live) >= WINDOWS and any(r["status"] != "ok" for r in live)

    env = {**os.environ, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix, "DRIFTLINE_BROKER": s.bootstrap}
    cli = [sys.executable, "-m", "agents", "replay", "--policy", str(worker.policy_path)]
    same = subprocess.run([*cli, "--verify", "--json"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert same.returncode == 0, same.stdout[-2000:] + same.stderr
    assert f"verify: {WINDOWS} reports compared, all identical" in same.stdout
    replayed = [orjson.loads(line) for line in same.stdout.splitlines() if line.startswith("{")]
    assert sum(r["kind"] == "drift" for r in replayed) == WINDOWS
    assert any(r["kind"] == "kpi" for r in replayed)

    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(POLICY.replace("min_reference_events: 1000",
                                       "min_reference_events: 1000, psi_drift: 0.06, "
                                       "psi_warn: 0.06"))
    other = subprocess.run([*cli[:-2], "--policy", str(stricter), "--verify"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert other.returncode == 1, other.stdout + other.stderr
    assert "DIFFERENT drift/fraud-detector/v1/" in other.stdout and "different" in other.stdout
