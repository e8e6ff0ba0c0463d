"""`driftline schemas export` carries the shadow comparison: the KPI report's ``shadow``
and the policy's ``decisions.shadow`` rule."""

from __future__ import annotations

from pathlib import Path

from agents import cli
from tests.schemas.test_export_estimates import load


def test_the_shadow_comparison_and_rule_are_in_the_export(tmp_path: Path) -> None:
    assert cli.main(["schemas", "export", str(tmp_path)]) == 0
    report = load(tmp_path, "KpiReport")
    assert "shadow" in report["properties"] and "shadow" not in report.get("required", [])
    compared = report["$defs"]["ShadowComparison"]
    assert {
        "versus",
        "pairs",
        "agreement",
        "prediction_mean_abs_diff",
        "score_mean_abs_diff",
        "score_max_abs_diff",
        "score_mean_diff",
        "labeled_pairs",
        "served_metrics",
        "shadow_metrics",
    } <= set(compared["properties"])
    assert compared["additionalProperties"] is False
    rules = load(tmp_path, "Policy")["$defs"]["ShadowRules"]["properties"]
    assert {
        "healthy_windows",
        "min_pairs",
        "min_agreement",
        "max_score_diff",
        "min_labeled_pairs",
        "canary_weight",
    } <= set(rules)
    assert rules["healthy_windows"]["default"] == 0  # off by default


def test_the_kpi_count_window_index_is_in_the_export(tmp_path: Path) -> None:
    assert cli.main(["schemas", "export", str(tmp_path)]) == 0
    report = load(tmp_path, "KpiReport")
    index = report["properties"]["window_index"]
    assert "window_index" not in report.get("required", [])
    assert {"type": "integer"} in index["anyOf"] and "earliest prediction" in index["description"]
    kpi_window = load(tmp_path, "Policy")["$defs"]["KpiPolicy"]["properties"]["window"]
    assert any(set(o.get("properties", {})) == {"events"} for o in kpi_window["anyOf"])
