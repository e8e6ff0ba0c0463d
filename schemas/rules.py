"""The ``decisions`` section of the policy: when to retrain, roll back and promote.

The policy agent (``streams.policy``) applies these rules to drift, KPI,
poisoning and deployment events; every rule names the evidence it needs, so a
command always carries the reports that triggered it.

* **Retrain** when the champion's features drift in ``drift_windows`` windows
  in a row, its KPI window is a breach ``kpi_breach_windows`` times in a row,
  the concept-drift detector fires, ``new_clean_labels`` clean labeled records
  arrived since the last retrain, or ``schedule`` of event time passed since
  it. Never while the poisoning guard reports a campaign for the model.
* **Roll back** a canary whose error rate on labeled predictions is worse than
  the champion's in the same window by more than ``margin``, judged by a
  one-sided two-proportion z-test at level ``alpha`` on the counts (not a bare
  difference of two noisy numbers), or whose serving error rate or p99 latency
  passes its limit. The champion itself is rolled back to the last known good
  version on the same serving limits.
* **Progressive delivery**: a canary healthy for ``healthy_windows`` windows
  in a row (serving within limits, and when labels are in, not worse than the
  champion) steps up through ``canary_steps`` and is promoted after the last.
  A challenger is promoted only when it beats the champion (the same test,
  the other way round) in ``challenger_windows`` windows in a row.
* **Shadow to canary** (off by default): a shadow healthy in ``shadow.healthy_windows``
  of its windows in a row is deployed as the canary at ``shadow.canary_weight``.
  Healthy: at least ``min_pairs`` requests paired with the champion's, agreement
  at least ``min_agreement`` (classification) or mean absolute prediction
  difference at most ``max_prediction_diff`` (regression), mean absolute score
  difference at most ``max_score_diff``, its KPI window not a breach and within
  the rollback serving limits, and, with ``min_labeled_pairs``, not worse than the
  champion on the same labeled requests (the canary's test and margin).
* **Brakes**: at most ``max_commands_per_hour`` commands per model per hour of
  event time, and ``cooldown`` between two commands of the same type; models
  whose ``risk_tier`` is in ``approval_tiers`` need an operator's
  ``driftline command approve ID`` before the controller applies anything.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.durations import DurationMs

RiskTier = Literal["low", "medium", "high"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrainRules(_Section):
    drift_windows: int = Field(
        default=3, ge=0, le=1000,
        description="champion drift windows in a row that trigger a retrain (0: off)",
    )
    kpi_breach_windows: int = Field(
        default=2, ge=0, le=1000,
        description="champion KPI breach windows in a row that trigger a retrain (0: off)",
    )
    on_concept_drift: bool = Field(default=True, description="retrain when concept drift fires")
    on_estimated_breach: bool = Field(
        default=True,
        description="champion windows whose breach rests on estimates from scores "
        "(kpi.estimated_targets, before labels) count toward kpi_breach_windows; false: "
        "they only alert (their KPI reports say breach)",
    )
    new_clean_labels: int = Field(
        default=0, ge=0,
        description="clean labeled training records since the last retrain that trigger one "
        "(0: off); counted from the poisoning guard's reports",
    )
    schedule: DurationMs = Field(
        default=0, ge=0, description="retrain at least this often, event time (0: off)"
    )
    hook_command: str | None = Field(
        default=None,
        description="command line run on a retrain; gets DRIFTLINE_MODEL, "
        "DRIFTLINE_TRAINING_TOPIC, DRIFTLINE_BROKER and DRIFTLINE_COMMAND (JSON) in its "
        "environment",
    )
    hook_url: str | None = Field(
        default=None, description="URL that receives the retrain command as a JSON POST"
    )


class RollbackRules(_Section):
    margin: float = Field(
        default=0.02, ge=0, lt=1,
        description="how much higher the canary's error rate on labeled predictions may be "
        "than the champion's before it counts as worse",
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=0.5, description="level of the one-sided two-proportion z-test"
    )
    min_labeled: int = Field(
        default=200, ge=10, description="labeled predictions each side needs before comparing"
    )
    max_error_rate: float | None = Field(
        default=0.05, ge=0, le=1, description="serving error rate that rolls back (None: off)"
    )
    max_latency_p99_ms: float | None = Field(
        default=None, gt=0, description="serving p99 latency that rolls back (None: off)"
    )


class DeliveryRules(_Section):
    canary_steps: list[float] = Field(
        default_factory=lambda: [0.1, 0.5, 1.0],
        description="traffic weights a healthy canary steps through; promoted after the last",
    )
    healthy_windows: int = Field(
        default=2, ge=1, le=1000, description="healthy canary windows in a row per step"
    )
    challenger_windows: int = Field(
        default=3, ge=1, le=1000,
        description="windows in a row a challenger must beat the champion to be promoted",
    )

    @model_validator(mode="after")
    def _increasing(self) -> DeliveryRules:
        steps = self.canary_steps
        if not steps or any(not 0 < w <= 1 for w in steps):
            raise ValueError("canary_steps must be weights in (0, 1], e.g. [0.1, 0.5, 1.0]")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"canary_steps must increase, got {steps}")
        return self


class ShadowRules(_Section):
    """When a shadow (answering the champion's requests unserved) becomes the canary."""

    healthy_windows: int = Field(
        default=0, ge=0, le=1000,
        description="healthy shadow windows in a row before a canary command (0: off)",
    )
    min_pairs: int = Field(
        default=200, ge=1,
        description="requests a window must pair (shadow and champion answers) to be judged",
    )
    min_agreement: float = Field(
        default=0.9, ge=0, le=1,
        description="classification: least share of paired requests with the same class",
    )
    max_prediction_diff: float | None = Field(
        default=None, gt=0,
        description="regression: largest mean |shadow - champion| prediction (None: off)",
    )
    max_score_diff: float | None = Field(
        default=0.1, gt=0, le=1,
        description="largest mean |shadow - champion| score over the paired requests "
        "(None: off)",
    )
    min_labeled_pairs: int = Field(
        default=200, ge=0,
        description="labeled pairs a window waits for, then the shadow must not be worse "
        "than the champion on them (0: judged without labels)",
    )
    canary_weight: float = Field(
        default=0.1, gt=0, le=1, description="traffic share the shadow gets as the canary"
    )


class DecisionPolicy(_Section):
    retrain: RetrainRules = RetrainRules()
    rollback: RollbackRules = RollbackRules()
    delivery: DeliveryRules = DeliveryRules()
    shadow: ShadowRules = ShadowRules()
    cooldown: DurationMs = Field(
        default=3_600_000, ge=0, description="between two commands of the same type, event time"
    )
    max_commands_per_hour: int = Field(
        default=4, ge=1, le=1000, description="commands per model per hour of event time"
    )
    risk_tier: RiskTier = "medium"
    approval_tiers: list[RiskTier] = Field(
        default_factory=lambda: ["high"],  # type: ignore[arg-type]
        description="risk tiers whose commands wait for an operator's approval",
    )

    @property
    def needs_approval(self) -> bool:
        return self.risk_tier in self.approval_tiers
