"""The multivariate drift signal: PCA reconstruction error (streams/drift/multivariate.py)
and its use by the drift monitor. Fixed seeds, explicit event times."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from schemas.policy import DriftPolicy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift import multivariate as mv
from streams.drift.monitor import DriftMonitor
from streams.drift.state import MULTIVARIATE, VersionState

W = 60_000
D = 20
NAMES = [f"x{i:02d}" for i in range(D)]


def _flip_rows(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """N(0, 1) features; x00 and x01 correlated ``rho``, the rest independent.

    Every marginal is N(0, 1) whatever ``rho``: only the joint distribution changes.
    """
    x = rng.normal(size=(n, D))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return x


def _factor_rows(rng: np.random.Generator, loadings: np.ndarray, n: int) -> np.ndarray:
    """Three common factors plus noise: every feature correlated with some others."""
    return rng.normal(size=(n, loadings.shape[0])) @ loadings + rng.normal(size=(n, D))


def _batches(x: np.ndarray, window: int, size: int) -> list[FeatureBatch]:
    ts = window * W + np.arange(x.shape[0], dtype=np.int64) * (W // x.shape[0])
    return [
        FeatureBatch(
            ts_ms=ts[lo : lo + size],
            columns={name: x[lo : lo + size, i] for i, name in enumerate(NAMES)},
        )
        for lo in range(0, x.shape[0], size)
    ]


def _closer(window: int) -> FeatureBatch:
    return FeatureBatch(ts_ms=np.array([window * W], dtype=np.int64), columns={NAMES[0]: [0.0]})


def _policy(**overrides: Any) -> DriftPolicy:
    values: dict[str, Any] = {
        "window": "60s",
        "allowed_lateness": "0s",
        "min_reference_events": 5000,
    }
    values.update(overrides)
    return DriftPolicy(**values)


def _run(
    windows: list[np.ndarray], *, size: int = 1000, policy: DriftPolicy | None = None
) -> tuple[VersionState, list[DriftReport]]:
    monitor = DriftMonitor(policy=policy or _policy())
    state = monitor.initialize("m", "v1")
    reports: list[DriftReport] = []
    batches = [b for i, x in enumerate(windows) for b in _batches(x, i, size)]
    for batch in [*batches, _closer(len(windows))]:
        state = monitor.update(state, batch)
        state, closed = monitor.close_ready(state)
        reports.extend(closed)
    return state, reports


def _fit(x: np.ndarray, *, variance: float = 0.65) -> mv.PcaReference:
    ref = mv.fit(
        NAMES[: x.shape[1]],
        mv.add_events(mv.empty_halves([0.0] * x.shape[1]), x, offset=0),
        variance=variance,
    )
    assert ref is not None
    return ref


# -- the kernel --------------------------------------------------------------------------


def test_baseline_is_the_mean_error_of_the_held_out_half() -> None:
    x = _flip_rows(np.random.default_rng(1), 4001, 0.8)
    ref = _fit(x)
    held_out = mv.errors(ref, x[1::2])  # odd events: half B
    assert ref["n_fit"] == 2001 and ref["n_baseline"] == 2000
    assert ref["baseline"] == pytest.approx(float(held_out.mean()), rel=1e-9)
    # the fit saw only half A: its means are A's
    assert ref["means"] == pytest.approx(x[0::2].mean(axis=0).tolist(), rel=1e-9, abs=1e-12)


def test_the_held_out_baseline_is_unbiased_where_the_in_sample_error_is_not() -> None:
    # Small fits (100 events per half, 20 features) make the in-sample bias plain.
    rng = np.random.default_rng(2)
    loadings = rng.normal(size=(3, D))
    fresh = _factor_rows(rng, loadings, 100_000)
    in_sample, held_out = [], []
    for _ in range(60):
        x = _factor_rows(rng, loadings, 200)
        ref = _fit(x)
        expected = float(mv.errors(ref, fresh).mean())  # what later windows see
        in_sample.append(float(mv.errors(ref, x[0::2]).mean()) / expected - 1)
        held_out.append(ref["baseline"] / expected - 1)
    assert np.mean(in_sample) < -0.05  # every later window would look 5 %+ drifted
    assert abs(np.mean(held_out)) < 0.025


def test_components_are_the_fewest_that_explain_the_policy_share() -> None:
    rng = np.random.default_rng(3)
    x = _factor_rows(rng, rng.normal(size=(3, D)), 5000)
    for variance in (0.3, 0.65, 0.9):
        ref = _fit(x, variance=variance)
        p = np.asarray(ref["components"])
        k = p.shape[0]
        assert ref["explained"] >= variance
        assert np.allclose(p @ p.T, np.eye(k), atol=1e-10)
        if k > 1:  # one fewer would not do
            smaller = _fit(x, variance=ref["explained"] - 1e-9)
            assert len(smaller["components"]) == k
    # never all of them: something is always left to reconstruct
    assert len(_fit(x, variance=0.999999)["components"]) == D - 1


def test_batching_changes_nothing_to_the_last_bit() -> None:
    rng = np.random.default_rng(4)
    x = _flip_rows(rng, 3001, 0.5)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values: running-mean imputation
    shift = [0.5] * D
    whole = mv.add_events(mv.empty_halves(shift), x, offset=1)
    for size in (1, 7, 333, 1000):
        halves = mv.empty_halves(shift)
        for lo in range(0, x.shape[0], size):
            halves = mv.add_events(halves, x[lo : lo + size], offset=1 + lo)
        assert halves == whole, size
    ref = mv.fit(NAMES, whole, variance=0.65)
    assert ref is not None
    errors = mv.errors(ref, x)
    sums = mv.add_errors(None, errors)
    for size in (1, 7, 333):
        parts = [mv.errors(ref, x[lo : lo + size]) for lo in range(0, x.shape[0], size)]
        assert np.array_equal(np.concatenate(parts), errors), size
        acc = None
        for part in parts:
            acc = mv.add_errors(acc, part)
        assert acc == sums, size


def test_events_alternate_between_the_halves_by_position() -> None:
    x = np.arange(10, dtype=np.float64).reshape(5, 2)
    h = mv.add_events(mv.empty_halves([0.0, 0.0]), x, offset=0)
    assert (h["a"]["n"], h["b"]["n"]) == (3, 2)
    assert h["a"]["sum"] == [0.0 + 4 + 8, 1.0 + 5 + 9]
    h = mv.add_events(mv.empty_halves([0.0, 0.0]), x, offset=1)  # the window had one already
    assert (h["a"]["n"], h["b"]["n"]) == (2, 3)
    assert h["a"]["sum"] == [2.0 + 6, 3.0 + 7]


def test_missing_values_take_the_running_mean_and_add_no_correlation() -> None:
    rng = np.random.default_rng(5)
    x = _flip_rows(rng, 8000, 0.0)
    x[rng.random(8000) < 0.3, 0] = np.nan  # x00 missing 30 % of the time, at random
    ref = _fit(x)
    clean = _fit(_flip_rows(rng, 8000, 0.0))
    assert ref["baseline"] == pytest.approx(clean["baseline"], rel=0.05)
    # imputation shrinks x00's spread, and only that: no correlation appears
    assert ref["sds"][0] == pytest.approx(np.sqrt(0.7), rel=0.05)


def test_features_far_from_zero_keep_their_precision() -> None:
    rng = np.random.default_rng(6)
    x = _flip_rows(rng, 4000, 0.8)[:, :3] * 60.0
    epoch = x + np.array([1.7e9, 2.0e3, -5.0e8])  # epoch seconds, years, ...
    near = mv.fit(NAMES[:3], mv.add_events(mv.empty_halves([0.0] * 3), x, offset=0),
                  variance=0.65)
    far = mv.fit(
        NAMES[:3],
        mv.add_events(mv.empty_halves(np.median(epoch[:64], axis=0).tolist()), epoch, offset=0),
        variance=0.65,
    )
    assert near is not None and far is not None
    assert far["baseline"] == pytest.approx(near["baseline"], rel=1e-6)
    assert far["sds"] == pytest.approx(near["sds"], rel=1e-6)


def test_constant_and_empty_features_are_left_out() -> None:
    rng = np.random.default_rng(7)
    x = _flip_rows(rng, 1000, 0.8)[:, :4]
    x[:, 2] = 3.25  # constant
    x[:, 3] = np.nan  # never seen
    ref = mv.fit(NAMES[:4], mv.add_events(mv.empty_halves([3.25] * 4), x, offset=0),
                 variance=0.65)
    assert ref is not None and ref["names"] == NAMES[:2]
    one = mv.fit(NAMES[:4], mv.add_events(mv.empty_halves([0.0] * 4), x[:, [0, 2, 3, 3]],
                                          offset=0), variance=0.65)
    assert one is None  # a single varying feature has no joint distribution


def test_the_z_test_counts_the_baselines_own_noise() -> None:
    ref: mv.PcaReference = {**_fit(_flip_rows(np.random.default_rng(8), 2000, 0.8)),
                            "baseline": 1.0, "n_baseline": 1000}
    window = [10_000.0, 10_500.0, 10_500.0 * 1.05 + 10_000 * 0.25]  # mean 1.05, var ~0.25
    wide = mv.compare_errors(ref, window, alpha=1e-3)
    narrow = mv.compare_errors({**ref, "n_baseline": 10**9}, window, alpha=1e-3)
    assert wide.relative_change == pytest.approx(0.05)
    assert wide.z is not None and narrow.z is not None
    assert wide.z < narrow.z and wide.noise is not None and wide.noise > 1.0
    same = mv.compare_errors(ref, [500.0, 600.0, 720.0], alpha=1e-3)  # no spread at all
    assert same.z is None and same.noise is None and same.beats_noise()


# -- the monitor -------------------------------------------------------------------------


def test_a_correlation_flip_is_caught_by_the_joint_signal_alone() -> None:
    rng = np.random.default_rng(10)
    windows = [_flip_rows(rng, 5000, 0.8) for _ in range(3)]
    windows += [_flip_rows(rng, 5000, -0.8) for _ in range(2)]
    _, reports = _run(windows)
    warmup, first, clean, onset, held = reports

    assert any("multivariate signal: " in note for note in warmup.notes)
    assert any("will not be judged by the multivariate signal" in n for n in warmup.notes)
    assert first.multivariate is None  # counted partly before the reference was complete

    assert clean.multivariate is not None and clean.multivariate.status == "ok"
    assert clean.status == "ok" and clean.drifted_features == []
    assert clean.thresholds["multivariate_warn"] == 0.1

    for report in (onset, held):
        # every feature's own distribution is unchanged: PSI sees nothing
        assert all(f.status == "ok" for f in report.features.values())
        assert report.drifted_features == [MULTIVARIATE]
        m = report.multivariate
        assert m is not None and m.n == 5000
        assert m.features_used == NAMES and 1 <= m.components < D
        assert 0.1 < m.relative_change < 0.5  # the warn band
        assert m.z is not None and m.z > 10
        assert m.threshold is not None and m.baseline < m.threshold < m.reconstruction_error
    assert onset.status == "warn" and onset.multivariate is not None
    assert onset.multivariate.streak == 1 and not onset.multivariate.drifted
    assert "above its baseline" in onset.multivariate.reason
    assert "drift if it holds 1 more window" in onset.multivariate.reason
    assert held.status == "drift" and held.multivariate is not None
    assert held.multivariate.streak == 2 and held.multivariate.drifted
    assert "flagged 2 windows in a row" in held.multivariate.reason


def test_a_large_rise_is_drift_at_once() -> None:
    rng = np.random.default_rng(11)
    x = _flip_rows(rng, 5000, 0.95)[:, :2]
    flipped = _flip_rows(rng, 5000, -0.95)[:, :2]
    windows = [x, _flip_rows(rng, 5000, 0.95)[:, :2], _flip_rows(rng, 5000, 0.95)[:, :2]]
    windows = [np.pad(w, ((0, 0), (0, D - 2)), constant_values=np.nan) for w in windows]
    windows.append(np.pad(flipped, ((0, 0), (0, D - 2)), constant_values=np.nan))
    _, reports = _run(windows)
    shifted = reports[-1]
    assert shifted.multivariate is not None
    assert shifted.multivariate.features_used == NAMES[:2]  # features never seen are out
    assert shifted.multivariate.relative_change > 10
    assert shifted.status == "drift" and shifted.multivariate.streak == 1
    assert "drift at once" in shifted.multivariate.reason


def test_a_stationary_stream_never_raises_the_joint_signal() -> None:
    # 50 windows of 5,000 events, 20 correlated features, two of them 5 % missing.
    rng = np.random.default_rng(12)
    loadings = rng.normal(size=(3, D))
    windows = []
    for _ in range(50):
        x = _factor_rows(rng, loadings, 5000)
        x[rng.random(5000) < 0.05, 3] = np.nan
        x[rng.random(5000) < 0.05, 7] = np.nan
        windows.append(x)
    _, reports = _run(windows, size=2500)
    judged = [r.multivariate for r in reports[2:]]
    assert len(judged) == 48 and all(m is not None for m in judged)
    assert all(m.status == "ok" and m.streak == 0 for m in judged if m is not None)
    assert all(MULTIVARIATE not in r.drifted_features for r in reports)
    z = [m.z for m in judged if m is not None and m.z is not None]
    assert max(z) < 4.0  # the Bonferroni threshold for 21 tests at 1e-3 is about 3.9


def test_the_signal_is_one_more_test_in_the_bonferroni_count() -> None:
    rng = np.random.default_rng(13)
    windows = [_flip_rows(rng, 5000, 0.8) for _ in range(3)]
    _, on = _run(windows)
    _, off = _run(windows, policy=_policy(multivariate=False))
    assert on[2].multivariate is not None and off[2].multivariate is None
    for name, feature in on[2].features.items():
        other = off[2].features[name].threshold
        assert feature.threshold is not None and other is not None
        assert feature.threshold > other  # a smaller alpha: 1e-3 / 21 instead of / 20
    assert "multivariate_warn" not in off[2].thresholds


def test_switched_off_it_keeps_no_state() -> None:
    rng = np.random.default_rng(14)
    monitor = DriftMonitor(policy=_policy(multivariate=False))
    state = monitor.initialize("m", "v1")
    for batch in _batches(_flip_rows(rng, 5000, 0.8), 0, 1000):
        state = monitor.update(state, batch)
    assert "mv_names" not in state
    assert all("mv_halves" not in acc and "mv" not in acc for acc in state["windows"].values())


def test_warm_up_moments_stay_within_their_bound() -> None:
    rng = np.random.default_rng(15)
    monitor = DriftMonitor(policy=_policy(multivariate_max_features=12))
    state = monitor.initialize("m", "v1")
    for batch in _batches(_flip_rows(rng, 3000, 0.8), 0, 1000):
        state = monitor.update(state, batch)
    assert state.get("mv_names") == NAMES[:12]  # the first 12 by name
    (acc,) = state["windows"].values()
    halves = acc["mv_halves"]
    d = 12
    numbers = 2 + 5 * d + d * (d + 1)
    assert (
        len(halves["shift"]) + len(halves["seen"]) + len(halves["seen_sum"])
        + sum(1 + len(h["sum"]) + len(h["outer"]) for h in (halves["a"], halves["b"]))
        == numbers
    )
    assert len(orjson.dumps(halves)) < numbers * 25


def test_a_feature_near_the_float_limit_is_left_out_not_fatal() -> None:
    """Moments of values near 1e300 overflow; that feature leaves the PCA, the rest stays."""
    rng = np.random.default_rng(21)
    monitor = DriftMonitor(policy=_policy())
    state = monitor.initialize("m", "v1")
    n = 4000
    for window in range(3):
        base = rng.normal(size=n)
        cols = {"a": base.tolist(), "b": (base + 0.3 * rng.normal(size=n)).tolist(),
                "c": rng.normal(size=n).tolist(),
                # (values near 1e300: clipped to 8 robust sds, their squares still overflow)
                "wide": (rng.normal(size=n) * 1e300).tolist()}
        ts = window * W + np.arange(n, dtype=np.int64) * (W // n)
        state = monitor.update(state, FeatureBatch(ts_ms=ts, columns=cols))
        state, _ = monitor.close_ready(state)
    reference = state["reference"]
    assert reference is not None and reference["multivariate"] is not None
    assert reference["multivariate"]["names"] == ["a", "b", "c"]
