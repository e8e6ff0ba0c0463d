"""The ``gates`` section of the policy: what a version's evaluation must show before traffic.

Keyed by the model card's risk tier (``minimal``, ``limited``, ``high``; see
``schemas.model_card``); a tier without a gate has none. The controller judges
the gate of the target version's tier (``streams.policy.gates``) before a
``canary``, ``shadow``, ``switch`` or ``promote`` command, and refuses the
command when the version fails it or has no evaluation. A gate:

* ``min_metrics``: metric -> the least value the evaluation may show
  (``roc_auc: 0.85``);
* ``max_metrics``: metric -> the most it may show, for errors and losses
  (``log_loss: 0.4``);
* ``max_loss``: metric -> how much worse than the serving champion's evaluation
  it may be (``roc_auc: 0.01``: at most 0.01 below; for a lower-is-better metric
  such as ``log_loss``, above; see ``schemas.evaluation.higher_is_better``).
  Without a champion there is nothing to lose against and the check passes;
  a champion whose evaluation lacks the metric fails it (nothing to compare);
* ``max_disparity``: metric -> the largest gap between the best and the worst
  segment of the evaluation's ``segments`` (``roc_auc: 0.05``); the metric must
  be given for at least two segments;
* ``min_held_out_size``: the least number of examples in the held-out set (a
  metric on 200 examples is mostly noise); a flat evaluation names no set and
  fails it.

Nothing is gated unless configured (the default). A serious gate for the high
tier (credit, hiring, ...) sets all five, e.g.::

    gates:
      high:
        min_metrics: {roc_auc: 0.80}
        max_loss: {roc_auc: 0.01}
        max_disparity: {roc_auc: 0.05}
        min_held_out_size: 5000
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.kpi_metrics import METRICS
from schemas.model_card import RISK_TIERS, CardRiskTier

Bound = Annotated[float, Field(allow_inf_nan=False)]
Allowance = Annotated[float, Field(ge=0, allow_inf_nan=False)]
GATE_KINDS = ("min_metrics", "max_metrics", "max_loss", "max_disparity", "min_held_out_size")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _problem(loc: tuple[str, ...], value: object, message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("gate", message), loc=loc, input=value)


class Gate(_Section):
    """What one tier's versions must show (see the module docstring)."""

    min_metrics: dict[str, Bound] = Field(
        default_factory=dict, description="metric -> least value on the held-out set"
    )
    max_metrics: dict[str, Bound] = Field(
        default_factory=dict, description="metric -> largest value (errors, losses)"
    )
    max_loss: dict[str, Allowance] = Field(
        default_factory=dict,
        description="metric -> largest loss against the serving champion's evaluation",
    )
    max_disparity: dict[str, Allowance] = Field(
        default_factory=dict, description="metric -> largest gap between the evaluation's segments"
    )
    min_held_out_size: int | None = Field(
        default=None, ge=1, description="least examples in the held-out set"
    )

    @model_validator(mode="after")
    def _judgeable(self) -> Gate:
        problems = []
        if not any(
            (
                self.min_metrics,
                self.max_metrics,
                self.max_loss,
                self.max_disparity,
                self.min_held_out_size,
            )
        ):
            problems.append(
                _problem(
                    (),
                    {},
                    "a gate with no check: set at least one of "
                    f"{', '.join(GATE_KINDS)}, or remove the tier",
                )
            )
        for kind, bounds in (("min_metrics", self.min_metrics), ("max_metrics", self.max_metrics)):
            for name, value in bounds.items():
                known = METRICS.get(name)
                if known is not None and not known.lo <= value <= known.hi:
                    span = (
                        f"at least {known.lo:g}"
                        if math.isinf(known.hi)
                        else f"{known.lo:g} to {known.hi:g}"
                    )
                    problems.append(
                        _problem(
                            (kind, name),
                            value,
                            (
                                f"{value:g} is outside the range of {name} ({span}): "
                                "the gate could never be met or never be missed"
                            ),
                        )
                    )
        for name, low in self.min_metrics.items():
            high = self.max_metrics.get(name)
            if high is not None and low > high:
                problems.append(
                    _problem(
                        ("min_metrics", name),
                        low,
                        f"{low:g} exceeds max_metrics {name} {high:g}: no version could pass",
                    )
                )
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class GatePolicy(_Section):
    """Gates per model-card risk tier; an unset tier is not gated."""

    minimal: Gate | None = None
    limited: Gate | None = None
    high: Gate | None = None

    @model_validator(mode="before")
    @classmethod
    def _tiers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            wrong = [key for key in data if key not in RISK_TIERS]
            if wrong:
                raise ValidationError.from_exception_data(
                    cls.__name__,
                    [
                        _problem(
                            (str(key),),
                            data[key],
                            (
                                f"{key!r} is not a model-card risk tier: gates are keyed by "
                                f"{', '.join(RISK_TIERS)} (decisions.risk_tier's low/medium/high "
                                "is the policy's approval tier, another thing)"
                            ),
                        )
                        for key in wrong
                    ],
                )
        return data

    @property
    def configured(self) -> bool:
        """True when any tier has a gate."""
        return any(self.for_tier(tier) is not None for tier in RISK_TIERS)

    def for_tier(self, tier: CardRiskTier) -> Gate | None:
        gate: Gate | None = getattr(self, tier)
        return gate
