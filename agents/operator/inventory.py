"""`driftline inventory`: the AI register, every model with its owner, risk and status.

One :class:`ModelEntry` per model the registry knows, each with its versions
(checksum, model card, evaluation with its held-out set's digest and size and
its per-segment metrics), joined with what the topics say:

* **serving now**: the resulting state of the model's last event on
  ``deployments`` (the controller's hash-chained trail); the registry's
  committed state where the trail has no event, and a note when the two differ
  (a commit the controller has not published yet, or a trail read in part).
  The state names the shadow (deployed by a ``shadow`` command: it answers the
  champion's requests, unserved) and the standby (the champion before a
  blue-green ``switch``, kept ready for a switch back). A version with no role
  in the state whose latest KPI reports are of variant ``shadow`` or
  ``challenger`` is shown so (traffic a serving app sends on its own);
* **latest drift, KPI and poisoning reports**: per model version (drift), per
  version and variant (KPI, newest window then highest revision) and per model
  (poisoning), newest by event time, from the last ``last_n`` messages of each
  partition of ``drift``, ``kpi`` and ``poisoning`` (default
  :data:`DEFAULT_LAST_N`). Reports are keyed by model, so a model's reports
  share a partition; a model with no report among those messages shows "none
  seen", which is what it says: none in the window read, not none ever;
* **open quarantine**: records on ``training-data.quarantine`` not released,
  counted per model over the whole topic (a record held months ago is still
  open), as ``driftline quarantine list`` counts them;
* **the audit chain**: ``deployments`` read whole and checked with
  :func:`streams.policy.chain.verify_chain`, the code of ``driftline audit verify``;
* **the policy in force**: the file given (``--policy`` / ``DRIFTLINE_POLICY``)
  with the SHA-256 of its bytes, or the built-in defaults; per model the
  policy's decision tier and whether its commands wait for an operator.

Models seen on ``predictions`` (the last ``last_inputs`` messages per
partition, by message key, which serving apps set to the model; an unkeyed
JSON message by its events' ``model``) or in reports, but unknown to the
registry, are listed as **unregistered**: something serves that nobody
registered.

Memory: the latest report per (model, version, variant), a chain head per
model, and the keys of open quarantined records (about 100 bytes each; the
quarantine topic's retention bounds them). Nothing grows with the number of
messages read.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from agents.controller.registry import ModelVersion, Registry
from agents.operator.scan import scan
from schemas.errors import DriftlineError
from schemas.evaluation import evaluation_problem, parse_evaluation
from schemas.events import event_time_ms
from schemas.model_card import card_problem
from schemas.policy import Policy, load_policy, policy_sha256
from streams.policy.chain import verify_chain

logger = logging.getLogger(__name__)

#: Messages read from the end of each partition of the report topics.
DEFAULT_LAST_N = 2000
#: Messages read from the end of each partition of ``predictions`` (batches can be large).
DEFAULT_LAST_INPUTS = 200
SHADOW_VARIANTS = ("shadow", "challenger")


@dataclass(frozen=True)
class VersionEntry:
    version: str
    sha256: str
    registered_at: str  # RFC 3339, UTC
    owner: str | None
    risk_tier: str | None
    purpose: str | None
    training_data: str | None
    training_data_sha256: str | None
    evaluation: dict[str, float]
    card_problem: str | None  # why the card would be refused today; None when valid
    serving: str  # champion, canary, shadow, standby, challenger, last known good, or "-"
    weight: float | None  # share of traffic (champion and canary)
    drift: dict[str, Any] | None
    kpi: list[dict[str, Any]]
    #: the evaluation's held-out set (sha256, size, description as given); None for a flat
    #: evaluation (the earlier form records none), a missing or an unreadable one
    held_out: dict[str, Any] | None = None
    #: the evaluation's metrics per segment (segment -> {metric -> value})
    segments: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    model: str
    registered: bool
    owner: str | None  # the serving champion's card owner, else the newest version's
    risk_tier: str | None
    purpose: str | None
    versions: list[VersionEntry]
    champion: str | None
    canary: str | None
    canary_weight: float
    last_known_good: str | None
    state_from: str  # "deployments", "registry" or "none"
    last_deployment: dict[str, Any] | None
    poisoning: dict[str, Any] | None
    quarantine_open: int
    policy_tier: str
    approval_required: bool
    seen_on: list[str]  # topics the model was seen on (unregistered models)
    notes: list[str] = field(default_factory=list)
    shadow: str | None = None  # answers the champion's requests, its answers not served
    standby: str | None = None  # the champion before a switch, kept ready for a switch back


@dataclass(frozen=True)
class Inventory:
    generated_at: str
    registry: str
    policy_file: str | None
    policy_sha256: str | None
    audit: dict[str, Any]
    last_n: int
    last_inputs: int
    models: list[ModelEntry]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_card(path: str | None, *, evaluation: str | None = None) -> dict[str, Any] | None:
    """The model card in JSON file ``path``, with the evaluation results in JSON file
    ``evaluation`` as its ``evaluation`` member (refused if the card has another, or if
    the file is not an evaluation the gates can read: ``schemas.evaluation``)."""
    card: dict[str, Any] | None = None
    if path:
        card = _json_object(path, "model card")
    if evaluation:
        results = _json_object(evaluation, "evaluation")
        problem = evaluation_problem(results)
        if problem is not None:
            raise DriftlineError(f"the evaluation file {evaluation} is refused: {problem}")
        card = dict(card or {})
        if card.get("evaluation") not in (None, results):
            raise DriftlineError(
                f"{path} already has an evaluation and --evaluation gives another: keep one of them"
            )
        card["evaluation"] = results
    return card


def _json_object(path: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise DriftlineError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise DriftlineError(f"the {what} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DriftlineError(
            f"the {what} file {path} must hold a JSON object, not {type(value).__name__}"
        )
    return value


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _metrics(card: dict[str, Any]) -> dict[str, float]:
    """Numeric members of the card's ``evaluation`` (or of a pre-rule ``metrics``)."""
    found = card.get("evaluation")
    if not isinstance(found, dict):
        found = card.get("metrics")
    if not isinstance(found, dict):
        return {}
    if isinstance(found.get("metrics"), dict):
        found = {**found, **found["metrics"]}
    return {
        k: float(v)
        for k, v in found.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _evaluated_on(
    card: dict[str, Any],
) -> tuple[dict[str, Any] | None, dict[str, dict[str, float]]]:
    """The held-out set and the per-segment metrics of the card's evaluation, as the
    gates read them (``schemas.evaluation``); (None, {}) when there is none to read (the
    card's problem says why an unreadable one is)."""
    found = card.get("evaluation")
    if not isinstance(found, dict):
        return None, {}
    try:
        evaluation = parse_evaluation(found)
    except ValueError:
        return None, {}
    held = evaluation.held_out
    return (
        held.model_dump(mode="json", exclude_none=True) if held is not None else None,
        {segment: dict(metrics) for segment, metrics in evaluation.segments.items()},
    )


def _ms(value: object) -> int:
    try:
        return event_time_ms(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


@dataclass
class _Seen:
    """What the topics say, newest first where it matters (bounded by models and versions)."""

    drift: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    kpi: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    poisoning: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    topics: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    predicted_versions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return True
    key_old = (_ms(old.get("window_end")), old.get("revision", 0))
    return (_ms(new.get("window_end")), new.get("revision", 0)) >= key_old


def _read_reports(settings: Settings, seen: _Seen, last_n: int) -> None:
    names = {settings.topic(t): t for t in ("drift", "kpi", "poisoning")}
    for msg in scan(settings.bootstrap, list(names), last_n=last_n):
        try:
            doc = orjson.loads(msg.value())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
            continue
        kind, model = names[msg.topic()], doc["model"]
        seen.topics[model].add(kind)
        version = str(doc.get("model_version", ""))
        if kind == "drift" and _newer(seen.drift.get((model, version)), doc):
            seen.drift[(model, version)] = _drift_summary(doc)
        elif kind == "kpi":
            key = (model, version, str(doc.get("variant", "champion")))
            if _newer(seen.kpi.get(key), doc):
                seen.kpi[key] = _kpi_summary(doc)
        elif kind == "poisoning" and _newer(seen.poisoning.get(model), doc):
            seen.poisoning[model] = {
                k: doc.get(k) for k in ("status", "window_start", "window_end", "reason")
            }


def _drift_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": doc.get("status"),
        "window_start": doc.get("window_start"),
        "window_end": doc.get("window_end"),
        "n": doc.get("n"),
        "drifted_features": list(doc.get("drifted_features") or []),
    }


def _kpi_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": doc.get("variant"),
        "status": doc.get("status"),
        "window_start": doc.get("window_start"),
        "window_end": doc.get("window_end"),
        "revision": doc.get("revision", 0),
        "n_predictions": doc.get("n_predictions"),
        "n_labeled": doc.get("n_labeled"),
        "metrics": dict(doc.get("metrics") or {}),
        "concept_drift": doc.get("concept_drift"),
        "breaches": doc.get("breaches") or [],
    }


