"""Compare a window's features with their reference: every metric, no judgement.

Numeric: PSI and Jensen-Shannon distance on the PSI bins; Kolmogorov-Smirnov
on the fine bins (exact at the bin edges; below the raw-data statistic by at
most the largest fine-bin share, about 1 %); Wasserstein-1 in reference
standard deviations from the binned quantile functions (values spread evenly
within a bin); the change in missing rate. Categorical: PSI, chi-square
statistic and p-value, Jensen-Shannon distance on the top categories plus
"other", the share of unseen categories and the change in missing rate.

A window's features are compared all at once (``compare_numeric_many``,
``compare_categorical_many``), their histograms as the rows of a few arrays,
with the reference's side prepared once (``prepare``). The numbers are those
of each metric's one-feature function (``psi``, ``ks_statistic``, ...) to the
last bit: rows are summed only with rows of their own width, never over padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from streams.drift.chi_square import chi_square_of
from streams.drift.jensen_shannon import js_of_sums, js_terms
from streams.drift.ks import ks_of_cdfs
from streams.drift.missing import missing_rate_change, unseen_share
from streams.drift.psi import psi_terms
from streams.drift.reference import ReferenceFeature
from streams.drift.wasserstein import quantile_grid, wasserstein_rows
from streams.summaries.categorical import CategoricalState
from streams.summaries.numeric import NumericState, NumericSummary

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
GRID = quantile_grid(200)


@dataclass(frozen=True)
class Comparison:
    n: int  # non-missing values in the window
    missing: int
    reference_n: int  # non-missing values in the reference
    psi: float
    psi_bins: int
    metrics: dict[str, float]
    move: str  # the bin that moved most, in words


@dataclass(frozen=True, eq=False)
class _Rows:
    """The rows (features) of one width."""

    width: int
    rows: Ints


def _rows_by_width(widths: Ints) -> tuple[_Rows, ...]:
    return tuple(
        _Rows(width, _read_only(np.flatnonzero(widths == width)))
        for width in np.unique(widths).tolist()
    )


@dataclass(frozen=True, eq=False)
class NumericReferences:
    """Numeric features of a reference as the rows of zero-padded arrays. Read-only."""

    names: tuple[str, ...]
    features: tuple[ReferenceFeature, ...]
    edges: tuple[Floats, ...]
    sizes: Ints  # fine bins of each feature
    counts: Floats  # fine counts
    cdf: Floats  # 0, then cumsum(counts) / total: 1 + bins columns
    total: Floats  # fine counts' sum
    group_index: Ints  # each fine cell's PSI bin, as a flat index into ``grouped``
    grouped: Floats  # counts per PSI bin
    psi_bins: Ints  # PSI bins of each feature
    by_width: tuple[_Rows, ...]  # features of each number of PSI bins
    labels: list[dict[int, str]]  # PSI bins' value ranges, as they are asked for

    def label(self, row: int, group: int) -> str:
        labels = self.labels[row]
        if group not in labels:
            groups = np.asarray(self.features[row]["groups"], dtype=np.int64)
            labels[group] = _group_label(self.edges[row], groups, group)
        return labels[group]


@dataclass(frozen=True, eq=False)
class CategoricalReferences:
    """Categorical features of a reference: their top categories, and the counts of
    those plus "other" as the rows of a zero-padded array. Read-only."""

    names: tuple[str, ...]
    features: tuple[ReferenceFeature, ...]
    categories: tuple[list[str], ...]
    sizes: Ints  # cells of each feature: its categories and "other"
    counts: Floats
    by_width: tuple[_Rows, ...]  # features of each number of cells
    known: tuple[frozenset[str], ...]


@dataclass(frozen=True, eq=False)
class References:
    """A reference's features, prepared to compare windows with (``prepare``)."""

    numeric: NumericReferences
    categorical: CategoricalReferences


def prepare(features: Mapping[str, ReferenceFeature]) -> References:
    """The reference's side of every comparison, computed once: arrays of its features."""
    return References(
        numeric=_prepare_numeric([(n, f) for n, f in features.items() if f["kind"] == "numeric"]),
        categorical=_prepare_categorical(
            [(n, f) for n, f in features.items() if f["kind"] != "numeric"]
        ),
    )


