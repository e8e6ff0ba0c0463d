"""`driftline replay`: recompute drift and KPI reports offline, and compare them with the live ones.

The agents' handlers are free of Faust (``handle(raw, origin, table)``), so a
replay runs the very same code in this process, with dictionaries for tables:

1. read the input topics (``references``, ``predictions``, ``features``,
   ``labels``) and keep the messages whose Kafka timestamp is in
   ``[from, to)``, in offset order per partition, the topics merged by
   timestamp as the worker's single stream per agent receives them;
2. feed them to a fresh DriftHandler and KpiHandler (which reads ``references`` too:
   the score calibration its estimates before labels come from) with the policy given (and
   ``DRIFTLINE_MAX_MODELS``: the same models are admitted in the same order;
   ``DRIFTLINE_MAX_FUTURE_S``: the same events are too far ahead), then send the
   KPI revisions still owed (the live worker's timer sends them once a window is
   quiet for ``revision_delay``): the last revision of every window, and its
   final one, hold the same numbers as live;
3. replay the decisions: the policy agent's handler, with the policy given,
   over the reports and deployment events it was handed live (``drift``,
   ``kpi``, ``poisoning``, ``deployments`` in the range, merged by timestamp);
   command ids derive from a decision's inputs, so the same decision has the
   same id;
4. with ``verify``, compare with what was emitted then, listing any
   difference (the fields that differ, or missing on either side):
   * every DriftReport, by model, version and window;
   * the last revision of each KPI window, on what does not depend on how
     predictions and labels interleaved (counts, metrics to floating-point
     rounding, breaches, segments): its revision number, ``late``, ``concept_drift`` and so
     ``status`` (``warn`` means concept drift) do (the concept detector is fed
     in arrival order), and are not compared;
   * every command the policy agent issued, by command id (the signature is
     not compared: it depends on the key, not the decision; nor is
     ``policy_sha256``: it names the file, and a replay under another file
     that decides the same is the same decision).

State starts empty at ``from``: a replay from the start of the topics
reproduces the live run exactly (drift reports are a function of the
predictions and references in order); one that starts mid-stream rebuilds a
warm-up reference from its first events and cannot match windows whose
judgement needed earlier state (count windows, ``drift.window`` or
``kpi.window: {events: N}``, are numbered from the version's first event replayed:
only a replay from the start of the topics gives the live windows; their reports
are told apart by ``window_index``). A KPI window the live run has not retired yet
may show a difference that only means its last revision was not sent yet.
Decisions are replayed from the live reports (what the policy agent saw), not
from the recomputed ones, so a changed ``decisions`` section shows its effect
on exactly the history that happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.config import Settings
from agents.controller.keys import command_key
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.operator.tail import read_messages
from schemas.policy import Policy

INPUTS = ("references", "predictions", "features", "labels")
#: what the policy agent consumes (agents.policy.agent.SOURCES)
DECISION_INPUTS = ("drift", "kpi", "poisoning", "deployments")
#: KPI fields that depend on the order predictions and labels arrived in
KPI_ORDER_DEPENDENT = ("revision", "late", "concept_drift", "status", "notes")


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
    commands: list[dict[str, Any]] = field(default_factory=list)
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)


def identity(kind: str, report: dict[str, Any]) -> str:
    if kind == "command":
        return f"command/{report['model']}/{report['type']}/{report['command_id']}"
    parts = [kind, report["model"], report["model_version"]]
    if kind == "kpi":
        parts += [report["variant"], f"r{report.get('revision', 0)}"]
    window = str(report["window_start"])
    if report.get("window_index") is not None:  # count windows: their number names them
        window += f"#{report['window_index']}"
    return "/".join([*parts, window])


def recompute(messages: Iterable[Any], policy: Policy, settings: Settings,
              *, model: str | None = None) -> ReplayResult:
    """Run the drift and KPI handlers over ``messages`` (confluent-kafka-like objects)."""
    key = command_key(settings) if policy.pii else b""  # the worker's PII tokens
    drift = DriftHandler(policy=policy, predictions_topic=settings.topic("predictions"),
                         features_topic=settings.topic("features"),
                         max_message_bytes=settings.max_message_bytes,
                         references_topic=settings.topic("references"), pii_key=key,
                         max_models=settings.max_models,
                         max_future_ms=int(settings.max_future_s * 1000))
    kpi = KpiHandler(policy=policy, predictions_topic=settings.topic("predictions"),
                     labels_topic=settings.topic("labels"),
                     references_topic=settings.topic("references"),
                     max_message_bytes=settings.max_message_bytes, pii_key=key,
                     max_models=settings.max_models,
                     max_future_ms=int(settings.max_future_s * 1000))
    # references: the drift agent's reference, the KPI agent's calibration (estimates)
    routes = {settings.topic("references"): [drift, kpi], settings.topic("features"): [drift],
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
    # The revisions the live worker's timer sends once a window is quiet
    # (kpi.revision_delay): owed at the end of the range, so the last revision of
    # every window holds all it was given, as live.
    result.kpi.extend(orjson.loads(r.model_dump_json()) for r in kpi.flush(tables["kpi"]))
    return result


def decisions(messages: Iterable[Any], policy: Policy, settings: Settings, *,
              model: str | None = None) -> list[dict[str, Any]]:
    """The policy agent's commands over ``messages`` (confluent-kafka-like, in order)."""
    from agents.controller.issuers import signing_key
    from agents.policy.agent import PolicyHandler

    handler = PolicyHandler(policy, signing_key(settings, "policy"), settings)
    table: dict[bytes, bytes] = {}
    out: list[dict[str, Any]] = []
    for msg in messages:
        if model is not None and (msg.key() or b"").decode(errors="replace") != model:
            continue
        origin = Origin(msg.topic(), msg.partition(), msg.offset(), msg.key())
        outcome = handler.handle(msg.value(), origin, table)
        out.extend(orjson.loads(c.model_dump_json()) for c in outcome.reports)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, numbers to floating-point rounding: a window's sums fold the same values
    in another grouping when predictions and labels interleaved otherwise (1e-17 apart)."""
    if isinstance(a, float | int) and isinstance(b, float | int) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _differing(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(k for k in set(a) | set(b) if k not in ignore and not _same(a.get(k), b.get(k)))


def _latest(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last revision of each KPI window, by model, version, variant and window."""
    out: dict[str, dict[str, Any]] = {}
    for r in reports:
        key = "/".join(["kpi", r["model"], r["model_version"], r["variant"],
                        str(r["window_start"])])
        if r.get("window_index") is not None:  # count windows: their number names them
            key += f"#{r['window_index']}"
        if key not in out or r["revision"] >= out[key]["revision"]:
            out[key] = r
    return out


