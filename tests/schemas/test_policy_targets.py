"""KPI targets that could never be judged, and empty policies, are refused with file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents import cli
from schemas.kpi_metrics import METRICS
from schemas.policy import PolicyError, load_policy, parse_policy
from streams.kpi.classification import ClassificationKpi
from streams.kpi.regression import RegressionKpi
from streams.kpi.serving import ServingHealth

DEPLOY_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy.yaml"

BAD = [
    # (policy text, the line, the field, the reason)
    (
        "kpi:\n  targets:\n    rocauc: {min: 0.8}\n",
        3,
        "kpi.targets.rocauc",
        "unknown KPI metric 'rocauc' (did you mean 'roc_auc'?); the known ones: error_rate,",
    ),
    (
        "kpi:\n  window: 1h\n  targets:\n    roc_auc:\n      min: 7.5\n",
        5,
        "kpi.targets.roc_auc",
        "min 7.5 is outside the range of roc_auc, 0 to 1",
    ),
    (
        "kpi:\n  targets:\n    error_rate: {max: 2}\n",
        3,
        "kpi.targets.error_rate",
        "max 2 is outside the range of error_rate, 0 to 1",
    ),
    (
        "kpi:\n  targets:\n    latency_p99_ms: {max: -5}\n",
        3,
        "kpi.targets.latency_p99_ms",
        "max -5 is outside the range of latency_p99_ms, at least 0",
    ),
    (
        "kpi:\n  targets:\n    mae: {max: 3}\n",
        3,
        "kpi.targets.mae",
        "mae is not computed for task classification",
    ),
    (
        "kpi:\n  task: regression\n  targets:\n    f1: {min: 0.5}\n",
        4,
        "kpi.targets.f1",
        "f1 is not computed for task regression",
    ),
    (
        "kpi:\n  targets:\n    business_value: {min: 0}\n",
        3,
        "kpi.targets.business_value",
        "business_value is only computed with a cost matrix (kpi.cost)",
    ),
    (
        "models:\n  fraud:\n    kpi:\n      targets:\n        precison: {min: 0.5}\n",
        5,
        "models.fraud.kpi.targets.precison",
        "unknown KPI metric 'precison' (did you mean",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "reason"), BAD)
def test_a_target_never_judged_is_refused_with_line_field_and_reason(
    text: str, line: int, field: str, reason: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")
    assert str(caught.value).startswith(f"p.yaml:{line}: {field}: {reason}")


@pytest.mark.parametrize("text", ["", "\n\n", "# thresholds come later\n", "{}\n"])
def test_an_empty_policy_is_refused(text: str) -> None:
    with pytest.raises(PolicyError, match=r"^p\.yaml: the policy is empty; name at least one"):
        parse_policy(text, source="p.yaml")


def test_targets_that_can_be_judged_pass() -> None:
    policy = parse_policy(
        "kpi:\n  cost: {fn: -120}\n  targets:\n"
        "    roc_auc: {min: 0.75, max: 1}\n    business_value: {min: -1000}\n"
        "    latency_p99_ms: {max: 250}\n    log_loss: {max: 0.7}\n"
        "models:\n  price:\n    kpi: {task: regression, targets: {mae: {max: 12.5}}}\n"
    )
    assert sorted(policy.kpi.targets) == ["business_value", "latency_p99_ms", "log_loss", "roc_auc"]
    assert list(policy.kpi_for("price").targets) == ["mae"]


def test_the_table_names_every_metric_the_kernels_compute() -> None:
    """``schemas.kpi_metrics`` and ``streams.kpi`` must not drift apart: a metric the
    kernels add is judgeable only once the table knows it (and its range)."""
    kpi = ClassificationKpi(costs={"fn": -120.0})
    state = kpi.update(
        kpi.initialize(),
        np.array([1, 0, 1, 0]),
        np.array([1, 0, 0, 1]),
        np.array([0.9, 0.2, 0.4, 0.6]),
    )
    classification = set(kpi.metrics(state))
    regression = set(
        RegressionKpi.metrics(
            RegressionKpi.update(RegressionKpi.initialize(), [1.0, 2.0], [1.5, 2.0])
        )
    )
    serving = ServingHealth()
    s = serving.update(serving.initialize(), np.array([False, True]), np.array([5.0, 7.0]))
    both = set(serving.metrics(serving.update_labels(s, [3.0, 4.0]))) | {"unlabeled_expired"}
    assert set(METRICS) == classification | regression | both
    for name in classification:
        assert "classification" in METRICS[name].tasks, name
    for name in regression:
        assert METRICS[name].tasks == {"regression"}, name
    for name in both:
        assert METRICS[name].tasks == {"classification", "regression"}, name


@pytest.mark.parametrize(("text", "line", "field", "reason"), BAD[:3])
def test_policy_check_refuses_with_file_line_and_exits_non_zero(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: int,
    field: str,
    reason: str,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert cli.main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftline: {path}:{line}: {field}: {reason}")


def test_policy_check_refuses_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("")
    assert cli.main(["policy", "check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"driftline: {path}: the policy is empty")


def test_policy_check_accepts_the_deploy_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["policy", "check", str(DEPLOY_POLICY)]) == 0
    assert "valid" in capsys.readouterr().out
    assert load_policy(str(DEPLOY_POLICY)).kpi.targets  # its targets are all judgeable
