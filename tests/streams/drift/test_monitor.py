"""The windowed drift monitor (streams/drift/monitor.py), driven by explicit event times."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from schemas.policy import DriftPolicy
from schemas.reports import DriftReport
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor
from streams.drift.psi import psi
from streams.drift.state import MAX_UNTRACKED_NAMES, MULTIVARIATE, PREDICTION, SCORE, VersionState
from streams.summaries.log_histogram import LogHistogram

W = 60_000  # window, ms
NUMERIC = [f"f{i}" for i in range(5)]
CHANNELS = ["web", "app", "pos", "phone"]
BASE_P = (0.45, 0.3, 0.2, 0.05)


def _policy(**overrides: Any) -> DriftPolicy:
    values: dict[str, Any] = {
        "window": "60s",
        "allowed_lateness": "10s",
        "min_reference_events": 1000,
        "min_window_events": 200,
    }
    values.update(overrides)
    return DriftPolicy(**values)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ts(n: int, *, start_ms: int, span_ms: int = W) -> np.ndarray:
    """``n`` event times spread evenly over ``[start_ms, start_ms + span_ms)``."""
    return (start_ms + np.arange(n) * span_ms // n).astype(np.int64)


def _window(
    rng: np.random.Generator,
    index: int,
    n: int,
    *,
    shift: dict[str, float] | None = None,
    channel_p: Sequence[float] = BASE_P,
    outputs: bool = False,
    start_ms: int | None = None,
    span_ms: int = W,
) -> FeatureBatch:
    """One window's traffic: five N(0, 1) features (``shift`` moves some) and a category."""
    shift = shift or {}
    cols: dict[str, list[Any]] = {
        name: rng.normal(shift.get(name, 0.0), 1.0, n).tolist() for name in NUMERIC
    }
    cols["channel"] = rng.choice(CHANNELS, n, p=channel_p).tolist()
    if outputs:
        cols[SCORE] = rng.beta(2.0 + shift.get(SCORE, 0.0), 5.0, n).tolist()
        cols[PREDICTION] = rng.choice(["approve", "review", "deny"], n, p=[0.7, 0.2, 0.1]).tolist()
    start = index * W if start_ms is None else start_ms
    return FeatureBatch(ts_ms=_ts(n, start_ms=start, span_ms=span_ms), columns=cols)


def _chunks(batch: FeatureBatch, size: int) -> Iterator[FeatureBatch]:
    for lo in range(0, len(batch), size):
        mask = np.zeros(len(batch), dtype=bool)
        mask[lo : lo + size] = True
        yield batch.select(mask)


def _single(ts_ms: int, **columns: Any) -> FeatureBatch:
    return FeatureBatch(
        ts_ms=np.array([ts_ms], dtype=np.int64), columns={k: [v] for k, v in columns.items()}
    )


def _feed(
    monitor: DriftMonitor, state: VersionState, batches: Sequence[FeatureBatch]
) -> tuple[VersionState, list[DriftReport]]:
    reports: list[DriftReport] = []
    for batch in batches:
        state = monitor.update(state, batch)
        state, closed = monitor.close_ready(state)
        reports.extend(closed)
    return state, reports


# -- (a) closing on the watermark -------------------------------------------------------


def test_window_closes_once_watermark_passes_end_plus_lateness() -> None:
    monitor = DriftMonitor(policy=_policy(allowed_lateness="10s", min_reference_events=10))
    state = monitor.update(monitor.initialize("m", "v1"), _single(1_000, x=1.0))
    state, reports = monitor.close_ready(state)
    assert reports == []

    for ts in (W, W + 5_000, W + 9_999):  # in the next window, but within the lateness
        state = monitor.update(state, _single(ts, x=1.0))
        state, reports = monitor.close_ready(state)
        assert reports == [], ts
    assert list(state["windows"]) == ["0", str(W)]

    state = monitor.update(state, _single(W + 10_000, x=1.0))
    state, reports = monitor.close_ready(state)
    assert [(r.window_start, r.window_end, r.n) for r in reports] == [(_at(0), _at(W), 1)]
    assert list(state["windows"]) == [str(W)]
    assert state["closed_until_ms"] == W
    # Nothing else is due: closing is idempotent.
    assert monitor.close_ready(state) == (state, [])


def test_zero_lateness_closes_at_the_window_end() -> None:
    monitor = DriftMonitor(policy=_policy(allowed_lateness=0, min_reference_events=10))
    state = monitor.update(monitor.initialize("m", "v1"), _single(W - 1, x=1.0))
    assert monitor.close_ready(state)[1] == []
    state = monitor.update(state, _single(W, x=2.0))
    state, reports = monitor.close_ready(state)
    assert [r.window_start for r in reports] == [_at(0)]


def test_close_ready_on_fresh_state_reports_nothing() -> None:
    monitor = DriftMonitor(policy=_policy())
    state = monitor.initialize("m", "v1")
    assert monitor.close_ready(state) == (state, [])


# -- (b) warm-up reference ---------------------------------------------------------------


