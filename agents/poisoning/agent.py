"""The poisoning guard agent: ``training-data`` in; clean, quarantined and reports out."""

from __future__ import annotations

import faust

from agents.config import Settings
from agents.controller.keys import command_key
from agents.poisoning.handler import PoisoningHandler
from agents.runtime import runner
from schemas.policy import Policy


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    handler = PoisoningHandler(
        policy, training_topic=settings.topic("training-data"),
        references_topic=settings.topic("references"),
        max_message_bytes=settings.max_message_bytes,
        pii_key=command_key(settings) if policy.pii else b"",
        max_models=settings.max_models,
    )
    # references and training-data are both keyed by model (references by
    # model@version: give both topics one partition, or run one worker, until
    # issue 7's scale-out work co-partitions them).
    agent, _ = runner.register(
        app, settings, handler, name="poisoning", sources=["training-data", "references"],
        output="poisoning", table="poisoning-state",
        extra_outputs=("training-data.clean", "training-data.quarantine"),
    )
    return agent
