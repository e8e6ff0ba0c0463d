"""The drift agent: predictions and features in, DriftReports out on ``drift``."""

from __future__ import annotations

import faust

from agents.config import Settings
from agents.controller.keys import command_key
from agents.drift.handler import DriftHandler
from agents.runtime import runner
from schemas.policy import Policy


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    handler = DriftHandler(
        policy=policy,
        predictions_topic=settings.topic("predictions"),
        features_topic=settings.topic("features"),
        max_message_bytes=settings.max_message_bytes,
        references_topic=settings.topic("references"),
        pii_key=command_key(settings) if policy.pii else b"",
        max_models=settings.max_models,
        max_future_ms=int(settings.max_future_s * 1000),
    )
    # References ride in the same stream so that a profile and the windows it
    # judges are handled in order by one agent. (With several partitions the
    # references topic must be keyed so a model's profile lands with its events;
    # see docs/operations.md, scale-out.) Table keys: model@version (and model@version#reference),
    # values the DriftMonitor state, bounded per version by the policy.
    agent, _ = runner.register(
        app, settings, handler, name="drift", sources=["predictions", "features", "references"],
        output="drift", table="drift-state",
    )
    return agent
