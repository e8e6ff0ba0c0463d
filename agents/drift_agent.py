"""The drift agent: predictions and features in, DriftReports out on ``drift``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from agents.codec import Origin, dead_letter
from agents.config import Settings
from agents.drift_handler import DriftHandler
from agents.overlay import Overlay
from schemas.policy import Policy

logger = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    handler = DriftHandler(
        policy=policy,
        predictions_topic=settings.topic("predictions"),
        features_topic=settings.topic("features"),
        max_message_bytes=settings.max_message_bytes,
        references_topic=settings.topic("references"),
    )
    # References ride in the same stream so that a profile and the windows it
    # judges are handled in order by one agent. (With several partitions the
    # references topic must be keyed so a model's profile lands with its events;
    # see README, scale-out.)
    source = app.topic(
        settings.topic("predictions"), settings.topic("features"), settings.topic("references"),
        key_type=bytes, value_type=bytes,
    )
    drift = app.topic(settings.topic("drift"), key_type=bytes, value_type=bytes)
    deadletter = app.topic(settings.topic("deadletter"), key_type=bytes, value_type=bytes)
    # Key: model@version. Value: the DriftMonitor state (JSON). Bounded per
    # version by the policy (see streams.drift.monitor); one entry per version.
    table = app.Table(
        "drift-state", default=None, key_type=bytes, value_type=bytes,
        partitions=settings.partitions,
    )

    async def drift_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            origin = Origin(msg.topic, msg.partition, msg.offset, msg.key)
            view = Overlay(table)
            try:
                # Off the event loop: a CPU-bound body on the loop starves Faust's
                # fetcher (measured: 12 ms of work per message cost 45 ms of wall time).
                outcome = await asyncio.to_thread(handler.handle, msg.value, origin, view)
                view.apply(table)
            except Exception as exc:  # keep the worker alive; keep the message
                logger.exception("drift agent failed on %s[%d]@%d", *origin.__dict__.values())
                letter = dead_letter(
                    origin,
                    f"driftline failed while processing this message ({type(exc).__name__}: "
                    f"{exc}); this is a driftline bug, please report it with this dead letter",
                    msg.value or b"", agent=handler.AGENT,
                )
                await deadletter.send(key=msg.key, value=letter.model_dump_json().encode())
                continue
            for report in outcome.reports:
                await drift.send(
                    key=report.model.encode(), value=report.model_dump_json().encode()
                )
            for letter in outcome.dead:
                await deadletter.send(key=msg.key, value=letter.model_dump_json().encode())

    return app.agent(source, name="drift")(drift_agent)
