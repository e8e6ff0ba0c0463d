"""The topic catalogue (README, Topic contract): creating topics, checking their settings.

Each topic gets the configuration its role needs: ``deployments`` (the
hash-chained audit trail) and ``commands`` keep their records for ever
(``retention.ms=-1``: a chain with its first links deleted cannot be verified),
``references`` is compacted (the newest profile per ``model@version``). Topics
that exist already are left as they are; :func:`check_configs` says which of
them would delete what their role must keep, and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from agents.config import Settings
from agents.kafka import client_config
from agents.runtime.partitions import missing_counts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    #: records are never deleted for age or size (an audit trail)
    keep_forever: bool = False
    #: records may be as large as DRIFTLINE_MAX_MESSAGE_BYTES (batches of events,
    #: reference profiles with their trusted set): Apache Kafka's default limit of
    #: 1 MB per record would refuse a batch of ~1,000 events or a profile of ~33
    #: features, while the embedded broker has no limit at all
    large: bool = False
    description: str = ""

    def config(self, max_message_bytes: int | None = None) -> dict[str, str]:
        """The topic configuration this role needs, as sent when the topic is created;
        ``max_message_bytes``: the largest record a ``large`` topic must take."""
        config: dict[str, str] = {}
        if self.large and max_message_bytes is not None:
            config["max.message.bytes"] = str(max_message_bytes + 65_536)  # + framing
        if self.compacted:
            return {**config, "cleanup.policy": "compact"}
        if self.keep_forever:
            return {**config, "cleanup.policy": "delete", "retention.ms": "-1",
                    "retention.bytes": "-1"}
        return config


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("predictions", large=True, description="PredictionEvent or batch, key model"),
    TopicSpec("features", large=True, description="FeatureEvent or batch, key model"),
    TopicSpec("labels", large=True, description="LabelEvent or batch, key model"),
    TopicSpec("references", compacted=True, large=True,
              description="ReferenceProfile, key model@version"),
    TopicSpec("drift", description="DriftReport, key model"),
    TopicSpec("kpi", description="KpiReport, key model"),
    TopicSpec("commands", keep_forever=True, description="Command (signed), key model"),
    TopicSpec(
        "deployments", keep_forever=True, description="DeploymentEvent (hash-chained), key model"
    ),
    TopicSpec("training-data", large=True, description="TrainingRecord or batch, key model"),
    TopicSpec("training-data.clean", description="TrainingRecord, key model"),
    TopicSpec("training-data.quarantine", description="QuarantinedRecord, key model"),
    TopicSpec("poisoning", description="PoisoningReport, key model"),
    TopicSpec("deadletter", description="DeadLetter, original key"),
)
NAMES = tuple(t.name for t in CATALOGUE)


def ensure_topics(settings: Settings, *, timeout_s: float = 15.0) -> list[str]:
    """Create the catalogue's missing topics, each with its role's configuration; return
    the names created.

    A missing topic gets ``settings.partitions`` partitions, or the count of the
    existing topics it is read together with (agents.runtime.partitions.missing_counts).
    Existing topics are left as they are (their partition count and configuration
    included).
    """
    admin = AdminClient(client_config(settings.bootstrap))
    listed = admin.list_topics(timeout=timeout_s).topics
    found = {
        s.name: len(listed[settings.topic(s.name)].partitions)
        for s in CATALOGUE
        if settings.topic(s.name) in listed
    }
    counts = missing_counts(settings, found, [s.name for s in CATALOGUE if s.name not in found])
    wanted = [
        NewTopic(
            settings.topic(spec.name),
            num_partitions=counts[spec.name],
            replication_factor=-1,
            config=spec.config(settings.max_message_bytes),
        )
        for spec in CATALOGUE
        if spec.name not in found
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


def config_problems(
    spec: TopicSpec, topic: str, found: Mapping[str, str], bootstrap: str
) -> list[str]:
    """What in a topic's configuration ``found`` works against its role, a sentence each
    with the command that fixes it. Settings the broker did not report are not judged.

    >>> spec = next(s for s in CATALOGUE if s.name == "deployments")
    >>> config_problems(spec, "deployments", {"retention.ms": "604800000"}, "k:9092")[0][:68]
    'topic deployments deletes records older than 7 days (retention.ms=60'
    >>> config_problems(spec, "deployments", {"retention.ms": "-1"}, "k:9092")
    []
    """
    fix = (
        f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
        f"--entity-name {topic} --add-config"
    )
    problems = []
    if spec.keep_forever:
        why = "the audit chain cannot be verified once its first records are gone"
        ms = found.get("retention.ms")
        if ms is not None and ms.lstrip("-").isdigit() and int(ms) >= 0:
            problems.append(
                f"topic {topic} deletes records older than {_duration(int(ms))} "
                f"(retention.ms={ms}): {why}; keep them for ever with: {fix} retention.ms=-1"
            )
        size = found.get("retention.bytes")
        if size is not None and size.lstrip("-").isdigit() and int(size) >= 0:
            problems.append(
                f"topic {topic} deletes its oldest records beyond {size} bytes per partition "
                f"(retention.bytes={size}): {why}; keep them with: {fix} retention.bytes=-1"
            )
        policy = found.get("cleanup.policy")
        if policy is not None and "compact" in policy:
            problems.append(
                f"topic {topic} is compacted (cleanup.policy={policy}): compaction keeps one "
                f"record per model and {why}; use: {fix} cleanup.policy=delete,retention.ms=-1"
            )
    if spec.compacted:
        policy = found.get("cleanup.policy")
        if policy is not None and "compact" not in policy:
            problems.append(
                f"topic {topic} is not compacted (cleanup.policy={policy}): a model's reference "
                f"profile is deleted with age and drift falls back to warm-up references; "
                f"compact it with: {fix} cleanup.policy=compact"
            )
    return problems


def check_configs(settings: Settings, *, timeout_s: float = 15.0) -> list[str]:
    """Describe the catalogue topics whose role needs a setting (kept for ever, compacted);
    log a warning per problem (see :func:`config_problems`) and return them. A broker
    that cannot describe configurations is noted, not an error."""
    admin = AdminClient(client_config(settings.bootstrap))
    specs = {settings.topic(s.name): s for s in CATALOGUE if s.config()}
    try:
        futures = admin.describe_configs(
            [ConfigResource("topic", topic) for topic in specs], request_timeout=timeout_s
        )
        found = {
            resource.name: {
                k: v.value
                for k, v in future.result(timeout=timeout_s).items()
                if v.value is not None
            }
            for resource, future in futures.items()
        }
    except Exception as exc:  # the check is advice: the worker runs without it
        logger.warning(
            "could not check the configuration of %s (%s)", ", ".join(sorted(specs)), exc
        )
        return []
    problems = [
        p
        for topic, spec in specs.items()
        for p in config_problems(spec, topic, found.get(topic, {}), settings.bootstrap)
    ]
    for problem in problems:
        logger.warning("%s", problem)
    return problems


def _duration(ms: int) -> str:
    """A retention as people say it.

    >>> _duration(604_800_000), _duration(3_600_000), _duration(1500)
    ('7 days', '1 hours', '1500 ms')
    """
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"
