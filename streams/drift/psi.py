"""Population Stability Index between a reference and a window, on shared bins."""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from scipy.special import chdtri

from streams.drift.counts import paired_counts, paired_rows

Floats = npt.NDArray[np.float64]

EPSILON = 1e-4


def psi(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike, *, epsilon: float = EPSILON
) -> float:
    """``sum((q - p) * ln(q / p))`` over bins, proportions floored at ``epsilon``.

    The floor keeps an empty bin from making PSI infinite; it is the usual
    convention (1e-4). Either side empty gives 0.0: there is nothing to compare.

    >>> round(psi([50, 50], [50, 50]), 6)
    0.0
    >>> round(psi([50, 50], [90, 10]), 4)
    0.8789
    """
    ref, cur = paired_counts(reference_counts, window_counts)
    return float(psi_of_rows(ref[np.newaxis], cur[np.newaxis], epsilon=epsilon)[0])


def psi_rows(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike, *, epsilon: float = EPSILON
) -> Floats:
    """``psi`` of each row pair (``features x bins``), in a few array operations.

    A bin empty on both sides (a row's padding) adds exactly nothing.

    >>> psi_rows([[50, 50, 0], [50, 50, 0]], [[90, 10, 0], [0, 0, 0]]).round(4).tolist()
    [0.8789, 0.0]
    """
    ref, cur = paired_rows(reference_counts, window_counts)
    return psi_of_rows(ref, cur, epsilon=epsilon)


def psi_of_rows(ref: Floats, cur: Floats, *, epsilon: float = EPSILON) -> Floats:
    """``psi_rows`` of float rows already checked (``paired_rows``)."""
    terms, empty = psi_terms(ref, cur, epsilon=epsilon)
    out: Floats = np.where(empty, 0.0, np.sum(terms, axis=1))
    return out


def psi_terms(
    ref: Floats, cur: Floats, *, epsilon: float = EPSILON
) -> tuple[Floats, npt.NDArray[np.bool_]]:
    """Each bin's term ``(q - p) ln(q / p)``, row by row, and the rows with an empty side
    (whose PSI is 0.0): PSI is a row's sum of terms. A bin empty on both sides is 0."""
    ref_total = ref.sum(axis=1, keepdims=True)
    cur_total = cur.sum(axis=1, keepdims=True)
    p = np.maximum(_shares(ref, ref_total), epsilon)
    q = np.maximum(_shares(cur, cur_total), epsilon)
    empty = (ref_total[:, 0] <= 0) | (cur_total[:, 0] <= 0)
    return (q - p) * np.log(q / p), empty


def _shares(counts: Floats, total: Floats) -> Floats:
    """Each row over its total (a row with none: zeros)."""
    out: Floats = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return out


def psi_noise_threshold(reference_n: float, window_n: float, *, bins: int, alpha: float) -> float:
    """PSI that sampling noise alone exceeds with probability ``alpha``.

    PSI is the symmetrised Kullback-Leibler divergence; for two samples of one
    distribution it is close to ``(1/n_ref + 1/n_window) * chi2(bins - 1)``.

    >>> round(psi_noise_threshold(10_000, 10_000, bins=10, alpha=1e-3), 4)
    0.0056
    """
    if reference_n <= 0 or window_n <= 0 or bins < 2:
        return math.inf
    return (1 / reference_n + 1 / window_n) * _chi2_isf(alpha, bins - 1)


@functools.lru_cache(maxsize=1024)
def _chi2_isf(alpha: float, df: int) -> float:
    # scipy's isf costs about 0.2 ms; a model's features share a few (alpha, df).
    return float(chdtri(df, alpha))  # chi-square's upper alpha quantile
