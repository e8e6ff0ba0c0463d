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


def test_the_unit_tests_cover_every_alert_rule_firing_and_quiet() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    annotations = {
        r["alert"]: set(r.get("annotations", {})) for g in rules["groups"] for r in g["rules"]
    }
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text())
    covered: dict[str, set[bool]] = {}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            assert name in annotations, f"alerts.test.yml checks {name}, not in alerts.yml"
            covered.setdefault(name, set()).add(bool(check["exp_alerts"]))
            for alert in check["exp_alerts"]:
                # promtool compares what is given: every annotation is pinned down.
                assert set(alert.get("exp_annotations", {})) == annotations[name], name
    # Every rule in alerts.yml is seen both firing and not firing.
    assert {n: covered.get(n) for n in annotations} == {n: {False, True} for n in annotations}
    assert annotations, "no alert rules found in alerts.yml"


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
