"""Population Stability Index between a reference and a window, on shared bins."""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from scipy.special import chdtri

from streams.drift.counts import paired_counts

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
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0
    p = np.maximum(ref / ref.sum(), epsilon)
    q = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


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
