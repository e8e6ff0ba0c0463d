"""Prometheus metrics: what the runner's observe() makes of messages and reports."""

from __future__ import annotations

from agents import metrics
from tests.streams.policy.cases import deployed, drift, kpi, poisoning


def value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_messages_reports_and_commands_become_metrics() -> None:
    before = value("driftline_events_total", topic="m.predictions", agent="drift") or 0.0
    metrics.observe("drift", "m.predictions", counted=500, dead=2, reports=[])
    assert value("driftline_events_total", topic="m.predictions", agent="drift") == before + 500
    assert (value("driftline_deadletters_total", topic="m.predictions", agent="drift") or 0) >= 2

    report = drift(0, "drift", model="metrics-model")
    report.features["amount"] = report.features.get("amount") or _feature(0.31)
    metrics.observe("drift", "m.predictions", counted=0, dead=0,
                    reports=[report, kpi(0, model="metrics-model", accuracy=0.91,
                                         status="breach", concept=True)])
    assert value("driftline_window_status", model="metrics-model", version="v1", kind="drift",
                 variant="") == 2
    assert value("driftline_drift_psi", model="metrics-model", version="v1",
                 feature="amount") == 0.31
    assert value("driftline_kpi", model="metrics-model", version="v1", variant="champion",
                 metric="accuracy") == 0.91
    assert value("driftline_concept_drift", model="metrics-model", version="v1",
                 variant="champion") == 1
    assert (value("driftline_report_latency_seconds_count", kind="drift") or 0) >= 1

    event = deployed(model="metrics-model")
    metrics.observe("controller", "m.commands", counted=0, dead=0, reports=[event])
    assert value("driftline_commands_total", model="metrics-model", type="promote",
                 status="applied") == 1
    report_p = poisoning(0, "campaign")
    report_p = report_p.model_copy(update={"model": "metrics-model"})
    report_p.sources["crm"].quarantined["label_inconsistent"] = 7
    metrics.observe("poisoning", "m.training-data", counted=0, dead=0, reports=[report_p])
    assert value("driftline_poisoning_status", model="metrics-model") == 2
    assert value("driftline_quarantined_total", model="metrics-model",
                 reason="label_inconsistent") == 7


def _feature(psi: float) -> object:
    from schemas.reports import FeatureDrift

    return FeatureDrift(kind="numeric", n=100, missing=0, metrics={"psi": psi}, status="drift",
                        drifted=True)


def test_the_multivariate_signal_becomes_metrics() -> None:
    from schemas.reports import MultivariateDrift

    report = drift(1, "ok", model="mv-metrics-model")
    report.multivariate = MultivariateDrift(
        n=5000, reconstruction_error=1.8, baseline=2.0, relative_change=-0.1, z=-4.2,
        components=3, features_used=["a", "b", "c", "d"], beyond_limits=2, status="ok",
        drifted=False,
    )
    metrics.observe("drift", "m.predictions", counted=0, dead=0, reports=[report])
    labels = {"model": "mv-metrics-model", "version": "v1"}
    assert value("driftline_drift_multivariate", **labels, stat="relative_change") == -0.1
    assert value("driftline_drift_multivariate", **labels, stat="z") == -4.2
    assert value("driftline_drift_multivariate", **labels, stat="beyond_limits") == 2


def test_estimated_kpis_and_a_verdict_on_estimates_become_metrics() -> None:
    from schemas.reports import EstimatedMetric

    report = kpi(0, model="estimated-model", accuracy=None, n_labeled=0, status="breach")
    report = report.model_copy(update={
        "estimated": True,
        "estimated_metrics": {"roc_auc": EstimatedMetric(value=0.8, lower=0.78, upper=0.83)},
    })
    metrics.observe("kpi", "m.predictions", counted=0, dead=0, reports=[report])
    labels = {"model": "estimated-model", "version": "v1", "variant": "champion"}
    for bound, expected in (("value", 0.8), ("lower", 0.78), ("upper", 0.83)):
        assert value("driftline_kpi_estimated", metric="roc_auc", bound=bound,
                     **labels) == expected
    assert value("driftline_kpi_verdict_estimated", **labels) == 1
    metrics.observe("kpi", "m.predictions", counted=0, dead=0,
                    reports=[kpi(1, model="estimated-model")])
    assert value("driftline_kpi_verdict_estimated", **labels) == 0


