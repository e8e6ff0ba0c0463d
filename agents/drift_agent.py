"""The drift agent: predictions and features in, DriftReports out on ``drift``."""

from __future__ import annotations

import faust

from agents.config import Settings
from agents.drift_handler import DriftHandler
from agents.runner import handler_agent
from schemas.policy import Policy


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
    # Key: model@version (and model@version#reference). Value: the DriftMonitor
    # state (JSON), bounded per version by the policy (see streams.drift.monitor).
    table = app.Table(
        "drift-state", default=None, key_type=bytes, value_type=bytes,
        partitions=settings.partitions,
    )
    body = handler_agent(
        handler,
        table=table,
        reports=app.topic(settings.topic("drift"), key_type=bytes, value_type=bytes),
        deadletter=app.topic(settings.topic("deadletter"), key_type=bytes, value_type=bytes),
    )
    return app.agent(source, name="drift")(body)