def _prepare_numeric(items: list[tuple[str, ReferenceFeature]]) -> NumericReferences:
    edges = tuple(np.asarray(f["bins"], dtype=np.float64) for _, f in items)
    sizes = np.array([e.size + 1 for e in edges], dtype=np.intp)
    counts = _padded([f["counts"] for _, f in items], sizes, [n for n, _ in items])
    groups = np.zeros(counts.shape, dtype=np.intp)
    psi_bins = np.ones(len(items), dtype=np.intp)
    for row, ((_, f), size) in enumerate(zip(items, sizes.tolist(), strict=True)):
        g = np.asarray(f["groups"], dtype=np.intp)
        if g.size:
            groups[row, :size] = g
            groups[row, size:] = g.max()  # padding adds 0 to the last bin
            psi_bins[row] = g.max() + 1
    width = int(psi_bins.max()) if items else 1
    group_index = (groups + np.arange(len(items))[:, np.newaxis] * width).ravel()
    cdf, total = _cdf(counts)
    grouped = _grouped(counts, group_index, width)
    return NumericReferences(
        names=tuple(n for n, _ in items),
        features=tuple(f for _, f in items),
        edges=edges,
        sizes=sizes,
        counts=_read_only(counts),
        cdf=_read_only(cdf),
        total=_read_only(total),
        group_index=_read_only(group_index),
        grouped=_read_only(grouped),
        psi_bins=_read_only(psi_bins),
        by_width=_rows_by_width(psi_bins),
        labels=[{} for _ in items],
    )


def _prepare_categorical(items: list[tuple[str, ReferenceFeature]]) -> CategoricalReferences:
    categories = tuple([str(c) for c in f["bins"]] for _, f in items)
    sizes = np.array([len(c) + 1 for c in categories], dtype=np.intp)
    counts = _padded([f["counts"] for _, f in items], sizes, [n for n, _ in items])
    return CategoricalReferences(
        names=tuple(n for n, _ in items),
        features=tuple(f for _, f in items),
        categories=categories,
        sizes=sizes,
        counts=_read_only(counts),
        by_width=_rows_by_width(sizes),
        known=tuple(frozenset(f["known"]) for _, f in items),
    )


def _padded(rows: Sequence[Sequence[int]], sizes: Ints, names: Sequence[str]) -> Floats:
    out = np.zeros((len(rows), int(sizes.max()) if len(rows) else 1))
    for row, (values, size, name) in enumerate(zip(rows, sizes.tolist(), names, strict=True)):
        if len(values) != size:
            raise ValueError(f"reference feature {name!r} has {len(values)} counts for {size} bins")
        out[row, :size] = values
    return out


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _read_only(array: _A) -> _A:
    array.flags.writeable = False
    return array


