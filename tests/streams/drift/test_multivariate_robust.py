"""The multivariate signal on data like real data (issue 22): two-sided, categorical
features in it, one extreme event unable to dominate it, calibrated, and still
independent of batching. Fixed seeds, explicit event times."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from schemas.export import json_schemas
from schemas.policy import DriftPolicy
from schemas.reports import DriftReport, MultivariateDrift
from streams.batch import FeatureBatch
from streams.drift import multivariate as mv
from streams.drift.monitor import DriftMonitor
from streams.drift.state import MULTIVARIATE, VersionState

W = 60_000
D = 8
NAMES = [f"x{i:02d}" for i in range(D)]


def _factor(rng: np.random.Generator, n: int, *, noise: float = 1.0) -> np.ndarray:
    """Two common factors plus independent noise of sd ``noise``: a smaller ``noise``
    makes the features more correlated and the reconstruction error smaller."""
    loadings = np.array(
        [[1.0, 0.9, 0.8, 0.7, 0.0, 0.0, 0.3, 0.2], [0.0, 0.1, 0.3, 0.0, 1.0, 0.9, 0.8, 0.6]]
    )
    return rng.normal(size=(n, 2)) @ loadings + noise * rng.normal(size=(n, D))


def _batches(cols: dict[str, Any], window: int, size: int) -> list[FeatureBatch]:
    n = len(next(iter(cols.values())))
    ts = window * W + np.arange(n, dtype=np.int64) * (W // n)
    return [
        FeatureBatch(
            ts_ms=ts[lo : lo + size], columns={k: v[lo : lo + size] for k, v in cols.items()}
        )
        for lo in range(0, n, size)
    ]


def _numeric(x: np.ndarray) -> dict[str, Any]:
    return {name: x[:, i] for i, name in enumerate(NAMES[: x.shape[1]])}


def _policy(**overrides: Any) -> DriftPolicy:
    values: dict[str, Any] = {
        "window": "60s",
        "allowed_lateness": "0s",
        "min_reference_events": 10_000,
    }
    values.update(overrides)
    return DriftPolicy(**values)


def _run(
    windows: list[dict[str, Any]], *, size: int = 1000, policy: DriftPolicy | None = None
) -> tuple[VersionState, list[DriftReport]]:
    monitor = DriftMonitor(policy=policy or _policy())
    state = monitor.initialize("m", "v1")
    reports: list[DriftReport] = []
    batches = [b for i, cols in enumerate(windows) for b in _batches(cols, i, size)]
    closer = FeatureBatch(
        ts_ms=np.array([len(windows) * W], dtype=np.int64), columns={NAMES[0]: [0.0]}
    )
    for batch in [*batches, closer]:
        state = monitor.update(state, batch)
        state, closed = monitor.close_ready(state)
        reports.extend(closed)
    return state, reports


def _joint(report: DriftReport) -> MultivariateDrift:
    assert report.multivariate is not None
    return report.multivariate


# -- two-sided ------------------------------------------------------------------------------


def test_a_fall_of_the_error_is_flagged() -> None:
    """Features that become more correlated (less independent noise): the error falls."""
    rng = np.random.default_rng(1)
    clean = [_numeric(_factor(rng, 10_000)) for _ in range(3)]
    tighter = [_numeric(_factor(rng, 10_000, noise=0.8)) for _ in range(2)]
    _, reports = _run([*clean, *tighter])
    ok, onset, held = reports[2], reports[3], reports[4]
    assert _joint(ok).status == "ok"
    for report in (onset, held):
        assert MULTIVARIATE in report.drifted_features
        m = _joint(report)
        assert m.relative_change < -0.2 and m.z is not None and m.z < -10
        assert m.threshold_low is not None and m.reconstruction_error < m.threshold_low
        assert "below its baseline" in m.reason and "more tightly" in m.reason
    assert _joint(onset).status == "warn" and _joint(held).status == "drift"


# -- categorical features -------------------------------------------------------------------


def _segmented(
    rng: np.random.Generator, n: int, *, related: bool, p_a: float = 0.7, noise: float = 1.0
) -> dict[str, Any]:
    """x00 is 1.5 higher for segment "a" than for "b" (related), or the segment is
    drawn independently with the same frequencies (not related): x00's own
    distribution and the segment's frequencies are the same either way."""
    x = _factor(rng, n, noise=noise)
    a = rng.random(n) < p_a
    x[:, 0] += np.where(a, 1.5 * (1 - p_a), -1.5 * p_a)
    if not related:
        a = rng.random(n) < p_a
    return {**_numeric(x), "segment": np.where(a, "a", "b").tolist()}


