"""The policy file: windows, drift thresholds, KPI targets, label join and concept drift.

One YAML file, validated at start. A bad file is refused with the field path
and the reason, e.g. ``drift.window: '5x' is not a duration like 30s, 5m, 1h``.

How a feature is judged, and what the defaults mean for false alarms:

* a window's PSI must be larger than what sampling noise explains for the
  reference's and the window's sizes. Under no change, PSI on ``B`` bins is
  close to ``(1/n_ref + 1/n_window) * chi2(B - 1)``; the *noise threshold* is
  that distribution's upper ``false_alarm_rate / features`` quantile
  (Bonferroni over the features judged together), so noise alone flags any
  feature of a model in at most ``false_alarm_rate`` of windows (1e-3: an
  expected 1,000 windows between false flags). Unlike a bare p-value this
  does not collapse on large windows, because of the next rule;
* and it must be at least ``psi_warn`` (0.05), the smallest shift worth an
  alarm whatever the window size: a huge window makes tiny shifts
  significant, not important;
* a flagged feature is ``warn``; it is ``drift`` once flagged in
  ``consecutive`` windows in a row (2), or at once when PSI reaches
  ``psi_drift`` (0.2, the usual "significant shift" rule of thumb);
* windows with fewer than ``min_window_events`` events are reported but never
  flagged;
* ``features`` gives named features their own ``psi_warn``, ``psi_drift`` and
  ``consecutive``, or ``ignore: true`` (see ``FeatureDriftPolicy``);
* the multivariate signal (PCA reconstruction error of the numeric and
  frequency-encoded categorical features together) follows the same rules
  with its own floor and drift level (``multivariate_warn``,
  ``multivariate_drift``: relative changes from its held-out baseline, a rise
  or a fall), counted as one more test in the Bonferroni correction; its test
  is two-sided (half the test's share of the rate each way).

The ``kpi`` section (see ``KpiPolicy``) sets the KPI windows, how long
predictions wait for labels, the targets that make a window a breach, the
segments to slice by, the cost matrix and the concept-drift detector.

The ``gates`` section (see ``schemas.gates``) sets, per model-card risk tier,
what a version's offline evaluation must show before the controller gives it
traffic; none by default.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.durations import DurationMs, format_duration_ms, parse_duration_ms
from schemas.errors import DriftlineError, explain_yaml, load_yaml_mapping
from schemas.gates import GatePolicy
from schemas.kpi_metrics import band_problem, estimated_target_problem, target_problem
from schemas.poisoning import PoisoningPolicy
from schemas.rules import DecisionPolicy
from schemas.windows import CalendarWindow, CountWindow, DriftWindowForm, KpiWindowForm

# Durations moved to schemas.durations; still importable from here.
__all__ = ["format_duration_ms", "parse_duration_ms"]


class PolicyError(DriftlineError):
    """The policy file cannot be used; the message names the field and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Bound on ``drift.window / drift.hop``: the windows an event belongs to.
MAX_WINDOWS_PER_EVENT = 60


class FeatureDriftPolicy(_Section):
    """How one feature is judged, where it differs from its ``drift`` section.

    Unset settings take the section's value. Only what is judged per feature
    can differ: the PSI floor and drift level, and the windows in a row before
    drift. ``false_alarm_rate`` stays the model's budget, split evenly over the
    features judged together (a feature of its own would break the per-model
    guarantee); ``bins``, ``top_k`` and ``min_window_events`` shape the
    reference and the window, not the judgement.

    ``ignore``: the feature is still summarised and reported with all its
    metrics, but never flagged (status ``ok``, no streak), left out of the
    Bonferroni count (the other features' noise thresholds are as if it did
    not exist) and out of the multivariate signal of references built from
    then on. The settings apply to numeric and categorical features alike
    (both are judged on PSI); ``prediction.score`` and ``prediction.class``
    name the model's outputs.
    """

    psi_warn: float | None = Field(
        default=None, gt=0, description="smallest PSI of this feature that is flagged"
    )
    psi_drift: float | None = Field(
        default=None, gt=0, description="PSI of this feature that is drift at once"
    )
    consecutive: int | None = Field(
        default=None, ge=1, le=100, description="flagged windows in a row before drift"
    )
    ignore: bool = Field(
        default=False,
        description="summarise and report the feature, never flag it, leave it out of the "
        "false-alarm correction and of the multivariate signal",
    )