def test_first_window_becomes_the_reference() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(policy=_policy())
    state = monitor.initialize("fraud", "v7")
    state, reports = _feed(monitor, state, [_window(rng, 0, 2000), _single(W + 10_000, f0=0.0)])
    (report,) = reports
    assert report.model == "fraud"
    assert report.model_version == "v7"
    assert report.features == {}
    assert report.status == "ok"
    assert report.reference.kind == "warmup"
    assert report.reference.n == 2000
    assert "completes the warm-up reference (2000 events" in report.notes[0]
    ref = state["reference"]
    assert ref is not None
    assert (ref["start_ms"], ref["end_ms"], ref["n"]) == (0, W, 2000)
    assert sorted(ref["features"]) == ["channel", *NUMERIC]
    # fine_bins=100: up to 99 interior quantile edges, grouped into bins=10 PSI bins
    assert 90 <= len(ref["features"]["f0"]["bins"]) <= 99
    assert max(ref["features"]["f0"]["groups"]) + 1 == 10
    assert len(ref["features"]["f0"]["groups"]) == len(ref["features"]["f0"]["counts"])
    assert sum(ref["features"]["f0"]["counts"]) == pytest.approx(2000)
    assert ref["features"]["channel"]["bins"] == CHANNELS
    assert state["warmup"] is None


def test_small_first_window_is_merged_with_the_next() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(policy=_policy(min_reference_events=1000))
    batches = [
        _window(rng, 0, 600),
        # Wildly different from window 0: still no drift judged during the warm-up.
        _window(rng, 1, 2000, shift={"f0": 3.0}, channel_p=(0.05, 0.05, 0.1, 0.8)),
        _window(rng, 2, 2000, shift={"f0": 3.0}, channel_p=(0.05, 0.05, 0.1, 0.8)),
        _single(3 * W + 10_000, f0=0.0),
    ]
    state, reports = _feed(monitor, DriftMonitor.initialize("m", "v1"), batches)
    first, second, third = reports

    assert first.n == 600
    assert first.features == {}
    assert first.status == "ok"
    assert first.reference.n == 600
    assert "building the warm-up reference: 600 of at least 1000" in first.notes[0]
    assert "no drift is judged" in first.notes[0]

    assert second.n == 2000
    assert second.features == {}
    assert second.status == "ok"
    assert second.reference.n == 2600
    assert second.reference.window_start == _at(0)
    assert second.reference.window_end == _at(2 * W)
    assert "completes the warm-up reference (2600 events" in second.notes[0]

    # Window 2 is compared with the merged reference: f0 is 3 sigma above half of it.
    assert third.reference.n == 2600
    assert (third.reference.window_start, third.reference.window_end) == (_at(0), _at(2 * W))
    assert third.features["f0"].status == "drift"
    assert state["reference"] is not None
    assert state["reference"]["n"] == 2600


# -- (c), (d) drift --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted_run() -> list[DriftReport]:
    """Warm-up, a clean window, f2 up by one sigma, then a categorical shift."""
    rng = np.random.default_rng(42)
    monitor = DriftMonitor(policy=_policy())
    windows = [
        _window(rng, 0, 3000),
        _window(rng, 1, 2500),
        _window(rng, 2, 2500, shift={"f2": 1.0}),
        _window(rng, 3, 2500, channel_p=(0.35, 0.25, 0.1, 0.3)),
    ]
    batches = [chunk for w in windows for chunk in _chunks(w, 500)]
    _, reports = _feed(
        monitor, monitor.initialize("m", "v1"), [*batches, _single(4 * W + 10_000, f0=0.0)]
    )
    assert len(reports) == 4
    return reports


def test_clean_window_is_ok(shifted_run: list[DriftReport]) -> None:
    clean = shifted_run[1]
    assert clean.status == "ok"
    assert clean.drifted_features == []
    assert clean.notes == []
    assert clean.thresholds == {
        "psi_warn": 0.05,
        "psi_drift": 0.2,
        "false_alarm_rate": 1e-3,
        "consecutive": 2,
    }
    for result in clean.features.values():
        assert result.threshold is not None and result.threshold > result.metrics["psi"]
        assert result.streak == 0
    assert sorted(clean.features) == ["channel", *NUMERIC]
    for name, result in clean.features.items():
        assert result.status == "ok", name
        assert result.metrics["psi"] < 0.1
        assert result.n == 2500


def test_numeric_shift_flags_exactly_that_feature(shifted_run: list[DriftReport]) -> None:
    report = shifted_run[2]
    assert report.status == "drift"
    assert report.drifted_features == ["f2"]
    f2 = report.features["f2"]
    assert f2.kind == "numeric"
    assert f2.status == "drift"
    assert f2.drifted is True
    assert f2.reason.startswith("PSI ")
    assert f2.metrics["psi"] >= 0.2
    assert "biggest change in" in f2.reason
    for name in ["f0", "f1", "f3", "f4", "channel"]:
        assert report.features[name].status == "ok", name
        assert report.features[name].drifted is False
        assert report.features[name].reason == ""


def test_categorical_shift_is_flagged(shifted_run: list[DriftReport]) -> None:
    report = shifted_run[3]
    assert report.status == "drift"
    assert report.drifted_features == ["channel"]
    channel = report.features["channel"]
    assert channel.kind == "categorical"
    assert channel.drifted is True
    assert channel.reason.startswith("PSI ")
    assert "biggest change in phone" in channel.reason  # 5 % of the reference, 30 % now
    assert all(report.features[name].status == "ok" for name in NUMERIC)


