"""KPI accumulators and concept-drift detectors: pure kernels, no Kafka, no clock.

Each accumulator holds configuration only and folds one batch (numpy arrays) at
a time over a JSON-able state dict whose size does not grow with traffic:
``initialize()``, ``update(state, ...)``, ``merge(a, b)``, ``metrics(state)``.
A metric that is undefined for a state is left out of ``metrics()``, never NaN.

The concept-drift detector is imported from its module,
``from streams.kpi.concept import ConceptDetector``: it needs river, whose
``river.drift`` takes about 1.5 s to import, which the accumulators should not
pay for.

Estimates before labels (CBPE: a window's score histogram and the reference's
isotonic calibration) are in ``streams.kpi.estimate``.
"""

from streams.kpi.business import business_metrics
from streams.kpi.classification import ClassificationKpi, ClassificationState
from streams.kpi.disparity import Disparity, segment_disparity
from streams.kpi.labels import to_binary
from streams.kpi.regression import RegressionKpi, RegressionState
from streams.kpi.serving import ServingHealth, ServingState

__all__ = [
    "ClassificationKpi",
    "ClassificationState",
    "Disparity",
    "RegressionKpi",
    "RegressionState",
    "ServingHealth",
    "ServingState",
    "business_metrics",
    "segment_disparity",
    "to_binary",
]