def _cdf(counts: Floats) -> tuple[Floats, Floats]:
    """``[0, cumsum(row) / row total]`` of each row (NaN for an empty row), and the totals."""
    total = counts.sum(axis=1)
    cdf = np.zeros((counts.shape[0], counts.shape[1] + 1))
    np.cumsum(counts, axis=1, out=cdf[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf[:, 1:] /= total[:, np.newaxis]
    return cdf, total


def _grouped(counts: Floats, group_index: Ints, width: int) -> Floats:
    """Counts per PSI bin: each feature's fine cells added in order (``np.bincount``)."""
    summed = np.bincount(group_index, weights=counts.ravel(), minlength=counts.shape[0] * width)
    return summed.astype(np.float64, copy=False).reshape(counts.shape[0], width)


def _row_sums(terms: Floats, parts: tuple[_Rows, ...]) -> Floats:
    """Each row's sum of its own cells, rows of one width at a time: the sum of the
    same numbers in the same order as a one-feature function's, never over padding."""
    out = np.empty(terms.shape[0])
    for part in parts:
        out[part.rows] = np.sum(terms[part.rows, : part.width], axis=1)
    return out


def _psi_js(ref: Floats, cur: Floats, parts: tuple[_Rows, ...]) -> tuple[Floats, Floats]:
    """PSI and Jensen-Shannon distance of each row (``psi``, ``js_distance``)."""
    terms, empty = psi_terms(ref, cur)
    psi: Floats = np.where(empty, 0.0, _row_sums(terms, parts))
    to_p, to_q, empty = js_terms(ref, cur)
    return psi, js_of_sums(_row_sums(to_p, parts), _row_sums(to_q, parts), empty)


def compare_numeric(
    summary: NumericSummary, ref: ReferenceFeature, state: NumericState
) -> Comparison:
    """One numeric feature of a window against its reference."""
    return compare_numeric_many(summary, _prepare_numeric([("x", ref)]), [state])[0]


def compare_categorical(ref: ReferenceFeature, state: CategoricalState) -> Comparison:
    """One categorical feature of a window against its reference."""
    return compare_categorical_many(_prepare_categorical([("x", ref)]), [state])[0]


def compare_numeric_many(
    summary: NumericSummary, refs: NumericReferences, states: Sequence[NumericState]
) -> list[Comparison]:
    """Each numeric feature of a window (``states[i]`` for ``refs.names[i]``) against
    its reference."""
    if len(states) != len(refs.names):
        raise ValueError(f"{len(states)} window states for {len(refs.names)} features")
    cur = np.zeros(refs.counts.shape)
    for row, (state, size) in enumerate(zip(states, refs.sizes.tolist(), strict=True)):
        if state["sketch"]:  # counted before the reference existed
            cur[row, :size] = summary.bin_counts(state, refs.edges[row])
        elif state["counts"] is not None:
            if len(state["counts"]) != size:
                raise ValueError(
                    f"counts of {len(state['counts'])} cells do not fit "
                    f"{size - 1} bin edges of {refs.names[row]!r}"
                )
            cur[row, :size] = state["counts"]
    if np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    cdf, total = _cdf(cur)
    grouped = _grouped(cur, refs.group_index, refs.grouped.shape[1])
    psi, js = _psi_js(refs.grouped, grouped, refs.by_width)
    ks = ks_of_cdfs(refs.cdf, refs.total, cdf, total)  # (cumulative: padding adds nothing)
    moves = _biggest_moves(refs.grouped, grouped)
    wasserstein = _wasserstein(refs, states, cdf, total)
    out = []
    for row, (ref, state) in enumerate(zip(refs.features, states, strict=True)):
        metrics = {
            "psi": float(psi[row]),
            "ks": float(ks[row]),
            "js": float(js[row]),
            "missing_rate_change": _missing_change(
                ref, float(refs.total[row]), state["missing"], float(total[row])
            ),
        }
        if row in wasserstein:
            metrics["wasserstein_sd"] = wasserstein[row]
        group, p, q = moves[row]
        out.append(
            Comparison(
                n=round(float(total[row])),
                missing=state["missing"],
                reference_n=round(float(refs.total[row])),
                psi=metrics["psi"],
                psi_bins=int(refs.psi_bins[row]),
                metrics={k: round(v, 6) for k, v in metrics.items()},
                move=_move(refs.label(row, group), p, q),
            )
        )
    return out


def compare_categorical_many(
    refs: CategoricalReferences, states: Sequence[CategoricalState]
) -> list[Comparison]:
    """Each categorical feature of a window (``states[i]`` for ``refs.names[i]``)
    against its reference."""
    if len(states) != len(refs.names):
        raise ValueError(f"{len(states)} window states for {len(refs.names)} features")
    cur = np.zeros(refs.counts.shape)
    for row, (state, cats) in enumerate(zip(states, refs.categories, strict=True)):
        counts = state["counts"]
        cells = [counts.get(c, 0) for c in cats]
        cur[row, : len(cats)] = cells
        # everything else in the last cell, "other"
        cur[row, len(cats)] = sum(counts.values()) + state["other"] - sum(cells)
    if np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    psi, js = _psi_js(refs.counts, cur, refs.by_width)
    moves = _biggest_moves(refs.counts, cur)
    total = cur.sum(axis=1).tolist()
    ref_total = refs.counts.sum(axis=1).tolist()
    out = []
    for row, (ref, state) in enumerate(zip(refs.features, states, strict=True)):
        size = int(refs.sizes[row])
        stat, p_value = chi_square_of(refs.counts[row, :size], cur[row, :size])
        metrics = {
            "psi": float(psi[row]),
            "chi2": stat,
            "chi2_p": p_value,
            "js": float(js[row]),
            "unseen_share": unseen_share(state["counts"], refs.known[row]),
            "missing_rate_change": _missing_change(
                ref, ref_total[row], state["missing"], total[row]
            ),
        }
        cats = refs.categories[row]
        i, p, q = moves[row]
        out.append(
            Comparison(
                n=round(total[row]),
                missing=state["missing"],
                reference_n=round(ref_total[row]),
                psi=metrics["psi"],
                psi_bins=size,
                metrics={k: round(v, 6) if k != "chi2_p" else v for k, v in metrics.items()},
                move=_move(cats[i] if i < len(cats) else "(other)", p, q),
            )
        )
    return out


def _wasserstein(
    refs: NumericReferences, states: Sequence[NumericState], cdf: Floats, total: Floats
) -> dict[int, float]:
    """Wasserstein-1 of the features that have one (a spread in the reference, values in
    the window), by row: from quantile functions of the binned values on ``GRID``."""
    rows = [row for row, ref in enumerate(refs.features) if ref["std"] > 0 and total[row] > 0]
    if not rows:
        return {}
    ref_q = np.empty((len(rows), GRID.size))
    cur_q = np.empty((len(rows), GRID.size))
    for i, row in enumerate(rows):
        ref, state = refs.features[row], states[row]
        win_lo, win_hi = state.get("lo"), state.get("hi")
        lo = ref["lo"] if win_lo is None else min(ref["lo"], win_lo)
        hi = ref["hi"] if win_hi is None else max(ref["hi"], win_hi)
        points = _points(refs.edges[row], lo, hi)
        ref_q[i] = np.interp(GRID, refs.cdf[row, : points.size], points)
        cur_q[i] = np.interp(GRID, cdf[row, : points.size], points)
    scales = [refs.features[row]["std"] for row in rows]
    return dict(zip(rows, wasserstein_rows(ref_q, cur_q, scales).tolist(), strict=True))


def _missing_change(
    ref: ReferenceFeature, ref_counted: float, missing: int, counted: float
) -> float:
    ref_total = ref["missing"] + round(ref_counted)
    cur_total = missing + round(counted)
    return missing_rate_change(ref["missing"], ref_total, missing, cur_total)


def _points(edges: Floats, lo: float, hi: float) -> Floats:
    """The values at the cumulative shares ``[0, cdf...]``: the range's ends, then the
    edges (values spread evenly within a bin: the quantile function is linear between)."""
    return np.concatenate(
        (
            [min(lo, edges[0]) if edges.size else lo],
            edges,
            [max(hi, edges[-1]) if edges.size else hi],
        )
    )


def _group_label(edges: Floats, groups: npt.NDArray[np.int64], g: int) -> str:
    """The value range of PSI bin ``g`` (fine bins ``groups == g``).

    >>> _group_label(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1, 1]), 1)
    '[2, inf)'
    """
    starts = np.flatnonzero(np.diff(groups)) + 1  # the first fine bin of groups 1, 2, ...
    lo = "-inf" if g == 0 else f"{edges[starts[g - 1] - 1]:.4g}"
    hi = "inf" if g == starts.size else f"{edges[starts[g] - 1]:.4g}"
    return f"[{lo}, {hi})"


def _move(label: str, p: float, q: float) -> str:
    return f"biggest change in {label}: {p:.1%} of the reference, {q:.1%} now"


def _biggest_moves(ref: Floats, cur: Floats) -> list[tuple[int, float, float]]:
    """Per row, the bin whose share changed most (the first of equals), and its shares
    in ``ref`` and ``cur``. Zero padding never moves."""
    p = ref / np.maximum(ref.sum(axis=1, keepdims=True), 1.0)
    q = cur / np.maximum(cur.sum(axis=1, keepdims=True), 1.0)
    i = np.argmax(np.abs(q - p), axis=1)
    at = np.arange(i.size)
    return list(zip(i.tolist(), p[at, i].tolist(), q[at, i].tolist(), strict=True))