def _read_predictions(settings: Settings, seen: _Seen, last_inputs: int) -> None:
    for msg in scan(settings.bootstrap, [settings.topic("predictions")], last_n=last_inputs):
        key = msg.key()
        if key:
            seen.topics[key.decode("utf-8", "replace")].add("predictions")
            continue
        try:  # an unkeyed JSON message: its events name their model
            doc = orjson.loads(msg.value())
        except orjson.JSONDecodeError:
            continue  # unkeyed Arrow or bad bytes: the drift agent dead-letters the latter
        events = doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict) and isinstance(event.get("model"), str):
                seen.topics[event["model"]].add("predictions")


def _read_quarantine(settings: Settings, seen: _Seen) -> None:
    released: dict[str, set[bytes]] = defaultdict(set)
    for msg in scan(settings.bootstrap, [settings.topic("training-data.quarantine")], last_n=None):
        try:
            doc = orjson.loads(msg.value())
            record = doc["record"]
            model, record_id = str(record["model"]), str(record["record_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        digest = hashlib.blake2b(record_id.encode(), digest_size=16).digest()
        if doc.get("released_by"):
            released[model].add(digest)
            seen.quarantine[model].discard(digest)
        elif digest not in released[model]:
            seen.quarantine[model].add(digest)


def _read_deployments(settings: Settings, seen: _Seen) -> dict[str, Any]:
    def events() -> Any:
        for msg in scan(settings.bootstrap, [settings.topic("deployments")], last_n=None):
            try:
                event = orjson.loads(msg.value())
            except orjson.JSONDecodeError:
                event = {"undecodable": msg.value().decode("utf-8", "replace")[:80]}
            if (
                isinstance(event, dict)
                and event.get("prev_hash")
                and isinstance(event.get("model"), str)
            ):
                seen.deployments[event["model"]] = {
                    k: event.get(k)
                    for k in ("action", "status", "reason", "at", "command_id", "state")
                }
            yield event if isinstance(event, dict) else {"value": event}

    check = verify_chain(events())
    return {
        "intact": check.intact,
        "events": check.events,
        "models": check.models,
        "broken_at": check.broken_at,
        "reason": check.reason,
        "checked_at": datetime.now(UTC).isoformat(),
    }


def policy_in_force(path: str | None) -> tuple[Policy, str | None]:
    """The policy and the SHA-256 of its file's bytes (None for the built-in defaults)."""
    if not path:
        return Policy(), None
    policy = load_policy(path)  # refuses a bad file with its line and field
    return policy, policy_sha256(path)


def collect(
    settings: Settings,
    registry: Registry,
    *,
    last_n: int = DEFAULT_LAST_N,
    last_inputs: int = DEFAULT_LAST_INPUTS,
) -> Inventory:
    """Read the registry and the topics and join them (see the module docstring)."""
    policy, policy_hash = policy_in_force(settings.policy)
    seen = _Seen()
    audit = _read_deployments(settings, seen)
    _read_reports(settings, seen, last_n)
    _read_predictions(settings, seen, last_inputs)
    _read_quarantine(settings, seen)
    registered = registry.models()
    entries = [_entry(model, registry, seen, policy, registered=True) for model in registered]
    unknown = sorted(set(seen.topics) - set(registered))
    entries += [_entry(model, registry, seen, policy, registered=False) for model in unknown]
    return Inventory(
        generated_at=datetime.now(UTC).isoformat(),
        registry=settings.registry,
        policy_file=settings.policy or None,
        policy_sha256=policy_hash,
        audit=audit,
        last_n=last_n,
        last_inputs=last_inputs,
        models=entries,
    )


def describe_model(model: str, registry: Registry, policy: Policy) -> ModelEntry | None:
    """``model`` as the registry alone describes it (no topic read): its versions with
    checksums, model cards and evaluations, and the registry's committed state; None
    when the registry does not know it. The audit report uses this."""
    if model not in registry.models():
        return None
    return _entry(model, registry, _Seen(), policy, registered=True)


def _entry(
    model: str, registry: Registry, seen: _Seen, policy: Policy, *, registered: bool
) -> ModelEntry:
    versions = registry.versions(model) if registered else []
    notes: list[str] = []
    committed = registry.load(model)[0] if registered else None
    last = seen.deployments.get(model)
    if last is not None:
        state, state_from = dict(last.get("state") or {}), "deployments"
        if committed is not None and committed.model_dump(mode="json") != state:
            notes.append(
                "the registry's committed state differs from the last deployment "
                "event (a commit not yet published, or a trail read in part)"
            )
    elif committed is not None and (committed.champion or committed.canary):
        state, state_from = committed.model_dump(mode="json"), "registry"
    else:
        state, state_from = {}, "none"
    champion, canary = state.get("champion"), state.get("canary")
    weight = float(state.get("canary_weight") or 0.0)
    rows = [
        _version_entry(
            model,
            v,
            seen,
            champion=champion,
            canary=canary,
            weight=weight,
            last_known_good=state.get("last_known_good"),
            shadow=state.get("shadow"),
            standby=state.get("standby"),
        )
        for v in versions
    ]
    reported = {v for (m, v) in seen.drift if m == model} | {
        v for (m, v, _) in seen.kpi if m == model
    }
    for extra in sorted(reported - {v.version for v in versions}):
        if registered:
            notes.append(f"version {extra} is in reports but not registered")
    lead = next((r for r in rows if r.version == champion), rows[-1] if rows else None)
    decisions = policy.decisions_for(model)
    owner = lead.owner if lead else None
    tier = lead.risk_tier if lead else None
    if not registered:
        notes.append(
            f"unregistered: seen on {', '.join(sorted(seen.topics[model]))} but "
            "unknown to the registry"
        )
    elif owner is None:
        notes.append(
            "owner: missing (registered before owners were required); register a "
            "new version with a complete model card"
        )
    if tier == "high" and not decisions.needs_approval:
        notes.append(
            f"risk tier high but the policy applies its commands without approval "
            f"(decisions.risk_tier {decisions.risk_tier} not in approval_tiers)"
        )
    return ModelEntry(
        model=model,
        registered=registered,
        owner=owner,
        risk_tier=tier,
        purpose=lead.purpose if lead else None,
        versions=rows,
        champion=champion,
        canary=canary,
        canary_weight=weight,
        last_known_good=state.get("last_known_good"),
        state_from=state_from,
        last_deployment={k: v for k, v in last.items() if k != "state"} if last else None,
        poisoning=seen.poisoning.get(model),
        quarantine_open=len(seen.quarantine.get(model, ())),
        policy_tier=decisions.risk_tier,
        approval_required=decisions.needs_approval,
        seen_on=sorted(seen.topics.get(model, ())),
        notes=notes,
        shadow=state.get("shadow"),
        standby=state.get("standby"),
    )


def _version_entry(
    model: str,
    v: ModelVersion,
    seen: _Seen,
    *,
    champion: str | None,
    canary: str | None,
    weight: float,
    last_known_good: str | None,
    shadow: str | None = None,
    standby: str | None = None,
) -> VersionEntry:
    card = v.model_card if isinstance(v.model_card, dict) else {}
    training = card.get("training_data")
    kpi = sorted(
        (r for (m, ver, _), r in seen.kpi.items() if m == model and ver == v.version),
        key=lambda r: str(r.get("variant")),
    )
    if v.version == champion:
        serving, share = "champion", (1.0 - weight if canary else 1.0)
    elif v.version == canary:
        serving, share = "canary", weight
    elif v.version in (shadow, standby):
        serving, share = ("shadow" if v.version == shadow else "standby"), None
    else:
        variants = [str(r.get("variant")) for r in kpi if r.get("variant") in SHADOW_VARIANTS]
        serving = (
            variants[0]
            if variants
            else ("last known good" if v.version == last_known_good else "-")
        )
        share = None
    held_out, segments = _evaluated_on(card)
    return VersionEntry(
        version=v.version,
        sha256=v.sha256,
        registered_at=v.created_at.astimezone(UTC).isoformat(),
        owner=_text(card.get("owner")),
        risk_tier=_text(card.get("risk_tier")),
        purpose=_text(card.get("purpose")),
        training_data=_text(
            training.get("description") if isinstance(training, dict) else training
        ),
        training_data_sha256=_text(training.get("sha256")) if isinstance(training, dict) else None,
        evaluation=_metrics(card),
        card_problem=card_problem(card),
        serving=serving,
        weight=share,
        drift=seen.drift.get((model, v.version)),
        kpi=kpi,
        held_out=held_out,
        segments=segments,
    )
