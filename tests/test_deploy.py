"""deploy/ and docker-compose.yml stay in step with the code (CI cannot run Docker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from agents import metrics

ROOT = Path(__file__).resolve().parents[1]


def _sample_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        kind = family.type
        base = family.name
        if kind == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
        else:
            names.add(base)
    return names


def _used(text: str) -> set[str]:
    return set(re.findall(r"\bdriftline_[a-z_]+", text))


def test_alerts_and_dashboard_use_only_metrics_the_worker_exports() -> None:
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in alerts["groups"] for r in g["rules"])
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    panel_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = _used(exprs) | _used(panel_exprs)
    assert used, "the rules and panels reference driftline metrics"
    assert used <= _sample_names(), used - _sample_names()
    names = {r["alert"] for g in alerts["groups"] for r in g["rules"]}
    assert {"FeatureDrift", "KpiBreach", "CanaryFailing", "PoisoningCampaign", "ConsumerLag",
            "DeadLetters", "AgentStalled", "AgentCrashLooping", "WorkerRestarting"} <= names
    # The health signals have rules and panels.
    health = {"driftline_consumer_lag", "driftline_seconds_since_progress",
              "driftline_agent_crashes_total", "driftline_worker_start_time_seconds"}
    assert health <= _used(exprs)
    assert health <= _used(panel_exprs)


def test_compose_mounts_files_that_exist_and_scrapes_the_metrics_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    port = compose["services"]["worker"]["environment"]["DRIFTLINE_METRICS_PORT"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert f"worker:{port}" in scrape["scrape_configs"][0]["static_configs"][0]["targets"]
