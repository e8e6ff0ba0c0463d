"""Segment disparity (streams/kpi/disparity.py): gaps, extremes and the minimum count."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import recall_score

from streams.kpi.classification import ClassificationKpi
from streams.kpi.disparity import segment_disparity


def test_gap_and_extremes() -> None:
    metrics = {
        "DE": {"recall": 0.8, "precision": 0.5},
        "FR": {"recall": 0.6, "precision": 0.7},
        "ES": {"recall": 0.7},
    }
    d = segment_disparity(metrics, {"DE": 200, "FR": 300, "ES": 150}, min_count=100)
    assert d["recall"] == {
        "gap": pytest.approx(0.2), "min": 0.6, "max": 0.8,
        "min_segment": "FR", "max_segment": "DE", "segments": 3,
    }
    assert d["precision"]["gap"] == pytest.approx(0.2)
    assert (d["precision"]["min_segment"], d["precision"]["max_segment"]) == ("DE", "FR")


def test_small_segments_are_not_compared() -> None:
    metrics = {"big": {"recall": 0.8}, "mid": {"recall": 0.7}, "tiny": {"recall": 0.0}}
    d = segment_disparity(metrics, {"big": 1000, "mid": 100, "tiny": 99}, min_count=100)
    assert d["recall"]["min_segment"] == "mid"
    assert d["recall"]["segments"] == 2
    # a segment without a count has no events
    assert segment_disparity(metrics, {"big": 1000}, min_count=1) == {}
    # min_count=0 compares everything
    assert segment_disparity(metrics, {}, min_count=0)["recall"]["min_segment"] == "tiny"


def test_metric_in_fewer_than_two_segments_is_left_out() -> None:
    metrics = {"a": {"recall": 0.5, "roc_auc": 0.9}, "b": {"recall": 0.4}}
    assert set(segment_disparity(metrics, {"a": 10, "b": 10}, min_count=1)) == {"recall"}
    assert segment_disparity({}, {}, min_count=1) == {}


def test_ties_go_to_the_first_name() -> None:
    metrics = {"c": {"m": 1.0}, "a": {"m": 1.0}, "b": {"m": 1.0}}
    d = segment_disparity(metrics, dict.fromkeys("abc", 5), min_count=1)["m"]
    assert (d["gap"], d["min_segment"], d["max_segment"]) == (0.0, "a", "a")


def test_non_finite_values_are_ignored() -> None:
    metrics = {"a": {"m": float("nan")}, "b": {"m": 0.2}, "c": {"m": 0.4}}
    d = segment_disparity(metrics, dict.fromkeys("abc", 5), min_count=1)["m"]
    assert (d["min_segment"], d["max_segment"], d["segments"]) == ("b", "c", 2)


def test_negative_min_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="min_count"):
        segment_disparity({}, {}, min_count=-1)


def test_from_per_segment_kpis() -> None:
    rng = np.random.default_rng(0)
    n = 30_000
    segment = rng.choice(np.array(["web", "app", "pos"]), n, p=[0.5, 0.49, 0.01])
    y = (rng.random(n) < 0.3).astype(np.int64)
    miss = rng.random(n) < np.where(segment == "app", 0.4, 0.1)  # app misses more positives
    pred = np.where((y == 1) & miss, 0, y)
    kpi = ClassificationKpi()
    states = {
        s: kpi.update(kpi.initialize(), y[segment == s], pred[segment == s])
        for s in ("web", "app", "pos")
    }
    d = segment_disparity(
        {s: kpi.metrics(st) for s, st in states.items()},
        {s: kpi.count(st) for s, st in states.items()},
        min_count=1_000,
    )
    web, app = segment == "web", segment == "app"
    assert d["recall"]["gap"] == pytest.approx(
        recall_score(y[web], pred[web]) - recall_score(y[app], pred[app]), rel=1e-9
    )
    assert (d["recall"]["max_segment"], d["recall"]["min_segment"]) == ("web", "app")
    assert d["recall"]["segments"] == 2  # "pos" has about 300 events
