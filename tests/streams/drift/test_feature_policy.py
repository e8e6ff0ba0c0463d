"""Per-feature drift settings (``drift.features`` in the policy file), in the monitor.

Each test runs the same traffic under the default policy and under one with a
per-feature override, so the difference is the override's doing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from schemas.policy import DriftPolicy, FeatureDriftPolicy, parse_policy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import MULTIVARIATE, PREDICTION, SCORE, VersionState

W = 60_000  # window, ms
NUMERIC = ["f0", "f1", "f2", "f3"]
CHANNELS = ["web", "app", "pos", "phone"]
BASE_P = (0.45, 0.3, 0.2, 0.05)
SHIFTED_P = (0.3, 0.3, 0.2, 0.2)
N = 3000
DEFAULTS = {"psi_warn": 0.05, "psi_drift": 0.2, "consecutive": 2}


def _policy(**overrides: Any) -> DriftPolicy:
    values: dict[str, Any] = {
        "window": "60s",
        "allowed_lateness": "0s",
        "min_reference_events": 1000,
    }
    values.update(overrides)
    return DriftPolicy(**values)


def _window(
    rng: np.random.Generator,
    index: int,
    n: int = N,
    *,
    shift: Mapping[str, float] | None = None,
    channel_p: Sequence[float] = BASE_P,
    outputs: bool = False,
) -> FeatureBatch:
    """Four N(0, 1) features (``shift`` moves some by that many sd) and a category."""
    shift = shift or {}
    cols: dict[str, list[Any]] = {
        name: rng.normal(shift.get(name, 0.0), 1.0, n).tolist() for name in NUMERIC
    }
    cols["channel"] = rng.choice(CHANNELS, n, p=channel_p).tolist()
    if outputs:
        cols[SCORE] = rng.beta(2.0 + 3 * shift.get(SCORE, 0.0), 5.0, n).tolist()
        cols[PREDICTION] = rng.choice(["approve", "deny"], n, p=[0.8, 0.2]).tolist()
    ts = (index * W + np.arange(n) * W // n).astype(np.int64)
    return FeatureBatch(ts_ms=ts, columns=cols)


def _traffic(
    shifts: Sequence[Mapping[str, float]], *, seed: int = 11, outputs: bool = False
) -> list[FeatureBatch]:
    """A clean warm-up window, then one window per ``shifts`` entry (``channel``: the
    category's shifted mix), then one event that closes the last window."""
    rng = np.random.default_rng(seed)
    batches = [_window(rng, 0, outputs=outputs)]
    for i, shift in enumerate(shifts, start=1):
        mix = SHIFTED_P if shift.get("channel") else BASE_P
        batches.append(_window(rng, i, shift=shift, channel_p=mix, outputs=outputs))
    batches.append(_window(rng, len(shifts) + 1, 1))
    return batches


def _run(
    policy: DriftPolicy, batches: Sequence[FeatureBatch], state: VersionState | None = None
) -> tuple[VersionState, list[DriftReport]]:
    monitor = DriftMonitor(policy=policy)
    state = state or monitor.initialize("m", "v1")
    reports: list[DriftReport] = []
    for batch in batches:
        state = monitor.update(state, batch)
        state, closed = monitor.close_ready(state)
        reports.extend(closed)
    return state, reports


def _statuses(report: DriftReport) -> dict[str, str]:
    return {name: f.status for name, f in report.features.items()}


# One window where f1, f2 and channel all move (PSI about 0.25-0.3 each).
LARGE = [{"f1": 0.5, "f2": 0.5, "channel": 1.0}]


@pytest.fixture(scope="module")
def default_run() -> list[DriftReport]:
    _, reports = _run(_policy(), _traffic(LARGE))
    return reports


def test_by_default_every_shifted_feature_is_flagged(default_run: list[DriftReport]) -> None:
    report = default_run[-1]
    assert _statuses(report) == {
        "f0": "ok",
        "f1": "drift",
        "f2": "drift",
        "f3": "ok",
        "channel": "drift",
    }
    for f in report.features.values():
        assert f.thresholds == DEFAULTS
        assert f.ignored is False


def test_higher_thresholds_unflag_that_feature_only(default_run: list[DriftReport]) -> None:
    policy = _policy(
        features={
            "f1": {"psi_warn": 0.5, "psi_drift": 1.0},
            "channel": {"psi_warn": 0.4, "psi_drift": 0.6},  # categorical: judged on PSI too
            "never_seen": {"ignore": True},  # a name that is not in the traffic is fine
        }
    )
    _, reports = _run(policy, _traffic(LARGE))
    report, before = reports[-1], default_run[-1]
    assert _statuses(report) == {"f0": "ok", "f1": "ok", "f2": "drift", "f3": "ok", "channel": "ok"}
    assert report.drifted_features[0] == "f2"
    assert not {"f1", "channel"} & set(report.drifted_features)
    # Same data, same metrics and noise thresholds: only the floor changed.
    f1 = report.features["f1"]
    assert f1.metrics == before.features["f1"].metrics
    assert f1.threshold == before.features["f1"].threshold
    assert f1.threshold is not None and f1.metrics["psi"] > f1.threshold
    assert 0.2 < f1.metrics["psi"] < 0.5
    assert f1.reason == "" and f1.streak == 0
    # The report says which thresholds applied to each feature, so the on-call
    # engineer sees why f1 (PSI about 0.25) is ok while f2 is drift.
    assert f1.thresholds == {"psi_warn": 0.5, "psi_drift": 1.0, "consecutive": 2}
    assert report.features["channel"].thresholds == {
        "psi_warn": 0.4,
        "psi_drift": 0.6,
        "consecutive": 2,
    }
    assert report.features["f2"].thresholds == DEFAULTS
    assert report.features["f2"].reason == before.features["f2"].reason
    assert report.thresholds == before.thresholds  # the section's, as before
    again = DriftReport.model_validate_json(orjson.dumps(report.model_dump(mode="json")))
    assert again == report


def test_ignore_reports_a_feature_but_never_flags_it(default_run: list[DriftReport]) -> None:
    policy = _policy(features={"f1": {"ignore": True}, "channel": {"ignore": True}})
    state, reports = _run(policy, _traffic(LARGE))
    report, before = reports[-1], default_run[-1]
    assert _statuses(report) == {"f0": "ok", "f1": "ok", "f2": "drift", "f3": "ok", "channel": "ok"}
    assert report.drifted_features == ["f2"]
    for name in ("f1", "channel"):
        f = report.features[name]
        # still summarised and reported, with every metric ...
        assert f.ignored is True
        assert f.metrics == before.features[name].metrics
        assert f.n == before.features[name].n
        assert f.metrics["psi"] > 0.2
        # ... but judged by nothing
        assert (f.threshold, f.thresholds, f.streak, f.reason) == (None, {}, 0, "")
        assert name not in state["streaks"]
    assert report.features["f2"].ignored is False


def test_ignored_features_are_left_out_of_the_multiple_testing_count() -> None:
    """The other features' noise thresholds are as if the ignored ones did not exist."""
    shifts = [{"f2": 0.5}]
    ignored = _run(_policy(features={"f1": {"ignore": True}}), _traffic(shifts))[1][-1]
    default = _run(_policy(), _traffic(shifts))[1][-1]
    without = [_drop(b, "f1") for b in _traffic(shifts)]
    absent = _run(_policy(), without)[1][-1]
    for name in ("f0", "f2", "f3", "channel"):
        t = ignored.features[name].threshold
        assert t is not None
        assert t == absent.features[name].threshold, name
        # fewer tests: a larger share of the false-alarm rate each, a lower threshold
        assert t < default.features[name].threshold, name  # type: ignore[operator]


def _drop(batch: FeatureBatch, name: str) -> FeatureBatch:
    columns = {k: v for k, v in batch.columns.items() if k != name}
    return FeatureBatch(ts_ms=batch.ts_ms, columns=columns)


def test_an_ignored_feature_does_not_make_the_window_warn_through_the_multivariate_signal() -> None:
    # f1 moves by two sd: alone, it raises the reconstruction error of the
    # features taken together as well.
    shifts = [{}, {"f1": 2.0}]
    default = _run(_policy(), _traffic(shifts))[1][-1]
    assert default.features["f1"].status == "drift"
    assert default.multivariate is not None and default.multivariate.status != "ok"
    assert MULTIVARIATE in default.drifted_features

    report = _run(_policy(features={"f1": {"ignore": True}}), _traffic(shifts))[1][-1]
    assert report.status == "ok"
    assert report.drifted_features == []
    assert report.features["f1"].ignored and report.features["f1"].metrics["psi"] > 1
    assert report.multivariate is not None
    assert report.multivariate.features_used == ["f0", "f2", "f3", "channel"]
    assert report.multivariate.status == "ok"


def test_a_reference_built_before_the_feature_was_ignored_says_so() -> None:
    batches = _traffic([{}, {}])
    state, _ = _run(_policy(), batches[:2])  # the warm-up reference includes f1
    assert state["reference"] is not None
    pca = state["reference"].get("multivariate")
    assert pca is not None and "f1" in pca["names"]
    _, reports = _run(_policy(features={"f1": {"ignore": True}}), batches[2:], state)
    (note,) = [n for n in reports[-1].notes if "ignored by the policy" in n]
    assert "multivariate signal still includes f1" in note
    assert "before they were ignored" in note


def test_consecutive_delays_drift_for_that_feature_only() -> None:
    # f1 and f2 move a little (PSI about 0.1: above the floor, below psi_drift)
    # in three windows in a row.
    shifts = [{"f1": 0.35, "f2": 0.35}] * 3
    policy = _policy(multivariate=False, features={"f1": {"consecutive": 3}})
    _, reports = _run(policy, _traffic(shifts))
    judged = reports[1:]
    assert [r.features["f2"].status for r in judged] == ["warn", "drift", "drift"]
    assert [r.features["f1"].status for r in judged] == ["warn", "warn", "drift"]
    assert [r.features["f1"].streak for r in judged] == [1, 2, 3]
    for r in judged:
        assert 0.05 < r.features["f1"].metrics["psi"] < 0.2
        assert r.features["f1"].thresholds == {**DEFAULTS, "consecutive": 3}
        assert r.features["f2"].thresholds == DEFAULTS
    assert "drift if it holds 2 more windows" in judged[0].features["f1"].reason
    assert "drift if it holds 1 more window;" in judged[1].features["f1"].reason
    assert "flagged 3 windows in a row" in judged[2].features["f1"].reason
    assert "flagged 2 windows in a row" in judged[1].features["f2"].reason
    assert [r.status for r in judged] == ["warn", "drift", "drift"]
    # Under the default policy f1 drifts in the second window, as f2 does.
    _, default = _run(_policy(multivariate=False), _traffic(shifts))
    assert [r.features["f1"].status for r in default[1:]] == ["warn", "drift", "drift"]


def test_model_level_feature_overrides() -> None:
    policy = parse_policy("""
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 1000
  features:
    f1: {ignore: true}
models:
  fraud:
    drift:
      window: 60s
      allowed_lateness: 0s
      min_reference_events: 1000
      features:
        f2: {psi_warn: 0.5, psi_drift: 1.0}
""")
    batches = _traffic(LARGE)
    fraud = _run(policy.drift_for("fraud"), batches)[1][-1]
    other = _run(policy.drift_for("churn"), batches)[1][-1]
    # A model's drift section replaces the top-level one, its features included.
    assert _statuses(fraud) == {
        "f0": "ok",
        "f1": "drift",
        "f2": "ok",
        "f3": "ok",
        "channel": "drift",
    }
    assert fraud.features["f2"].thresholds == {**DEFAULTS, "psi_warn": 0.5, "psi_drift": 1.0}
    assert not fraud.features["f1"].ignored
    assert _statuses(other) == {
        "f0": "ok",
        "f1": "ok",
        "f2": "drift",
        "f3": "ok",
        "channel": "drift",
    }
    assert other.features["f1"].ignored


def test_the_model_outputs_are_named_as_in_the_report() -> None:
    shifts = [{SCORE: 1.0}]
    default = _run(_policy(), _traffic(shifts, outputs=True))[1][-1]
    assert default.prediction["score"].status != "ok"
    assert "prediction.score" in default.drifted_features

    policy = _policy(
        features={"prediction.score": {"ignore": True}, "prediction.class": {"psi_drift": 0.3}}
    )
    report = _run(policy, _traffic(shifts, outputs=True))[1][-1]
    assert report.prediction["score"].ignored
    assert report.prediction["score"].status == "ok"
    assert report.prediction["class"].thresholds == {**DEFAULTS, "psi_drift": 0.3}
    assert "prediction.score" not in report.drifted_features


def test_without_features_reports_are_unchanged(default_run: list[DriftReport]) -> None:
    """An empty ``features`` is the default: the same reports, byte for byte."""
    _, reports = _run(_policy(features={}), _traffic(LARGE))
    assert [r.model_dump_json() for r in reports] == [r.model_dump_json() for r in default_run]


def test_monitor_refuses_a_feature_psi_warn_above_its_psi_drift() -> None:
    # DriftPolicy refuses this itself (tests/schemas); model_copy skips validation.
    base = DriftPolicy(features={"f1": FeatureDriftPolicy(psi_warn=0.1)})
    bad = base.model_copy(update={"psi_drift": 0.08})  # the section's, below f1's psi_warn
    with pytest.raises(ValueError, match="psi_warn must not exceed psi_drift"):
        DriftMonitor(policy=bad)
