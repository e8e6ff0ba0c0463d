"""The Faust app: one worker process runs the agents picked on the command line."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import faust
import mode
from mode.types import ServiceT

from agents import metrics
from agents.config import Settings
from agents.kafka import faust_credentials
from agents.runtime import confluent_fetch, faust_internals, gc_tuning, inflight
from agents.runtime.group_lag import GroupLag
from agents.runtime.watchdog import DEFAULT_GRACE_S, ShutdownWatchdog
from schemas.policy import Policy

logger = logging.getLogger(__name__)

#: The agents a worker can run, each registered by ``agents.<name>_agent.register``.
#: Only the modules of the agents picked are imported: a worker without the KPI
#: and poisoning agents starts without river (whose package imports its datasets,
#: scikit-learn and scipy.stats: about 1.2 s here).
AGENTS = ("drift", "kpi", "poisoning", "policy", "controller")


#: glibc's malloc options (mallopt) set by ``keep_buffers``: M_MMAP_THRESHOLD and
#: M_TRIM_THRESHOLD, and their values
_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 128 << 20


def keep_buffers() -> bool:
    """Let glibc's malloc keep freed megabyte buffers for the next message instead of
    returning them to the system: the columns of a 5,000-event message are ~1 MB numpy
    arrays, and by default each came from a fresh mmap and went back at once (800-900
    page faults a message, 10-12 % of the drift handler's CPU, measured side by side).
    Bound: the process keeps at most TRIM_THRESHOLD_BYTES of freed memory on top of
    what it uses. A no-op (False) where malloc is not glibc's."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def create_app(
    settings: Settings, *, policy: Policy, agents: Iterable[str] = AGENTS,
    partitions: Mapping[str, int] | None = None,
) -> faust.App:
    """The app with the agents picked; ``partitions`` gives an agent's table the partition
    count of its input topics (agents.runtime.partitions.plan), else ``settings.partitions``."""
    keep_buffers()
    datadir = os.path.join(os.path.expanduser(settings.datadir), settings.app_id)
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        store=settings.store,
        datadir=datadir,
        web_enabled=False,
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.5),
        # Offsets are committed this often: what a crash leaves handled past the
        # commit, recognised and skipped at restart (see docs/guarantees.md).
        broker_commit_interval=settings.commit_interval_s,
        producer_max_request_size=settings.max_request_bytes,
        # Each message writes two changelog records of about 12 KB (state, redo): with
        # aiokafka's defaults (no linger, 16 KB batches) each went out in a request
        # of its own. 10 ms of linger and 1 MiB batches let them share requests:
        # 25 % less main-thread CPU per message, about 6 % more events/s measured
        # in the bench's worker. An agent waiting for its reports' acknowledgements
        # pushes the producer instead of waiting out the linger (runner ``push``).
        producer_linger=0.01,
        producer_max_batch_size=1_048_576,
        # Batched messages are large (500 events is about 450 KB): Faust's default
        # of 1 MB per partition per fetch starves the agent (measured 4x slower).
        consumer_max_fetch_size=max(settings.max_message_bytes, 16 * 1_048_576),
        # What an agent's stream may hold before Faust pauses its partitions: the
        # bound on the memory of messages waiting (agents.config).
        stream_buffer_maxsize=max(settings.stream_buffer_messages,
                                  2 * settings.batch_max_messages),
        # SASL/SSL from DRIFTLINE_KAFKA_* (agents.kafka); None for PLAINTEXT.
        broker_credentials=faust_credentials(),
        # Restarts a crashed agent as Faust's default does, and counts the crash.
        agent_supervisor=CrashCountingSupervisor,
    )
    # Either consumer's stop waits for what the agents are handling, and lets go of
    # what Faust dropped from their queues (agents.runtime.inflight).
    if settings.fetch == "confluent":
        confluent_fetch.install(app)
    else:
        inflight.install(app)
    # The Faust internals the runner uses are there and have their shape, or the
    # worker stops here naming what changed (agents.runtime.faust_internals).
    faust_internals.check()
    wanted = set(agents)
    unknown = wanted - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {list(AGENTS)}")
    for name in AGENTS:  # in this order, whatever the order asked for
        if name in wanted:
            own = replace(settings, partitions=(partitions or {}).get(name, settings.partitions))
            importlib.import_module(f"agents.{name}.agent").register(app, own, policy)
    # Counters that alert rules watch start at 0 (agents.metrics.init_series).
    metrics.init_series(
        inputs={name: tuple(getattr(agent.channel, "topics", ()))
                for name, agent in app.agents.items()},
        models=policy.models,
    )
    if settings.metrics_port:
        offsets = GroupLag(settings.bootstrap, group=settings.app_id)

        @app.timer(metrics.SAMPLE_INTERVAL_S)
        async def consumer_lag() -> None:
            await metrics.HEALTH.sample(app, offsets)

    return app


