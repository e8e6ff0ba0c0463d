"""Validation shared by every metric that compares two histograms on the same bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def paired_counts(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike
) -> tuple[Floats, Floats]:
    """Both histograms as float arrays; ValueError unless 1-D, same bins, non-negative.

    >>> paired_counts([1, 2], [3, 4])[1].tolist()
    [3.0, 4.0]
    """
    return _checked(reference_counts, window_counts, ndim=1, what="counts must be one-dimensional")


def paired_rows(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike
) -> tuple[Floats, Floats]:
    """Many histograms at once, one per row (``features x bins``): as ``paired_counts``
    for each row pair. Rows may be zero-padded to a common number of bins.

    >>> paired_rows([[1, 2]], [[3, 4]])[1].tolist()
    [[3.0, 4.0]]
    """
    return _checked(reference_counts, window_counts, ndim=2,
                    what="rows of counts must be two-dimensional")


def _checked(reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike, *, ndim: int,
             what: str) -> tuple[Floats, Floats]:
    """Both as float64 of one shape with ``ndim`` dimensions and no negative count."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(window_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"bins differ: reference {ref.shape} vs window {cur.shape}")
    if ref.ndim != ndim:
        raise ValueError(f"{what}, got shape {ref.shape}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    return ref, cur
