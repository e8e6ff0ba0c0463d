"""ReferenceProfile: a model version's training-data distribution, on the ``references`` topic."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.poisoning import TrustedSet

#: How a boolean may be spelt as a category; its canonical category is ``true`` or ``false``.
BOOLEAN_SPELLINGS = {
    "true": "true",
    "True": "true",
    "TRUE": "true",
    "false": "false",
    "False": "false",
    "FALSE": "false",
}


class ReferenceFeatureProfile(BaseModel):
    """One feature's reference distribution, binned as the drift monitor needs it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric", "categorical"]
    bins: list[float] | list[str] = Field(
        description="numeric: interior bin edges; categorical: the top categories"
    )
    counts: list[int] = Field(description="values per bin; categorical: plus a last 'other'")
    missing: int = Field(ge=0)
    groups: list[int] = Field(default_factory=list, description="numeric: PSI bin of each bin")
    known: list[str] = Field(default_factory=list, description="categorical: every category")
    lo: float = 0.0
    hi: float = 0.0
    std: float = 0.0

    @model_validator(mode="after")
    def _canonical_booleans(self) -> ReferenceFeatureProfile:
        """Booleans are the categories ``true`` and ``false``, as the drift agent counts
        them. Profiles built from CSV before driftline read booleans there hold them as
        the file spelt them (``True``, ``FALSE``): such a feature, every category of which
        spells a boolean, is read with those categories (their counts merged).

        >>> f = ReferenceFeatureProfile(kind="categorical", bins=["True", "False"],
        ...                             counts=[7, 3, 0], missing=0, known=["False", "True"])
        >>> f.bins, f.counts, f.known
        (['true', 'false'], [7, 3, 0], ['false', 'true'])
        """
        known = set(self.known)
        if (
            self.kind != "categorical"
            or not known <= BOOLEAN_SPELLINGS.keys()
            or known <= {"true", "false"}
            or len(self.counts) != len(self.bins) + 1
        ):
            return self
        bins: list[str] = []
        counts: list[int] = []
        for category, count in zip(self.bins, self.counts, strict=False):
            canonical = BOOLEAN_SPELLINGS.get(str(category), str(category))
            if canonical in bins:
                counts[bins.index(canonical)] += count
            else:
                bins.append(canonical)
                counts.append(count)
        self.bins, self.counts = bins, [*counts, self.counts[-1]]
        self.known = sorted({BOOLEAN_SPELLINGS[k] for k in known})
        return self


class MultivariateProfile(BaseModel):
    """The reference of the multivariate drift signal (``streams.drift.multivariate``).

    A PCA of the standardised numeric features fitted on the even rows of the
    data, and its mean squared reconstruction error on the odd rows (a held-out
    baseline). ``3d + kd + 4`` numbers for ``d`` features and ``k < d``
    components (d is at most the policy's ``multivariate_max_features``).
    """

    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(min_length=2, description="the numeric features, in this order")
    means: list[float] = Field(description="per feature, of the rows the PCA was fitted on")
    sds: list[float] = Field(description="per feature, positive")
    components: list[list[float]] = Field(
        min_length=1, description="orthonormal rows, one value per feature"
    )
    explained: float = Field(ge=0, le=1, description="share of the variance the components explain")
    baseline: float = Field(gt=0, description="mean squared reconstruction error, held-out rows")
    n_fit: int = Field(ge=2, description="rows the PCA was fitted on")
    n_baseline: int = Field(ge=1, description="held-out rows the baseline was measured on")
    limits: list[list[float] | None] | None = Field(
        default=None,
        description="per name: the [lo, hi] its values are clipped to (null: not clipped); "
        "null for profiles built before driftline clipped values: nothing is clipped",
    )
    categories: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="categorical names -> category -> its frequency in the fitted rows, the "
        "value the category is encoded as (any other category, or none, is 0)",
    )

    @model_validator(mode="after")
    def _shapes(self) -> MultivariateProfile:
        d = len(self.names)
        if self.limits is not None and (
            len(self.limits) != d
            or any(
                lim is not None and (len(lim) != 2 or not lim[0] < lim[1]) for lim in self.limits
            )
        ):
            raise ValueError(f"limits need one [lo, hi] (lo < hi) or null per name ({d})")
        if not set(self.categories) <= set(self.names):
            raise ValueError("every categorical feature in categories must be one of names")
        if len(self.means) != d or len(self.sds) != d:
            raise ValueError(f"means and sds need one value per name ({d})")
        if any(not sd > 0 for sd in self.sds):
            raise ValueError("every sd must be positive")
        if len(self.components) >= d or any(len(row) != d for row in self.components):
            raise ValueError(f"components must be fewer than {d} rows of {d} values")
        return self