def test_warn_band_between_thresholds() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(policy=_policy(psi_warn=0.05, psi_drift=5.0))
    batches = [
        _window(rng, 0, 3000),
        _window(rng, 1, 3000, shift={"f1": 0.6}),
        _single(2 * W + 10_000, f0=0.0),
    ]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    report = reports[1]
    assert report.status == "warn"
    assert report.drifted_features == ["f1"]
    assert report.features["f1"].status == "warn"
    assert report.features["f1"].drifted is False
    assert report.features["f1"].streak == 1
    assert report.features["f1"].reason.startswith("PSI ")
    assert "above noise" in report.features["f1"].reason
    assert "the 0.05 floor; drift if it holds 1 more window" in report.features["f1"].reason


def test_psi_warn_above_psi_drift_is_refused() -> None:
    # DriftPolicy refuses this itself; model_construct skips its validation.
    policy = DriftPolicy.model_construct(psi_warn=0.5, psi_drift=0.2)
    with pytest.raises(ValueError, match="psi_warn must not exceed psi_drift"):
        DriftMonitor(policy=policy)


# -- (e) late events ----------------------------------------------------------------------


def test_late_events_are_counted_in_the_next_report() -> None:
    rng = np.random.default_rng(6)
    monitor = DriftMonitor(policy=_policy(min_reference_events=500, allowed_lateness=0))
    state, reports = _feed(
        monitor,
        monitor.initialize("m", "v1"),
        [_window(rng, 0, 1000), _window(rng, 1, 1000, start_ms=W)],
    )
    assert [r.window_start for r in reports] == [_at(0)]
    assert state["closed_until_ms"] == W

    # Seven events for window 0, already closed; three on time for window 1.
    late = _window(rng, 0, 7, start_ms=0)
    on_time = _window(rng, 1, 3, start_ms=W + 30_000, span_ms=3)
    mixed = FeatureBatch(
        ts_ms=np.concatenate([late.ts_ms, on_time.ts_ms]),
        columns={k: [*late.columns[k], *on_time.columns[k]] for k in late.columns},
    )
    state = monitor.update(state, mixed)
    assert state["late"] == 7
    assert "0" not in state["windows"]  # a closed window is never reopened
    state, reports = monitor.close_ready(state)
    assert reports == []

    state, reports = _feed(monitor, state, [_single(2 * W, f0=0.0)])
    (report,) = reports
    assert report.window_start == _at(W)
    assert report.n == 1003
    assert report.late == 7
    assert report.features["f0"].n == 1003
    assert state["late"] == 0

    state, reports = _feed(monitor, state, [_single(3 * W, f0=0.0)])
    assert [(r.n, r.late) for r in reports] == [(1, 0)]


# -- (f) small windows ------------------------------------------------------------------


def test_small_window_is_never_flagged() -> None:
    rng = np.random.default_rng(7)
    monitor = DriftMonitor(policy=_policy(min_window_events=200))
    batches = [
        _window(rng, 0, 2000),
        _window(rng, 1, 150, shift={"f0": 5.0}, channel_p=(0.0, 0.0, 0.0, 1.0)),
        _single(2 * W + 10_000, f0=0.0),
    ]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    report = reports[1]
    assert report.n == 150
    assert report.features["f0"].metrics["psi"] > 1.0  # measured, but not judged
    assert report.features["channel"].metrics["psi"] > 1.0
    assert report.status == "ok"
    assert report.drifted_features == []
    assert all(f.status == "ok" and f.reason == "" for f in report.features.values())
    assert any("only 150 events" in note and "200" in note for note in report.notes)


# -- (g) bounded open windows -------------------------------------------------------------


def test_max_open_windows_closes_the_oldest() -> None:
    monitor = DriftMonitor(
        policy=_policy(allowed_lateness="10m", max_open_windows=2, min_reference_events=10)
    )
    state = monitor.initialize("m", "v1")
    state, reports = _feed(monitor, state, [_single(1_000, x=1.0), _single(W + 1_000, x=1.0)])
    assert reports == []
    assert sorted(state["windows"], key=int) == ["0", str(W)]

    state, reports = _feed(monitor, state, [_single(2 * W + 1_000, x=1.0)])
    assert [r.window_start for r in reports] == [_at(0)]
    assert sorted(state["windows"], key=int) == [str(W), str(2 * W)]
    assert state["closed_until_ms"] == W

    # A jump ahead still closes only as many as the bound needs.
    state, reports = _feed(monitor, state, [_single(5 * W + 1_000, x=1.0)])
    assert [r.window_start for r in reports] == [_at(W)]
    assert sorted(state["windows"], key=int) == [str(2 * W), str(5 * W)]
    # An event for the force-closed window 0 is late now.
    state = monitor.update(state, _single(30_000, x=1.0))
    assert state["late"] == 1

    # The watermark closes the rest as usual, oldest first.
    state, reports = _feed(monitor, state, [_single(16 * W, x=1.0)])
    assert [(r.window_start, r.late) for r in reports] == [(_at(2 * W), 1), (_at(5 * W), 0)]


# -- (h) bounded features -----------------------------------------------------------------


