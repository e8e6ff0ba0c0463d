"""Population Stability Index between a reference and a window, on shared bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
