"""The alert rules' unit tests (deploy/prometheus/alerts.test.yml), run by promtool.

promtool is Prometheus's own rule checker: Debian's ``prometheus`` package has it
(``apt-get install prometheus``); ``PROMTOOL`` may name another binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus"
#: alerts whose firing (and not firing) alerts.test.yml pins down
TESTED = {
    "AgentStalled",
    "AgentCrashed",
    "AgentCrashLooping",
    "WorkerRestarting",
    "CanaryFailing",
    "CommandRejected",
}


def _promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    assert found, (
        "promtool not found: install it (Debian: apt-get install prometheus) "
        "or set PROMTOOL to its path"
    )
    return found


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_cover_the_health_and_first_event_alerts() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())
    covered: dict[str, set[bool]] = {}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            covered.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert names >= TESTED
    # Each is seen both firing and not firing.
    assert {name: {False, True} for name in TESTED} == {n: covered.get(n) for n in TESTED}


def test_the_shipped_prometheus_configuration_passes_promtool_check_config() -> None:
    # As shipped, and as docker-compose.yml mounts it: its rule file is found beside it.
    done = subprocess.run(
        [_promtool(), "check", "config", "prometheus.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr, done.stdout + done.stderr
