"""The Faust app: one worker process runs the agents picked on the command line."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable

import faust

from agents import metrics
from agents.config import Settings
from agents.kafka import faust_credentials
from schemas.policy import Policy

#: The agents a worker can run, each registered by ``agents.<name>_agent.register``.
#: Only the modules of the agents picked are imported: a worker without the KPI
#: and poisoning agents starts without river (whose package imports its datasets,
#: scikit-learn and scipy.stats: about 1.2 s here).
AGENTS = ("drift", "kpi", "poisoning", "policy", "controller")


def create_app(
    settings: Settings, *, policy: Policy, agents: Iterable[str] = AGENTS
) -> faust.App:
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
        # Offsets are committed at most this often: the bound on events counted
        # twice after a crash (see README, guarantees).
        broker_commit_interval=1.0,
        producer_max_request_size=max(settings.max_message_bytes, 1_048_576) + 65_536,
        # Each message writes two changelog records of about 12 KB (state, redo): with
        # aiokafka's defaults (no linger, 16 KB batches) each went out in a request
        # of its own. 10 ms of linger and 1 MiB batches let them share requests:
        # 25 % less main-thread CPU per message, about 6 % more events/s measured
        # in the bench's worker; at most 10 ms more before a report is acknowledged.
        producer_linger=0.01,
        producer_max_batch_size=1_048_576,
        # Batched messages are large (500 events is about 450 KB): Faust's default
        # of 1 MB per partition per fetch starves the agent (measured 4x slower).
        consumer_max_fetch_size=max(settings.max_message_bytes, 16 * 1_048_576),
        # SASL/SSL from DRIFTLINE_KAFKA_* (agents.kafka); None for PLAINTEXT.
        broker_credentials=faust_credentials(),
    )
    wanted = set(agents)
    unknown = wanted - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {list(AGENTS)}")
    for name in AGENTS:  # in this order, whatever the order asked for
        if name in wanted:
            importlib.import_module(f"agents.{name}_agent").register(app, settings, policy)
    if settings.metrics_port:

        @app.timer(5.0)
        async def consumer_lag() -> None:
            await metrics.sample_lag(app)

    return app


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner.

    For the spinner to turn on every log line, Faust sets the root logger to
    DEBUG when the level asked for is WARN or above (``faust.worker.Worker.
    on_setup_root_logger``): every ``logger.debug`` in aiokafka and Faust then
    builds a LogRecord that no handler prints. That was 13 % of the event loop's
    time in the bench's worker (py-spy; about 4 % more events/s without it,
    three A/B pairs). Without the spinner the root logger keeps the level asked
    for; what is printed is unchanged.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
