"""Partition counts a worker works with: what it finds on the broker, checked at start.

Each agent reads its input topics in one stream and keeps its state in one
Faust table whose changelog has one partition per input partition (Faust
writes a message's state to the changelog partition of the message's own
partition, and refuses with ``PartitionsMismatch`` when the counts differ).
So an agent's input topics must agree with each other and with its changelog,
whatever ``--partitions`` says: :func:`plan` reads the counts the broker has,
gives each agent's table the count of its inputs (logged when it is not
``settings.partitions``), and refuses to start, with a sentence naming each
topic and its count, when they disagree. :func:`missing_counts` lets topics
created at start follow the topics they are read with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka.admin import AdminClient

from agents.config import Settings
from agents.kafka import client_config
from schemas.errors import DriftlineError

logger = logging.getLogger(__name__)

#: What each agent reads in one stream (catalogue names) and its table
#: (agents.<name>_agent; tests/agents/runtime/test_partitions.py checks they agree).
AGENT_INPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "drift": (("predictions", "features", "references"), "drift-state"),
    "kpi": (("predictions", "labels", "references"), "kpi-state"),
    "poisoning": (("training-data", "references"), "poisoning-state"),
    "policy": (("drift", "kpi", "poisoning", "deployments"), "policy-state"),
    "controller": (("commands",), "controller-progress"),
}


class PartitionError(DriftlineError):
    """Topics read together have different partition counts."""


def changelog(settings: Settings, table: str) -> str:
    """The changelog topic Faust keeps a table in."""
    return f"{settings.app_id}-{table}-changelog"


def _groups() -> list[set[str]]:
    """Topics that must share one count: those read by one agent, joined through shared ones."""
    groups: list[set[str]] = []
    for sources, _ in AGENT_INPUTS.values():
        joined = set(sources)
        for group in [g for g in groups if g & joined]:
            joined |= group
            groups.remove(group)
        groups.append(joined)
    return groups


def missing_counts(
    settings: Settings, found: Mapping[str, int], names: Iterable[str]
) -> dict[str, int]:
    """Partition counts for the topics ``names`` (catalogue names) about to be created: a
    topic read together with existing topics that agree on a count gets that count
    (logged when it is not ``settings.partitions``); others get ``settings.partitions``.

    >>> s = Settings(partitions=1)
    >>> missing_counts(s, {"predictions": 3}, ["features", "labels", "commands"])
    {'features': 3, 'labels': 3, 'commands': 1}
    >>> missing_counts(s, {"predictions": 3, "features": 2}, ["labels"])
    {'labels': 1}
    """
    out: dict[str, int] = {}
    for name in names:
        group = next((g for g in _groups() if name in g), {name})
        seen = {found[t] for t in group if t in found}
        out[name] = seen.pop() if len(seen) == 1 else settings.partitions
        if out[name] != settings.partitions:
            logger.warning(
                "creating %s with %d partitions, like %s (not the %d asked for): "
                "topics read together need one count",
                settings.topic(name),
                out[name],
                ", ".join(sorted(settings.topic(t) for t in group if t in found)),
                settings.partitions,
            )
    return out


def _count(n: int) -> str:
    return f"{n} partition" + ("" if n == 1 else "s")


def check(settings: Settings, agents: Iterable[str], found: Mapping[str, int]) -> dict[str, int]:
    """The partition count of each agent's table, from ``found`` (topic name with its
    prefix, or changelog name -> partitions). Raises :class:`PartitionError` when an
    agent's inputs disagree, or its existing changelog has another count.

    >>> s = Settings(partitions=1)
    >>> check(s, ["kpi"], {"predictions": 3, "labels": 3})
    {'kpi': 3}
    >>> try:
    ...     check(s, ["kpi"], {"predictions": 6, "labels": 1})
    ... except PartitionError as exc:
    ...     print(exc)
    the kpi agent reads predictions (6 partitions) and labels (1 partition) in one stream \
with one table, so they need one partition count: add partitions to the smaller ones \
(kafka-topics.sh --bootstrap-server 127.0.0.1:9092 --alter --topic NAME --partitions 6) \
or recreate them
    """
    out: dict[str, int] = {}
    for agent in agents:
        sources, table = AGENT_INPUTS[agent]
        topics = [settings.topic(s) for s in sources]
        counts = {t: found[t] for t in topics if t in found}
        if len(set(counts.values())) > 1:
            most = max(counts.values())
            said = [f"{t} ({_count(n)})" for t, n in counts.items()]
            raise PartitionError(
                f"the {agent} agent reads {', '.join(said[:-1])} and {said[-1]} in one stream "
                f"with one table, so they need one partition count: add partitions to the "
                f"smaller ones (kafka-topics.sh --bootstrap-server {settings.bootstrap} --alter "
                f"--topic NAME --partitions {most}) or recreate them"
            )
        n = next(iter(counts.values()), settings.partitions)
        kept = found.get(changelog(settings, table))
        if kept is not None and kept != n:
            raise PartitionError(
                f"the {agent} agent's state topic {changelog(settings, table)} has "
                f"{_count(kept)} but its input topics ({', '.join(topics)}) have {n}: the state "
                f"was kept for another partition layout; start with another --app-id (the "
                f"state starts empty) or bring the input topics back to {kept}"
            )
        if n != settings.partitions:
            logger.warning(
                "the %s agent works with the %s of its input topics (%s), not the %d asked for",
                agent,
                _count(n),
                ", ".join(topics),
                settings.partitions,
            )
        out[agent] = n
    return out


def found_counts(settings: Settings, *, timeout_s: float = 15.0) -> dict[str, int]:
    """Partitions per topic on the broker (every topic it lists)."""
    admin = AdminClient(client_config(settings.bootstrap))
    return {
        name: len(meta.partitions)
        for name, meta in admin.list_topics(timeout=timeout_s).topics.items()
    }


def plan(settings: Settings, agents: Iterable[str], *, timeout_s: float = 15.0) -> dict[str, int]:
    """:func:`check` against the counts on the broker: each agent's table partitions."""
    return check(settings, agents, found_counts(settings, timeout_s=timeout_s))