@dataclass(frozen=True)
class FeatureThresholds:
    """The settings one feature is judged by: its overrides over the section's values."""

    psi_warn: float
    psi_drift: float
    consecutive: int
    ignore: bool = False


class DriftPolicy(_Section):
    window: DriftWindowForm = Field(
        default=300_000,
        description="window size: a duration, a calendar period or a count of events "
        "(schemas.windows)",
    )
    hop: DurationMs | None = Field(
        default=None, gt=0,
        description="hopping windows: a window of `window` (a duration) starts every `hop` "
        f"(which divides it, at most {MAX_WINDOWS_PER_EVENT} windows per event); unset: "
        "tumbling windows",
    )
    allowed_lateness: DurationMs = Field(
        default=60_000, ge=0, description="how long a window stays open after its end"
    )
    bins: int = Field(default=10, ge=2, le=200, description="PSI bins (reference quantiles)")
    fine_bins: int = Field(
        default=100, ge=10, le=1000, description="numeric bins kept for KS and Wasserstein"
    )
    top_k: int = Field(default=20, ge=1, le=1000, description="categories tracked per feature")
    max_features: int = Field(
        default=200, ge=1, le=5000, description="features tracked per model; more are counted"
    )
    psi_warn: float = Field(default=0.05, gt=0, description="smallest PSI that is flagged")
    psi_drift: float = Field(default=0.2, gt=0, description="PSI that is drift at once")
    false_alarm_rate: float = Field(
        default=1e-3, gt=0, lt=1, description="windows flagged by noise alone, per model"
    )
    consecutive: int = Field(default=2, ge=1, le=100, description="flagged windows to drift")
    min_reference_events: int = Field(default=1000, ge=10)
    min_window_events: int = Field(default=200, ge=1)
    max_open_windows: int = Field(
        default=8, ge=1, le=1000, description="open windows per model version; older ones close"
    )
    # Multivariate drift (streams.drift.multivariate): PCA reconstruction error of
    # the standardised numeric features, one more test in the Bonferroni count.
    multivariate: bool = Field(
        default=True,
        description="judge the joint distribution of the numeric features (PCA reconstruction "
        "error): catches changed correlations that leave every feature's own distribution as is",
    )
    multivariate_max_features: int = Field(
        default=30, ge=2, le=64,
        description="numeric features in the multivariate signal (the first ones by name; "
        "the first 4 categorical ones join them, frequency-encoded); "
        "its reference grows with the square",
    )
    multivariate_variance: float = Field(
        default=0.65, gt=0, lt=1,
        description="share of the reference's standardised variance the PCA components explain",
    )
    multivariate_warn: float = Field(
        default=0.1, gt=0, le=100,
        description="smallest change of the reconstruction error from its baseline that is "
        "flagged, relative, either way (0.1: 10 % above or below)",
    )
    multivariate_drift: float = Field(
        default=0.5, gt=0, le=100,
        description="relative change of the reconstruction error (either way) that is drift "
        "at once",
    )
    features: dict[str, FeatureDriftPolicy] = Field(
        default_factory=dict,
        description="feature name -> its own psi_warn, psi_drift, consecutive, or ignore: "
        "true; unset settings take this section's; names never seen are fine",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DriftPolicy:
        self._check_hop()
        if self.psi_warn > self.psi_drift:
            raise ValueError(
                f"psi_warn ({self.psi_warn}) must not exceed psi_drift ({self.psi_drift})"
            )
        if self.multivariate_warn > self.multivariate_drift:
            raise ValueError(
                f"multivariate_warn ({self.multivariate_warn}) must not exceed "
                f"multivariate_drift ({self.multivariate_drift})"
            )
        problems = [
            problem
            for name, override in self.features.items()
            if (problem := self._feature_order(name, override)) is not None
        ]
        if problems:
            # Each problem keeps its own path (drift.features.<name>.<setting>).
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _check_hop(self) -> None:
        hop = self.hop
        if isinstance(self.window, CountWindow) and self.window.events < self.min_window_events:
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("window", (
                    f"a window of {self.window.events} events is never judged: "
                    f"min_window_events is {self.min_window_events}; raise events or lower "
                    "min_window_events")),
                loc=("window", "events"), input=self.window.events)])
        if hop is None:
            return
        if not isinstance(self.window, int):
            form = "calendar" if isinstance(self.window, CalendarWindow) else "count"
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("hop", (
                    f"hopping windows need a duration window; {form} windows are tumbling "
                    "only: remove hop")),
                loc=("hop",), input=hop)])
        said, window = format_duration_ms(hop), format_duration_ms(self.window)
        if hop > self.window:
            problem = f"{said} is longer than the window ({window})"
        elif self.window % hop:
            problem = f"{said} does not divide the window ({window})"
        elif self.window // hop > MAX_WINDOWS_PER_EVENT:
            problem = (f"{said} puts each event in {self.window // hop} windows of {window}; "
                       f"at most {MAX_WINDOWS_PER_EVENT} are allowed")
        else:
            return
        raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
            type=PydanticCustomError("hop", problem), loc=("hop",), input=hop)])

    @property
    def pane(self) -> int:
        """What duration windows are counted in: ``hop`` (hopping windows), else
        ``window`` (see ``streams.windows.scheme`` for every form)."""
        if not isinstance(self.window, int):
            raise TypeError(f"drift.window is not a duration: {self.window!r}")
        return self.hop or self.window

    def _feature_order(self, name: str, override: FeatureDriftPolicy) -> InitErrorDetails | None:
        """A feature's psi_warn above its psi_drift (either may be the section's)."""
        t = self.for_feature(name)
        if t.psi_warn <= t.psi_drift:
            return None
        field = "psi_warn" if override.psi_warn is not None else "psi_drift"
        warn_from = "" if override.psi_warn is not None else ", the section's"
        drift_from = "" if override.psi_drift is not None else ", the section's"
        return InitErrorDetails(
            type=PydanticCustomError(
                "threshold_order",
                "psi_warn ({warn}{warn_from}) must not exceed psi_drift ({drift}{drift_from})",
                {"warn": t.psi_warn, "warn_from": warn_from,
                 "drift": t.psi_drift, "drift_from": drift_from},
            ),
            loc=("features", name, field),
            input=getattr(override, field),
        )

    def for_feature(self, name: str) -> FeatureThresholds:
        """The settings ``name`` is judged by (the section's, unless ``features`` overrides).

        >>> p = DriftPolicy(features={"amount": {"psi_warn": 0.1}})
        >>> p.for_feature("amount")
        FeatureThresholds(psi_warn=0.1, psi_drift=0.2, consecutive=2, ignore=False)
        >>> p.for_feature("age")
        FeatureThresholds(psi_warn=0.05, psi_drift=0.2, consecutive=2, ignore=False)
        """
        o = self.features.get(name)
        if o is None:
            return FeatureThresholds(self.psi_warn, self.psi_drift, self.consecutive)
        return FeatureThresholds(
            psi_warn=self.psi_warn if o.psi_warn is None else o.psi_warn,
            psi_drift=self.psi_drift if o.psi_drift is None else o.psi_drift,
            consecutive=self.consecutive if o.consecutive is None else o.consecutive,
            ignore=o.ignore,
        )

    def ignored(self) -> frozenset[str]:
        """Features named with ``ignore: true``."""
        return frozenset(name for name, o in self.features.items() if o.ignore)