def test_features_beyond_max_features_are_not_tracked() -> None:
    rng = np.random.default_rng(8)
    monitor = DriftMonitor(policy=_policy(max_features=3))
    batches = [_window(rng, 0, 2000), _window(rng, 1, 2000), _single(2 * W + 10_000, f0=0.0)]
    state, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    assert sorted(state["kinds"]) == ["f0", "f1", "f2"]
    assert state["untracked"] == ["f3", "f4", "channel"]
    report = reports[1]
    assert sorted(report.features) == ["f0", "f1", "f2"]
    assert "3 features beyond max_features=3 are not tracked: f3, f4, channel" in report.notes
    ref = state["reference"]
    assert ref is not None
    assert sorted(ref["features"]) == ["f0", "f1", "f2"]


def test_one_batch_counts_each_untracked_name_once() -> None:
    monitor = DriftMonitor(policy=_policy(max_features=2))
    batch = FeatureBatch.from_rows([1_000, 2_000], [{"a": 1.0, "b": "x", "c": 2.0, "d": "y"}] * 2)
    state = monitor.update(monitor.initialize("m", "v1"), batch)
    assert state["kinds"] == {"a": "numeric", "b": "categorical"}
    assert state["untracked"] == ["c", "d"]


def test_untracked_names_are_counted_once_over_many_batches() -> None:
    rng = np.random.default_rng(16)
    monitor = DriftMonitor(policy=_policy(max_features=3, min_reference_events=500))
    state = monitor.initialize("m", "v1")
    reports: list[DriftReport] = []
    for i in range(40):  # 40 batches of 100 events, four windows, every extra name each time
        cols: dict[str, list[Any]] = {
            # The outputs come first in every batch: they still take no feature slot.
            SCORE: rng.beta(2.0, 5.0, 100).tolist(),
            PREDICTION: rng.choice(["approve", "deny"], 100).tolist(),
            **{f"f{j}": rng.normal(size=100).tolist() for j in range(3)},
            **{f"x{j}": rng.normal(size=100).tolist() for j in range(4)},
            "tag": rng.choice(["a", "b"], 100).tolist(),
        }
        batch = FeatureBatch(ts_ms=_ts(100, start_ms=i * W // 10, span_ms=W // 10), columns=cols)
        state, closed = _feed(monitor, state, [batch])
        reports.extend(closed)
    assert state["untracked"] == ["x0", "x1", "x2", "x3", "tag"]
    assert sorted(state["kinds"]) == sorted(["f0", "f1", "f2", SCORE, PREDICTION])
    judged = [r for r in reports if r.features]
    assert judged
    for report in judged:
        assert sorted(report.features) == ["f0", "f1", "f2"]
        assert sorted(report.prediction) == ["class", "score"]
        assert (
            "5 features beyond max_features=3 are not tracked: x0, x1, x2, x3, tag" in report.notes
        )


def test_outputs_take_no_feature_slot() -> None:
    monitor = DriftMonitor(policy=_policy(max_features=1))
    batch = FeatureBatch.from_rows([1_000], [{SCORE: 0.3, PREDICTION: "deny", "a": 1.0, "b": 2.0}])
    state = monitor.update(monitor.initialize("m", "v1"), batch)
    assert state["kinds"] == {SCORE: "numeric", PREDICTION: "categorical", "a": "numeric"}
    assert state["untracked"] == ["b"]


def test_untracked_names_are_bounded() -> None:
    rng = np.random.default_rng(17)
    monitor = DriftMonitor(policy=_policy(max_features=3, min_reference_events=500))
    extra = [f"x{j:02d}" for j in range(2 * MAX_UNTRACKED_NAMES)]
    batches = []
    for w in range(3):
        batch = _window(rng, w, 1000)
        cols = {**batch.columns, **{name: [1.0] * 1000 for name in extra}}
        batches.append(FeatureBatch(ts_ms=batch.ts_ms, columns=cols))
    state, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    # f3, f4 and channel come before the x.. names in each batch.
    assert state["untracked"] == ["f3", "f4", "channel", *extra[: MAX_UNTRACKED_NAMES - 3]]
    assert len(orjson.dumps(state["untracked"])) < 400
    report = reports[-1]
    assert report.features
    assert (
        f"{MAX_UNTRACKED_NAMES} features beyond max_features=3 are not tracked (and maybe more): "
        "f3, f4, channel, x00, x01"
    ) in report.notes


# -- (i) state round trip ----------------------------------------------------------------


def _round_trip_batches() -> list[FeatureBatch]:
    rng = np.random.default_rng(9)
    windows = [
        _window(rng, 0, 2000, outputs=True),
        _window(rng, 1, 2000, outputs=True),
        _window(rng, 2, 2000, shift={"f3": 1.0}, outputs=True),
        _window(rng, 3, 2000, channel_p=(0.1, 0.1, 0.1, 0.7), outputs=True),
    ]
    batches = [chunk for w in windows for chunk in _chunks(w, 400)]  # five per window
    batches.append(_single(5 * W, f0=0.0))
    return batches


def _sketched(state: VersionState) -> int:
    """Values held in warm-up sketches: open windows and the warm-up accumulator."""
    monitor = DriftMonitor(policy=_policy())
    accs = [*state["windows"].values(), *([state["warmup"]] if state["warmup"] else [])]
    return sum(
        monitor.numeric.sketch.count(f["sketch"])
        for acc in accs
        for f in acc["numeric"].values()
        if f["sketch"]
    )


# With min_reference_events=3000 the warm-up takes windows 0 and 1, and window 1 closes
# (at watermark 2W + 30s) after three batches of window 2 were sketched. Counting batches
# fed: 1-10 feed only the warm-up, 11-13 sketch window 2, 14-15 bin it (window 2 stays
# open, half sketched, until 18 closes it), 16-20 bin window 3.
ROUND_TRIP_CUTS = [1, 3, 5, 8, 10, 11, 12, 13, 14, 17, 19]


@pytest.fixture(scope="module")
def uninterrupted_reports() -> list[DriftReport]:
    monitor = DriftMonitor(policy=_round_trip_policy())
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), _round_trip_batches())
    return reports


