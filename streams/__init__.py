"""Pure stream algorithms: windows, bounded summaries, drift metrics; no Kafka, no clock."""

from streams.batch import FeatureBatch
from streams.windows import window_starts_ms

__all__ = ["FeatureBatch", "window_starts_ms"]
