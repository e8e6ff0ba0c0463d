"""Jensen-Shannon distance between a reference and a window, on shared bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.drift.counts import paired_counts

Floats = npt.NDArray[np.float64]


def _rel_entr(x: Floats, y: Floats) -> Floats:
    """``x * ln(x / y)`` elementwise with ``0 * ln(0 / y) = 0`` (``y`` > 0 wherever ``x`` > 0)."""
    out = np.zeros_like(x)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos] / y[pos])
    return out


def js_distance(reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike) -> float:
    """Jensen-Shannon distance in base 2: ``sqrt((KL(p || m) + KL(q || m)) / 2)``, ``m = (p+q)/2``.

    The same number as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``
    (computed here in the same order, so agreement is to rounding). It lies in
    [0, 1]: 0 for identical proportions, 1 for disjoint support. Unlike PSI it
    needs no floor for empty bins, since ``m`` is positive wherever ``p`` or
    ``q`` is.

    Either side empty gives 0.0: there is nothing to compare.

    >>> js_distance([50, 50], [50, 50])
    0.0
    >>> js_distance([10, 0], [0, 10])
    1.0
    >>> round(js_distance([50, 50], [90, 10]), 4)
    0.3831
    """
    ref, cur = paired_counts(reference_counts, window_counts)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0
    p = ref / np.sum(ref)
    q = cur / np.sum(cur)
    m = (p + q) / 2.0
    js = np.sum(_rel_entr(p, m)) + np.sum(_rel_entr(q, m))
    js /= np.log(2.0)
    return float(np.sqrt(max(float(js), 0.0) / 2.0))
