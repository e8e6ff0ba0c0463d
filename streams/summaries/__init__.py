"""Bounded, mergeable, JSON-serialisable summaries of one feature over one window."""

from streams.summaries.categorical import CategoricalSummary
from streams.summaries.log_histogram import LogHistogram
from streams.summaries.numeric import NumericSummary

__all__ = ["CategoricalSummary", "LogHistogram", "NumericSummary"]