def _round_trip_policy() -> DriftPolicy:
    return _policy(allowed_lateness="30s", min_reference_events=3000)


@pytest.mark.parametrize("cut", ROUND_TRIP_CUTS)
def test_state_round_trip_through_json_mid_stream(
    cut: int, uninterrupted_reports: list[DriftReport]
) -> None:
    policy = _round_trip_policy()
    monitor = DriftMonitor(policy=policy)
    batches = _round_trip_batches()
    state, before = _feed(monitor, monitor.initialize("m", "v1"), batches[:cut])
    if cut <= 17:  # the reference is not built yet, or window 2 holds a sketch
        assert _sketched(state) > 0
    if cut <= 12:
        assert state["reference"] is None
    assert state["windows"]  # a window is open and partly filled at the cut

    restored = orjson.loads(orjson.dumps(state))
    assert restored == state

    _, original = _feed(monitor, state, batches[cut:])
    _, replayed = _feed(DriftMonitor(policy=policy), restored, batches[cut:])
    assert original
    assert [r.model_dump() for r in replayed] == [r.model_dump() for r in original]
    reports = before + original
    assert [r.model_dump() for r in reports] == [r.model_dump() for r in uninterrupted_reports]
    # (the channel's new mix reaches the joint signal too: categorical features are in it)
    assert [r.drifted_features for r in reports] == [
        [], [], ["f3"], ["channel", "multivariate.reconstruction_error"]
    ]
    assert [r.reference.n for r in reports] == [2000, 4000, 4000, 4000]


def test_state_stays_json_serialisable_throughout() -> None:
    rng = np.random.default_rng(10)
    monitor = DriftMonitor(policy=_policy(min_reference_events=100))
    state = monitor.initialize("m", "v1")
    for i in range(3):
        state, _ = _feed(monitor, state, [_window(rng, i, 300, outputs=True)])
        assert orjson.loads(orjson.dumps(state)) == state


# -- (j) determinism ---------------------------------------------------------------------


def _deterministic_run(chunk: int) -> list[DriftReport]:
    rng = np.random.default_rng(11)
    monitor = DriftMonitor(policy=_policy(min_reference_events=4000, allowed_lateness="20s"))
    windows = [
        _window(rng, 0, 2500, outputs=True),
        _window(rng, 1, 2500, outputs=True),  # completes the warm-up
        _window(rng, 2, 3000, shift={"f1": 1.5}, outputs=True),  # partly sketched
        _window(rng, 3, 3000, channel_p=(0.1, 0.1, 0.1, 0.7), outputs=True),
        _window(rng, 4, 3000, outputs=True),
    ]
    batches = [c for w in windows for c in _chunks(w, chunk)]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), [*batches, _single(6 * W, f0=0.0)])
    return reports


def test_same_input_gives_identical_reports() -> None:
    first = _deterministic_run(500)
    second = _deterministic_run(500)
    assert len(first) == 5
    assert [r.model_dump() for r in first] == [r.model_dump() for r in second]
    assert first[1].reference.n == 5000
    assert first[2].drifted_features == ["f1"]
    assert first[3].drifted_features == ["channel", "multivariate.reconstruction_error"]
    assert first[4].drifted_features == []


def test_batching_does_not_change_the_reports() -> None:
    # Windows close after different batches, so a different share of window 2 is
    # sketched; the counts read from the sketch are exact, so nothing changes.
    first = _deterministic_run(500)
    for chunk in (300, 1000, 3000):
        assert [r.model_dump() for r in _deterministic_run(chunk)] == [
            r.model_dump() for r in first
        ], chunk


# -- (k) model outputs --------------------------------------------------------------------


def test_score_and_prediction_are_reported_apart() -> None:
    rng = np.random.default_rng(12)
    monitor = DriftMonitor(policy=_policy())
    batches = [
        _window(rng, 0, 2000, outputs=True),
        _window(rng, 1, 2000, outputs=True),
        _window(rng, 2, 2000, shift={SCORE: 4.0}, outputs=True),
        _single(3 * W + 10_000, f0=0.0),
    ]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    clean, shifted = reports[1], reports[2]
    for report in (clean, shifted):
        assert sorted(report.features) == ["channel", *NUMERIC]
        assert SCORE not in report.features
        assert PREDICTION not in report.features
        assert sorted(report.prediction) == ["class", "score"]
        assert report.prediction["score"].kind == "numeric"
        assert report.prediction["class"].kind == "categorical"
        assert report.prediction["score"].n == 2000
    assert clean.status == "ok"
    assert shifted.prediction["score"].status == "drift"
    assert shifted.prediction["class"].status == "ok"
    assert shifted.drifted_features == ["prediction.score"]
    assert shifted.status == "drift"


