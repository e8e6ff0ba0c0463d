"""`driftline replay`: recompute drift and KPI reports offline, and compare them with the live ones.

The agents' handlers are free of Faust (``handle(raw, origin, table)``), so a
replay runs the very same code in this process, with dictionaries for tables:

1. read the input topics (``references``, ``predictions``, ``features``,
   ``labels``) and keep the messages whose Kafka timestamp is in
   ``[from, to)``, in offset order per partition, the topics merged by
   timestamp as the worker's single stream per agent receives them;
2. feed them to a fresh DriftHandler and KpiHandler with the policy given (and
   ``DRIFTLINE_MAX_MODELS``: the same models are admitted in the same order);
3. with ``verify``, read ``drift`` and compare every recomputed DriftReport
   with the live one of the same model, version and window: equal, different
   (the fields that differ are listed), or missing on either side.

State starts empty at ``from``: a replay from the start of the topics
reproduces the live run exactly (drift reports are a function of the
predictions and references in order); one that starts mid-stream rebuilds a
warm-up reference from its first events and cannot match windows whose
judgement needed earlier state. KPI reports are recomputed but not verified:
their revisions depend on how the broker interleaved predictions and labels
for the live worker. Decisions (commands) are not replayed yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.codec import Origin
from agents.config import Settings
from agents.drift_handler import DriftHandler
from agents.keys import command_key
from agents.kpi_handler import KpiHandler
from agents.tail import read_messages
from schemas.policy import Policy

INPUTS = ("references", "predictions", "features", "labels")


@dataclass
class Difference:
    key: str
    what: str  # "different", "only live", "only replayed"
    fields: list[str] = field(default_factory=list)


@dataclass
class ReplayResult:
    messages: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    kpi: list[dict[str, Any]] = field(default_factory=list)
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)


def identity(kind: str, report: dict[str, Any]) -> str:
    parts = [kind, report["model"], report["model_version"]]
    if kind == "kpi":
        parts += [report["variant"], f"r{report.get('revision', 0)}"]
    return "/".join([*parts, str(report["window_start"])])


def recompute(messages: Iterable[Any], policy: Policy, settings: Settings,
              *, model: str | None = None) -> ReplayResult:
    """Run the drift and KPI handlers over ``messages`` (confluent-kafka-like objects)."""
    key = command_key(settings) if policy.pii else b""  # the worker's PII tokens
    drift = DriftHandler(policy=policy, predictions_topic=settings.topic("predictions"),
                         features_topic=settings.topic("features"),
                         max_message_bytes=settings.max_message_bytes,
                         references_topic=settings.topic("references"), pii_key=key,
                         max_models=settings.max_models)
    kpi = KpiHandler(policy=policy, predictions_topic=settings.topic("predictions"),
                     labels_topic=settings.topic("labels"),
                     max_message_bytes=settings.max_message_bytes, pii_key=key,
                     max_models=settings.max_models)
    routes = {settings.topic("references"): [drift], settings.topic("features"): [drift],
              settings.topic("predictions"): [drift, kpi], settings.topic("labels"): [kpi]}
    tables: dict[str, dict[bytes, bytes]] = {"drift": {}, "kpi": {}}
    result = ReplayResult()
    for msg in messages:
        key = msg.key()
        if model is not None and key is not None and key.decode(errors="replace").split("@")[0] \
                != model:
            continue
        result.messages += 1
        origin = Origin(msg.topic(), msg.partition(), msg.offset(), key)
        for handler in routes.get(msg.topic(), []):
            outcome = handler.handle(msg.value(), origin, tables[handler.AGENT])
            out = result.drift if handler.AGENT == "drift" else result.kpi
            out.extend(orjson.loads(r.model_dump_json()) for r in outcome.reports)
    return result


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def compare(result: ReplayResult, live: dict[str, list[dict[str, Any]]]) -> None:
    """Fill ``result.differences`` and ``compared`` from the live reports by kind."""
    for kind, replayed in (("drift", result.drift),):
        mine = {identity(kind, r): r for r in replayed}
        theirs = {identity(kind, r): r for r in live.get(kind, [])}
        windows = {(r["model"], r["model_version"], str(r["window_start"])) for r in replayed}
        for key in sorted(set(mine) | set(theirs)):
            a, b = mine.get(key), theirs.get(key)
            if b is not None and a is None:
                if (b["model"], b["model_version"], str(b["window_start"])) not in windows:
                    continue  # a window outside the replayed range
                result.differences.append(Difference(key, "only live"))
            elif a is not None and b is None:
                result.differences.append(Difference(key, "only replayed"))
            elif a is not None and b is not None:
                result.compared += 1
                fields = _differing(a, b)
                if fields:
                    result.differences.append(Difference(key, "different", fields))


def run(settings: Settings, policy: Policy, *, from_ms: int, to_ms: int,
        model: str | None = None, verify: bool = False) -> ReplayResult:
    topics = [settings.topic(t) for t in INPUTS]
    messages = [m for m in read_messages(settings.bootstrap, topics)
                if from_ms <= m.timestamp()[1] < to_ms]
    messages.sort(key=lambda m: m.timestamp()[1])  # stable: offset order within a partition
    result = recompute(messages, policy, settings, model=model)
    if verify:
        docs = [orjson.loads(m.value())
                for m in read_messages(settings.bootstrap, [settings.topic("drift")])]
        compare(result, {"drift": [d for d in docs if model is None or d.get("model") == model]})
    return result
