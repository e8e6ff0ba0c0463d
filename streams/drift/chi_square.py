"""Chi-square test of homogeneity between a reference and a window, on shared bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc

from streams.drift.counts import paired_counts

Floats = npt.NDArray[np.float64]


def chi_square(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike
) -> tuple[float, float]:
    """``(statistic, p_value)`` of Pearson's test on the 2 x K table ``[reference; window]``.

    Columns empty on both sides are dropped first (they carry no information
    and would make an expected count zero); the degrees of freedom are then
    ``K' - 1``. This is ``scipy.stats.chi2_contingency(table, correction=False)``
    on the remaining columns, with the p-value from ``scipy.special.chdtrc``, the
    function behind ``scipy.stats.chi2.sf`` without its 50 us of argument handling.

    A p-value below ``alpha`` raises a false alarm with probability ``alpha``
    per window when both sides come from the same distribution, provided the
    expected counts are not small (the usual rule: at least 5 per cell).
    With large windows it flags differences too small to matter, so read it
    together with an effect size (PSI, Jensen-Shannon).

    Either side empty, or fewer than two non-empty columns, gives (0.0, 1.0).

    >>> chi_square([50, 50], [50, 50])
    (0.0, 1.0)
    >>> stat, p = chi_square([50, 50], [90, 10])
    >>> round(stat, 4), p < 0.001
    (38.0952, True)
    """
    ref, cur = paired_counts(reference_counts, window_counts)
    return chi_square_of(ref, cur)


def chi_square_of(ref: Floats, cur: Floats) -> tuple[float, float]:
    """``chi_square`` of counts already checked (``paired_counts``)."""
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0, 1.0
    keep = (ref + cur) > 0
    if int(np.count_nonzero(keep)) < 2:
        return 0.0, 1.0
    observed = np.vstack([ref[keep], cur[keep]])
    row = observed.sum(axis=1, keepdims=True)
    col = observed.sum(axis=0, keepdims=True)
    expected = row * col / observed.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    dof = observed.shape[1] - 1
    return statistic, float(chdtrc(dof, statistic))
