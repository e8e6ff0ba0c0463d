"""The KPI agent: predictions and labels in, KpiReports out on ``kpi``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import faust

from agents.config import Settings
from agents.controller.keys import command_key
from agents.kpi.handler import KpiHandler
from agents.runtime import runner
from schemas.policy import Policy
from streams.kpi.concept import detector_class

logger = logging.getLogger(__name__)


def _import_detectors(kinds: set[str]) -> None:
    try:
        for kind in sorted(kinds):
            detector_class(kind)
    except Exception:  # the first detector made raises it again, where it is handled
        logger.debug("importing the concept detectors failed", exc_info=True)


def import_detectors(policy: Policy) -> Callable[[], None]:
    """What imports the policy's concept detectors (river: 2-3 s): the KPI handler calls
    it at its first message (``prepare``), in its own thread as every message, so that
    the first labels joined do not wait for it (``driftline bench --labels``: a quarter
    of its label phase went into it); predictions come before their labels. Not at
    module import (the CLI's other verbs do not pay it: ``streams.kpi.concept.DETECTORS``).
    Not in a thread of its own: with one, tests/e2e/test_crash.py found no kill between
    a handling and its commit, twice in two runs (why was not found)."""
    kinds = {policy.kpi_for(m).concept_detector for m in ("", *policy.models)}
    return partial(_import_detectors, kinds)


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    handler = KpiHandler(
        policy=policy,
        predictions_topic=settings.topic("predictions"),
        labels_topic=settings.topic("labels"),
        references_topic=settings.topic("references"),
        max_message_bytes=settings.max_message_bytes,
        pii_key=command_key(settings) if policy.pii else b"",
        max_models=settings.max_models,
        max_future_ms=int(settings.max_future_s * 1000),
        prepare=import_detectors(policy),
    )
    # Both topics are keyed by model, so a model's predictions, labels and all of
    # its state (the label join, KPI windows, concept detectors: keys and bounds in
    # agents.kpi.handler) live on one partition; the topics need equal partition counts.
    # References (keyed model@version) bring each version's score calibration, for the
    # estimates before labels: with several partitions, the drift agent's known limit
    # (docs/operations.md, scale-out) applies here too.
    # The handler's ``tick`` runs every runner.TICK_INTERVAL_S on each partition this
    # worker owns: the revisions of quiet windows (policy kpi.revision_delay).
    agent, _ = runner.register(
        app, settings, handler, name="kpi", sources=["predictions", "labels", "references"],
        output="kpi", table="kpi-state",
    )
    return agent
