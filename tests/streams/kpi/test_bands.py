"""KPI bands from the spread of the reference's own windows, and rare positives (issue 22)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.kpi_metrics import METRICS
from schemas.policy import KpiPolicy, ReferenceBands, Target
from schemas.reference import MetricSpread, PerformanceBands
from streams.kpi import bands as kpi_bands
from streams.kpi.thresholds import judge
from streams.kpi.window import KpiWindow

PER_WINDOW = 2_000


def traffic(n: int, seed: int, *, flip: float = 0.0) -> tuple[list[int], list[int], list[float]]:
    """A stable scorer (logistic truth, a noisy score, threshold 0.5); ``flip``: that share
    of labels turned, a model that got worse."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * x - 1.0)))).astype(int)
    flipped = rng.random(n) < flip
    y = np.where(flipped, 1 - y, y)
    score = 1 / (1 + np.exp(-(2.0 * x - 1.0 + 0.3 * rng.standard_normal(n))))
    return (score >= 0.5).astype(int).tolist(), y.tolist(), score.tolist()


def policy(**bands: Any) -> KpiPolicy:
    return KpiPolicy(
        reference_bands=ReferenceBands(
            metrics=["roc_auc", "accuracy", "f1", "log_loss", "positive_rate"], **bands
        )
    )


@pytest.fixture(scope="module")
def fitted() -> PerformanceBands:
    bands, why = kpi_bands.fit(policy(window_events=PER_WINDOW), *traffic(40_000, 1))
    assert bands is not None, why
    return bands


def window_result(p: KpiPolicy, bands: PerformanceBands, seed: int, *, n: int = PER_WINDOW,
                  flip: float = 0.0) -> Any:
    kpi = KpiWindow(p)
    pred, y, s = traffic(n, seed, flip=flip)
    matched = [({"v": "v1", "a": "champion", "t": 0, "p": a, "s": c, "g": {}}, b, 0)
               for a, b, c in zip(pred, y, s, strict=True)]
    state, _ = kpi.add_labeled(kpi.initialize(), matched)  # type: ignore[arg-type]
    info, stored = kpi_bands.setting(p, bands.model_dump_json().encode(), version="v1")
    return kpi.report(state, bands=(info, stored))


def test_the_reference_is_cut_into_windows_of_the_policy_s_size(fitted: PerformanceBands) -> None:
    assert fitted.window_events == PER_WINDOW and fitted.windows == 20
    auc = fitted.metrics["roc_auc"]
    assert 0.8 < auc.mean < 0.9 and 0 < auc.std < 0.03 and auc.windows == 20
    # bounded and small: three numbers per metric
    assert len(fitted.model_dump_json()) < 1_500
    # without window_events: NannyML's 10 windows of the reference
    ten, _ = kpi_bands.fit(policy(), *traffic(5_000, 2))
    assert ten is not None and (ten.windows, ten.window_events) == (10, 500)


def test_stable_windows_stay_in_their_band_and_a_worse_model_leaves_it(
    fitted: PerformanceBands,
) -> None:
    p = policy(window_events=PER_WINDOW)
    stable = [window_result(p, fitted, seed) for seed in range(100, 300)]
    false_breaches = sum(r.status == "breach" for r in stable)
    # 3 sd (99.73 %) on five metrics, as a prediction interval from 20 reference windows:
    # about 1 % of windows (measured 5 of 500; NannyML's plain mean -/+ 3 sd: 15 of 500)
    assert false_breaches <= 5, [r.breaches for r in stable if r.breaches]
    worse = [window_result(p, fitted, seed, flip=0.1) for seed in range(300, 320)]
    assert all(r.status == "breach" for r in worse)
    assert any(b.startswith("roc_auc") and "below its reference band" in b
               for b in worse[0].breaches)
    bound = worse[0].thresholds["roc_auc"][0]
    assert bound.source == "reference" and bound.judged and bound.breached
    assert bound.upper is None  # the worse side only: a better AUC is no breach
    assert "over 20 reference windows of 2000 labels" in bound.detail


