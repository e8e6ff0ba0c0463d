"""Two-sample Kolmogorov-Smirnov statistic between a reference and a window, on shared bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.drift.counts import paired_counts


def ks_statistic(reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike) -> float:
    """``max |cumsum(p) - cumsum(q)|`` over bins, ``p`` and ``q`` the two sides' proportions.

    This is the two-sample Kolmogorov-Smirnov statistic evaluated at the bin
    edges only: the same number as ``scipy.stats.ks_2samp(raw_ref, raw_cur).statistic``
    with the supremum restricted to the edges (with bins ``[e[i-1], e[i])``, the
    empirical CDFs are read as ``P(X < e)``). On raw continuous data it never
    exceeds the exact statistic and is below it by at most the largest single-bin
    proportion of either side: between two edges each empirical CDF moves by no
    more than that bin's mass. With reference deciles as edges the bound is about
    0.1; on normal samples the gap seen is under 0.02. Values lie in [0, 1]. A
    last "other" cell for categoricals is one more bin; for categoricals the
    statistic depends on the order of the bins, as any KS on an ordering does.

    Either side empty gives 0.0: there is nothing to compare.

    >>> ks_statistic([50, 50], [50, 50])
    0.0
    >>> round(ks_statistic([25, 25, 25, 25], [10, 10, 40, 40]), 4)
    0.3
    """
    ref, cur = paired_counts(reference_counts, window_counts)
    ref_total = ref.sum()
    cur_total = cur.sum()
    if ref_total <= 0 or cur_total <= 0:
        return 0.0
    gap = np.cumsum(ref) / ref_total - np.cumsum(cur) / cur_total
    return float(np.max(np.abs(gap)))
