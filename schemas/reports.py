"""Reports driftline writes: drift, KPI, poisoning, quarantine and dead letters.

driftline owns the exact shape of these; the fields the README's topic contract
names always exist. Times in reports are UTC datetimes, serialised as RFC 3339 strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from schemas.events import TrainingRecord, Variant

DriftStatus = Literal["ok", "warn", "drift"]
FeatureKind = Literal["numeric", "categorical"]
KpiStatus = Literal["ok", "warn", "breach"]


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceInfo(_Report):
    """Which distribution a window was compared with."""

    kind: Literal["warmup", "profile"]
    # For a warm-up reference: the event-time span it was built from.
    window_start: datetime | None = None
    window_end: datetime | None = None
    n: int
    note: str = ""


class FeatureDrift(_Report):
    """Drift of one feature (or of the score / prediction) in one window."""

    kind: FeatureKind
    n: int = Field(description="non-missing values in the window")
    missing: int
    metrics: dict[str, float] = Field(description="metric name -> value, e.g. psi")
    threshold: float | None = Field(
        default=None, description="PSI that noise alone exceeds at the policy's false-alarm rate"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="the settings this feature was judged by: psi_warn, psi_drift and "
        "consecutive, the drift section's or the feature's own (drift.features); empty "
        "when ignored",
    )
    ignored: bool = Field(
        default=False,
        description="the policy ignores this feature (drift.features.<name>.ignore): "
        "reported, never flagged, not counted in the false-alarm correction",
    )
    streak: int = Field(default=0, description="windows in a row this feature has been flagged")
    status: DriftStatus
    drifted: bool
    reason: str = Field(default="", description="why the status is not ok, in words")


class MultivariateDrift(_Report):
    """Drift of the features' joint distribution in one window.

    The PCA reconstruction error of the standardised features (NannyML's data
    reconstruction drift): numeric features, and categorical ones encoded as
    their categories' reference frequencies. It rises when features stop moving
    together as they did in the reference (e.g. a correlation that flips while
    every feature's own distribution stays the same) and falls when they move
    together more tightly; both are flagged. Values are clipped to limits set
    from the reference, so one extreme event cannot dominate the mean.
    """

    method: Literal["pca_reconstruction"] = "pca_reconstruction"
    n: int = Field(description="events whose reconstruction error was measured")
    reconstruction_error: float = Field(
        description="mean squared reconstruction error (of the values clipped to the limits)"
    )
    baseline: float = Field(description="the same on held-out reference events")
    relative_change: float = Field(description="reconstruction_error / baseline - 1")
    z: float | None = Field(
        default=None,
        description="standard errors from the baseline (negative: below); None if errors "
        "do not vary",
    )
    threshold: float | None = Field(
        default=None,
        description="reconstruction error that noise alone exceeds at half the window's "
        "share of the policy's false-alarm rate",
    )
    threshold_low: float | None = Field(
        default=None,
        description="reconstruction error noise alone falls below at the other half",
    )
    components: int = Field(description="principal components kept")
    features_used: list[str] = Field(description="the standardised features, in order")
    categorical_features: list[str] = Field(
        default_factory=list,
        description="those of features_used that are categorical, each encoded as its "
        "categories' frequencies in the reference (other categories and no value: 0)",
    )
    beyond_limits: int = Field(
        default=0,
        description="events with a value beyond the reference's limits (8 robust sds from "
        "a typical value), counted at the limit",
    )
    farthest_sd: float | None = Field(
        default=None,
        description="of the events beyond the limits, the value farthest from its reference "
        "mean, in reference sds (before clipping); None when no event is beyond",
    )
    farthest_feature: str | None = Field(default=None, description="that value's feature")
    max_event_error: float | None = Field(
        default=None,
        description="the largest error one event can have after clipping (its share of the "
        "mean is at most this / n); None when some feature is not clipped",
    )
    streak: int = Field(default=0, description="windows in a row the signal has been flagged")
    status: DriftStatus
    drifted: bool
    reason: str = Field(
        default="",
        description="why the status is not ok, and events beyond the limits, in words",
    )


class DriftReport(_Report):
    """Distribution drift of one model version over one event-time window."""

    model: str
    model_version: str
    window_start: datetime
    window_end: datetime
    window_index: int | None = Field(
        default=None,
        description="count windows (drift.window: {events: N}) only: the window's number "
        "among the version's (0: its first N events); window_start and window_end are then "
        "its earliest event's time and 1 ms past its latest's",
    )
    n: int = Field(description="events counted in the window")
    late: int = Field(
        default=0, description="events that arrived after their window closed (not in n)"
    )
    reference: ReferenceInfo
    features: dict[str, FeatureDrift]
    prediction: dict[str, FeatureDrift] = Field(
        default_factory=dict, description="drift of the score and of the predicted class"
    )
    multivariate: MultivariateDrift | None = Field(
        default=None,
        description="drift of the features' joint distribution; in drifted_features "
        "as 'multivariate.reconstruction_error'",
    )
    status: DriftStatus
    drifted_features: list[str] = Field(
        default_factory=list, description="features that drove the status, strongest first"
    )
    thresholds: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class EstimatedMetric(_Report):
    """A metric estimated from scores, and the 95 % band the realized value should fall in."""

    value: float
    lower: float
    upper: float


class ConceptDetectorInfo(_Report):
    """Which concept-drift detector ran on the window's errors, and whether its false-alarm
    rate was calibrated on the reference (docs/kpi.md)."""

    detector: str
    calibrated: bool
    params: dict[str, float] = Field(
        default_factory=dict, description="the river detector's parameters in use"
    )
    scale: float | None = Field(
        default=None, description="errors divided by it and clipped to [0, 1] (calibrated)"
    )
    false_alarm_rate: float | None = Field(
        default=None,
        description="calibrated: share of windows of window_events reference errors in which "
        "it fired, measured on the reference at build",
    )
    target_false_alarm_rate: float | None = None
    window_events: int | None = None
    reason: str = Field(default="", description="uncalibrated: why, in words")


class ShadowComparison(_Report):
    """A shadow against the version that served the same requests, over one window of
    the shadow's: the two predictions of each request id paired (``streams.kpi.shadow``,
    docs/kpi.md "Shadow comparison")."""

    versus: str = Field(description="the version that served the requests (the champion)")
    pairs: int = Field(description="requests answered by both, met in this window")
    agreement: float | None = Field(
        default=None,
        description="classification: share of the pairs (both predictions readable) whose "
        "predicted class is the same (one-vs-rest on kpi.positive_label)",
    )
    prediction_mean_abs_diff: float | None = Field(
        default=None, description="regression: mean |shadow - served| prediction over the pairs"
    )
    scored_pairs: int = Field(default=0, description="pairs where both have a numeric score")
    score_mean_abs_diff: float | None = Field(
        default=None, description="mean |shadow score - served score| over the scored pairs"
    )
    score_max_abs_diff: float | None = Field(
        default=None, description="largest |shadow score - served score| over the scored pairs"
    )
    score_mean_diff: float | None = Field(
        default=None, description="mean (shadow score - served score): a systematic shift"
    )
    labeled_pairs: int = Field(
        default=0, description="pairs whose label came (both predictions readable)"
    )
    served_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the served version's realized metrics on the labeled pairs: accuracy "
        "and errors (classification) or mae (regression)",
    )
    shadow_metrics: dict[str, float] = Field(
        default_factory=dict, description="the shadow's, on the same labeled pairs"
    )


class KpiThreshold(_Report):
    """One bound a metric of the window was held to, and where it came from."""

    source: Literal["target", "reference"] = Field(
        description="target: the policy's fixed kpi.targets; reference: the band from the "
        "spread of the reference's own windows (kpi.reference_bands)"
    )
    lower: float | None = None
    upper: float | None = None
    judged: bool = Field(
        description="false: not judged on this window (too few labels or positives, or the "
        "metric undefined: the notes say which)"
    )
    breached: bool = False
    detail: str = Field(
        default="", description="reference: the mean, standard deviation and windows it rests on"
    )


class ReferenceBandsInfo(_Report):
    """Whether the policy's reference bands applied to the window, and why not."""

    applied: bool
    std: float
    window_events: int | None = Field(
        default=None, description="labeled rows per reference window (applied)"
    )
    windows: int | None = Field(default=None, description="reference windows (applied)")
    reason: str = Field(default="", description="not applied: why, in words")