def test_fewer_labels_widen_the_band_more_labels_do_not_narrow_it(
    fitted: PerformanceBands,
) -> None:
    p = policy(window_events=PER_WINDOW)
    full = kpi_bands.band(p, fitted, "roc_auc", PER_WINDOW)
    quarter = kpi_bands.band(p, fitted, "roc_auc", PER_WINDOW // 4)
    big = kpi_bands.band(p, fitted, "roc_auc", PER_WINDOW * 4)
    assert full is not None and quarter is not None and big is not None
    mean = fitted.metrics["roc_auc"].mean
    assert mean - quarter.lower == pytest.approx(2 * (mean - full.lower))  # type: ignore[operator]
    assert big.lower == full.lower
    assert "widened x2.00 for 500 labels" in quarter.detail


def test_sides_and_the_metric_s_range() -> None:
    stored = PerformanceBands(
        task="classification", positive_label=1, window_events=1000, windows=10,
        min_positives=30,
        metrics={"accuracy": MetricSpread(mean=0.99, std=0.01, windows=10),
                 "log_loss": MetricSpread(mean=0.3, std=0.2, windows=10),
                 "positive_rate": MetricSpread(mean=0.1, std=0.01, windows=10)},
    )
    worse = policy()
    both = policy(sides="both")
    acc = kpi_bands.band(both, stored, "accuracy", 1000)
    k = kpi_bands.multiplier(3.0, 10)  # 4.29: the prediction interval of an 11th window
    assert acc is not None and acc.upper == 1.0 and acc.lower == pytest.approx(0.99 - k * 0.01)
    loss = kpi_bands.band(both, stored, "log_loss", 1000)
    assert loss is not None and loss.lower == 0.0  # clipped to the range
    assert kpi_bands.band(worse, stored, "log_loss", 1000).lower is None  # type: ignore[union-attr]
    rate = kpi_bands.band(worse, stored, "positive_rate", 1000)
    assert rate is not None and rate.lower is not None and rate.upper is not None
    assert kpi_bands.band(worse, stored, "f1", 1000) is None  # no spread stored


def test_targets_and_bands_are_judged_side_by_side_each_named_by_source() -> None:
    stored = PerformanceBands(
        task="classification", positive_label=1, window_events=1000, windows=10,
        min_positives=30, metrics={"roc_auc": MetricSpread(mean=0.85, std=0.01, windows=10)},
    )
    p = KpiPolicy(targets={"roc_auc": Target(min=0.7)},
                  reference_bands=ReferenceBands(metrics=["roc_auc"]))
    info, bands = kpi_bands.setting(p, stored.model_dump_json().encode(), version="v1")
    assert info is not None and info.applied
    quality = {"tp": 100, "fp": 50, "tn": 800, "fn": 50}
    j = judge(p, {"roc_auc": 0.75}, 1000, quality, info, bands)
    assert [t.source for t in j.thresholds["roc_auc"]] == ["target", "reference"]
    target, band = j.thresholds["roc_auc"]
    assert not target.breached and band.breached and band.lower == pytest.approx(0.8071, abs=1e-4)
    assert j.breaches == [
        "roc_auc 0.75 is below its reference band 0.8071 (mean 0.85 -/+ 3 sd 0.01 (as a "
        "prediction interval: x4.29) over 10 reference windows of 1000 labels)"
    ]
    j = judge(p, {"roc_auc": 0.65}, 1000, quality, info, bands)
    assert len(j.breaches) == 2 and j.breaches[0] == "roc_auc 0.65 is below its target 0.7"
    # a banded metric the reference has no spread for: said, not judged
    more = p.model_copy(update={"reference_bands": ReferenceBands(metrics=["roc_auc", "f1"])})
    j = judge(more, {"roc_auc": 0.85, "f1": 0.1}, 1000, quality, info, bands)
    assert j.breaches == [] and "f1" not in j.thresholds
    assert "no reference band for f1: defined on fewer than 5 reference windows" in j.notes[0]


@pytest.mark.parametrize(
    ("stored", "policy_bands", "reason"),
    [
        (None, {}, "no reference profile of v1 has been published"),
        (b"null", {}, "the reference profile of v1 has no bands"),
        ("bands", {"window_events": 500}, "windows of 1000 labels, the policy asks 500"),
        ("bands", {"windows": 20}, "rest on 10 reference windows, the policy asks 20"),
    ],
)
def test_bands_that_do_not_fit_the_policy_are_not_applied_and_say_why(
    stored: Any, policy_bands: dict[str, Any], reason: str
) -> None:
    bands = PerformanceBands(
        task="classification", positive_label=1, window_events=1000, windows=10,
        min_positives=30, metrics={"roc_auc": MetricSpread(mean=0.85, std=0.01, windows=10)},
    )
    raw = bands.model_dump_json().encode() if stored == "bands" else stored
    p = KpiPolicy(reference_bands=ReferenceBands(metrics=["roc_auc"], **policy_bands))
    info, got = kpi_bands.setting(p, raw, version="v1")
    assert info is not None and not info.applied and got is None
    assert reason in info.reason
    j = judge(p, {"roc_auc": 0.1}, 1000, {}, info, got)
    assert j.breaches == [] and any(reason in n for n in j.notes)
    other = KpiPolicy(positive_label="fraud", reference_bands=ReferenceBands(metrics=["roc_auc"]))
    info, _ = kpi_bands.setting(other, bands.model_dump_json().encode(), version="v1")
    assert info is not None and "as positive, the policy 'fraud'" in info.reason
    assert kpi_bands.setting(KpiPolicy(), raw, version="v1") == (None, None)


def test_too_few_reference_rows_give_no_bands() -> None:
    bands, why = kpi_bands.fit(policy(window_events=1000), *traffic(4_500, 3))
    assert bands is None and "make 4 windows of 1000; a band needs at least 5 of at least 50" in why
    bands, why = kpi_bands.fit(policy(), *traffic(300, 3))
    assert bands is None and "make 10 windows of 30; a band needs" in why


def test_a_regressor_s_errors_get_bands_on_the_high_side() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(100, 10, 5_000)
    pred = y + rng.normal(0, 5, 5_000)
    p = KpiPolicy(task="regression", reference_bands=ReferenceBands(metrics=["mae", "rmse"]))
    bands, _ = kpi_bands.fit(p, pred.tolist(), y.tolist())
    assert bands is not None and set(bands.metrics) == {"mae", "rmse", "mape"}
    assert bands.metrics["mae"].mean == pytest.approx(5 * np.sqrt(2 / np.pi), rel=0.05)
    held = kpi_bands.band(p, bands, "mae", 500)
    assert held is not None and held.lower is None and held.upper > bands.metrics["mae"].mean  # type: ignore[operator]


# -- rare positives -----------------------------------------------------------------------


def test_precision_on_a_few_predicted_positives_is_not_judged() -> None:
    p = KpiPolicy(targets={"precision": Target(min=0.5), "recall": Target(min=0.5),
                           "f1": Target(min=0.5)})
    quality = {"tp": 2, "fp": 5, "tn": 900, "fn": 40}
    metrics = {"precision": 2 / 7, "recall": 2 / 42, "f1": 4 / 49}
    j = judge(p, metrics, 947, quality)
    assert j.breaches == ["recall 0.04762 is below its target 0.5"]
    assert j.notes == ["not judged: f1 on 7 predicted positives, precision on 7 predicted "
                       "positives, fewer than 30 (kpi.min_positives)"]
    assert not j.thresholds["precision"][0].judged and j.thresholds["recall"][0].breached
    loose = p.model_copy(update={"min_positives": 0})
    assert len(judge(loose, metrics, 947, quality).breaches) == 3


def test_rare_positives_keep_false_breaches_down() -> None:
    """A model at precision 0.6 with 1 % predicted positives, windows of 1,000 labels:
    judged on every window, a target of 0.4 breaches by chance; with min_positives only
    windows with 30 predicted positives (none here) are judged."""
    rng = np.random.default_rng(5)
    p = KpiPolicy(targets={"precision": Target(min=0.4)})
    strict = p.model_copy(update={"min_positives": 0})
    naive = careful = 0
    for _ in range(500):
        predicted = int(rng.binomial(1000, 0.01))
        tp = int(rng.binomial(predicted, 0.6))
        quality = {"tp": tp, "fp": predicted - tp, "tn": 1000 - predicted - 20, "fn": 20}
        metrics = {"precision": tp / predicted} if predicted else {}
        naive += bool(judge(strict, metrics, 1000, quality).breaches)
        careful += bool(judge(p, metrics, 1000, quality).breaches)
    assert naive > 50 and careful == 0


def test_the_policy_refuses_bands_it_could_never_judge() -> None:
    for metrics, reason in (
        (["latency_p99_ms"], "latency_p99_ms has no reference band"),
        (["mae"], "mae is not computed for task classification"),
        (["business_value"], "a window's sum"),
        (["roc_auc", "roc_auc"], "each metric once"),
    ):
        with pytest.raises(ValidationError, match=reason):
            KpiPolicy.model_validate({"reference_bands": {"metrics": metrics},
                                      "cost": {"tp": 1, "fn": -1}})
    with pytest.raises(ValidationError, match="greater than 0"):
        KpiPolicy.model_validate({"reference_bands": {"metrics": ["f1"], "std": 0}})


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["accuracy", "roc_auc", "log_loss", "positive_rate", "mae"]),
    mean=st.floats(0.0, 1.0),
    sd=st.floats(0.0, 0.5),
    windows=st.integers(5, 1000),
    std=st.floats(0.5, 10.0),
    labeled=st.integers(1, 20_000),
    sides=st.sampled_from(["worse", "both"]),
)
def test_a_band_holds_its_mean_stays_in_range_and_widens_with_fewer_labels(
    name: str, mean: float, sd: float, windows: int, std: float, labeled: int, sides: str
) -> None:
    task = "regression" if name == "mae" else "classification"
    p = KpiPolicy(task=task, reference_bands=ReferenceBands(
        metrics=[name], std=std, sides=sides))  # type: ignore[arg-type]
    stored = PerformanceBands(
        task=task, positive_label=1 if task == "classification" else None, window_events=2000,
        windows=windows, min_positives=30,
        metrics={name: MetricSpread(mean=mean, std=sd, windows=windows)},
    )
    held = kpi_bands.band(p, stored, name, labeled)
    assert held is not None and (held.lower is not None or held.upper is not None)
    lo, hi = METRICS[name].lo, METRICS[name].hi
    if held.lower is not None:
        assert lo <= held.lower <= mean
    if held.upper is not None:
        assert mean <= held.upper <= hi
    fewer = kpi_bands.band(p, stored, name, max(1, labeled // 2))
    assert fewer is not None
    if held.lower is not None:
        assert fewer.lower is not None and fewer.lower <= held.lower
    if held.upper is not None:
        assert fewer.upper is not None and fewer.upper >= held.upper
