"""Compare one feature's window with its reference: every metric, no judgement.

Numeric: PSI and Jensen-Shannon distance on the PSI bins; Kolmogorov-Smirnov
on the fine bins (exact at the bin edges; below the raw-data statistic by at
most the largest fine-bin share, about 1 %); Wasserstein-1 in reference
standard deviations from the binned quantile functions (values spread evenly
within a bin); the change in missing rate. Categorical: PSI, chi-square
statistic and p-value, Jensen-Shannon distance on the top categories plus
"other", the share of unseen categories and the change in missing rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.drift.chi_square import chi_square
from streams.drift.jensen_shannon import js_distance
from streams.drift.ks import ks_statistic
from streams.drift.missing import missing_rate_change, unseen_share
from streams.drift.psi import psi
from streams.drift.reference import ReferenceFeature
from streams.drift.wasserstein import quantile_grid, wasserstein_from_quantiles
from streams.summaries.categorical import CategoricalState, CategoricalSummary
from streams.summaries.numeric import NumericState, NumericSummary

Floats = npt.NDArray[np.float64]
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


def compare_numeric(
    summary: NumericSummary, ref: ReferenceFeature, state: NumericState
) -> Comparison:
    edges = np.asarray(ref["bins"], dtype=np.float64)
    ref_fine = np.asarray(ref["counts"], dtype=np.float64)
    cur_fine = summary.bin_counts(state, edges).astype(np.float64)
    groups = np.asarray(ref["groups"], dtype=np.int64)
    size = int(groups.max()) + 1 if groups.size else 1
    ref_g: Floats = np.bincount(groups, weights=ref_fine, minlength=size).astype(np.float64)
    cur_g: Floats = np.bincount(groups, weights=cur_fine, minlength=size).astype(np.float64)
    value = psi(ref_g, cur_g)
    metrics = {
        "psi": value,
        "ks": ks_statistic(ref_fine, cur_fine),
        "js": js_distance(ref_g, cur_g),
        "missing_rate_change": _missing_change(ref, ref_fine, state["missing"], cur_fine),
    }
    if ref["std"] > 0 and cur_fine.sum() > 0:
        win_lo, win_hi = state.get("lo"), state.get("hi")
        lo = ref["lo"] if win_lo is None else min(ref["lo"], win_lo)
        hi = ref["hi"] if win_hi is None else max(ref["hi"], win_hi)
        metrics["wasserstein_sd"] = wasserstein_from_quantiles(
            _quantiles(ref_fine, edges, lo, hi),
            _quantiles(cur_fine, edges, lo, hi),
            scale=ref["std"],
        )
    return Comparison(
        n=round(float(cur_fine.sum())),
        missing=state["missing"],
        reference_n=round(float(ref_fine.sum())),
        psi=value,
        psi_bins=size,
        metrics={k: round(v, 6) for k, v in metrics.items()},
        move=_biggest_move(ref_g, cur_g, lambda g: _group_label(edges, groups, g)),
    )


def compare_categorical(ref: ReferenceFeature, state: CategoricalState) -> Comparison:
    cats = [str(c) for c in ref["bins"]]
    ref_c = np.asarray(ref["counts"], dtype=np.float64)
    cur_c = CategoricalSummary.bin_counts(state, cats).astype(np.float64)
    value = psi(ref_c, cur_c)
    stat, p_value = chi_square(ref_c, cur_c)
    metrics = {
        "psi": value,
        "chi2": stat,
        "chi2_p": p_value,
        "js": js_distance(ref_c, cur_c),
        "unseen_share": unseen_share(state["counts"], ref["known"]),
        "missing_rate_change": _missing_change(ref, ref_c, state["missing"], cur_c),
    }
    return Comparison(
        n=round(float(cur_c.sum())),
        missing=state["missing"],
        reference_n=round(float(ref_c.sum())),
        psi=value,
        psi_bins=ref_c.size,
        metrics={k: round(v, 6) if k != "chi2_p" else v for k, v in metrics.items()},
        move=_biggest_move(ref_c, cur_c, [*cats, "(other)"].__getitem__),
    )


def _missing_change(ref: ReferenceFeature, ref_counts: Floats, missing: int, cur: Floats) -> float:
    ref_total = ref["missing"] + round(float(ref_counts.sum()))
    cur_total = missing + round(float(cur.sum()))
    return missing_rate_change(ref["missing"], ref_total, missing, cur_total)


def _quantiles(counts: Floats, edges: Floats, lo: float, hi: float) -> Floats:
    """Quantile function of binned data on ``GRID``, values spread evenly within bins."""
    points = np.concatenate(
        (
            [min(lo, edges[0]) if edges.size else lo],
            edges,
            [max(hi, edges[-1]) if edges.size else hi],
        )
    )
    cdf = np.concatenate(([0.0], np.cumsum(counts) / counts.sum()))
    return np.interp(GRID, cdf, points)


def _group_label(edges: Floats, groups: npt.NDArray[np.int64], g: int) -> str:
    """The value range of PSI bin ``g`` (fine bins ``groups == g``).

    >>> _group_label(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1, 1]), 1)
    '[2, inf)'
    """
    starts = np.flatnonzero(np.diff(groups)) + 1  # the first fine bin of groups 1, 2, ...
    lo = "-inf" if g == 0 else f"{edges[starts[g - 1] - 1]:.4g}"
    hi = "inf" if g == starts.size else f"{edges[starts[g] - 1]:.4g}"
    return f"[{lo}, {hi})"


def _biggest_move(ref: Floats, cur: Floats, label: Callable[[int], str]) -> str:
    p = ref / max(float(ref.sum()), 1.0)
    q = cur / max(float(cur.sum()), 1.0)
    i = int(np.argmax(np.abs(q - p)))
    return f"biggest change in {label(i)}: {p[i]:.1%} of the reference, {q[i]:.1%} now"
