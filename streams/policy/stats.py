"""The test behind "the canary is worse than the champion".

Two noisy error rates are never compared bare: the canary is *worse* only
when a one-sided two-proportion z-test rejects "its error rate exceeds the
champion's by at most ``margin``" at level ``alpha``. With 200 labels a side,
an apparent gap of 0.05 is often noise; the test says when it is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import ndtr


@dataclass(frozen=True)
class Comparison:
    rate_a: float
    rate_b: float
    z: float
    p_value: float
    worse: bool

    def describe(self, a: str, b: str, margin: float) -> str:
        return (
            f"{a} error rate {self.rate_a:.4f} vs {b} {self.rate_b:.4f} "
            f"(margin {margin:g}, z = {self.z:.2f}, one-sided p = {self.p_value:.2g})"
        )


def worse_than(
    errors_a: int, n_a: int, errors_b: int, n_b: int, *, margin: float, alpha: float
) -> Comparison:
    """Is A's error rate above B's plus ``margin``, beyond noise at level ``alpha``?

    H0: p_a - p_b <= margin, rejected when z = (p_a - p_b - margin) / se is
    above the standard normal's 1 - alpha quantile; se from the unpooled
    proportions (pooled is only right for margin 0), floored so that two
    perfect models do not divide by zero.

    >>> worse_than(60, 400, 20, 400, margin=0.02, alpha=0.01).worse
    True
    >>> worse_than(26, 400, 20, 400, margin=0.02, alpha=0.01).worse
    False
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both sides need labeled predictions")
    p_a, p_b = errors_a / n_a, errors_b / n_b
    variance = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    se = math.sqrt(max(variance, 0.25 / (n_a + n_b) ** 2))
    z = (p_a - p_b - margin) / se
    p_value = float(ndtr(-z))  # P(Z > z)
    return Comparison(p_a, p_b, z, p_value, p_value < alpha)