# -- (l) empty input, missing values and new features ---------------------------------------


def test_empty_batch_leaves_state_unchanged() -> None:
    monitor = DriftMonitor(policy=_policy())
    empty = FeatureBatch(ts_ms=np.array([], dtype=np.int64), columns={})
    fresh = monitor.initialize("m", "v1")
    assert monitor.update(fresh, empty) is fresh
    rng = np.random.default_rng(13)
    state = monitor.update(fresh, _window(rng, 0, 50))
    snapshot = orjson.dumps(state)
    assert monitor.update(state, empty) is state
    assert orjson.dumps(state) == snapshot


def test_the_cached_bin_edges_are_the_references_and_read_only() -> None:
    """Every batch counts on the same edge arrays until the reference changes: none
    of that code may write into them, and numpy refuses if it tries."""
    rng = np.random.default_rng(15)
    monitor = DriftMonitor(policy=_policy(min_reference_events=100, allowed_lateness=0))
    state, _ = _feed(monitor, monitor.initialize("m", "v1"),
                     [_window(rng, 0, 200), _window(rng, 1, 200)])
    edges = monitor._edges_of(state["reference"])
    assert sorted(edges) == NUMERIC
    assert edges["f0"].tolist() == state["reference"]["features"]["f0"]["bins"]
    assert monitor._edges_of(state["reference"]) is edges  # cached, not rebuilt
    with pytest.raises(ValueError, match="read-only"):
        edges["f0"][0] = 0.0


def test_update_does_not_mutate_its_input() -> None:
    rng = np.random.default_rng(14)
    monitor = DriftMonitor(policy=_policy(min_reference_events=100, allowed_lateness=0))
    state, _ = _feed(monitor, monitor.initialize("m", "v1"), [_window(rng, 0, 200)])
    snapshot = orjson.dumps(state)
    _feed(monitor, state, [_window(rng, 0, 100), _window(rng, 1, 200), _window(rng, 2, 10)])
    assert orjson.dumps(state) == snapshot


def test_missing_values_and_unreferenced_features() -> None:
    rng = np.random.default_rng(15)
    monitor = DriftMonitor(policy=_policy(allowed_lateness=0))
    window1 = _window(rng, 1, 2000)
    columns = dict(window1.columns)
    columns["f0"] = [None if i % 4 == 0 else v for i, v in enumerate(columns["f0"])]
    columns["new"] = rng.normal(size=2000).tolist()
    batches = [
        _window(rng, 0, 2000),
        _single(W, f0=0.5),  # closes window 0: window 1 is counted on the reference's bins
        FeatureBatch(ts_ms=window1.ts_ms, columns=columns),
        _single(2 * W, f0=0.0),
    ]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), batches)
    report = reports[1]
    assert report.n == 2001
    assert (report.features["f0"].n, report.features["f0"].missing) == (1501, 500)
    assert (report.features["f1"].n, report.features["f1"].missing) == (2000, 1)
    assert (report.features["channel"].n, report.features["channel"].missing) == (2000, 1)
    assert report.features["f0"].status == "ok"
    assert "new" not in report.features
    assert "feature 'new' is not in the reference and is not judged" in report.notes


# -- (m) the warm-up sketch: atoms, exact counts, bounded size ------------------------------


def _run_feature(
    values: Sequence[Sequence[Any]], *, policy: DriftPolicy | None = None
) -> tuple[VersionState, list[DriftReport]]:
    """One feature ``x`` and a steady N(0, 1) control ``c``; window ``i`` holds ``values[i]``."""
    rng = np.random.default_rng(30)
    monitor = DriftMonitor(policy=policy or _policy())
    batches = []
    for i, window in enumerate(values):
        cols = {"x": list(window), "c": rng.normal(size=len(window)).tolist()}
        batches.append(FeatureBatch(ts_ms=_ts(len(window), start_ms=i * W), columns=cols))
    batches.append(_single(len(values) * W + 10_000, c=0.0))
    return _feed(monitor, monitor.initialize("m", "v1"), batches)


@pytest.mark.parametrize(("ones_before", "ones_after"), [(0.05, 0.6), (0.95, 0.4)])
def test_binary_feature_share_change_is_flagged(ones_before: float, ones_after: float) -> None:
    rng = np.random.default_rng(31)

    def flags(n: int, p: float) -> list[int]:
        return (rng.random(n) < p).astype(int).tolist()

    _, reports = _run_feature(
        [flags(3000, ones_before), flags(2500, ones_before), flags(2500, ones_after)]
    )
    _, clean, shifted = reports
    assert clean.status == "ok"
    assert clean.features["x"].metrics["psi"] < 0.01
    assert shifted.status == "drift"
    assert shifted.drifted_features == ["x", MULTIVARIATE]  # the joint signal sees it too
    assert shifted.features["x"].metrics["psi"] > 1.0
    assert shifted.features["x"].n == 2500
    assert shifted.features["c"].status == "ok"