def test_a_change_only_in_how_a_category_relates_to_the_numbers_is_flagged() -> None:
    rng = np.random.default_rng(2)
    windows = [_segmented(rng, 10_000, related=True) for _ in range(3)]
    windows.append(_segmented(rng, 10_000, related=False))
    state, reports = _run(windows)
    pca = state["reference"]["multivariate"] if state["reference"] else None
    assert pca is not None and pca["names"] == [*NAMES, "segment"]
    assert pca["categories"]["segment"] == pytest.approx({"a": 0.7, "b": 0.3}, abs=0.02)
    clean, changed = reports[2], reports[3]
    assert _joint(clean).status == "ok"
    assert _joint(changed).categorical_features == ["segment"]
    # neither feature's own distribution moved: only the joint signal sees it
    assert all(f.status == "ok" for f in changed.features.values())
    assert changed.drifted_features == [MULTIVARIATE]
    assert _joint(changed).relative_change > 0.1


def test_a_change_of_category_frequencies_reaches_the_joint_signal() -> None:
    """The segment is independent of the numbers, which two factors explain well:
    its frequency encoding lies off the principal components, where a change of
    its mean raises the error. (A feature's direction that the components
    explain can move without changing the error: PSI sees that one.)"""
    rng = np.random.default_rng(3)
    windows = [_segmented(rng, 10_000, related=False, noise=0.5) for _ in range(3)]
    windows.append(_segmented(rng, 10_000, related=False, p_a=0.3, noise=0.5))
    _, reports = _run(windows, policy=_policy(psi_warn=10.0, psi_drift=20.0))
    clean, changed = _joint(reports[2]), _joint(reports[3])
    assert clean.status == "ok" and "segment" in clean.features_used
    assert changed.status != "ok" and changed.z is not None and abs(changed.z) > 10
    assert reports[3].drifted_features == [MULTIVARIATE]  # (PSI's floor set out of reach)


# -- one extreme event ----------------------------------------------------------------------


def test_one_extreme_event_does_not_make_the_verdict_and_is_named() -> None:
    rng = np.random.default_rng(4)
    windows = [_numeric(_factor(rng, 10_000)) for _ in range(3)]
    sd = float(np.sqrt(0.7**2 + 1.0))  # x03's standard deviation
    extreme = windows[2]["x03"].copy()
    extreme[5000] = 754 * sd  # one event 754 sds out
    windows[2] = {**windows[2], "x03": extreme}
    _, reports = _run(windows)
    report = reports[2]
    m = _joint(report)
    assert report.status == "ok" and m.status == "ok"
    assert abs(m.relative_change) < 0.02  # one event moves the mean by at most its bound / n
    assert m.beyond_limits == 1 and m.farthest_feature == "x03"
    assert m.farthest_sd is not None and 740 < m.farthest_sd < 770
    assert m.max_event_error is not None and m.max_event_error < 100 * D
    found = re.search(
        r"1 event beyond the reference's limits .*the farthest (\d+) sd out "
        r"in x03;.*not a shift of the distribution",
        m.reason,
    )
    assert found is not None and 740 < int(found.group(1)) < 770


def test_an_extreme_event_in_the_warm_up_does_not_spoil_the_reference() -> None:
    rng = np.random.default_rng(5)
    x = _factor(rng, 10_000)
    clean = mv.fit(
        NAMES,
        mv.add_events(
            mv.empty_halves([0.0] * D, [mv.limits_of(x[:64, i]) for i in range(D)]), x, offset=0
        ),
        variance=0.65,
    )
    x[100, 3] = 1e6
    spoiled = mv.fit(
        NAMES,
        mv.add_events(
            mv.empty_halves([0.0] * D, [mv.limits_of(x[:64, i]) for i in range(D)]), x, offset=0
        ),
        variance=0.65,
    )
    assert clean is not None and spoiled is not None
    assert spoiled["sds"] == pytest.approx(clean["sds"], rel=0.01)
    assert spoiled["baseline"] == pytest.approx(clean["baseline"], rel=0.01)


# -- calibration ----------------------------------------------------------------------------