def test_the_concept_detector_s_calibration_becomes_metrics() -> None:
    from schemas.reports import ConceptDetectorInfo

    calibrated = ConceptDetectorInfo(detector="adwin", calibrated=True, params={"delta": 1e-9},
                                     scale=10.0, false_alarm_rate=0.035,
                                     target_false_alarm_rate=0.05, window_events=5000)
    report = kpi(0, model="concept-metrics", accuracy=0.9).model_copy(
        update={"concept": calibrated})
    metrics.observe("kpi", "m.labels", counted=0, dead=0, reports=[report])
    labels = {"model": "concept-metrics", "version": "v1", "variant": "champion"}
    assert value("driftline_concept_calibrated", **labels) == 1
    assert value("driftline_concept_false_alarm_rate", **labels) == 0.035
    plain = ConceptDetectorInfo(detector="adwin", calibrated=False, reason="no profile")
    metrics.observe("kpi", "m.labels", counted=0, dead=0,
                    reports=[report.model_copy(update={"concept": plain})])
    assert value("driftline_concept_calibrated", **labels) == 0
    assert value("driftline_concept_false_alarm_rate", **labels) is None


def test_a_shadow_s_comparison_becomes_metrics() -> None:
    from schemas.reports import ShadowComparison

    compared = ShadowComparison(
        versus="v1", pairs=900, agreement=0.93, scored_pairs=900, score_mean_abs_diff=0.04,
        score_max_abs_diff=0.4, score_mean_diff=-0.01, labeled_pairs=800,
        served_metrics={"accuracy": 0.91, "errors": 72.0},
        shadow_metrics={"accuracy": 0.89, "errors": 88.0},
    )
    report = kpi(0, model="shadow-metrics", variant="shadow", version="v2").model_copy(
        update={"shadow": [compared]})
    metrics.observe("kpi", "m.predictions", counted=0, dead=0, reports=[report])
    labels = {"model": "shadow-metrics", "version": "v2", "versus": "v1"}
    assert value("driftline_shadow", **labels, stat="pairs") == 900
    assert value("driftline_shadow", **labels, stat="agreement") == 0.93
    assert value("driftline_shadow", **labels, stat="score_max_abs_diff") == 0.4
    assert value("driftline_shadow", **labels, stat="served_accuracy") == 0.91
    assert value("driftline_shadow", **labels, stat="shadow_errors") == 88
    assert value("driftline_shadow", **labels, stat="prediction_mean_abs_diff") is None


def test_reference_bands_become_metrics_and_go_when_they_no_longer_apply() -> None:
    from schemas.reports import KpiThreshold

    band = KpiThreshold(source="reference", lower=0.76, upper=None, judged=True)
    target = KpiThreshold(source="target", lower=0.8, judged=True)
    report = kpi(0, model="band-model", accuracy=0.9).model_copy(
        update={"thresholds": {"roc_auc": [target, band]}})
    metrics.observe("kpi", "m.labels", counted=0, dead=0, reports=[report])
    labels = {"model": "band-model", "version": "v1", "variant": "champion", "metric": "roc_auc"}
    assert value("driftline_kpi_band_lower", **labels) == 0.76
    assert value("driftline_kpi_band_upper", **labels) is None  # the better side: not judged
    metrics.observe("kpi", "m.labels", counted=0, dead=0, reports=[
        report.model_copy(update={"thresholds": {"roc_auc": [target]}})])
    assert value("driftline_kpi_band_lower", **labels) is None