def test_zero_inflated_feature_zero_share_change_is_flagged() -> None:
    rng = np.random.default_rng(32)

    def amounts(n: int, zeros: float) -> list[float]:
        return np.where(rng.random(n) < zeros, 0.0, rng.lognormal(3.0, 1.0, n)).tolist()

    windows = [amounts(3000, 0.92), amounts(2500, 0.92), amounts(2500, 0.5)]
    state, reports = _run_feature(windows)
    ref = state["reference"]
    assert ref is not None
    edges = np.asarray(ref["features"]["x"]["bins"])
    zero_bin = int(np.searchsorted(edges, 0.0, side="right"))
    # The zeros have a bin of their own, bounded on both sides.
    assert 0 < zero_bin < edges.size
    zeros_ref = windows[0].count(0.0) / 3000
    assert ref["features"]["x"]["counts"][zero_bin] == windows[0].count(0.0)
    _, clean, shifted = reports
    assert clean.status == "ok"
    assert shifted.drifted_features == ["x", MULTIVARIATE]  # the joint signal sees it too
    assert shifted.features["x"].status == "drift"
    zeros_now = windows[2].count(0.0) / 2500
    assert shifted.features["x"].reason.endswith(
        f"[{edges[zero_bin - 1]:.4g}, {edges[zero_bin]:.4g}): "
        f"{zeros_ref:.1%} of the reference, {zeros_now:.1%} now"
    )


def test_counts_are_exact_when_part_of_a_window_was_sketched() -> None:
    # Window 0 is the reference; it closes at W + 30s, after three of window 1's four
    # batches were counted into a sketch. The last batch is binned on the reference edges.
    rng = np.random.default_rng(33)
    monitor = DriftMonitor(policy=_policy(allowed_lateness="30s"))
    w0 = _window(rng, 0, 2000, outputs=True)
    w1 = _window(rng, 1, 2000, shift={"f2": 0.7}, outputs=True)
    cols = dict(w1.columns)
    cols["f0"] = [None if i % 10 == 3 else v for i, v in enumerate(cols["f0"])]
    cols["f1"] = [float("nan") if i % 7 == 0 else v for i, v in enumerate(cols["f1"])]
    w1 = FeatureBatch(ts_ms=w1.ts_ms, columns=cols)
    chunks = list(_chunks(w1, 500))
    state, reports = _feed(monitor, monitor.initialize("m", "v1"), [w0, *chunks[:3]])
    assert [r.window_start for r in reports] == [_at(0)]
    acc = state["windows"][str(W)]
    assert acc["numeric"]["f0"]["sketch"] is not None
    assert acc["numeric"]["f0"]["counts"] is None
    state, _ = _feed(monitor, state, chunks[3:])
    acc = state["windows"][str(W)]
    assert acc["numeric"]["f0"]["sketch"] is not None
    assert acc["numeric"]["f0"]["counts"] is not None  # half sketched, half binned

    state, (report,) = _feed(monitor, state, [_single(2 * W + 30_000, f0=0.0)])
    assert report.n == 2000
    assert type(report.n) is int
    expected_n = {"f0": 1800, "f1": 2000 - 286, "f2": 2000, "f3": 2000, "f4": 2000}
    for name, n in expected_n.items():
        feature = report.features[name]
        assert (feature.n, feature.missing) == (n, 2000 - n), name
        assert type(feature.n) is int
    assert report.prediction["score"].n == 2000
    assert report.features["channel"].n == 2000

    # The counts, and so the PSI, are those of binning the raw values on the reference edges.
    ref = state["reference"]
    assert ref is not None
    for name in [*NUMERIC, SCORE]:
        edges = np.asarray(ref["features"][name]["bins"])
        raw0 = np.asarray(w0.columns[name], dtype=np.float64)
        exact0 = np.bincount(np.searchsorted(edges, raw0, side="right"), minlength=edges.size + 1)
        assert ref["features"][name]["counts"] == exact0.tolist(), name
        raw1 = np.asarray([np.nan if v is None else v for v in w1.columns[name]], dtype=np.float64)
        raw1 = raw1[~np.isnan(raw1)]
        exact1 = np.bincount(np.searchsorted(edges, raw1, side="right"), minlength=edges.size + 1)
        groups = np.asarray(ref["features"][name]["groups"])
        got = report.prediction["score"] if name == SCORE else report.features[name]
        expected = psi(np.bincount(groups, weights=exact0), np.bincount(groups, weights=exact1))
        assert got.metrics["psi"] == round(expected, 6), name
    assert report.drifted_features == ["f2"]