def test_false_alarms_match_the_stated_rate_on_heavy_tailed_data() -> None:
    """400 windows of 1,000 events drawn from the reference distribution: numeric
    features with heavy tails (Student t, 3 degrees of freedom: values tens of sds
    out occur) and a categorical one. The policy's false-alarm rate 0.35 over 7
    tests (6 features and the signal) gives the signal alpha = 0.05, half of it
    above the baseline and half below.

    Measured: 19 flags of 400 (0.0475; 9 above the baseline, 10 below)."""
    rng = np.random.default_rng(6)

    def draw(n: int) -> dict[str, Any]:
        x = rng.standard_t(3, size=(n, 2)) @ np.array(
            [[1.0, 0.8, 0.5, 0.0, 0.2], [0.0, 0.3, 0.6, 1.0, 0.4]]
        )
        x += rng.standard_t(3, size=(n, 5))
        cats = np.where(rng.random(n) < 0.6, "u", np.where(rng.random(n) < 0.5, "v", "w"))
        return {**_numeric(x), "kind": cats.tolist()}

    policy = _policy(
        false_alarm_rate=0.35,
        multivariate_warn=1e-9,
        min_reference_events=60_000,
        min_window_events=100,
    )
    windows = [draw(60_000), *(draw(1000) for _ in range(402))]
    _, reports = _run(windows, policy=policy)
    judged = [r.multivariate for r in reports[2:]]  # (window 1 was counted in the warm-up)
    assert len(judged) == 401 and all(m is not None for m in judged)
    assert all(len(r.features) == 6 for r in reports[2:])
    joint = [m for m in judged[1:] if m is not None]
    above = sum(m.streak > 0 and m.relative_change > 0 for m in joint)
    below = sum(m.streak > 0 and m.relative_change < 0 for m in joint)
    rate = (above + below) / len(joint)
    # alpha 0.05: a binomial sd of 0.011 over 400 windows; each tail alpha / 2
    assert abs(rate - 0.05) <= 0.025, (above, below)
    assert 2 <= above <= 20 and 2 <= below <= 20, (above, below)


# -- batching, state, schema ----------------------------------------------------------------


def test_categories_and_extremes_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(7)
    windows = [_segmented(rng, 4000, related=True) for _ in range(3)]
    windows.append(_segmented(rng, 4000, related=False))
    x = windows[3]["x02"].copy()
    x[[10, 2000]] = [300.0, -500.0]
    windows[3] = {**windows[3], "x02": x}
    policy = _policy(min_reference_events=8000)
    runs = [_run(windows, size=size, policy=policy)[1] for size in (4000, 1000, 333, 64)]
    dumps = [[r.model_dump() for r in reports] for reports in runs]
    assert all(d == dumps[0] for d in dumps[1:])
    last = _joint(runs[0][-1])
    assert last.beyond_limits == 2 and last.farthest_feature == "x02"
    assert last.categorical_features == ["segment"]


def test_state_stays_within_its_bounds_with_categorical_features() -> None:
    rng = np.random.default_rng(8)
    monitor = DriftMonitor(policy=_policy(multivariate_max_features=4))
    state = monitor.initialize("m", "v1")
    cols = _segmented(rng, 3000, related=True)
    cols["many"] = [f"c{i % 40}" for i in range(3000)]  # 40 categories: 8 are counted
    for extra in "qrs":  # more categorical features than MAX_CATEGORICAL
        cols[extra] = ["k"] * 3000
    for batch in _batches(cols, 0, 1000):
        state = monitor.update(state, batch)
    assert state.get("mv_names") == NAMES[:4]
    slots = state.get("mv_categorical")
    assert slots is not None and list(slots) == ["many", "q", "r", "s"]  # first 4 by name
    assert slots["many"] == [f"c{i}" for i in range(mv.SLOTS)]
    (acc,) = state["windows"].values()
    halves = acc["mv_halves"]
    d = 4 + mv.MAX_CATEGORICAL * mv.SLOTS
    assert len(halves["shift"]) == d
    numbers = 2 + 5 * d + d * (d + 1)
    assert (
        len(halves["shift"])
        + len(halves["seen"])
        + len(halves["seen_sum"])
        + sum(1 + len(h["sum"]) + len(h["outer"]) for h in (halves["a"], halves["b"]))
        == numbers
    )


def test_references_and_window_sums_of_earlier_versions_still_load() -> None:
    rng = np.random.default_rng(9)
    x = _factor(rng, 4000)
    old = mv.fit(NAMES, mv.add_events(mv.empty_halves([0.0] * D), x, offset=0), variance=0.65)
    assert old is not None
    old.pop("limits", None)  # a reference written before limits and categories existed
    old.pop("categories", None)
    y = x.copy()
    y[0, 0] = 1e4
    measured = mv.measure(old, y)
    z = (y - np.asarray(old["means"])) / np.asarray(old["sds"])
    p = np.asarray(old["components"])
    expected = (z**2).sum(axis=1) - ((z @ p.T) ** 2).sum(axis=1)
    assert measured.errors == pytest.approx(expected, rel=1e-9)  # nothing clipped
    assert mv.max_error(old) is None
    # window sums of three numbers (earlier states) merge and compare as before
    sums = mv.sum_errors([[2.0, 3.0, 5.0], mv.add_errors(None, measured)])
    assert sums[0] == 4002.0 and sums[3] == 0.0
    assert mv.compare_errors(old, [4000.0, 4000.0, 8000.0], alpha=1e-3).beyond == 0


