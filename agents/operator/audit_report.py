"""`driftline audit report`: one self-contained HTML file a reviewer can read and sign.

This module gathers (:func:`gather` -> :class:`AuditData`, typed, every time
already in UTC words; the charts' data and the tables come from
``agents.operator.audit_sections``); ``agents.operator.audit_charts`` draws the
charts and ``agents.operator.audit_render`` writes the page. For one model and a time range:

* the range in words and UTC (an open range: the range the records cover), who
  generated the report (user, host), with which driftline version, and when;
* the policy given (``--policy`` / ``DRIFTLINE_POLICY``, else the built-in
  defaults) with the SHA-256 of its file, read by
  :func:`agents.operator.inventory.policy_in_force` as ``driftline inventory`` reads it;
* the registry's versions of the model (checksum, model card, evaluation,
  committed state), read by :func:`agents.operator.inventory.describe_model`;
* PSI per feature, the multivariate signal and the KPIs per version and variant
  as charts with the drift levels, targets and rollback limits drawn, flagged
  windows marked and both axes labelled;
* every command with its evidence (windows as UTC times), the rule it applied
  and the policy file's SHA-256 it was decided under, flagged where it is not
  the policy given (``agents.operator.audit_rules``), and what the controller
  did with it;
* the deployment events in the range with their hash and previous hash, and the
  audit-chain check over all of the model's events (a range cannot prove it);
* the training-data quarantine as tables, records held for lack of a trusted set
  included.

No script, no stylesheet or font from the network: it opens in a browser on an
air-gapped machine and can be archived as is; its Content-Security-Policy
forbids the browser any script and any fetch. Memory: the model's reports in the
range (the topics are read whole, as before), the estimates table at most
:data:`agents.operator.audit_sections.MAX_ESTIMATE_ROWS` rows.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson

from agents.config import Settings
from agents.controller.registry import Registry
from agents.operator import audit_charts as charts
from agents.operator import audit_sections as sections
from agents.operator.audit_sections import Decision, when
from agents.operator.inventory import ModelEntry, describe_model, policy_in_force
from agents.operator.tail import read_to_end
from schemas.events import event_time_ms
from schemas.policy import Policy
from streams.policy.chain import ChainCheck, event_hash, verify_chain

logger = logging.getLogger(__name__)

#: The page may use its own inline style and nothing else: no script runs and nothing is
#: fetched, even if a value from a topic ever reached the page unescaped.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
#: ``end_ms`` at or after this (2100-01-01) is an open end; ``start_ms`` <= 0 an open start.
OPEN_END_MS = 4_102_444_800_000


@dataclass(frozen=True)
class Generator:
    user: str
    host: str
    version: str  # of the driftline package
    at: datetime  # UTC


def who_generated(now: datetime | None = None) -> Generator:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    try:
        release = version("driftline")
    except PackageNotFoundError:
        release = "unknown (not installed)"
    return Generator(user, socket.gethostname(), release, now or datetime.now(UTC))


@dataclass(frozen=True)
class TimeRange:
    start_ms: int | None  # None: open (no --from)
    end_ms: int | None  # None: open (no --to)
    covered: tuple[int, int] | None  # first and last time of the records shown


@dataclass(frozen=True)
class PolicyInForce:
    policy: Policy
    file: str | None  # None: the built-in defaults
    sha256: str | None


@dataclass(frozen=True)
class ChainRow:
    at: str  # UTC
    action: str
    status: str
    reason: str
    state: str
    command_id: str
    prev_hash: str
    hash: str
    link: str  # "links" or what is wrong with this event's link


@dataclass(frozen=True)
class Quarantine:
    statuses: dict[str, int]  # windows per status
    reasons: list[str]  # columns of ``sources``
    sources: dict[str, dict[str, int]]  # source -> seen, passed and one count per reason
    held: int
    released: int
    unscreened: int


@dataclass(frozen=True)
class AuditData:
    model: str
    range: TimeRange
    generator: Generator
    policy: PolicyInForce
    entry: ModelEntry | None  # the registry's view of the model; None: not registered
    registry_problem: str | None  # why the registry could not be read
    counts: dict[str, int]
    check: ChainCheck
    psi: charts.Chart
    multivariate: charts.Chart | None
    multivariate_rows: list[list[str]]
    kpis: list[charts.Chart]
    estimates: list[list[str]]
    decisions: list[Decision]
    chain: list[ChainRow]
    quarantine: Quarantine
    #: the concept-drift detector per version and variant (sections.concept_rows)
    concept: list[list[str]] = field(default_factory=list)
    #: per shadow version, its windows against the served version (sections.shadow_rows)
    shadows: dict[str, list[list[str]]] = field(default_factory=dict)


def _covered(*groups: tuple[list[dict[str, Any]], tuple[str, ...]]) -> tuple[int, int] | None:
    times = [
        t
        for docs, fields in groups
        for d in docs
        for f in fields
        if (t := sections.time_ms(d.get(f))) is not None
    ]
    return (min(times), max(times)) if times else None


def gather(
    model: str,
    *,
    start_ms: int,
    end_ms: int,
    drift: list[dict[str, Any]],
    kpi: list[dict[str, Any]],
    commands: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    poisoning: list[dict[str, Any]],
    check: ChainCheck,
    policy: PolicyInForce | None = None,
    entry: ModelEntry | None = None,
    registry_problem: str | None = None,
    generator: Generator | None = None,
) -> AuditData:
    """Everything the page shows, from the model's records in the range (JSON dicts)."""
    policy = policy or PolicyInForce(Policy(), None, None)
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in kpi:  # the newest revision of each window (count windows: by number)
        index = r.get("window_index")
        key = (r["model_version"], r["variant"],
               str(r["window_start"]) + ("" if index is None else f"#{index}"))
        if key not in latest or r.get("revision", 0) >= latest[key].get("revision", 0):
            latest[key] = r
    covered = _covered(
        (drift, ("window_start", "window_end")),
        (kpi, ("window_start", "window_end")),
        (commands, ("issued_at",)),
        (deployments, ("at",)),
        (poisoning, ("window_start", "window_end")),
    )
    multivariate, joint_rows = sections.multivariate(drift, policy.policy.drift_for(model))
    return AuditData(
        model=model,
        range=TimeRange(
            start_ms if start_ms > 0 else None, end_ms if end_ms < OPEN_END_MS else None, covered
        ),
        generator=generator or who_generated(),
        policy=policy,
        entry=entry,
        registry_problem=registry_problem,
        counts={
            "drift reports": len(drift),
            "KPI windows": len(latest),
            "commands": len(commands),
            "deployment events": len(deployments),
            "poisoning reports": len(poisoning),
        },
        check=check,
        psi=sections.psi(drift, policy.policy.drift_for(model)),
        multivariate=multivariate,
        multivariate_rows=joint_rows,
        kpis=sections.kpis(latest, policy.policy, model),
        estimates=sections.estimate_rows(latest),
        concept=sections.concept_rows(latest),
        shadows=sections.shadow_rows(latest),
        decisions=sections.decisions(
            commands, deployments, policy.policy.decisions_for(model), policy.sha256
        ),
        chain=chain_rows(deployments),
        quarantine=quarantine(poisoning),
    )


