"""`driftline schemas export` carries the concept detector's calibration: the profile's,
the KPI report's and the policy's rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import cli
from tests.schemas.test_export_estimates import load


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas")
    assert cli.main(["schemas", "export", str(out)]) == 0
    return out


def test_the_concept_calibration_is_in_the_export(exported: Path) -> None:
    report = load(exported, "KpiReport")
    assert "concept" in report["properties"]
    info = report["$defs"]["ConceptDetectorInfo"]["properties"]
    assert {"calibrated", "false_alarm_rate", "params", "scale", "reason"} <= set(info)
    profile = load(exported, "ReferenceProfile")
    assert "concept" in profile["properties"]
    stored = profile["$defs"]["ConceptCalibration"]["properties"]
    assert {"params", "scale", "false_alarm_rate", "target_false_alarm_rate"} <= set(stored)
    policy = load(exported, "Policy")
    assert "concept_false_alarm_rate" in policy["$defs"]["KpiPolicy"]["properties"]


def test_the_reference_bands_are_in_the_export(exported: Path) -> None:
    report = load(exported, "KpiReport")
    assert {"thresholds", "bands"} <= set(report["properties"])
    threshold = report["$defs"]["KpiThreshold"]["properties"]
    assert {"source", "lower", "upper", "judged", "breached", "detail"} <= set(threshold)
    assert {"applied", "reason", "window_events"} <= set(
        report["$defs"]["ReferenceBandsInfo"]["properties"])
    profile = load(exported, "ReferenceProfile")
    assert "bands" in profile["properties"]
    assert {"mean", "std", "windows"} <= set(profile["$defs"]["MetricSpread"]["properties"])
    policy = load(exported, "Policy")["$defs"]
    assert {"reference_bands", "min_positives"} <= set(policy["KpiPolicy"]["properties"])
    assert {"metrics", "std", "window_events", "windows", "sides"} <= set(
        policy["ReferenceBands"]["properties"])
