"""Wasserstein-1 distance between a reference and a window, from their quantile functions."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def quantile_grid(m: int) -> npt.NDArray[np.float64]:
    """The ``m`` mid-point ranks ``(i + 0.5) / m``, ``i = 0 .. m-1``, at which to read quantiles.

    >>> quantile_grid(4).tolist()
    [0.125, 0.375, 0.625, 0.875]
    """
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    return (np.arange(m, dtype=np.float64) + 0.5) / m


def wasserstein_from_quantiles(
    reference_quantiles: npt.ArrayLike, window_quantiles: npt.ArrayLike, *, scale: float
) -> float:
    """``mean(|Q_ref - Q_window|) / scale``: Wasserstein-1 in units of ``scale``.

    Both arrays are quantile functions read on the same :func:`quantile_grid`.
    In one dimension ``W1 = integral over u in (0, 1) of |Q_ref(u) - Q_win(u)|``;
    the mean over mid-point ranks is the mid-point rule for that integral.
    With ``scale`` the reference standard deviation, 0.1 means the window's
    mass has moved by a tenth of a standard deviation on average. The mid-point
    rule skips the outer ``1/(2m)`` of mass on each side, so a heavy tail reads
    low: with m = 200 and 20,000 values, shifted normal data agrees with the
    exact W1 to 0.3%, shifted lognormal(sigma=1) reads 1.3% low on average and
    up to 4%. Quantiles read from ``LogHistogram`` (1 % relative accuracy) add
    at most 0.006 standard deviations on normal and lognormal(0.5) data, 0.01 on
    lognormal(1) (tests/streams/drift/test_metrics.py).

    Either side empty (nothing summarised, e.g. an empty sketch) gives 0.0.

    >>> wasserstein_from_quantiles([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], scale=1.0)
    0.0
    >>> wasserstein_from_quantiles([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5], scale=2.0)
    0.25
    """
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be positive and finite, got {scale}")
    ref = np.asarray(reference_quantiles, dtype=np.float64)
    cur = np.asarray(window_quantiles, dtype=np.float64)
    if ref.ndim != 1 or cur.ndim != 1:
        raise ValueError(f"quantiles must be one-dimensional, got {ref.shape} and {cur.shape}")
    if ref.size == 0 or cur.size == 0:
        return 0.0
    return float(wasserstein_rows(ref[np.newaxis], cur[np.newaxis], np.array([scale]))[0])


def wasserstein_rows(
    reference_quantiles: npt.ArrayLike, window_quantiles: npt.ArrayLike, scales: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``wasserstein_from_quantiles`` of each row pair (``features x grid``), row ``i``
    in units of ``scales[i]``.

    >>> wasserstein_rows([[1.0, 2.0], [0.0, 0.0]], [[1.5, 2.5], [1.0, -1.0]], [2.0, 1.0]).tolist()
    [0.25, 1.0]
    """
    ref = np.asarray(reference_quantiles, dtype=np.float64)
    cur = np.asarray(window_quantiles, dtype=np.float64)
    scale = np.asarray(scales, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != cur.shape:
        raise ValueError(f"grids differ: reference {ref.shape} vs window {cur.shape}")
    if scale.shape != ref.shape[:1] or not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"scales must be positive and finite, one per row, got {scale}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise ValueError("quantiles must be finite")
    out: npt.NDArray[np.float64] = np.mean(np.abs(ref - cur), axis=1) / scale
    return out
