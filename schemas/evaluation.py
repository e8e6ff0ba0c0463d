"""A version's offline evaluation: metrics on a held-out set, measured before any traffic.

``driftline registry register ... --evaluation eval.json`` keeps the file's
object as the model card's ``evaluation``; the controller's gates
(``schemas.gates``, ``streams.policy.gates``) judge it. The file::

    {
      "metrics": {"roc_auc": 0.91, "log_loss": 0.31},
      "held_out": {"sha256": "<64 hex digits>", "size": 12000,
                   "description": "2026-10 applications, stratified 20 %"},
      "segments": {"country=DE": {"roc_auc": 0.92}, "country=FR": {"roc_auc": 0.89}}
    }

* ``metrics``: metric name -> finite number, at least one;
* ``held_out``: the held-out set the metrics were measured on: ``sha256`` of its
  bytes as used (64 lower-case hex digits) and ``size`` (examples, at least 1),
  so a reviewer can tell whether two versions were judged on the same data;
  ``description`` and any other member are kept as given;
* ``segments`` (optional): segment name -> {metric -> value}, for the gates'
  disparity between segments;
* any other top-level member (``evaluated_at``, ``notes``, ...) is kept as given.

A **flat** file of the earlier form, ``{"roc_auc": 0.93, "dataset": "holdout"}``
(none of ``metrics``, ``held_out``, ``segments`` at its top level), stays
readable: its numeric members are the metrics, its other members notes, and it
has no held-out digest or size (so a gate with ``min_held_out_size`` refuses it).

Which way is better: a metric is taken as *lower is better* when its name is in
:data:`LOWER_IS_BETTER` or ends in one of :data:`LOWER_IS_BETTER_SUFFIXES`
(``log_loss``, ``rmse``, ``latency_p99_ms``, ...), otherwise as higher is better
(``roc_auc``, ``accuracy``, ``f1``, ...). Only the gates' loss against the
champion depends on it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: A metric value: a finite number (not a bool, not a numeric string).
MetricValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: Metrics where lower is better (the KPI errors and losses, and common offline ones).
LOWER_IS_BETTER = frozenset(
    {
        "log_loss",
        "brier",
        "ece",
        "mae",
        "mse",
        "rmse",
        "mape",
        "error_rate",
        "false_positive_rate",
        "false_negative_rate",
        "fpr",
        "fnr",
    }
)
LOWER_IS_BETTER_SUFFIXES = ("_loss", "_error", "_ms", "_s")
#: Members that mark a file of the structured form (anything else is a flat file).
STRUCTURED_MEMBERS = ("metrics", "held_out", "segments")


def higher_is_better(metric: str) -> bool:
    """False for errors and losses (see the module docstring), True otherwise.

    >>> higher_is_better("roc_auc"), higher_is_better("log_loss"), higher_is_better("p99_ms")
    (True, False, False)
    """
    return not (metric in LOWER_IS_BETTER or metric.endswith(LOWER_IS_BETTER_SUFFIXES))


class HeldOut(BaseModel):
    """The held-out set the metrics were measured on."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (lower-case hex) of the held-out set as used",
    )
    size: int = Field(strict=True, ge=1, description="examples in the held-out set")
    description: str | None = Field(default=None, description="what the set is, in words")


class Evaluation(BaseModel):
    """A version's evaluation as the gates read it (``held_out`` is None for a flat file)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    metrics: dict[str, MetricValue] = Field(
        min_length=1, description="metric name -> value on the held-out set"
    )
    held_out: HeldOut | None = Field(
        default=None, description="sha256 and size of the held-out set (required in a file)"
    )
    segments: dict[str, dict[str, MetricValue]] = Field(
        default_factory=dict, description="segment -> {metric -> value} on its part of the set"
    )


class EvaluationFile(Evaluation):
    """The structured ``--evaluation`` file: ``held_out`` is required."""

    held_out: HeldOut = Field(description="sha256 and size of the held-out set")


def is_flat(value: dict[str, Any]) -> bool:
    """True for the earlier form: metric -> value with notes, no structured member."""
    return not any(member in value for member in STRUCTURED_MEMBERS)


def _flat(value: dict[str, Any]) -> Evaluation:
    metrics = {
        k: float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    notes = {k: v for k, v in value.items() if k not in metrics}
    if not metrics:
        raise ValueError(
            "metrics is missing: give `metrics` {name: value} measured on the held-out set "
            "(or, in the earlier flat form, at least one numeric member)"
        )
    return Evaluation(metrics=metrics, **notes)


def parse_evaluation(value: object) -> Evaluation:
    """The evaluation in ``value`` (structured or flat); ValueError naming the field.

    >>> parse_evaluation({"roc_auc": 0.9, "dataset": "holdout"}).metrics
    {'roc_auc': 0.9}
    >>> parse_evaluation({"metrics": {"roc_auc": 0.9}})
    Traceback (most recent call last):
    ...
    ValueError: held_out: Field required
    """
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, not {type(value).__name__}")
    if is_flat(value):
        return _flat(value)
    try:
        return EvaluationFile.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "evaluation"
        raise ValueError(f"{where}: {error['msg']}") from None


def evaluation_problem(value: object) -> str | None:
    """None if ``value`` is a readable evaluation, else one line naming the field.

    >>> evaluation_problem({"metrics": {"roc_auc": 0.9},
    ...                     "held_out": {"sha256": "ab", "size": 10}})
    "held_out.sha256: String should match pattern '^[0-9a-f]{64}$'"
    """
    try:
        parse_evaluation(value)
    except ValueError as exc:
        return str(exc)
    return None