def compare(result: ReplayResult, live: dict[str, list[dict[str, Any]]]) -> None:
    """Fill ``result.differences`` and ``compared`` from the live reports by kind."""
    drift = ({identity("drift", r): r for r in result.drift},
             {identity("drift", r): r for r in live.get("drift", [])}, ())
    kpi = (_latest(result.kpi), _latest(live.get("kpi", [])), KPI_ORDER_DEPENDENT)
    commands = ({identity("command", c): c for c in result.commands},
                {identity("command", c): c for c in live.get("commands", [])
                 if c.get("issued_by") == "policy"}, ("signature", "policy_sha256"))
    replayed_windows = {(r["model"], r["model_version"], str(r["window_start"]))
                        for r in result.drift + result.kpi}
    for mine, theirs, ignore in (drift, kpi, commands):
        for key in sorted(set(mine) | set(theirs)):
            a, b = mine.get(key), theirs.get(key)
            if b is not None and a is None:
                window = (b.get("model"), b.get("model_version"), str(b.get("window_start")))
                if "window_start" in b and window not in replayed_windows:
                    continue  # a window outside the replayed range
                result.differences.append(Difference(key, "only live"))
            elif a is not None and b is None:
                result.differences.append(Difference(key, "only replayed"))
            elif a is not None and b is not None:
                result.compared += 1
                fields = _differing(a, b, ignore)
                if fields:
                    result.differences.append(Difference(key, "different", fields))


def run(settings: Settings, policy: Policy, *, from_ms: int, to_ms: int,
        model: str | None = None, verify: bool = False) -> ReplayResult:
    topics = [settings.topic(t) for t in INPUTS]
    messages = [m for m in read_messages(settings.bootstrap, topics)
                if from_ms <= m.timestamp()[1] < to_ms]
    messages.sort(key=lambda m: m.timestamp()[1])  # stable: offset order within a partition
    result = recompute(messages, policy, settings, model=model)
    seen = [m for m in read_messages(settings.bootstrap,
                                     [settings.topic(t) for t in DECISION_INPUTS])
            if from_ms <= m.timestamp()[1] < to_ms]
    seen.sort(key=lambda m: m.timestamp()[1])
    result.commands = decisions(seen, policy, settings, model=model)
    if verify:
        live: dict[str, list[dict[str, Any]]] = {}
        for kind, topic in (("drift", "drift"), ("kpi", "kpi"), ("commands", "commands")):
            docs = [orjson.loads(m.value())
                    for m in read_messages(settings.bootstrap, [settings.topic(topic)])
                    if kind != "commands" or from_ms <= m.timestamp()[1] < to_ms]
            live[kind] = [d for d in docs if model is None or d.get("model") == model]
        compare(result, live)
    return result