def chain_rows(deployments: list[dict[str, Any]]) -> list[ChainRow]:
    """Each event with its hashes and whether it links to the one before it in the range
    (the first one's predecessor may lie before the range: the whole-chain check covers it)."""
    rows, previous = [], None
    for e in deployments:
        problems = []
        if event_hash(e) != e.get("hash"):
            problems.append("its hash does not match its content")
        prev = str(e.get("prev_hash", ""))
        if prev == "":
            problems.append("unchained (a refusal for a model the registry does not know)")
        elif previous is not None and prev != previous and e.get("hash") != previous:
            problems.append("prev_hash is not the hash of the event before it")
        if prev:
            previous = str(e.get("hash"))
        state = e.get("state") or {}
        rows.append(
            ChainRow(
                at=when(e.get("at"), seconds=True),
                action=str(e.get("action")),
                status=str(e.get("status")),
                reason=str(e.get("reason", "")),
                state=(
                    f"champion {state.get('champion') or 'none'}, canary "
                    f"{state.get('canary') or 'none'} at {state.get('canary_weight', 0):g}"
                    + "".join(
                        f", {role} {state[role]}"
                        for role in ("shadow", "standby")
                        if state.get(role)
                    )
                ),
                command_id=str(e.get("command_id")),
                prev_hash=prev,
                hash=str(e.get("hash")),
                link="; ".join(problems) or "links",
            )
        )
    return rows


def quarantine(poisoning: list[dict[str, Any]]) -> Quarantine:
    statuses: Counter[str] = Counter(str(p.get("status")) for p in poisoning)
    sources: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: set[str] = set()
    for p in poisoning:
        for source, counts in (p.get("sources") or {}).items():
            row = sources[source]
            row["seen"] += int(counts.get("seen", 0))
            row["passed"] += int(counts.get("passed", 0))
            for reason, n in (counts.get("quarantined") or {}).items():
                row[reason] += int(n)
                reasons.add(reason)
    return Quarantine(
        statuses=dict(sorted(statuses.items())),
        reasons=sorted(reasons),
        sources={s: dict(r) for s, r in sorted(sources.items())},
        held=sum(int(p.get("held", 0)) for p in poisoning),
        released=sum(int(p.get("released", 0)) for p in poisoning),
        unscreened=sum(int(p.get("unscreened", 0)) for p in poisoning),
    )


def render(model: str, **arguments: Any) -> str:
    """The HTML page of :func:`gather`'s data (``arguments``: gather's, by name)."""
    from agents.operator.audit_render import page

    return page(gather(model, **arguments))


def build(
    settings: Settings, model: str, *, start_ms: int, end_ms: int, registry: Registry | None = None
) -> str:
    """Read the output topics and the registry and render the report for ``model`` in
    ``[start, end)``; the policy is ``settings.policy`` (the built-in defaults without)."""
    policy, digest = policy_in_force(settings.policy)

    def docs(topic: str) -> list[dict[str, Any]]:
        found = []
        for value in read_to_end(settings.bootstrap, settings.topic(topic)):
            doc = orjson.loads(value)
            if isinstance(doc, dict) and doc.get("model") == model:
                found.append(doc)
        return found

    def within(items: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
        return [d for d in items if start_ms <= event_time_ms(d[field]) < end_ms]

    entry, problem = None, None
    if registry is not None:
        try:
            entry = describe_model(model, registry, policy)
        except Exception as exc:  # a registry down must not hide the rest of the trail
            logger.warning("registry %s could not be read: %s", settings.registry, exc)
            problem = f"the registry {settings.registry} could not be read: {exc}"
    deployments = docs("deployments")
    return render(
        model,
        start_ms=start_ms,
        end_ms=end_ms,
        drift=within(docs("drift"), "window_start"),
        kpi=within(docs("kpi"), "window_start"),
        commands=within(docs("commands"), "issued_at"),
        deployments=within(deployments, "at"),
        poisoning=within(docs("poisoning"), "window_start"),
        check=verify_chain(deployments),  # the whole chain: a range cannot prove it
        policy=PolicyInForce(policy, settings.policy or None, digest),
        entry=entry,
        registry_problem=problem,
    )
