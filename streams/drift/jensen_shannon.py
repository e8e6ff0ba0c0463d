"""Jensen-Shannon distance between a reference and a window, on shared bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.drift.counts import paired_counts, paired_rows

Floats = npt.NDArray[np.float64]


def _rel_entr(x: Floats, y: Floats) -> Floats:
    """``x * ln(x / y)`` elementwise with ``0 * ln(0 / y) = 0`` (``y`` > 0 wherever ``x`` > 0)."""
    pos = x > 0
    out = np.divide(x, y, out=np.zeros_like(x), where=pos)
    np.log(out, out=out, where=pos)
    np.multiply(out, x, out=out, where=pos)
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
    return float(js_of_rows(ref[np.newaxis], cur[np.newaxis])[0])


def js_rows(reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike) -> Floats:
    """``js_distance`` of each row pair (``features x bins``); zero-padded rows allowed.

    >>> js_rows([[10, 0, 0], [5, 5, 0]], [[0, 10, 0], [0, 0, 0]]).tolist()
    [1.0, 0.0]
    """
    ref, cur = paired_rows(reference_counts, window_counts)
    return js_of_rows(ref, cur)


def js_of_rows(ref: Floats, cur: Floats) -> Floats:
    """``js_rows`` of float rows already checked (``paired_rows``)."""
    to_p, to_q, empty = js_terms(ref, cur)
    return js_of_sums(np.sum(to_p, axis=1), np.sum(to_q, axis=1), empty)


def js_terms(ref: Floats, cur: Floats) -> tuple[Floats, Floats, npt.NDArray[np.bool_]]:
    """Each bin's terms of ``KL(p || m)`` and ``KL(q || m)``, row by row, and the rows
    with an empty side (``js_of_sums`` of their row sums is the distance)."""
    ref_total = np.sum(ref, axis=1, keepdims=True)
    cur_total = np.sum(cur, axis=1, keepdims=True)
    p = np.divide(ref, ref_total, out=np.zeros_like(ref), where=ref_total > 0)
    q = np.divide(cur, cur_total, out=np.zeros_like(cur), where=cur_total > 0)
    m = (p + q) / 2.0
    empty = (ref_total[:, 0] <= 0) | (cur_total[:, 0] <= 0)
    return _rel_entr(p, m), _rel_entr(q, m), empty


def js_of_sums(kl_p: Floats, kl_q: Floats, empty: npt.NDArray[np.bool_]) -> Floats:
    """The distance of each row from its sums of ``js_terms``."""
    js = kl_p + kl_q
    js /= np.log(2.0)
    value = np.sqrt(np.maximum(js, 0.0) / 2.0)
    out: Floats = np.where(empty, 0.0, value)  # an empty side: nothing to compare
    return out
