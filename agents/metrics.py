"""Prometheus metrics of the worker, served over HTTP (``DRIFTLINE_METRICS_PORT``).

Every agent's messages pass through ``observe`` (agents.runtime.runner), which counts
them, notes each partition's progress and reads the reports they produced. Every
5 s ``Health.sample`` reads the group's lag from the broker and says how long each
agent has been behind without progress. Label values are bounded: models and
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
| driftline_drift_multivariate | model, version, stat: relative_change, z, beyond_limits |
| driftline_window_status | model, version, kind, variant: 0 ok, 1 warn, 2 drift or breach |
| driftline_kpi | model, version, variant, metric |
| driftline_kpi_estimated | model, version, variant, metric, bound: value, lower, upper |
| driftline_kpi_band_lower, _upper | model, version, variant, metric (reference band) |
| driftline_kpi_verdict_estimated | model, version, variant (1: last status rests on estimates) |
| driftline_shadow | model, version (the shadow), versus (the served version), stat |
| driftline_concept_drift | model, version, variant (1 when the last window flagged it) |
| driftline_concept_calibrated | model, version, variant (1: detector calibrated on the reference) |
| driftline_concept_false_alarm_rate | model, version, variant (calibrated: its rate per window) |
| driftline_commands_total | model, type, status (issued, applied, rejected, pending_approval) |
| driftline_quarantined_total | model, reason |
| driftline_poisoning_status | model: 0 ok, 1 suspect, 2 campaign |
| driftline_report_latency_seconds | kind: wall-clock time from a window's end to its report |
| driftline_consumer_lag | topic, partition (end offset minus the group's committed offset) |
| driftline_seconds_since_progress | agent, topic, partition (0 when caught up) |
| driftline_agent_crashes_total | agent (restarted by Faust's supervisor after an exception) |
| driftline_worker_start_time_seconds | (none): when this worker process started serving |
| driftline_redelivered_total | topic, agent (redelivered, already applied: skipped) |
| driftline_backfilled_total | topic, agent (skipped by the consumer, read directly) |
| driftline_untracked_events_total | topic, agent (beyond DRIFTLINE_MAX_MODELS: dead-lettered) |
| driftline_tracked_models | agent, partition (admitted, the policy's not counted; last seen) |
| driftline_send_failures_total | topic, agent (outputs not sent after retries: logged, skipped) |
| driftline_poisoning_held_total | model (training records that arrived before their trusted set) |
| driftline_poisoning_released_total | model (held records screened once it arrived) |
| driftline_poisoning_unscreened_total | model (held records quarantined unscreened) |
| driftline_poisoning_waiting | model (records held now) |

Consumer lag is what Kafka's own tools call lag (``kafka-consumer-groups
--describe``): per input partition the worker is assigned, the partition's end
offset (one past its last message) minus the offset the worker's group has
committed, both read from the broker (agents.runtime.group_lag); with nothing committed
yet, from the partition's earliest offset. Faust commits only what every agent
reading the partition has handled, so a stalled or crash-looping agent shows as
growing lag. (Faust's fetch position, which this used to read, runs ahead of the
agents and read 0 through such a stall.)

``driftline_kpi_estimated`` is the last window's metric estimated from its scores
before labels (streams.kpi.estimate) with the bounds of its 95 % band, beside
``driftline_kpi``'s realized one; it cannot see concept drift.

``driftline_shadow`` is a shadow's last reported window against the version that
served the same requests (KpiReport.shadow, streams.kpi.shadow): stat ``pairs``,
``agreement`` (classification) or ``prediction_mean_abs_diff`` (regression),
``score_mean_abs_diff``, ``score_max_abs_diff``, ``score_mean_diff``,
``labeled_pairs``, and each version's metrics on the labeled pairs as
``served_<metric>`` and ``shadow_<metric>`` (accuracy, errors or mae).

``driftline_kpi_band_lower`` / ``_upper`` are the bounds of the reference band
(``kpi.reference_bands``, streams.kpi.bands) the last window's metric was held to,
widened for its labels; a side not judged (the better one, by default) is absent,
as is a metric whose band did not apply.

``driftline_drift_multivariate`` is the last window's multivariate signal: the
relative change of its reconstruction error from the baseline (negative: below),
its z, and how many of its events had a value beyond the reference's limits.

Progress: ``driftline_seconds_since_progress{agent, topic, partition}`` is 0 while
the agent is caught up (the group's lag on the partition is 0, or the agent has
handled the partition's last message); while it is behind, the seconds since it
last handled a message of the partition, counted at most from when it was first
seen behind. It rises steadily only when an agent is behind and not moving.

Series of partitions no longer assigned to this worker are removed. Counters that
alert rules watch start at 0 for the label values known at start
(``init_series``), so the first increment after a start is an increase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel

from agents.runtime.group_lag import GroupLag, PartitionLag
from schemas.commands import Command, CommandType, DeploymentEvent
from schemas.reports import DriftReport, KpiReport, PoisoningReport, ShadowComparison

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
MULTIVARIATE = Gauge(
    "driftline_drift_multivariate",
    "the multivariate signal in the last window: relative_change, z, beyond_limits",
    ["model", "version", "stat"], registry=REGISTRY)
STATUS = Gauge("driftline_window_status", "last window: 0 ok, 1 warn, 2 drift or breach",
               ["model", "version", "kind", "variant"], registry=REGISTRY)
KPI = Gauge("driftline_kpi", "KPI of the last reported window",
            ["model", "version", "variant", "metric"], registry=REGISTRY)
KPI_ESTIMATED = Gauge(
    "driftline_kpi_estimated",
    "KPI of the last reported window estimated from its scores before labels (CBPE), and "
    "the bounds of its 95 % band", ["model", "version", "variant", "metric", "bound"],
    registry=REGISTRY)
KPI_VERDICT_ESTIMATED = Gauge(
    "driftline_kpi_verdict_estimated",
    "1 when the last KPI window's status rests on estimated breaches alone",
    ["model", "version", "variant"], registry=REGISTRY)
SHADOW = Gauge(
    "driftline_shadow",
    "a shadow's last reported window against the served version on the same request ids",
    ["model", "version", "versus", "stat"], registry=REGISTRY)
#: ShadowComparison fields exported as driftline_shadow stats (when not None)
SHADOW_STATS = ("pairs", "agreement", "prediction_mean_abs_diff", "scored_pairs",
                "score_mean_abs_diff", "score_max_abs_diff", "score_mean_diff", "labeled_pairs")
KPI_BAND_LOWER = Gauge(
    "driftline_kpi_band_lower",
    "lower bound of the reference band the last KPI window's metric was held to",
    ["model", "version", "variant", "metric"], registry=REGISTRY)
KPI_BAND_UPPER = Gauge(
    "driftline_kpi_band_upper",
    "upper bound of the reference band the last KPI window's metric was held to",
    ["model", "version", "variant", "metric"], registry=REGISTRY)
CONCEPT = Gauge("driftline_concept_drift", "1 when the last KPI window flagged concept drift",
                ["model", "version", "variant"], registry=REGISTRY)
CONCEPT_CALIBRATED = Gauge(
    "driftline_concept_calibrated",
    "1 when the last KPI window's concept detector was calibrated on the reference",
    ["model", "version", "variant"], registry=REGISTRY)
CONCEPT_FALSE_ALARMS = Gauge(
    "driftline_concept_false_alarm_rate",
    "the calibrated concept detector's share of reference windows with a false alarm",
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
                           "model is beyond DRIFTLINE_MAX_MODELS (agents.inputs.admission)",
                           ["topic", "agent"], registry=REGISTRY)
TRACKED_MODELS = Gauge("driftline_tracked_models", "models admitted on a table partition, the "
                       "policy file's not counted "
                       "(agents.inputs.admission)", ["agent", "partition"],
                       registry=REGISTRY)
BACKFILLED = Counter("driftline_backfilled", "messages the consumer never handed over, read "
                     "directly and handled (agents.runtime.backfill)", ["topic", "agent"],
                     registry=REGISTRY)
LAG = Gauge("driftline_consumer_lag", "messages after the group's committed offset: the "
            "partition's end offset minus the committed one (the earliest without a commit)",
            ["topic", "partition"], registry=REGISTRY)
SINCE_PROGRESS = Gauge("driftline_seconds_since_progress", "seconds since the agent last "
                       "handled a message of the partition while behind its end; 0 when caught "
                       "up", ["agent", "topic", "partition"], registry=REGISTRY)
CRASHES = Counter("driftline_agent_crashes", "agent crashes (an exception out of the agent, "
                  "which Faust's supervisor then restarts; with batches, a batch the runner "
                  "tries again)", ["agent"], registry=REGISTRY)
STARTED = Gauge("driftline_worker_start_time_seconds", "Unix time this worker process started "
                "serving metrics (a change is a restart)", registry=REGISTRY)
SEND_FAILURES = Counter("driftline_send_failures", "reports, routed messages and dead letters "
                        "an agent could not send (too large, or refused after retries): "
                        "logged, and the message recorded as handled (agents.runtime.runner)",
                        ["topic", "agent"], registry=REGISTRY)
# The poisoning guard's records that arrive before their model's trusted set
# (agents.poisoning.hold): held, then screened (released) or quarantined unscreened.
POISONING_HELD = Counter("driftline_poisoning_held", "training records held until their "
                         "model's trusted set arrives", ["model"], registry=REGISTRY)
POISONING_RELEASED = Counter("driftline_poisoning_released", "held training records screened "
                             "once their model's trusted set arrived", ["model"],
                             registry=REGISTRY)
POISONING_UNSCREENED = Counter("driftline_poisoning_unscreened", "held training records "
                               "quarantined unscreened (no_trusted_set): the policy's "
                               "hold_max_records / hold_max_age reached", ["model"],
                               registry=REGISTRY)
POISONING_WAITING = Gauge("driftline_poisoning_waiting", "training records held now, waiting "
                          "for their model's trusted set", ["model"], registry=REGISTRY)

_LEVEL = {"ok": 0, "warn": 1, "drift": 2, "breach": 2, "suspect": 1, "campaign": 2}


def observe(agent: str, topic: str, *, counted: int, dead: int,
            reports: Iterable[BaseModel], partition: int | None = None,
            offset: int | None = None) -> None:
    """Count one handled message (the one at ``offset`` of ``topic[partition]``: the
    agent's progress) and read the reports it produced."""
    MESSAGES.labels(topic, agent).inc()
    if partition is not None:
        HEALTH.handled(agent, topic, partition, offset=offset)
    if counted:
        EVENTS.labels(topic, agent).inc(counted)
    if dead:
        DEADLETTERS.labels(topic, agent).inc(dead)
    for report in reports:
        _report(report)


def _latency(kind: str, window_end: Any) -> None:
    LATENCY.labels(kind).observe(max(0.0, time.time() - window_end.timestamp()))


def _shadow(model: str, version: str, compared: ShadowComparison) -> None:
    for stat in SHADOW_STATS:
        value = getattr(compared, stat)
        if value is not None:
            SHADOW.labels(model, version, compared.versus, stat).set(value)
    for side, metrics in (("served", compared.served_metrics),
                          ("shadow", compared.shadow_metrics)):
        for name, value in metrics.items():
            SHADOW.labels(model, version, compared.versus, f"{side}_{name}").set(value)


def _bands(report: KpiReport) -> None:
    """The reference bands of the report's metrics; stale ones removed."""
    m, v, var = report.model, report.model_version, report.variant
    banded = {
        name: next((t for t in bounds if t.source == "reference"), None)
        for name, bounds in report.thresholds.items()
    }
    for name, band in banded.items():
        for gauge, value in ((KPI_BAND_LOWER, band and band.lower),
                             (KPI_BAND_UPPER, band and band.upper)):
            if value is not None:
                gauge.labels(m, v, var, name).set(value)
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(m, v, var, name)


def _report(report: BaseModel) -> None:
    if isinstance(report, DriftReport):
        m, v = report.model, report.model_version
        STATUS.labels(m, v, "drift", "").set(_LEVEL[report.status])
        for name, feature in report.features.items():
            if "psi" in feature.metrics:
                PSI.labels(m, v, name).set(feature.metrics["psi"])
        joint = report.multivariate
        if joint is not None:
            MULTIVARIATE.labels(m, v, "relative_change").set(joint.relative_change)
            if joint.z is not None:
                MULTIVARIATE.labels(m, v, "z").set(joint.z)
            MULTIVARIATE.labels(m, v, "beyond_limits").set(joint.beyond_limits)
        if report.late:
            LATE.labels(m, v).inc(report.late)
        _latency("drift", report.window_end)
    elif isinstance(report, KpiReport):
        m, v, var = report.model, report.model_version, report.variant
        STATUS.labels(m, v, "kpi", var).set(_LEVEL[report.status])
        for name, value in report.metrics.items():
            KPI.labels(m, v, var, name).set(value)
        for name, est in report.estimated_metrics.items():
            for bound in ("value", "lower", "upper"):
                KPI_ESTIMATED.labels(m, v, var, name, bound).set(getattr(est, bound))
        KPI_VERDICT_ESTIMATED.labels(m, v, var).set(1 if report.estimated else 0)
        _bands(report)
        CONCEPT.labels(m, v, var).set(1 if report.concept_drift else 0)
        if report.concept is not None:
            CONCEPT_CALIBRATED.labels(m, v, var).set(1 if report.concept.calibrated else 0)
            if report.concept.false_alarm_rate is not None:
                CONCEPT_FALSE_ALARMS.labels(m, v, var).set(report.concept.false_alarm_rate)
            else:
                with contextlib.suppress(KeyError):
                    CONCEPT_FALSE_ALARMS.remove(m, v, var)
        for compared in report.shadow or []:
            _shadow(m, v, compared)
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


#: how often the worker samples the consumer lag and the agents' progress
SAMPLE_INTERVAL_S = 5.0

#: what the controller and the policy agent count per model in driftline_commands_total
CONTROLLER_STATUSES = ("applied", "rejected", "pending_approval")


def init_series(*, inputs: Mapping[str, Collection[str]], models: Iterable[str] = ()) -> None:
    """Create at 0 the series of counters that alert rules watch, for the label values
    known at start: ``increase()`` of a series that appears at 1 is 0, so without
    this the first rollback, refusal, crash or untracked event after a start would
    not alert. ``inputs``: each running agent's input topics; ``models``: the models
    the policy file lists (others get their series when they first show up)."""
    for agent, topics in inputs.items():
        CRASHES.labels(agent)
        for topic in topics:
            DEADLETTERS.labels(topic, agent)
            UNTRACKED_EVENTS.labels(topic, agent)
    statuses = (*(("issued",) if "policy" in inputs else ()),
                *(CONTROLLER_STATUSES if "controller" in inputs else ()))
    for model in models:
        for type_ in get_args(CommandType):
            for status in statuses:
                COMMANDS.labels(model, type_, status)


class Health:
    """Consumer lag and progress per input partition (see the module docstring).

    Bound: one entry per (agent, input topic, partition) this worker has handled
    or been assigned; the series of partitions no longer assigned are removed.
    """

    def __init__(self) -> None:
        #: (agent, topic, partition) -> (monotonic time of its last handled message)
        self._handled_at: dict[tuple[str, str, int], float] = {}
        #: (agent, topic, partition) -> (the last offset handled + 1)
        self._position: dict[tuple[str, str, int], int] = {}
        #: (agent, topic, partition) -> monotonic time it was first seen behind
        self._behind_since: dict[tuple[str, str, int], float] = {}
        self._shown: set[tuple[str, str, int]] = set()
        self._failing = False

    def handled(self, agent: str, topic: str, partition: int, *, offset: int | None = None,
                now: float | None = None) -> None:
        key = (agent, topic, partition)
        self._handled_at[key] = time.monotonic() if now is None else now
        if offset is not None:
            self._position[key] = max(self._position.get(key, 0), offset + 1)

    def update(self, lags: Iterable[PartitionLag], agents: Mapping[str, Collection[str]], *,
               now: float | None = None) -> None:
        """Set the gauges from the broker's offsets of the partitions assigned now;
        ``agents``: the agents reading each input topic."""
        now = time.monotonic() if now is None else now
        shown: set[tuple[str, str, int]] = set()
        for p in lags:
            LAG.labels(p.topic, str(p.partition)).set(p.lag)
            for agent in agents.get(p.topic, ()):
                key = (agent, p.topic, p.partition)
                shown.add(key)
                SINCE_PROGRESS.labels(agent, p.topic, str(p.partition)).set(
                    self._since_progress(key, p, now))
        for key in self._shown - shown:
            for known in (self._behind_since, self._handled_at, self._position):
                known.pop(key, None)
            _remove(SINCE_PROGRESS, key[0], key[1], str(key[2]))
        for topic, partition in {k[1:] for k in self._shown} - {k[1:] for k in shown}:
            _remove(LAG, topic, str(partition))
        self._shown = shown

    def _since_progress(self, key: tuple[str, str, int], p: PartitionLag, now: float) -> float:
        if p.lag == 0 or self._position.get(key, -1) >= p.end:
            self._behind_since.pop(key, None)
            return 0.0
        since = self._behind_since.setdefault(key, now)
        return now - max(since, self._handled_at.get(key, since))

    async def sample(self, app: Any, offsets: GroupLag) -> None:
        """Read the lag of the input partitions ``app``'s consumer is assigned, off the
        event loop, and update the gauges; a failed read leaves them as they were."""
        agents: dict[str, list[str]] = {}
        for name, agent in app.agents.items():
            for topic in getattr(agent.channel, "topics", ()):
                agents.setdefault(topic, []).append(name)
        try:
            assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()
                        if tp.topic in agents]
            lags = await asyncio.to_thread(offsets.read, assigned)
        except Exception as exc:  # the broker unreachable, the consumer rebalancing
            # Said once until it works again; the gauges keep their last values.
            (logger.debug if self._failing else logger.warning)(
                "could not read the consumer lag from the broker (%s: %s); trying again "
                "every few seconds", type(exc).__name__, exc)
            self._failing = True
            return
        self._failing = False
        self.update(lags, agents)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never shown
        metric.remove(*labels)


HEALTH = Health()


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (a daemon thread of prometheus_client)."""
    start_http_server(port, registry=REGISTRY)
    STARTED.set(time.time())
    logger.info("Prometheus metrics on :%d/metrics", port)
