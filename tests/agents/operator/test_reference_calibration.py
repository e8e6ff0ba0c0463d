"""`driftline reference build` fits the score's calibration for estimates before labels."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agents.operator import reference_build
from schemas.policy import DriftPolicy, KpiPolicy
from schemas.reference import ReferenceProfile, ScoreCalibration


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows(n: int = 3000, *, label: Any = (0, 1)) -> list[dict[str, Any]]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=n)
    score = 1.0 / (1.0 + np.exp(-(1.5 * x - 1.0)))
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-(2.0 * x - 0.5)))  # under-confident score
    return [
        {"amount": float(a), "score": float(s), "label": label[int(v)]}
        for a, s, v in zip(x, score, y, strict=True)
    ]


def build(path: Path, **kw: Any) -> ReferenceProfile:
    return reference_build.build(path, model="m", version="v1", policy=DriftPolicy(), **kw)


def test_scores_and_labels_give_a_monotone_calibration(tmp_path: Path) -> None:
    profile = build(write_csv(tmp_path / "ref.csv", rows()))
    cal = profile.calibration
    assert cal is not None and cal.method == "isotonic" and cal.positive_label == 1
    assert sum(cal.count) == 3000
    assert cal.probability == sorted(cal.probability)
    # the score says 0.27 at x = 0; the labels say sigmoid(-0.5) = 0.38: the map corrects it
    block = int(np.searchsorted(cal.edges, 0.27, side="right"))
    assert cal.probability[block] == pytest.approx(0.38, abs=0.08)
    again = ReferenceProfile.model_validate_json(profile.model_dump_json())
    assert again.calibration == cal


def test_the_positive_label_is_the_kpi_policy_s(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ref.csv", rows(label=("ok", "fraud")))
    assert build(path).calibration is None  # "1" is not a label here: one class only
    cal = build(path, kpi=KpiPolicy(positive_label="fraud")).calibration
    assert cal is not None and cal.positive_label == "fraud"
    assert cal.probability[-1] > 0.8


@pytest.mark.parametrize("drop", ["score", "label"])
def test_no_score_or_no_label_no_calibration(tmp_path: Path, drop: str) -> None:
    path = write_csv(
        tmp_path / "ref.csv", [{k: v for k, v in r.items() if k != drop} for r in rows(200)]
    )
    assert build(path).calibration is None


def test_regression_gets_no_calibration(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ref.csv", rows(200))
    assert build(path, kpi=KpiPolicy(task="regression")).calibration is None


def test_profiles_without_calibration_still_read() -> None:
    old = {
        "model": "m",
        "model_version": "v1",
        "created_at": "2026-01-01T00:00:00Z",
        "source": "f.csv",
        "n": 1,
        "features": {},
    }
    assert ReferenceProfile.model_validate(old).calibration is None


@pytest.mark.parametrize(
    "bad",
    [
        {"edges": [0.5], "probability": [0.6, 0.4], "count": [1, 1]},
        {"edges": [1.5], "probability": [0.1, 0.4], "count": [1, 1]},
        {"edges": [], "probability": [0.1, 0.4], "count": [1, 1]},
        {"edges": [0.5], "probability": [0.1, 0.4], "count": [0, 1]},
    ],
)
def test_a_calibration_that_is_not_a_monotone_map_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ScoreCalibration(positive_label=1, **bad)
