"""Drift metrics and the windowed drift monitor."""

from streams.drift.monitor import DriftMonitor
from streams.drift.psi import psi

__all__ = ["DriftMonitor", "psi"]
