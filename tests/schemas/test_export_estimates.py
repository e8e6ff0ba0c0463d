"""`driftline schemas export` carries the estimates before labels: the KpiReport fields,
the profile's calibration and the policy settings that judge and act on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas")
    assert cli.main(["schemas", "export", str(out)]) == 0
    return out


def load(out: Path, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads((out / f"{name}.schema.json").read_bytes())
    return schema


def test_kpi_report_schema_has_estimated_metrics_with_their_band(exported: Path) -> None:
    schema = load(exported, "KpiReport")
    props = schema["properties"]
    assert "estimated_metrics" in props and "estimated" in props
    ref = props["estimated_metrics"]["additionalProperties"]["$ref"].rsplit("/", 1)[-1]
    metric = schema["$defs"][ref]
    assert set(metric["required"]) == {"value", "lower", "upper"}
    assert "concept drift" in props["estimated_metrics"]["description"]


def test_reference_profile_schema_has_the_calibration(exported: Path) -> None:
    schema = load(exported, "ReferenceProfile")
    assert "calibration" in schema["properties"]
    calibration = schema["$defs"]["ScoreCalibration"]
    assert {"edges", "probability", "count", "positive_label"} <= set(calibration["properties"])


def test_policy_schema_has_estimated_targets_and_the_retrain_rule(exported: Path) -> None:
    schema = load(exported, "Policy")
    kpi = schema["$defs"]["KpiPolicy"]["properties"]
    assert {"estimated_targets", "min_estimated"} <= set(kpi)
    assert "on_estimated_breach" in schema["$defs"]["RetrainRules"]["properties"]
