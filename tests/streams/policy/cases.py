"""Builders of the reports the policy decides on, for the tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.commands import DeploymentEvent, DeploymentState
from schemas.reports import DriftReport, KpiReport, PoisoningReport, ReferenceInfo, SourceCounts

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def drift(i: int, status: str = "ok", *, version: str = "v1", model: str = "fraud") -> DriftReport:
    return DriftReport(
        model=model, model_version=version, window_start=T0 + i * WINDOW,
        window_end=T0 + (i + 1) * WINDOW, n=5000, features={}, status=status,  # type: ignore[arg-type]
        reference=ReferenceInfo(kind="profile", n=10000),
        drifted_features=["amount", "merchant_risk"] if status != "ok" else [],
    )


def kpi(
    i: int, *, variant: str = "champion", version: str = "v1", accuracy: float | None = 0.9,
    n_labeled: int = 1000, status: str = "ok", concept: bool = False,
    error_rate: float = 0.0, p99: float = 50.0, revision: int = 0, model: str = "fraud",
) -> KpiReport:
    metrics: dict[str, Any] = {"error_rate": error_rate, "latency_p99_ms": p99}
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    return KpiReport(
        model=model, model_version=version, variant=variant,  # type: ignore[arg-type]
        window_start=T0 + i * WINDOW, window_end=T0 + (i + 1) * WINDOW,
        n_predictions=n_labeled + 100, n_labeled=n_labeled, metrics=metrics,
        concept_drift=concept, status=status, revision=revision,  # type: ignore[arg-type]
        breaches=["roc_auc 0.61 below 0.75"] if status == "breach" else [],
    )


def poisoning(i: int, status: str = "ok", passed: int = 1000) -> PoisoningReport:
    return PoisoningReport(
        model="fraud", window_start=T0 + i * WINDOW, window_end=T0 + (i + 1) * WINDOW,
        sources={"crm": SourceCounts(seen=passed, passed=passed)}, status=status,  # type: ignore[arg-type]
        reason="source crm: 31% quarantined" if status == "campaign" else "",
    )


def deployed(champion: str = "v1", canary: str | None = None, weight: float = 0.0,
             lkg: str | None = None, model: str = "fraud") -> DeploymentEvent:
    return DeploymentEvent(
        model=model, command_id="c", action="promote", status="applied", reason="",
        state=DeploymentState(champion=champion, canary=canary, canary_weight=weight,
                              last_known_good=lkg),
        at=T0, prev_hash="0" * 64, hash="0" * 64,
    )