class KpiReport(_Report):
    """Model quality and serving health of one version and variant over one window."""

    model: str
    model_version: str
    variant: Variant
    window_start: datetime
    window_end: datetime
    window_index: int | None = Field(
        default=None,
        description="count windows (kpi.window: {events: N}) only: the window's number among "
        "the version and variant's (0: its first N predictions); window_start and window_end "
        "are then its earliest prediction's time and 1 ms past its latest's (as a drift count "
        "window's); absent for time windows",
    )
    n_predictions: int
    n_labeled: int
    metrics: dict[str, float] = Field(
        description="metric -> value; a metric undefined on this window's data is left out"
    )
    concept_drift: bool = Field(
        description="the concept-drift detector fired on a label of a prediction in this window"
    )
    status: KpiStatus
    revision: int = Field(
        default=0, description="0 when the window first closes; +1 each time late labels move it"
    )
    late: int = Field(default=0, description="predictions that arrived after the window closed")
    final: bool = Field(
        default=False,
        description="the window's last report: label_ttl has passed and its state is dropped; "
        "every window gets exactly one",
    )
    breaches: list[str] = Field(
        default_factory=list, description="targets missed, in words (status breach)"
    )
    segments: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict, description="segment key -> segment value -> label-based metrics"
    )
    disparity: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="segment key -> metric -> gap between the best and the worst segment",
    )
    estimated_metrics: dict[str, EstimatedMetric] = Field(
        default_factory=dict,
        description="metric -> estimate from the window's scores and the reference's "
        "calibration (confidence-based performance estimation), from revision 0, before any "
        "label; empty for regression, without a calibration, or without scored predictions "
        "(the notes say why). Blind to concept drift: see docs/kpi.md",
    )
    estimated: bool = Field(
        default=False,
        description="the status rests on estimates: a breach of an estimated target while "
        "the labels could not judge it yet",
    )
    concept: ConceptDetectorInfo | None = Field(
        default=None,
        description="the concept detector behind concept_drift: calibrated on the reference "
        "(with its measured false-alarm rate) or not, and why; absent in reports before "
        "driftline said so",
    )
    thresholds: dict[str, list[KpiThreshold]] = Field(
        default_factory=dict,
        description="metric -> the bounds it was held to: the policy's targets and the "
        "reference bands, each with its source and whether it was judged and missed",
    )
    bands: ReferenceBandsInfo | None = Field(
        default=None,
        description="with kpi.reference_bands: whether the reference's bands applied, or why "
        "not",
    )
    notes: list[str] = Field(default_factory=list)
    shadow: list[ShadowComparison] | None = Field(
        default=None,
        description="a shadow's report: its answers against the served version's on the "
        "same request ids, one entry per served version (docs/kpi.md); absent on other "
        "reports",
    )

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``shadow`` and ``window_index`` are left out while unset: every other report
        serialises as it did before the fields existed."""
        data: dict[str, Any] = handler(self)
        for name in ("shadow", "window_index"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class SourceCounts(_Report):
    seen: int = 0
    passed: int = 0
    quarantined: dict[str, int] = Field(default_factory=dict, description="reason -> records")


class PoisoningReport(_Report):
    model: str
    window_start: datetime
    window_end: datetime
    sources: dict[str, SourceCounts]
    status: Literal["ok", "suspect", "campaign"]
    reason: str = ""
    held: int = Field(
        default=0, ge=0,
        description="records of the window that waited for the model's trusted set (they "
        "arrived before it): released + unscreened",
    )
    released: int = Field(
        default=0, ge=0,
        description="held records screened once the trusted set arrived (counted in sources)",
    )
    unscreened: int = Field(
        default=0, ge=0,
        description="held records quarantined without screening (no_trusted_set): the trusted "
        "set did not arrive within the policy's hold_max_records / hold_max_age",
    )


class QuarantinedRecord(_Report):
    """A training record held back, unchanged, with why."""

    record: TrainingRecord
    reasons: list[str]
    scores: dict[str, float]
    released_by: str | None = Field(
        default=None, description="set on the copy that records an operator's release"
    )
    released_at: datetime | None = None
    release_reason: str = ""


class DeadLetter(_Report):
    """An input message (or one event of a batch) that could not be used, with its raw bytes."""

    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str = Field(description="what is wrong, in a sentence a person can act on")
    index: int | None = Field(
        default=None, description="position of the bad event in its batch; None for the message"
    )
    raw: str = Field(
        description="the original bytes, base64: all of them, or their first bytes when "
        "raw_truncated (fetch the whole message with `driftline deadletter fetch`)"
    )
    event: Any = Field(default=None, description="the bad event as decoded JSON, when it parsed")
    agent: str = Field(default="", description="the agent that wrote it (drift, kpi, ...)")
    raw_size: int | None = Field(
        default=None, description="length in bytes of all the original bytes, kept or not"
    )
    raw_sha256: str | None = Field(
        default=None, description="SHA-256 (hex) of all the original bytes, kept or not"
    )
    raw_truncated: bool = Field(
        default=False,
        description="raw holds only a prefix: the original is too large to copy into a "
        "dead letter; it stays at topic/partition/offset while the topic's retention lasts",
    )