def test_the_schemas_carry_the_new_fields() -> None:
    schemas = json_schemas()
    joint = schemas["DriftReport"]["$defs"]["MultivariateDrift"]["properties"]
    for field in (
        "threshold_low",
        "categorical_features",
        "beyond_limits",
        "farthest_sd",
        "farthest_feature",
        "max_event_error",
    ):
        assert field in joint, field
    profile = schemas["ReferenceProfile"]["$defs"]["MultivariateProfile"]["properties"]
    assert "limits" in profile and "categories" in profile


def test_a_warm_up_state_of_an_earlier_version_completes_as_before() -> None:
    """A state written mid-warm-up by an earlier version has no limits and no
    categorical columns: the reference it completes clips nothing, has the
    numeric features only, and its reports say to expect a new reference."""
    rng = np.random.default_rng(10)
    monitor = DriftMonitor(policy=_policy())
    state = monitor.initialize("m", "v1")
    windows = [_segmented(rng, 6000, related=True) for _ in range(4)]
    windows.append({NAMES[0]: [0.0]})  # closes the last window
    for batch in _batches(windows[0], 0, 1000):
        state = monitor.update(state, batch)
    # what the earlier version kept: numeric moments only, nothing clipped
    state.pop("mv_limits")
    state.pop("mv_categorical")
    (acc,) = state["windows"].values()
    halves = acc["mv_halves"]
    width = len(state["mv_names"])
    acc["mv_halves"] = mv.empty_halves(halves["shift"][:width])
    x = np.column_stack([windows[0][n] for n in NAMES])
    acc["mv_halves"] = mv.add_events(acc["mv_halves"], x, offset=0)
    reports: list[DriftReport] = []
    for i, cols in enumerate(windows[1:], start=1):
        for batch in _batches(cols, i, 1000):
            state = monitor.update(state, batch)
            state, closed = monitor.close_ready(state)
            reports.extend(closed)
    ref = state["reference"]
    assert ref is not None and ref.get("multivariate") is not None
    pca = ref["multivariate"]
    assert pca is not None and pca["names"] == NAMES and "limits" not in pca
    last = reports[-1]
    assert last.multivariate is not None and last.multivariate.categorical_features == []
    assert any("predates clipping" in note for note in last.notes)


def test_indicator_columns_sum_to_the_same_moments_as_products_would() -> None:
    """The categorical columns' moments are counts and per-category sums, not products:
    the same numbers as the dense products, whatever the batching."""
    rng = np.random.default_rng(11)
    n, p = 3001, 3
    x = rng.normal(size=(n, p))
    cats = [rng.choice(list("abcdefghij"), n).tolist(), rng.choice(list("xyz"), n).tolist()]
    slots = [mv.assign_slots([], c) for c in cats]
    rows = np.hstack([x, *(mv.indicators(s, c) for s, c in zip(slots, cats, strict=True))])
    shift = [0.0] * rows.shape[1]
    sparse = mv.add_events(mv.empty_halves(shift, categorical=2), rows, offset=0)
    dense = mv.add_events(mv.empty_halves(shift), rows, offset=0)
    for half in ("a", "b"):
        assert sparse[half]["n"] == dense[half]["n"]
        assert sparse[half]["sum"] == pytest.approx(dense[half]["sum"], rel=1e-12, abs=1e-12)
        assert sparse[half]["outer"] == pytest.approx(dense[half]["outer"], rel=1e-12, abs=1e-9)
    for size in (1, 7, 500):
        halves = mv.empty_halves(shift, categorical=2)
        for lo in range(0, n, size):
            halves = mv.add_events(halves, rows[lo : lo + size], offset=lo)
        assert halves == sparse, size


def test_arrow_dictionary_columns_take_the_same_slots_and_values_as_lists() -> None:
    from streams.batch import Categories

    names = ("web", "app", "pos", "phone")
    codes = np.array([2, -1, 0, 2, 3, 1, 0, -1, 3], dtype=np.int32)
    arrow = Categories(codes, names)
    strings = arrow.values()
    assert mv.assign_slots(["app"], arrow) == mv.assign_slots(["app"], strings)
    slots = mv.assign_slots([], strings)
    assert slots == ["pos", "web", "phone", "app"]
    assert np.array_equal(mv.indicators(slots, arrow), mv.indicators(slots, strings))
