"""Prometheus metrics of the worker, served over HTTP (``DRIFTLINE_METRICS_PORT``).

Every agent's messages pass through ``observe`` (agents.runner), which counts
them and reads the reports they produced; consumer lag is sampled from the
Faust consumer every 5 s by ``sample_lag``. Label values are bounded: models and
versions (as many as the deployment has), features (at most the policy's
``max_features`` per model), KPI metric names, command types, quarantine
reasons and topics — never request ids or raw category values.

| metric | labels |
|---|---|
| driftline_messages_total | topic, agent |
| driftline_events_total | topic, agent (events counted, batches unpacked) |
| driftline_deadletters_total | topic, agent |
| driftline_late_events_total | model, version |
| driftline_drift_psi | model, version, feature |
| driftline_window_status | model, version, kind, variant: 0 ok, 1 warn, 2 drift or breach |
| driftline_kpi | model, version, variant, metric |
| driftline_concept_drift | model, version, variant (1 when the last window flagged it) |
| driftline_commands_total | model, type, status (issued, applied, rejected, pending_approval) |
| driftline_quarantined_total | model, reason |
| driftline_poisoning_status | model: 0 ok, 1 suspect, 2 campaign |
| driftline_report_latency_seconds | kind: wall-clock time from a window's end to its report |
| driftline_consumer_lag | topic, partition |
| driftline_redelivered_total | topic, agent (redelivered, already applied: skipped) |
| driftline_backfilled_total | topic, agent (skipped by the consumer, read directly) |
| driftline_untracked_events_total | topic, agent (beyond DRIFTLINE_MAX_MODELS: dead-lettered) |
| driftline_tracked_models | agent, partition (admitted, the policy's not counted; last seen) |
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel

from schemas.commands import Command, DeploymentEvent
from schemas.reports import DriftReport, KpiReport, PoisoningReport

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
MESSAGES = Counter("driftline_messages", "Kafka messages handled", ["topic", "agent"],
                   registry=REGISTRY)
EVENTS = Counter("driftline_events", "events counted (batches unpacked)", ["topic", "agent"],
                 registry=REGISTRY)
DEADLETTERS = Counter("driftline_deadletters", "messages or events dead-lettered",
                      ["topic", "agent"], registry=REGISTRY)
LATE = Counter("driftline_late_events", "events after their window closed",
               ["model", "version"], registry=REGISTRY)
PSI = Gauge("driftline_drift_psi", "PSI of a feature in the last window",
            ["model", "version", "feature"], registry=REGISTRY)
STATUS = Gauge("driftline_window_status", "last window: 0 ok, 1 warn, 2 drift or breach",
               ["model", "version", "kind", "variant"], registry=REGISTRY)
KPI = Gauge("driftline_kpi", "KPI of the last reported window",
            ["model", "version", "variant", "metric"], registry=REGISTRY)
CONCEPT = Gauge("driftline_concept_drift", "1 when the last KPI window flagged concept drift",
                ["model", "version", "variant"], registry=REGISTRY)
COMMANDS = Counter("driftline_commands", "commands issued and what the controller did",
                   ["model", "type", "status"], registry=REGISTRY)
QUARANTINED = Counter("driftline_quarantined", "training records quarantined, by reason",
                      ["model", "reason"], registry=REGISTRY)
POISONING = Gauge("driftline_poisoning_status", "0 ok, 1 suspect, 2 campaign", ["model"],
                  registry=REGISTRY)
LATENCY = Histogram("driftline_report_latency_seconds",
                    "wall-clock time from a window's end to its report", ["kind"],
                    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
                    registry=REGISTRY)
REDELIVERED = Counter("driftline_redelivered", "messages handed over again whose effects "
                      "were already applied (after a restart, or read directly): skipped",
                      ["topic", "agent"],
                      registry=REGISTRY)
UNTRACKED_EVENTS = Counter("driftline_untracked_events", "events dead-lettered because their "
                           "model is beyond DRIFTLINE_MAX_MODELS (agents.admission)",
                           ["topic", "agent"], registry=REGISTRY)
TRACKED_MODELS = Gauge("driftline_tracked_models", "models admitted on a table partition, the "
                       "policy file's not counted (agents.admission)", ["agent", "partition"],
                       registry=REGISTRY)
BACKFILLED = Counter("driftline_backfilled", "messages the consumer never handed over, read "
                     "directly and handled (agents.backfill)", ["topic", "agent"],
                     registry=REGISTRY)
LAG = Gauge("driftline_consumer_lag", "messages not yet consumed", ["topic", "partition"],
            registry=REGISTRY)

_LEVEL = {"ok": 0, "warn": 1, "drift": 2, "breach": 2, "suspect": 1, "campaign": 2}


def observe(agent: str, topic: str, *, counted: int, dead: int,
            reports: Iterable[BaseModel]) -> None:
    """Count one handled message and read the reports it produced."""
    MESSAGES.labels(topic, agent).inc()
    if counted:
        EVENTS.labels(topic, agent).inc(counted)
    if dead:
        DEADLETTERS.labels(topic, agent).inc(dead)
    for report in reports:
        _report(report)


def _latency(kind: str, window_end: Any) -> None:
    LATENCY.labels(kind).observe(max(0.0, time.time() - window_end.timestamp()))


def _report(report: BaseModel) -> None:
    if isinstance(report, DriftReport):
        m, v = report.model, report.model_version
        STATUS.labels(m, v, "drift", "").set(_LEVEL[report.status])
        for name, feature in report.features.items():
            if "psi" in feature.metrics:
                PSI.labels(m, v, name).set(feature.metrics["psi"])
        if report.late:
            LATE.labels(m, v).inc(report.late)
        _latency("drift", report.window_end)
    elif isinstance(report, KpiReport):
        m, v, var = report.model, report.model_version, report.variant
        STATUS.labels(m, v, "kpi", var).set(_LEVEL[report.status])
        for name, value in report.metrics.items():
            KPI.labels(m, v, var, name).set(value)
        CONCEPT.labels(m, v, var).set(1 if report.concept_drift else 0)
        if report.revision == 0:
            _latency("kpi", report.window_end)
    elif isinstance(report, Command):
        COMMANDS.labels(report.model, report.type, "issued").inc()
    elif isinstance(report, DeploymentEvent):
        COMMANDS.labels(report.model, report.action, report.status).inc()
    elif isinstance(report, PoisoningReport):
        POISONING.labels(report.model).set(_LEVEL.get(report.status, 0))
        for counts in report.sources.values():
            for reason, n in counts.quarantined.items():
                QUARANTINED.labels(report.model, reason).inc(n)
        _latency("poisoning", report.window_end)


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (a daemon thread of prometheus_client)."""
    start_http_server(port, registry=REGISTRY)
    logger.info("Prometheus metrics on :%d/metrics", port)


async def sample_lag(app: Any) -> None:
    """Highwater minus position for each partition the worker is assigned."""
    try:
        consumer = app.consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            position = await consumer.position(tp)
            if high is not None and position is not None:
                LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
    except Exception:  # the consumer may be rebalancing; the next sample will tell
        logger.debug("consumer lag not available this time", exc_info=True)