class CrashCountingSupervisor(mode.OneForOneSupervisor):
    """Faust's default agent supervisor (restart the crashed actor), counting the crashes
    in ``driftline_agent_crashes_total{agent}``.

    An exception out of an agent's body ends its actor; Faust logs "Crashed
    reason=...", and the supervisor starts a new actor on the same stream, at once
    or up to 5 s later (its polling interval). Faust acknowledges the message the
    agent crashed on, so the group's committed offset moves past it, but the agent's
    redo record still says it was not applied: the next message's backfill, or the
    runner's watch, reads it again. A message that makes the agent crash every time
    stalls its partition, which driftline_seconds_since_progress shows while lag
    stays low (tests/e2e/test_health_signals.py). The runner keeps handler errors inside the
    agent (dead letters), so a crash is a driftline bug or an outage. Counted when
    the actor is restarted. With batches (DRIFTLINE_BATCH_MAX_MESSAGES > 1) the runner
    catches such a failure itself and tries the batch again with backoff, its messages
    unacknowledged, counting each try in the same counter (agents.runtime.runner). (Faust's
    rate limit: a restart less than 10 ms after the previous one stops the worker.)
    Restarts that a rebalance causes (the actor cancelled) are not crashes.
    """

    async def restart_service(self, service: ServiceT) -> None:
        reason = service.crash_reason
        if not isinstance(reason, asyncio.CancelledError):
            agent = getattr(getattr(service, "agent", None), "name", "unknown")
            logger.error("the %s agent crashed (%s: %s); Faust restarts it", agent,
                         type(reason).__name__, reason)
            metrics.CRASHES.labels(agent).inc()  # after the log line: a scrape finds it
        await super().restart_service(service)


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner, that exits ``shutdown_grace_s``
    after SIGTERM or SIGINT whatever the broker does (agents.runtime.watchdog).

    For the spinner to turn on every log line, Faust sets the root logger to
    DEBUG when the level asked for is WARN or above (``faust.worker.Worker.
    on_setup_root_logger``): every ``logger.debug`` in aiokafka and Faust then
    builds a LogRecord that no handler prints. That was 13 % of the event loop's
    time in the bench's worker (py-spy; about 4 % more events/s without it,
    three A/B pairs). Without the spinner the root logger keeps the level asked
    for; what is printed is unchanged.
    """

    def __init__(self, *args: Any, shutdown_grace_s: float = DEFAULT_GRACE_S,
                 gc_gen0: int = gc_tuning.DEFAULT_GEN0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gc_gen0 = gc_gen0
        broker = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker)
        self.watchdog = ShutdownWatchdog(grace_s=shutdown_grace_s, broker=broker,
                                         pending=self._not_stopped)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        # Ready: what is alive now lives as long as the worker (agents.runtime.gc_tuning).
        gc_tuning.tune(self.gc_gen0)

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        # mode.Worker's handler of SIGTERM and SIGINT: the stop it schedules waits on
        # the broker; the watchdog ends the process if that takes too long.
        self.watchdog.arm(signal.name)
        super()._schedule_shutdown(signal)

    def _not_stopped(self) -> list[str]:
        """Services still running or stopping, for the watchdog's log line."""
        found: list[str] = []
        todo: list[Any] = [self]
        seen: set[int] = set()
        while todo:
            service = todo.pop()
            if id(service) in seen:
                continue
            seen.add(id(service))
            if service is not self and service.state in ("running", "stopping"):
                found.append(f"{service.shortlabel} ({service.state})")
            todo.extend(getattr(service, "_children", ()))
        return sorted(found)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
