"""The array kernels give the numbers of the per-feature, per-event definitions exactly:
a window's features compared at once (streams/drift/compare.py), sketch buckets of many
features at once (log_histogram.keys_of), categorical codes counted with bincount, the
warm-up moments summed a chunk of events at a time and the reconstruction errors of a
batch taken as matrix products (streams/drift/multivariate.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from streams.batch import Categories
from streams.drift import multivariate as mv
from streams.drift.chi_square import chi_square
from streams.drift.compare import (
    GRID,
    Comparison,
    compare_categorical_many,
    compare_numeric_many,
    prepare,
)
from streams.drift.jensen_shannon import js_distance
from streams.drift.ks import ks_statistic
from streams.drift.missing import missing_rate_change, unseen_share
from streams.drift.psi import psi
from streams.drift.reference import ReferenceFeature, categorical_reference, numeric_reference
from streams.drift.wasserstein import wasserstein_from_quantiles
from streams.summaries.categorical import CategoricalState, CategoricalSummary
from streams.summaries.log_histogram import LogHistogram
from streams.summaries.numeric import NumericState, NumericSummary

Floats = npt.NDArray[np.float64]


# -- a window's features compared at once -----------------------------------------------


def _move(ref: Floats, cur: Floats, label: Callable[[int], str]) -> str:
    p = ref / max(float(ref.sum()), 1.0)
    q = cur / max(float(cur.sum()), 1.0)
    i = int(np.argmax(np.abs(q - p)))
    return f"biggest change in {label(i)}: {p[i]:.1%} of the reference, {q[i]:.1%} now"


def _label(edges: Floats, groups: npt.NDArray[np.int64], g: int) -> str:
    starts = np.flatnonzero(np.diff(groups)) + 1
    lo = "-inf" if g == 0 else f"{edges[starts[g - 1] - 1]:.4g}"
    hi = "inf" if g == starts.size else f"{edges[starts[g] - 1]:.4g}"
    return f"[{lo}, {hi})"


def _one_numeric(summary: NumericSummary, ref: ReferenceFeature, st: NumericState) -> Comparison:
    """One feature's comparison, metric by metric with the one-feature functions (the
    definition the comparison of many features at once must equal)."""
    edges = np.asarray(ref["bins"], dtype=np.float64)
    ref_fine = np.asarray(ref["counts"], dtype=np.float64)
    cur_fine = summary.bin_counts(st, edges).astype(np.float64)
    groups = np.asarray(ref["groups"], dtype=np.int64)
    size = int(groups.max()) + 1
    ref_g = np.bincount(groups, weights=ref_fine, minlength=size).astype(np.float64)
    cur_g = np.bincount(groups, weights=cur_fine, minlength=size).astype(np.float64)
    ref_total = ref["missing"] + round(float(ref_fine.sum()))
    cur_total = st["missing"] + round(float(cur_fine.sum()))
    metrics = {
        "psi": psi(ref_g, cur_g),
        "ks": ks_statistic(ref_fine, cur_fine),
        "js": js_distance(ref_g, cur_g),
        "missing_rate_change": missing_rate_change(
            ref["missing"], ref_total, st["missing"], cur_total
        ),
    }
    if ref["std"] > 0 and cur_fine.sum() > 0:
        lo = ref["lo"] if st["lo"] is None else min(ref["lo"], st["lo"])
        hi = ref["hi"] if st["hi"] is None else max(ref["hi"], st["hi"])
        points = np.concatenate(([min(lo, edges[0])], edges, [max(hi, edges[-1])]))

        def quantiles(counts: Floats) -> Floats:
            cdf = np.concatenate(([0.0], np.cumsum(counts) / counts.sum()))
            return np.interp(GRID, cdf, points)

        metrics["wasserstein_sd"] = wasserstein_from_quantiles(
            quantiles(ref_fine), quantiles(cur_fine), scale=ref["std"]
        )
    return Comparison(
        n=round(float(cur_fine.sum())),
        missing=st["missing"],
        reference_n=round(float(ref_fine.sum())),
        psi=metrics["psi"],
        psi_bins=size,
        metrics={k: round(v, 6) for k, v in metrics.items()},
        move=_move(ref_g, cur_g, lambda g: _label(edges, groups, g)),
    )


def _one_categorical(ref: ReferenceFeature, st: CategoricalState) -> Comparison:
    cats = [str(c) for c in ref["bins"]]
    ref_c = np.asarray(ref["counts"], dtype=np.float64)
    cur_c = CategoricalSummary.bin_counts(st, cats).astype(np.float64)
    stat, p_value = chi_square(ref_c, cur_c)
    metrics = {
        "psi": psi(ref_c, cur_c),
        "chi2": stat,
        "chi2_p": p_value,
        "js": js_distance(ref_c, cur_c),
        "unseen_share": unseen_share(st["counts"], ref["known"]),
        "missing_rate_change": missing_rate_change(
            ref["missing"],
            ref["missing"] + round(float(ref_c.sum())),
            st["missing"],
            st["missing"] + round(float(cur_c.sum())),
        ),
    }
    return Comparison(
        n=round(float(cur_c.sum())),
        missing=st["missing"],
        reference_n=round(float(ref_c.sum())),
        psi=metrics["psi"],
        psi_bins=ref_c.size,
        metrics={k: round(v, 6) if k != "chi2_p" else v for k, v in metrics.items()},
        move=_move(ref_c, cur_c, [*cats, "(other)"].__getitem__),
    )


def _numeric_columns(rng: np.random.Generator, n: int) -> dict[str, Floats]:
    """Features of different shapes: different numbers of fine bins and of PSI bins."""
    flag = (rng.random(n) < 0.3).astype(np.float64)
    return {
        "normal": rng.normal(10, 2, n),
        "lognormal": rng.lognormal(0, 1, n),
        "flag": flag,  # two atoms: few fine bins, two PSI bins
        "counts": rng.poisson(3, n).astype(np.float64),  # atoms: fewer PSI bins
        "sparse": np.where(rng.random(n) < 0.8, np.nan, rng.normal(size=n)),
        "constant": np.full(n, 4.0),  # no spread: no Wasserstein
    }


def test_numeric_features_compared_at_once_equal_each_compared_alone() -> None:
    rng = np.random.default_rng(21)
    summary = NumericSummary()
    warm = _numeric_columns(rng, 20_000)
    refs: dict[str, ReferenceFeature] = {}
    for name, x in warm.items():
        finite = x[~np.isnan(x)]
        anchor = float(np.median(finite[:64]))
        st = summary.update(summary.initialize(), x, None, anchor=anchor)
        refs[name] = numeric_reference(summary, st, bins=10, fine_bins=100)
    assert len({len(r["counts"]) for r in refs.values()}) > 2  # rows of several widths
    assert len({max(r["groups"]) for r in refs.values()}) > 2
    prepared = prepare(refs).numeric
    window = {k: v * 1.1 + 0.3 for k, v in _numeric_columns(rng, 3_000).items()}
    states = []
    for name in prepared.names:
        edges = np.asarray(refs[name]["bins"], dtype=np.float64)
        states.append(summary.update(summary.initialize(), window[name], edges))
    # a window opened before its reference: a sketch, read on the reference's bins
    sketched = summary.update(summary.initialize(), window["normal"], None, anchor=10.0)
    states[prepared.names.index("normal")] = sketched
    states[prepared.names.index("sparse")] = summary.initialize()  # nothing in the window
    got = compare_numeric_many(summary, prepared, states)
    for name, state, comparison in zip(prepared.names, states, got, strict=True):
        assert comparison == _one_numeric(summary, refs[name], state), name


def test_categorical_features_compared_at_once_equal_each_compared_alone() -> None:
    rng = np.random.default_rng(22)
    summary = CategoricalSummary()
    refs: dict[str, ReferenceFeature] = {}
    windows: dict[str, CategoricalState] = {}
    for name, k in [("two", 2), ("five", 5), ("many", 40)]:
        names = [f"{name}{i}" for i in range(k)]
        weights = rng.dirichlet(np.ones(k))
        ref_state = summary.update(summary.initialize(), list(rng.choice(names, 5_000, p=weights)))
        refs[name] = categorical_reference(ref_state, top_k=20)
        shifted = [*names, "unseen"]
        cur = list(rng.choice(shifted, 2_000, p=np.append(weights * 0.9, 0.1)))
        windows[name] = summary.update(summary.initialize(), [*cur, None, None])
    prepared = prepare(refs).categorical
    states = [windows[n] for n in prepared.names]
    got = compare_categorical_many(prepared, states)
    for name, state, comparison in zip(prepared.names, states, got, strict=True):
        assert comparison == _one_categorical(refs[name], state), name


# -- sketches of many features at once ----------------------------------------------------


def test_keys_of_many_rows_equal_each_row_alone() -> None:
    rng = np.random.default_rng(23)
    sketch = LogHistogram()
    x = np.vstack(
        [
            rng.normal(size=500),
            rng.lognormal(size=500) * 1e6,
            rng.integers(-2, 3, size=500).astype(np.float64),  # distances of exactly 0
            -rng.lognormal(size=500),
        ]
    )
    anchors = np.array([0.0, 1e6, 0.0, -1.0])
    got = sketch.keys_of(x, anchors[:, np.newaxis])
    for row, anchor in zip(x, anchors.tolist(), strict=True):
        assert np.array_equal(sketch.keys_of(row, anchor), got[x.tolist().index(row.tolist())])


def test_many_sketched_features_equal_each_sketched_alone() -> None:
    rng = np.random.default_rng(24)
    summary = NumericSummary()
    x = rng.lognormal(size=(4, 700)) * np.array([[1.0], [1e-3], [1e5], [1.0]])
    x[1, ::4] = np.nan
    x[2, :350] = np.nan
    anchors = [1.0, 0.0, 1e5, -3.0]
    start = [summary.initialize() for _ in anchors]
    start[0] = summary.update(start[0], rng.lognormal(size=100), None, anchor=anchors[0])
    for _ in range(3):  # new buckets, then known ones
        got = summary.update_many(start, x, [None] * 4, anchors)
        for j, anchor in enumerate(anchors):
            assert got[j] == summary.update(start[j], x[j], None, anchor=anchor), j
        start, x = got, x * 1.01


def test_categories_counted_with_bincount_equal_strings_counted() -> None:
    """Ranked as Counter ranks strings (count, then first appearance) when a cap leaves
    room for only some new categories, batch after batch."""
    rng = np.random.default_rng(25)
    names = tuple(f"c{i}" for i in range(12))
    summary = CategoricalSummary(max_categories=7)
    by_codes = by_strings = summary.initialize()
    for size in (30, 200, 5, 400):
        codes = rng.integers(-1, len(names), size=size).astype(np.int32)
        column = Categories(codes, names)
        by_codes = summary.update(by_codes, column)
        by_strings = summary.update(by_strings, column.values())
        assert by_codes == by_strings
        assert list(by_codes["counts"]) == list(by_strings["counts"])  # the same order


# -- multivariate: warm-up moments and reconstruction errors ---------------------------


def test_warmup_moments_equal_a_sum_one_event_after_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mv, "ACCUMULATE_CHUNK", 3)  # many chunks, and a partial one
    rng = np.random.default_rng(26)
    d = 4
    x = rng.normal(size=(11, d)) * np.array([1.0, 1e-3, 1e3, 7.0])
    start = mv.empty_halves([0.0] * d)["a"]
    start = {
        **start,
        "n": 2,
        "sum": rng.normal(size=d).tolist(),
        "outer": rng.normal(size=d * (d + 1) // 2).tolist(),
    }
    got = mv._accumulate(start, np.ascontiguousarray(x.T))
    rows, cols = np.triu_indices(d)
    total = np.asarray(start["sum"])
    outer = np.asarray(start["outer"])
    for event in x:  # one event after the other, in order
        total = total + event
        outer = outer + event[rows] * event[cols]
    assert got == {"n": 13, "sum": total.tolist(), "outer": outer.tolist()}


def test_errors_of_a_batch_equal_each_event_alone_and_the_formula() -> None:
    rng = np.random.default_rng(27)
    d = 6
    x = rng.normal(size=(2 * mv.ERROR_BLOCK + 7, d))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]
    x[rng.random(x.shape) < 0.05] = np.nan
    ref = mv.fit(
        [f"x{i}" for i in range(d)],
        mv.add_events(mv.empty_halves([0.0] * d), x, offset=0),
        variance=0.65,
    )
    assert ref is not None
    errors = mv.errors(ref, x)
    for i in (0, 1, mv.ERROR_BLOCK - 1, mv.ERROR_BLOCK, x.shape[0] - 1):  # block edges
        assert mv.errors(ref, x[i : i + 1])[0] == errors[i]
    assert np.array_equal(mv.errors(ref, np.ascontiguousarray(x.T).T), errors)  # either layout
    z = (x - np.asarray(ref["means"])) / np.asarray(ref["sds"])
    z[np.isnan(z)] = 0.0
    p = np.asarray(ref["components"])
    residual = z - (z @ p.T) @ p
    np.testing.assert_allclose(errors, (residual**2).sum(axis=1), rtol=1e-10, atol=1e-12)
