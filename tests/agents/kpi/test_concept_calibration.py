"""The KPI agent's concept detector, calibrated on the published reference (issue 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.signal import lfilter

from agents.kpi.model_batch import DETECTOR
from agents.operator import reference_build
from schemas.policy import DriftPolicy, parse_policy
from schemas.reference import ReferenceProfile
from schemas.reports import KpiReport
from streams.join import SEP
from streams.kpi.concept import ConceptDetector
from tests.agents.kpi.test_estimates import Run

T0 = 1_800_000_000 - 1_800_000_000 % 60
MODEL = "fraud-detector"  # the model Run sends as
POLICY = parse_policy("""
kpi:
  task: regression
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
""")
PER_WINDOW = 2_000


def rows(n: int, seed: int) -> list[dict[str, float]]:
    """A stable house-price regressor: its absolute errors lognormal, autocorrelated."""
    rng = np.random.default_rng(seed)
    z = lfilter([1.0], [1.0, -0.8], rng.standard_normal(n) * 0.6)
    price = rng.uniform(100_000, 500_000, n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    prediction = price + sign * 10_000 * np.exp(z)
    rooms = rng.integers(1, 8, n).astype(float)
    return [
        {"rooms": r, "prediction": p, "label": y}
        for r, p, y in zip(rooms.tolist(), prediction.tolist(), price.tolist(), strict=True)
    ]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    path: Path = tmp_path_factory.mktemp("ref") / "houses.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows(20_000, 1)))
    return reference_build.build(
        path, model=MODEL, version="v1", policy=DriftPolicy(), kpi=POLICY.kpi
    )


def run_windows(run: Run, n_windows: int, per_window: int = PER_WINDOW) -> list[KpiReport]:
    """``n_windows`` windows of live traffic from the same stable regressor; each window's
    last report."""
    live = rows(n_windows * per_window, 7)
    for w in range(n_windows):
        chunk = live[w * per_window : (w + 1) * per_window]
        ts = T0 + 60 * w + np.linspace(0, 59, per_window)
        ids = [f"r{w}-{i}" for i in range(per_window)]
        run.events(
            "predictions",
            [
                {
                    "request_id": i,
                    "model": MODEL,
                    "model_version": "v1",
                    "ts": t,
                    "prediction": r["prediction"],
                }
                for i, t, r in zip(ids, ts.tolist(), chunk, strict=True)
            ],
        )
        run.events(
            "labels",
            [
                {"request_id": i, "model": MODEL, "ts": t + 5, "label": r["label"]}
                for i, t, r in zip(ids, ts.tolist(), chunk, strict=True)
            ],
        )
    run.events(
        "predictions",
        [
            {
                "request_id": "tick",
                "model": MODEL,
                "model_version": "v1",
                "ts": T0 + 60 * n_windows + 1,
                "prediction": 1.0,
            }
        ],
    )
    run.reports += run.handler.flush(run.table)
    last: dict[Any, KpiReport] = {}
    for r in run.reports:
        last[r.window_start] = r
    return [last[k] for k in sorted(last)]


def test_the_reference_carries_the_calibration(profile: ReferenceProfile) -> None:
    cal = profile.concept
    assert cal is not None and cal.detector == "adwin" and cal.met
    assert cal.false_alarm_rate <= 0.05 <= cal.uncalibrated_false_alarm_rate
    assert cal.errors == 20_000 and cal.window_events == 5_000
    assert len(cal.model_dump_json()) < 600  # bounded and small


def test_a_reference_without_labels_gives_no_calibration(tmp_path: Path) -> None:
    path = tmp_path / "houses.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({k: v for k, v in r.items() if k != "label"}) + b"\n" for r in rows(500, 2)
        )
    )
    built = reference_build.build(
        path, model=MODEL, version="v1", policy=DriftPolicy(), kpi=POLICY.kpi
    )
    assert built.concept is None


def test_reports_say_calibrated_and_stop_crying_wolf(profile: ReferenceProfile) -> None:
    run = Run(POLICY)
    run.send("references", profile.model_dump_json().encode(), key=b"fraud-detector@v1")
    reports = run_windows(run, 10)
    assert len(reports) == 10
    reports = reports[:10]
    for r in reports:
        assert r.concept is not None and r.concept.calibrated, r.concept
        assert r.concept.false_alarm_rate == profile.concept.false_alarm_rate  # type: ignore[union-attr]
        assert r.concept.scale == profile.concept.scale  # type: ignore[union-attr]
    assert sum(r.concept_drift for r in reports) <= 1


def test_without_a_profile_the_detector_is_uncalibrated_and_says_so() -> None:
    run = Run(POLICY)
    reports = run_windows(run, 10)[:10]
    for r in reports:
        assert r.concept is not None and not r.concept.calibrated
        assert "no reference profile of v1" in r.concept.reason
    # today's behaviour: ADWIN on the dollar errors fires in (nearly) every window
    assert sum(r.concept_drift for r in reports) >= 8


def test_kswin_runs_with_the_alpha_calibrated_on_the_reference(tmp_path: Path) -> None:
    """The same wiring for KSWIN: reference build calibrates its alpha, the report says so
    and the agent's detector runs it (the state it saves holds the calibrated alpha)."""
    policy = parse_policy("""
kpi:
  task: regression
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  concept_detector: kswin
""")
    path = tmp_path / "houses.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows(2_000, 1)))
    built = reference_build.build(
        path, model=MODEL, version="v1", policy=DriftPolicy(), kpi=policy.kpi
    )
    cal = built.concept
    assert cal is not None and cal.detector == "kswin" and cal.met and cal.scale is None
    assert cal.params["alpha"] < 0.005 and cal.uncalibrated_false_alarm_rate > 0.5
    run = Run(policy)
    run.send("references", built.model_dump_json().encode(), key=b"fraud-detector@v1")
    reports = run_windows(run, 2, per_window=400)
    assert len(reports) == 2
    for r in reports:
        assert r.concept is not None and r.concept.calibrated, r.concept
        assert r.concept.detector == "kswin" and r.concept.reason == ""
        assert r.concept.params["alpha"] == cal.params["alpha"]
        assert r.concept.false_alarm_rate == cal.false_alarm_rate
    (saved,) = [v for k, v in run.table.items() if k.split(SEP)[0] == DETECTOR.encode()]
    detector = ConceptDetector.loads(saved)  # the series' detector, as the agent stored it
    assert detector.kind == "kswin" and detector.params["alpha"] == cal.params["alpha"]
    assert detector.n == 800 and detector.params["window_size"] == 300
