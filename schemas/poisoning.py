"""The poisoning guard's policy section and its trusted set.

``PoisoningPolicy`` switches and tunes each check of the guard
(``streams.poisoning``); every piece of the guard's state is bounded by one of
its fields. ``TrustedSet`` is a bounded, labeled sample of the model version's
clean training data (what ``driftline reference build`` profiled): the guard
judges a record's label by what the trusted data says about its features, and
calibrates its thresholds on it, so that the share of clean records a check
holds back is set by the policy (``label_false_rate``, ``outlier_rate``), not
left to luck.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    model_validator,
)

from schemas.durations import DurationMs
from schemas.events import FeatureValue, Name

#: A training label, as ``TrainingRecord.label`` accepts it.
Label = Annotated[StrictBool | StrictFloat | StrictStr, Field(union_mode="left_to_right")]

#: Hard cap on a trusted set's rows, whatever the policy says (its JSON stays bounded).
TRUSTED_MAX_ROWS = 100_000


class PoisoningPolicy(BaseModel):
    """Screening of training data before any retraining may use it (the ``poisoning`` section).

    A record is quarantined when a *decisive* check fires (schema, strong label
    inconsistency, duplicate flood, burst of a new source), or when a *weak*
    signal comes from a source flagged for the same kind of departure from its
    history and the other sources (a weakly inconsistent label from a source
    whose labels are flagged, a feature outlier from a source whose features or
    volume are). Outliers never quarantine a record on their own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Windows: the PoisoningReport's, the duplicate counts' and the sources' unit.
    window: DurationMs = Field(
        default=3_600_000, gt=0, description="tumbling window of event time (the records' ts)"
    )
    allowed_lateness: DurationMs = Field(
        default=60_000, ge=0, description="how long a window stays open after its end"
    )
    max_open_windows: int = Field(
        default=4, ge=1, le=100, description="open windows per model; the oldest close early"
    )

    # Records that arrive before their model's trusted set (``references`` and
    # ``training-data`` are read in one stream with no order between them: records
    # published right after ``driftline reference build`` can come first) wait in the
    # guard's table and are screened, in order, when it arrives.
    hold_max_records: int = Field(
        default=10_000, ge=0, le=1_000_000,
        description="training records of a model held while its trusted set has not arrived "
        "(in its table state, about 1 KB each); beyond, the oldest are quarantined unscreened "
        "(no_trusted_set). 0: none held, quarantined at once",
    )
    hold_max_age: DurationMs = Field(
        default=3_600_000, ge=0, le=30 * 86_400_000,
        description="event time a held record waits: once its model's training data has moved "
        "this far past the newest record seen when it arrived, it is quarantined unscreened "
        "(no_trusted_set)",
    )

    # The trusted set and the encoding of records.
    trusted_max_rows: int = Field(
        default=5000, ge=10, le=TRUSTED_MAX_ROWS,
        description="rows of the trusted set used (a stratified sample when it holds more)",
    )
    max_features: int = Field(
        default=256, ge=1, le=4096,
        description="encoded columns (numeric features plus one-hot categories), first by name",
    )
    max_categories: int = Field(
        default=20, ge=1, le=1000,
        description="one-hot columns per categorical feature (its most frequent trusted values)",
    )

    # Schema, type and range against the reference profile (or the trusted set).
    schema_check: bool = Field(
        default=True,
        description="quarantine NaN/inf, wrong types, values far outside the reference range, "
        "impossible categories and labels",
    )
    range_margin: float = Field(
        default=3.0, ge=0, le=1000,
        description="a value is out of range beyond the reference's [lo, hi] by more than this "
        "many widths of it (hi - lo, or the standard deviation when larger; max(|lo|, 1) for a "
        "constant feature), or negative where the reference never was (positive likewise)",
    )
    missing_is_violation: bool = Field(
        default=True,
        description="a missing value of a feature the reference never had missing is a violation",
    )
    closed_category_limit: int = Field(
        default=100, ge=1, le=100_000,
        description="categorical features with at most this many known categories are closed: "
        "an unknown category is impossible; larger ones (ids) accept new values",
    )

    # Label consistency against the trusted set.
    label_check: bool = Field(
        default=True,
        description="quarantine records whose label disagrees with what the trusted data says "
        "about their features",
    )
    k: int = Field(
        default=5, ge=1, le=100,
        description="trusted neighbours per class whose mean distance is the neighbourhood's "
        "opinion",
    )
    label_false_rate: float = Field(
        default=0.005, gt=0, lt=0.5,
        description="conformal level of strong label evidence: about this share of clean "
        "records is quarantined by the label check alone (with fewer than 1/rate - 1 trusted "
        "records: only labels more inconsistent than every trusted one)",
    )
    label_weak_rate: float = Field(
        default=0.05, gt=0, lt=1,
        description="conformal level of weak label evidence (this share of clean records has "
        "it): the loosest level at which a source's labels are judged and its records "
        "quarantined",
    )
    label_linear: bool = Field(
        default=True,
        description="a multinomial logistic regression on the trusted set as the label check's "
        "second opinion, besides the k nearest trusted neighbours",
    )
    max_classes: int = Field(
        default=100, ge=2, le=10_000,
        description="more distinct trusted labels than this (regression) turn the label check off",
    )

    # Duplicates and near-duplicates.
    duplicate_check: bool = Field(
        default=True, description="quarantine floods of (near-)duplicate records from one source"
    )
    duplicate_resolution: float = Field(
        default=0.01, gt=0, le=10,
        description="grid of the near-duplicate key, in trusted standard deviations per feature",
    )
    duplicate_max_copies: int = Field(
        default=3, ge=1, le=100_000,
        description="copies of one record a source may send per window; more is a flood and "
        "every copy in it is quarantined",
    )
    duplicate_cache_size: int = Field(
        default=100_000, ge=100, le=10_000_000,
        description="keys counted per open window (least recently seen forgotten first)",
    )

    # Feature outliers (supporting evidence only).
    outlier_check: bool = Field(
        default=True,
        description="score records with river's HalfSpaceTrees fitted on the trusted set; "
        "never a verdict alone",
    )
    outlier_rate: float = Field(
        default=0.01, gt=0, lt=0.5,
        description="share of trusted records above the outlier threshold",
    )
    outlier_trees: int = Field(default=10, ge=1, le=100, description="HalfSpaceTrees trees")
    outlier_height: int = Field(
        default=8, ge=1, le=14, description="HalfSpaceTrees height (2^(h+1) nodes per tree)"
    )
    outlier_seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="HalfSpaceTrees seed (replays agree)"
    )

    # Per-source behaviour.
    source_check: bool = Field(
        default=True,
        description="judge each source's window against its own history and the other sources: "
        "label disagreement, label mix, feature means, volume; new sources' bursts",
    )
    max_sources: int = Field(
        default=256, ge=1, le=100_000,
        description="sources tracked per model (least recently seen forgotten); more in one "
        "window are counted together as '(other sources)'",
    )
    source_history: int = Field(
        default=24, ge=1, le=10_000,
        description="windows a source's history remembers (exponential decay of 1/this)",
    )
    source_min_records: int = Field(
        default=20, ge=1, le=1_000_000,
        description="records a source (and each baseline it is compared with) needs in a window "
        "before its label mix, feature means and volume are judged",
    )
    source_alpha: float = Field(
        default=1e-3, gt=0, lt=1,
        description="significance of each source test (a per-feature Bonferroni inside)",
    )
    source_min_flagged: int = Field(
        default=3, ge=1, le=1_000_000,
        description="inconsistent labels a source needs at its level (see source_fdr) "
        "before it is flagged for them",
    )
    source_min_label_shift: float = Field(
        default=0.15, gt=0, le=1,
        description="smallest total-variation distance of a source's label mix that is flagged",
    )
    source_min_feature_shift: float = Field(
        default=0.5, gt=0, le=100,
        description="smallest shift of a feature's mean, in trusted standard deviations, "
        "that is flagged",
    )
    volume_factor: float = Field(
        default=4.0, gt=1, le=1e6,
        description="a source sending more than this times its usual volume (and the other "
        "sources' median) in a window is flagged",
    )
    new_source_burst: int = Field(
        default=100, ge=1, le=100_000_000,
        description="records a source never seen before may send in its first window (when "
        "other sources have history) before the rest of its window is quarantined",
    )
    source_fdr: float = Field(
        default=0.2, gt=0, lt=1,
        description="a source is flagged for its labels, and its weakly inconsistent records "
        "quarantined, down to the label p-value level L maximising count(p <= L) - m * L / "
        "source_fdr over its window's m records: each band of p-values taken in holds at "
        "most this share of clean records on average",
    )
    suspicion_windows: int = Field(
        default=1, ge=0, le=1000,
        description="windows a flagged source stays suspect after the one it was flagged in",
    )

    # Window status.
    suspect_share: float = Field(
        default=0.05, gt=0, le=1,
        description="quarantined share of a window that makes it suspect (so does any "
        "flagged source)",
    )
    campaign_window_share: float = Field(
        default=0.1, gt=0, le=1,
        description="quarantined share of a window that makes it a campaign",
    )
    campaign_source_share: float = Field(
        default=0.15, gt=0, le=1,
        description="quarantined share of one source's window records that makes it a campaign",
    )
    campaign_min_records: int = Field(
        default=10, ge=1, le=1_000_000,
        description="quarantined records (in the window, or from the source) before a campaign",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PoisoningPolicy:
        if self.label_false_rate >= self.label_weak_rate:
            raise ValueError(
                f"label_false_rate ({self.label_false_rate}) must be below label_weak_rate "
                f"({self.label_weak_rate})"
            )
        if self.suspect_share > self.campaign_window_share:
            raise ValueError(
                f"suspect_share ({self.suspect_share}) must not exceed campaign_window_share "
                f"({self.campaign_window_share})"
            )
        return self


class TrustedSet(BaseModel):
    """A bounded labeled sample of a model version's clean training data, as columns.

    Built by ``streams.poisoning.trusted.sample_trusted`` (a stratified,
    seeded sample, so two builds of the same file agree). Raw values, not an
    encoding: the guard encodes them with the same code as the records it
    screens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Name
    model_version: Name | None = None
    source: str = Field(default="", description="where the data came from, e.g. the file name")
    n_total: int = Field(ge=1, description="rows of the data the sample was drawn from")
    features: dict[str, list[FeatureValue]] = Field(
        min_length=1, description="feature name -> one value per row"
    )
    labels: list[Label] = Field(
        min_length=2, max_length=TRUSTED_MAX_ROWS, description="one label per row"
    )

    @model_validator(mode="after")
    def _shapes(self) -> TrustedSet:
        n = len(self.labels)
        wrong = sorted(name for name, col in self.features.items() if len(col) != n)
        if wrong:
            raise ValueError(f"features {wrong[:5]} need one value per label ({n})")
        if self.n_total < n:
            raise ValueError(f"n_total ({self.n_total}) is below the sample's rows ({n})")
        return self

    def __len__(self) -> int:
        return len(self.labels)
