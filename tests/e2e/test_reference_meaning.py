"""End to end: a reference built from CSV judges the events' booleans as booleans, and a
policy whose KPI target could never be judged stops the worker at start."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agents.dev import simulate
from agents.operator import tail
from tests.agents.operator.test_reference_meaning import T0, _events, _records
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
"""


def test_a_csv_reference_and_json_booleans_give_no_drift(
    worker_factory: object, tmp_path: Path
) -> None:
    worker = worker_factory(POLICY)  # type: ignore[operator]
    data = tmp_path / "train.csv"
    records = _records(4000, seed=1)
    with data.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)  # booleans as Python spells them: True, False
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "reference",
            "build",
            "--model",
            "m",
            "--version",
            "v1",
            "--data",
            str(data),
            "--broker",
            worker.settings.bootstrap,
            "--topic-prefix",
            worker.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert (
        "profiled: amount, is_weekend; model outputs: score (@score), prediction "
        "(@prediction); left out: request_id (id), ts (timestamp), label (label)"
    ) in built.stdout
    worker.wait_committed("references", 1, timeout_s=60)
    events = _events(_records(3000, seed=2))
    events.append({**events[-1], "request_id": "closer", "ts": T0 + 61})
    messages = [orjson.dumps({"events": events[i : i + 500]}) for i in range(0, len(events), 500)]
    simulate.publish(
        simulate.make_producer(worker.settings.bootstrap),
        worker.topic("predictions"),
        "m",
        messages,
    )
    (report,) = tail.collect(
        worker.settings.bootstrap, worker.topic("drift"), lambda seen: len(seen) >= 1, timeout_s=90
    )
    assert report["reference"]["kind"] == "profile", worker.log()
    flag = report["features"]["is_weekend"]
    assert flag["status"] == "ok" and flag["metrics"]["unseen_share"] == 0.0, flag
    assert report["status"] == "ok", report["features"]


def test_the_worker_refuses_a_target_that_could_never_be_judged(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("kpi:\n  targets:\n    rocauc: {min: 0.8}\n")
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "worker",
            "--policy",
            str(policy),
            "--broker",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert started.returncode == 2
    assert started.stderr.startswith(
        f"driftline: {policy}:3: kpi.targets.rocauc: unknown KPI metric 'rocauc'"
    )