class Target(_Section):
    """A KPI target: the metric must stay at or above ``min`` / at or below ``max``."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Target:
        if self.min is None and self.max is None:
            raise ValueError("a target needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class CostMatrix(_Section):
    """Value of each outcome of a binary decision, e.g. ``fn: -120`` per missed fraud."""

    tp: float = 0.0
    fp: float = 0.0
    tn: float = 0.0
    fn: float = 0.0


ConceptDetectorName = Literal["adwin", "ddm", "page_hinkley", "kswin"]


class ReferenceBands(_Section):
    """KPI bands drawn from the reference's own windows, as NannyML does: ``driftline
    reference build`` cuts the labeled reference rows (in file order) into consecutive
    windows of ``window_events`` rows, computes each metric per window, and stores the
    metric's mean and standard deviation over them; a live window is judged against
    ``mean -/+ std x sd`` (clipped to the metric's range), widened by
    ``sqrt(window_events / labels)`` when the window has fewer labels than a reference
    window (docs/kpi.md). Fixed ``targets`` are judged beside the bands; the report's
    ``thresholds`` says which bound applied to each metric and where it came from."""

    metrics: list[str] = Field(
        min_length=1, description="label-based metrics judged against their reference band"
    )
    std: float = Field(
        default=3.0, gt=0, le=10,
        description="the band is the reference windows' mean -/+ std standard deviations",
    )
    window_events: int | None = Field(
        default=None, ge=50,
        description="labeled rows per reference window: about the labels of a live KPI "
        "window (the spread of a metric shrinks as windows grow); null: the reference is "
        "cut into `windows` windows",
    )
    windows: int = Field(
        default=10, ge=5, le=1000,
        description="reference windows when window_events is null (NannyML's default: 10)",
    )
    sides: Literal["worse", "both"] = Field(
        default="worse",
        description="worse: a score is judged below its band only, an error above it only "
        "(positive rates both ways); both: either side, as NannyML does",
    )

    @model_validator(mode="after")
    def _distinct(self) -> ReferenceBands:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("each metric once")
        return self


class KpiPolicy(_Section):
    """Label join, KPI windows and targets, concept drift.

    Memory: pending predictions (not yet labeled) and early labels are kept for
    ``label_ttl`` of event time; KPI windows of a version and variant are kept
    ``label_ttl`` after their end, so at most ``label_ttl / window + 1`` of
    them, each a few KB (see ``agents.kpi.handler``); count windows: the windows
    whose latest prediction is younger than ``label_ttl`` (``streams.kpi.series``).
    """

    task: Literal["classification", "regression"] = "classification"
    positive_label: bool | float | str = Field(
        default=1, description="the label value of the positive class (binary classification)"
    )
    window: KpiWindowForm = Field(
        default=3_600_000,
        description="KPI window: a duration or a calendar period of event time, or every N "
        "predictions of a version and variant, {events: N} (schemas.windows)",
    )
    allowed_lateness: DurationMs = Field(
        default=60_000, ge=0, description="predictions counted in a window after its end "
        "(windows of time; a count window closes with its Nth prediction)"
    )
    label_ttl: DurationMs = Field(
        default=7 * 86_400_000, gt=0,
        description="how long a prediction waits for its label (and a label for its prediction)",
    )
    revision_delay: DurationMs = Field(
        default=5_000, ge=0,
        description="processing time after a window's last change before it is re-reported "
        "when event time does not move (a quiet stream)",
    )
    min_labeled: int = Field(default=100, ge=1, description="labels before targets are judged")
    targets: dict[str, Target] = Field(
        default_factory=dict, description="metric -> bound, e.g. roc_auc: {min: 0.8}"
    )
    estimated_targets: dict[str, Target] = Field(
        default_factory=dict,
        description="metric -> bound judged on the metrics estimated from scores "
        "(KpiReport.estimated_metrics: roc_auc, accuracy, precision, recall, f1, "
        "label_positive_rate), from a window's first report, until the labels can judge "
        "the realized metric",
    )
    min_estimated: int = Field(
        default=1000, ge=1, description="scored predictions before estimated targets are judged"
    )
    segments: list[str] = Field(
        default_factory=list, description="segment keys (PredictionEvent.segment) to slice by"
    )
    max_segment_values: int = Field(
        default=20, ge=1, le=1000, description="values tracked per segment key; more are 'other'"
    )
    min_segment_labeled: int = Field(
        default=50, ge=1, description="labels a segment needs to enter the disparity"
    )
    cost: CostMatrix | None = Field(
        default=None, description="value per outcome, for the business KPI"
    )
    concept_detector: ConceptDetectorName = "adwin"
    concept_params: dict[str, float] = Field(
        default_factory=dict, description="parameters of the river detector, e.g. delta: 0.002"
    )
    concept_false_alarm_rate: float | None = Field(
        default=0.05, gt=0, lt=1,
        description="share of windows (of the reference's size, at most 5,000 errors) in which "
        "the concept detector may fire on a stable model: reference build calibrates adwin's "
        "delta, page_hinkley's threshold, ddm's drift_threshold (0/1 errors) or kswin's "
        "alpha on the reference's own error stream to it "
        "(docs/kpi.md); null: no calibration, concept_params as given",
    )
    reference_bands: ReferenceBands | None = Field(
        default=None,
        description="judge metrics against bands from the spread of the reference's own "
        "windows (reference build with label and prediction columns), beside fixed targets",
    )
    min_positives: int = Field(
        default=30, ge=0,
        description="predicted positives before precision, actual positives before recall, "
        "both before f1 are judged against targets and bands (a few positives make them "
        "swing by chance); 0: no minimum",
    )

    @model_validator(mode="after")
    def _judgeable_targets(self) -> KpiPolicy:
        """Every target names a metric this task computes, with bounds in its range
        (``schemas.kpi_metrics``): one that could never be judged is refused."""
        problems = []
        for name, target in self.targets.items():
            problem = target_problem(name, lo=target.min, hi=target.max, task=self.task,
                                     cost=self.cost is not None)
            if problem is not None:
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("kpi_target", problem),
                    loc=("targets", name), input=target.model_dump(exclude_none=True)))
        for name, target in self.estimated_targets.items():
            problem = estimated_target_problem(name, lo=target.min, hi=target.max, task=self.task)
            if problem is not None:
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("kpi_target", problem),
                    loc=("estimated_targets", name), input=target.model_dump(exclude_none=True)))
        if self.reference_bands is not None:
            for i, name in enumerate(self.reference_bands.metrics):
                problem = band_problem(name, task=self.task, cost=self.cost is not None)
                if problem is not None:
                    problems.append(InitErrorDetails(
                        type=PydanticCustomError("kpi_band", problem),
                        loc=("reference_bands", "metrics", i), input=name))
        if isinstance(self.window, CountWindow) and self.window.events < self.min_labeled:
            problems.append(InitErrorDetails(
                type=PydanticCustomError("window", (
                    f"a window of {self.window.events} predictions never has min_labeled "
                    f"({self.min_labeled}) labels, so its targets are never judged; raise "
                    "events or lower min_labeled")),
                loc=("window", "events"), input=self.window.events))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class ModelPolicy(_Section):
    drift: DriftPolicy | None = None
    kpi: KpiPolicy | None = None
    decisions: DecisionPolicy | None = None
    poisoning: PoisoningPolicy | None = None
    gates: GatePolicy | None = None


class Policy(_Section):
    drift: DriftPolicy = DriftPolicy()
    kpi: KpiPolicy = KpiPolicy()
    decisions: DecisionPolicy = DecisionPolicy()
    poisoning: PoisoningPolicy = PoisoningPolicy()
    gates: GatePolicy = Field(
        default_factory=GatePolicy,
        description="evaluation gates per model-card risk tier (minimal, limited, high), "
        "judged before a canary, shadow, switch or promote; none by default",
    )
    pii: list[str] = Field(
        default_factory=list,
        description="features and segment keys holding personal data: their values are "
        "replaced by keyed hashes before any state, report or log keeps them (agents.inputs.pii)",
    )
    models: dict[str, ModelPolicy] = Field(default_factory=dict)

    def drift_for(self, model: str) -> DriftPolicy:
        override = self.models.get(model)
        return override.drift if override and override.drift else self.drift

    def kpi_for(self, model: str) -> KpiPolicy:
        override = self.models.get(model)
        return override.kpi if override and override.kpi else self.kpi

    def poisoning_for(self, model: str) -> PoisoningPolicy:
        override = self.models.get(model)
        return override.poisoning if override and override.poisoning else self.poisoning

    def decisions_for(self, model: str) -> DecisionPolicy:
        override = self.models.get(model)
        return override.decisions if override and override.decisions else self.decisions

    def gates_for(self, model: str) -> GatePolicy:
        override = self.models.get(model)
        return override.gates if override and override.gates is not None else self.gates


def parse_policy(text: str, *, source: str = "policy") -> Policy:
    """Validate a YAML policy document; raise PolicyError naming line, field and reason.

    >>> parse_policy("drift:\\n  window: 5x\\n", source="p.yaml")
    Traceback (most recent call last):
    ...
    schemas.policy.PolicyError: p.yaml:2: drift.window: Value error, '5x' is not a duration ...
    """
    data, root = load_yaml_mapping(text, source=source, error=PolicyError, what="sections")
    if not data:
        raise PolicyError(f"{source}: the policy is empty; name at least one section (drift, "
                          "kpi, decisions, poisoning, gates, pii, models), or start without a "
                          "policy file to run on the defaults")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(explain_yaml(exc.errors(), root, source=source)) from exc


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from exc
    return parse_policy(text, source=path)


def policy_sha256(path: str) -> str | None:
    """SHA-256 (hex) of the policy file's bytes; None without a file (the built-in
    defaults). What a command records it was decided under, and what the inventory
    and the audit report show and compare it with."""
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from exc
