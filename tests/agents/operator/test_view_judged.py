"""The live view (agents/operator/view.py) never shows a window that was not judged as OK.

The reports come from the real drift kernel (streams.drift.monitor), so the view
and the kernel's notes cannot drift apart unnoticed.
"""

from __future__ import annotations

import numpy as np
import orjson

from agents.operator import view
from schemas.policy import DriftPolicy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift import reference_switch
from streams.drift.monitor import DriftMonitor
from streams.drift.state import VersionState

W = 60_000  # window, ms


def _policy() -> DriftPolicy:
    return DriftPolicy(
        window="60s", allowed_lateness="10s", min_reference_events=1000, min_window_events=200
    )


def _window(rng: np.random.Generator, index: int, n: int) -> FeatureBatch:
    ts = (index * W + np.arange(n) * W // n).astype(np.int64)
    return FeatureBatch(
        ts_ms=ts,
        columns={"f0": rng.normal(0.0, 1.0, n).tolist(), "f1": rng.normal(0.0, 1.0, n).tolist()},
    )


def _closing(index: int) -> FeatureBatch:
    """One event far enough after window ``index - 1`` to close it."""
    return FeatureBatch(
        ts_ms=np.array([index * W + 10_000], dtype=np.int64), columns={"f0": [0.0], "f1": [0.0]}
    )


def _feed(
    monitor: DriftMonitor, state: VersionState, batches: list[FeatureBatch]
) -> tuple[VersionState, list[DriftReport]]:
    reports: list[DriftReport] = []
    for batch in batches:
        state, closed = monitor.close_ready(monitor.update(state, batch))
        reports.extend(closed)
    return state, reports


def _line(report: DriftReport) -> str:
    return view.render("drift", report.model_dump_json().encode(), colour=False)


def _reports() -> list[DriftReport]:
    """Window 0 open when the reference arrives, window 1 judged, window 2 too small."""
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(policy=_policy())
    built, _ = _feed(monitor, monitor.initialize("m", "v1"), [_window(rng, 0, 2000), _closing(1)])
    state = monitor.update(monitor.initialize("m", "v1"), _window(rng, 0, 500))
    assert built["reference"] is not None
    state = reference_switch.switch(state, built["reference"], None, pane_ms=monitor.policy.pane)
    _, reports = _feed(monitor, state, [_window(rng, 1, 2000), _window(rng, 2, 100), _closing(3)])
    return reports


def test_windows_not_judged_are_shown_as_not_judged() -> None:
    early, judged, small = _reports()
    for report in (early, small):
        assert report.status == "ok"  # the status alone says nothing
        line = _line(report)
        assert "NOT JUDGED" in line and " OK " not in line, line
        assert report.notes[0] in line  # and why
    assert "reported, not judged" in _line(early)
    assert "only 100 events" in _line(small)
    line = _line(judged)
    assert " OK " in line and "NOT JUDGED" not in line, line


def test_a_window_judged_against_a_warm_up_reference_says_so() -> None:
    _, judged, _ = _reports()
    assert judged.reference.kind == "warmup"
    assert _line(judged).endswith("vs warm-up")
    profile = orjson.loads(judged.model_dump_json())
    profile["reference"] = {"kind": "profile", "n": 5000, "note": "reference profile from x"}
    assert "warm-up" not in view.drift_line(profile)


def test_a_window_without_compared_features_is_not_judged() -> None:
    report = orjson.loads(_reports()[1].model_dump_json())
    report["features"], report["prediction"], report["notes"] = {}, {}, []
    report["multivariate"] = None
    report["reference"] = {"kind": "profile", "n": 5000, "note": "reference profile from x"}
    line = view.drift_line(report)
    assert "NOT JUDGED" in line and "no feature was compared" in line, line


def test_the_warm_up_windows_are_still_shown_as_reference() -> None:
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(policy=_policy())
    _, (report,) = _feed(
        monitor, monitor.initialize("m", "v1"), [_window(rng, 0, 600), _closing(1)]
    )
    assert "REFERENCE" in _line(report) and "building the warm-up reference" in _line(report)
