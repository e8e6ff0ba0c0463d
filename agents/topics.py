"""The topic catalogue of DESIGN.md and creating topics on the broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from agents.config import Settings
from agents.kafka import client_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    description: str = ""


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("predictions", description="PredictionEvent or batch, key model"),
    TopicSpec("features", description="FeatureEvent or batch, key model"),
    TopicSpec("labels", description="LabelEvent or batch, key model"),
    TopicSpec("references", compacted=True, description="ReferenceProfile, key model@version"),
    TopicSpec("drift", description="DriftReport, key model"),
    TopicSpec("kpi", description="KpiReport, key model"),
    TopicSpec("commands", description="Command (signed), key model"),
    TopicSpec("deployments", description="DeploymentEvent (hash-chained), key model"),
    TopicSpec("training-data", description="TrainingRecord or batch, key model"),
    TopicSpec("training-data.clean", description="TrainingRecord, key model"),
    TopicSpec("training-data.quarantine", description="QuarantinedRecord, key model"),
    TopicSpec("poisoning", description="PoisoningReport, key model"),
    TopicSpec("deadletter", description="DeadLetter, original key"),
)
NAMES = tuple(t.name for t in CATALOGUE)


def ensure_topics(settings: Settings, *, timeout_s: float = 15.0) -> list[str]:
    """Create the catalogue's missing topics; return the names created.

    Existing topics are left as they are (their partition count included).
    """
    admin = AdminClient(client_config(settings.bootstrap))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(
            settings.topic(spec.name),
            num_partitions=settings.partitions,
            replication_factor=-1,
            config={"cleanup.policy": "compact"} if spec.compacted else {},
        )
        for spec in CATALOGUE
        if settings.topic(spec.name) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except Exception as exc:  # a racing creator is fine; anything else is reported
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    logger.info("created topics: %s", ", ".join(created))
    return created