class ScoreCalibration(BaseModel):
    """Isotonic calibration of the positive-class score (``streams.kpi.estimate``).

    A step function: block ``k`` covers scores in ``[edges[k-1], edges[k])`` (the
    first from 0, the last to 1), with the probability of the positive class
    fitted there and the reference events it was fitted on (for the band).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["isotonic"] = "isotonic"
    positive_label: bool | float | str = Field(description="the label value counted as positive")
    edges: list[float] = Field(description="increasing scores in (0, 1) where blocks meet")
    probability: list[float] = Field(
        min_length=1, description="per block, non-decreasing, in [0, 1]"
    )
    count: list[int] = Field(min_length=1, description="reference events per block")

    @model_validator(mode="after")
    def _monotone(self) -> ScoreCalibration:
        k = len(self.probability)
        if len(self.count) != k or len(self.edges) != k - 1:
            raise ValueError("one probability and count per block, one edge fewer")
        if any(not 0.0 < e < 1.0 for e in self.edges) or any(
            b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)
        ):
            raise ValueError("edges must increase strictly inside (0, 1)")
        if any(not 0.0 <= p <= 1.0 for p in self.probability) or any(
            b < a for a, b in zip(self.probability, self.probability[1:], strict=False)
        ):
            raise ValueError("probabilities must be in [0, 1] and non-decreasing")
        if any(c < 1 for c in self.count):
            raise ValueError("every block holds at least one reference event")
        return self


class ConceptCalibration(BaseModel):
    """The concept-drift detector calibrated on the reference's own error stream
    (``streams.kpi.concept_calibration``): the setting whose share of windows with a
    false alarm, measured on a block bootstrap of that stream, is at most the target.
    A dozen numbers."""

    model_config = ConfigDict(extra="forbid")

    detector: Literal["adwin", "page_hinkley", "ddm", "kswin"]
    params: dict[str, float] = Field(
        description="the river detector's parameters, the calibrated one (adwin: delta; "
        "page_hinkley: threshold; ddm: drift_threshold; kswin: alpha) included"
    )
    scale: float | None = Field(
        gt=0,
        description="absolute errors are divided by it (the reference's 99th percentile) and "
        "clipped to [0, 1] before the detector; null for 0/1 errors and for kswin (its "
        "Kolmogorov-Smirnov test reads the errors' order only)",
    )
    target_false_alarm_rate: float = Field(gt=0, lt=1, description="the policy's, at build")
    false_alarm_rate: float = Field(
        ge=0, le=1, description="share of bootstrap windows with an alarm, with these params"
    )
    uncalibrated_false_alarm_rate: float = Field(
        ge=0, le=1, description="the same share with the policy's parameters, errors unscaled"
    )
    met: bool = Field(description="false_alarm_rate is within the target")
    windows: int = Field(ge=1, description="bootstrap windows measured")
    window_events: int = Field(ge=1, description="errors per window")
    block_events: int = Field(ge=1, description="consecutive errors per bootstrap block")
    errors: int = Field(ge=1, description="reference errors (labeled, predicted rows)")
    seed: int = 0


class MetricSpread(BaseModel):
    """One metric over the reference's windows (``streams.kpi.bands``)."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float = Field(ge=0, description="sample standard deviation (ddof 1) over the windows")
    windows: int = Field(ge=2, description="reference windows the metric was defined on")


class PerformanceBands(BaseModel):
    """Each KPI's spread over consecutive windows of the reference's labeled rows, in file
    order (``streams.kpi.bands``): what ``kpi.reference_bands`` judges live windows
    against. Three numbers per metric (at most ``len(BANDED_METRICS)`` metrics)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "regression"]
    positive_label: bool | float | str | None = Field(
        default=None, description="classification: the label value counted as positive"
    )
    window_events: int = Field(ge=1, description="labeled rows per reference window")
    windows: int = Field(ge=2, description="reference windows")
    min_positives: int = Field(
        ge=0, description="the policy's, at build: windows with fewer positives left out of "
        "precision, recall and f1"
    )
    metrics: dict[str, MetricSpread]


class ReferenceProfile(BaseModel):
    """Published by ``driftline reference build``; key ``model@version``, compacted topic."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    created_at: datetime
    source: str = Field(description="where the data came from, e.g. the file name")
    n: int = Field(ge=1, description="records in the reference data")
    features: dict[str, ReferenceFeatureProfile] = Field(
        description="by feature name; '@score' and '@prediction' hold the model's outputs"
    )
    multivariate: MultivariateProfile | None = Field(
        default=None,
        description="the joint distribution of the numeric features; absent in profiles built "
        "before driftline judged it, or with fewer than two numeric features",
    )
    trusted: TrustedSet | None = Field(
        default=None,
        description="a bounded, stratified sample of the labeled training records: what the "
        "poisoning guard judges new training records against (reference build with labels)",
    )
    calibration: ScoreCalibration | None = Field(
        default=None,
        description="the model's score calibrated on the reference's labels (binary "
        "classification): what the KPI agent estimates performance from before labels come; "
        "absent in profiles built without score and label columns, or before driftline "
        "fitted one",
    )
    concept: ConceptCalibration | None = Field(
        default=None,
        description="the concept-drift detector calibrated on the reference's error stream "
        "(labels and predictions): absent without them, for ddm on a regressor's errors "
        "(ddm reads 0/1 errors only), or in profiles built before driftline calibrated it",
    )
    bands: PerformanceBands | None = Field(
        default=None,
        description="each KPI's spread over the reference's own windows (labels and "
        "predictions, with kpi.reference_bands in the policy at build): absent without them",
    )
