"""A KPI window's estimated metrics (streams.kpi.window with streams.kpi.estimate)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from schemas.policy import KpiPolicy
from schemas.reports import KpiReport
from streams.kpi import estimate as cbpe
from streams.kpi import series
from streams.kpi.window import NO_CALIBRATION, KpiWindow, Matched, WindowState

#: scores above 0.5 are positive with probability 0.9, below with 0.1
CALIBRATION: cbpe.Calibration = {
    "edges": [0.5],
    "probability": [0.1, 0.9],
    "count": [5_000, 5_000],
}


def policy(**kw: Any) -> KpiPolicy:
    return KpiPolicy.model_validate({"min_labeled": 100, "min_estimated": 1000, **kw})


def events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    return [{"prediction": int(s >= 0.5), "score": float(s), "latency_ms": 5.0} for s in scores]


def labeled(evs: list[dict[str, Any]], accuracy: float, seed: int = 1) -> list[Matched]:
    rng = np.random.default_rng(seed)
    out: list[Matched] = []
    for e in evs:
        right = rng.random() < accuracy
        label = e["prediction"] if right else 1 - e["prediction"]
        out.append(
            (
                {
                    "v": "v1",
                    "a": "champion",
                    "t": 0,
                    "p": e["prediction"],
                    "s": e["score"],
                    "g": {},
                },
                label,
                1,
            )
        )
    return out


def window(kpi: KpiWindow, evs: list[dict[str, Any]]) -> WindowState:
    return kpi.add_predictions(kpi.initialize(), evs)


def test_first_report_carries_estimates_before_any_label() -> None:
    kpi = KpiWindow(policy())
    result = kpi.report(window(kpi, events(4000)), CALIBRATION)
    assert result.n_labeled == 0 and "accuracy" not in result.metrics
    est = result.estimated_metrics
    assert set(est) == set(cbpe.ESTIMATED)
    assert est["accuracy"]["value"] == pytest.approx(0.9)
    assert est["accuracy"]["lower"] < 0.9 < est["accuracy"]["upper"]
    assert result.status == "ok" and not result.estimated


def test_without_calibration_there_is_no_estimate_and_the_note_says_why() -> None:
    kpi = KpiWindow(policy())
    result = kpi.report(window(kpi, events(100)))
    assert result.estimated_metrics == {}
    assert NO_CALIBRATION in result.notes
    assert "driftline reference build" in NO_CALIBRATION
    why = kpi.report(window(kpi, events(100)), None, no_calibration="calibrated for 'yes'")
    assert "calibrated for 'yes'" in why.notes


def test_regression_is_not_estimated_and_says_so() -> None:
    kpi = KpiWindow(policy(task="regression"))
    state = kpi.add_predictions(kpi.initialize(), [{"prediction": 3.0, "score": 0.5}])
    assert "scores" not in state
    result = kpi.report(state, CALIBRATION)
    assert result.estimated_metrics == {}
    assert any("regression" in n and "no performance estimate" in n for n in result.notes)


def test_a_window_stored_before_the_estimate_reads_and_says_why() -> None:
    kpi = KpiWindow(policy())
    old = window(kpi, events(50))
    del old["scores"]
    again = kpi.add_predictions(orjson.loads(orjson.dumps(old)), events(10))
    result = kpi.report(again, CALIBRATION)
    assert result.estimated_metrics == {} and result.n_predictions == 60
    assert any("before driftline counted scores" in n for n in result.notes)


def test_unscored_predictions_give_no_estimate() -> None:
    kpi = KpiWindow(policy())
    result = kpi.report(
        window(kpi, [{"prediction": 1}, {"prediction": 0, "score": None}]), CALIBRATION
    )
    assert result.estimated_metrics == {}
    assert any("carried a score" in n for n in result.notes)


def test_an_estimated_breach_is_named_and_the_verdict_rests_on_estimates() -> None:
    kpi = KpiWindow(
        policy(estimated_targets={"accuracy": {"min": 0.95}}, targets={"accuracy": {"min": 0.5}})
    )
    result = kpi.report(window(kpi, events(4000)), CALIBRATION)
    assert result.status == "breach" and result.estimated
    [breach] = result.breaches
    assert breach.startswith("estimated accuracy 0.9 (95 % band")
    assert "below its estimated target 0.95" in breach
    assert any("verdict rests on estimates" in n for n in result.notes)


def test_labels_overrule_the_estimate_once_they_can_judge() -> None:
    kpi = KpiWindow(
        policy(estimated_targets={"accuracy": {"min": 0.95}}, targets={"accuracy": {"min": 0.5}})
    )
    evs = events(4000)
    state, _ = kpi.add_labeled(window(kpi, evs), labeled(evs[:200], accuracy=0.97))
    result = kpi.report(state, CALIBRATION)
    assert result.n_labeled == 200 and result.metrics["accuracy"] > 0.9
    assert result.status == "ok" and result.breaches == [] and not result.estimated
    assert "accuracy" in result.estimated_metrics  # still reported beside the realized one


def test_a_realized_breach_is_not_said_to_rest_on_estimates() -> None:
    """A serving target is judged without labels: missed together with an estimated one,
    the verdict does not rest on estimates alone."""
    kpi = KpiWindow(
        policy(estimated_targets={"roc_auc": {"min": 0.99}}, targets={"latency_p99_ms": {"max": 1}})
    )
    result = kpi.report(window(kpi, events(4000)), CALIBRATION)
    assert result.status == "breach" and not result.estimated
    assert [b.split(" ")[0] for b in result.breaches] == ["latency_p99_ms", "estimated"]


def test_estimated_targets_wait_for_min_estimated_scored_predictions() -> None:
    kpi = KpiWindow(policy(estimated_targets={"accuracy": {"min": 0.95}}))
    result = kpi.report(window(kpi, events(999)), CALIBRATION)
    assert result.status == "ok" and result.estimated_metrics
    assert any(
        "estimated targets not judged (999 scored predictions of 1000" in n for n in result.notes
    )


def test_the_report_carries_the_estimates() -> None:
    kpi = KpiWindow(policy(estimated_targets={"accuracy": {"min": 0.95}}))
    result = kpi.report(window(kpi, events(4000)), CALIBRATION)
    due = series.Due(start_ms=0, revision=0, final=False, late=0, lost=0)
    report = series.report("fraud", "v1", "champion", result, due, window_ms=60_000, orphans=0)
    again = KpiReport.model_validate_json(report.model_dump_json())
    assert again.estimated and again.estimated_metrics["accuracy"].value == pytest.approx(0.9)
    assert again.estimated_metrics["roc_auc"].lower <= again.estimated_metrics["roc_auc"].upper


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"estimated_targets": {"log_loss": {"max": 0.3}}}, "log_loss is not estimated"),
        ({"estimated_targets": {"roc_auc": {"min": 2}}}, "outside the range of roc_auc"),
        (
            {"task": "regression", "estimated_targets": {"roc_auc": {"min": 0.8}}},
            "nothing is estimated for task regression",
        ),
    ],
)
def test_estimated_targets_that_could_never_be_judged_are_refused(
    section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        KpiPolicy.model_validate(section)
