"""Drift metrics on shared bins, and the windowed drift monitor."""

from streams.drift.chi_square import chi_square
from streams.drift.jensen_shannon import js_distance
from streams.drift.ks import ks_statistic
from streams.drift.missing import missing_rate_change, unseen_share
from streams.drift.monitor import DriftMonitor
from streams.drift.psi import psi
from streams.drift.wasserstein import quantile_grid, wasserstein_from_quantiles

__all__ = [
    "DriftMonitor",
    "chi_square",
    "js_distance",
    "ks_statistic",
    "missing_rate_change",
    "psi",
    "quantile_grid",
    "unseen_share",
    "wasserstein_from_quantiles",
]