def test_warm_up_sketch_stays_bounded() -> None:
    rng = np.random.default_rng(34)
    monitor = DriftMonitor(policy=_policy(min_reference_events=100_000))
    state = monitor.initialize("m", "v1")
    for i in range(10):
        n = 5000
        wide = np.sign(rng.normal(size=n)) * 10.0 ** rng.uniform(-300, 300, n)
        batch = FeatureBatch(
            ts_ms=_ts(n, start_ms=i * W // 10, span_ms=W // 10),
            columns={"wide": wide.tolist(), "narrow": rng.normal(size=n).tolist()},
        )
        state = monitor.update(state, batch)
        sketch = state["windows"]["0"]["numeric"]["wide"]["sketch"]
        assert sketch is not None
        assert len(sketch["keys"]) <= LogHistogram.MAX_BUCKETS
    window = state["windows"]["0"]
    assert window["n"] == 50_000
    assert monitor.numeric.count(window["numeric"]["wide"]) == 50_000
    assert len(orjson.dumps(window["numeric"]["wide"])) < 40_000
    narrow = window["numeric"]["narrow"]["sketch"]
    assert narrow is not None
    assert len(narrow["keys"]) < 2500  # N(0, 1) down to |x| ~ 1e-5: about 1,300 buckets


# -- regressions: boundary values and features with a large offset ------------------------------


def test_steady_sign_feature_is_not_flagged() -> None:
    rng = np.random.default_rng(35)

    def signs(n: int) -> list[int]:
        return rng.choice([-1, 0, 1], n, p=[0.3, 0.4, 0.3]).tolist()

    _, reports = _run_feature([signs(3000), signs(2500), signs(2500)])
    assert reports[2].features["x"].status == "ok"


def test_shift_of_a_large_offset_feature_is_flagged() -> None:
    rng = np.random.default_rng(36)
    _, reports = _run_feature(
        [
            rng.integers(2015, 2020, 3000).tolist(),
            rng.integers(2015, 2020, 2500).tolist(),
            rng.integers(2020, 2025, 2500).tolist(),
        ]
    )
    assert reports[2].features["x"].status == "drift"


# -- multivariate signal: state size and determinism ---------------------------------------


def _correlated_window(
    rng: np.random.Generator, index: int, n: int, *, rho: float = 0.8
) -> FeatureBatch:
    """``_window``'s five features, with f0 and f1 correlated ``rho`` (marginals N(0, 1))."""
    batch = _window(rng, index, n)
    f0, f1 = np.asarray(batch.columns["f0"]), np.asarray(batch.columns["f1"])
    cols = dict(batch.columns)
    cols["f1"] = (rho * f0 + np.sqrt(1 - rho**2) * f1).tolist()
    return FeatureBatch(ts_ms=batch.ts_ms, columns=cols)


def test_a_window_keeps_three_numbers_for_the_joint_signal() -> None:
    rng = np.random.default_rng(40)
    windows = [_correlated_window(rng, i, 2000) for i in range(3)]
    on, off = DriftMonitor(policy=_policy()), DriftMonitor(policy=_policy(multivariate=False))
    states = []
    for monitor in (on, off):
        state, _ = _feed(monitor, monitor.initialize("m", "v1"), windows)
        # window 2 is open, filled, and counted against the reference's PCA
        states.append(state)
    assert states[0]["reference"] is not None
    assert states[0]["reference"].get("multivariate") is not None
    window = states[0]["windows"][str(2 * W)]
    assert "mv_halves" not in window and "mv_names" not in states[0]
    sums = window["mv"]
    # count, sum, sum of squares; events beyond the limits, the farthest value and where
    assert sums is not None and len(sums) == 6 and sums[0] == 2000
    with_signal = len(orjson.dumps(window))
    without = len(orjson.dumps(states[1]["windows"][str(2 * W)]))
    assert with_signal - without == len(orjson.dumps({"mv": sums})) - 2 + 1  # key, list, comma
    assert with_signal - without < 128  # six numbers
    # the reference is written once, under its own key, and is bounded by d * d:
    # 5d + kd + 4 numbers and at most mv.SLOTS frequencies per categorical feature
    pca = states[0]["reference"]["multivariate"]
    d, k = 6, 5  # five numeric features and the channel
    assert pca is not None and len(orjson.dumps(pca)) < (5 * d + k * d + 4 + 8) * 25


def _joint_run(chunk: int) -> list[DriftReport]:
    rng = np.random.default_rng(41)
    monitor = DriftMonitor(policy=_policy(min_reference_events=4000, allowed_lateness="20s"))
    windows = [
        _correlated_window(rng, 0, 2500),
        _correlated_window(rng, 1, 2500),  # completes the warm-up
        _correlated_window(rng, 2, 3000),  # partly counted before: not judged jointly
        _correlated_window(rng, 3, 3000),
        _correlated_window(rng, 4, 3000, rho=-0.8),
        _correlated_window(rng, 5, 3000, rho=-0.8),
    ]
    batches = [c for w in windows for c in _chunks(w, chunk)]
    _, reports = _feed(monitor, monitor.initialize("m", "v1"), [*batches, _single(7 * W, f0=0.0)])
    return reports


def test_the_joint_signal_replays_identically_however_events_are_batched() -> None:
    first = _joint_run(500)
    assert [r.model_dump() for r in _joint_run(500)] == [r.model_dump() for r in first]
    for chunk in (97, 299, 3000):  # batches of at least ANCHOR_SAMPLE events, as above
        assert [r.model_dump() for r in _joint_run(chunk)] == [
            r.model_dump() for r in first
        ], chunk
    assert first[2].multivariate is None
    assert [r.multivariate.status for r in first[3:] if r.multivariate] == ["ok", "drift", "drift"]
    assert [r.drifted_features for r in first[3:]] == [[], [MULTIVARIATE], [MULTIVARIATE]]
