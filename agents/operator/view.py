"""Readable one-line views of driftline's output topics, for terminals."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import orjson

_COLOURS = {"ok": "32", "warn": "33", "drift": "31;1", "breach": "31;1", "error": "31",
            "applied": "36;1", "rejected": "31", "pending_approval": "33", "command": "35;1"}


def _colour(text: str, status: str, enabled: bool) -> str:
    code = _COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if enabled and code else text


def _hhmm(value: str) -> str:
    try:
        return datetime.fromisoformat(value).strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return str(value)


#: Parts of the drift monitor's notes (streams.drift.monitor) saying that the window
#: was reported but not judged: its status "ok" means nothing.
NOT_JUDGED_NOTES = (
    "reported, not judged",  # the window was open when the reference profile arrived
    "reported, and it is not judged",  # the reference changed during the window
    "are needed before a feature is flagged",  # too few events
)


def not_judged(report: dict[str, Any]) -> str | None:
    """Why a DriftReport's window was not judged (its note), or None when it was."""
    for note in report.get("notes") or ():
        if any(part in note for part in NOT_JUDGED_NOTES):
            return str(note)
    judged = [f for f in (*report.get("features", {}).values(),
                          *report.get("prediction", {}).values()) if not f.get("ignored")]
    if not judged and not report.get("multivariate"):
        return (report.get("notes") or ["no feature was compared with a reference"])[0]
    return None


def drift_line(report: dict[str, Any], *, colour: bool = False) -> str:
    """One line per DriftReport: window, model, n, status and what drove it.

    A window that was not judged says so (NOT JUDGED, or REFERENCE while the
    warm-up reference is built) instead of showing a status; one judged against a
    warm-up reference (no profile) says "vs warm-up".
    """
    head = (
        f"{_hhmm(report['window_start'])}-{_hhmm(report['window_end'])}  "
        f"{report['model']} {report['model_version']}  n={report['n']:<6}"
    )
    status = report["status"]
    reference = report.get("reference") or {}
    if not report.get("features") and reference.get("kind") == "warmup" \
            and reference.get("note"):
        note = (report.get("notes") or [""])[0]
        return f"{head}  {_colour('REFERENCE', 'ok', colour)}  {note}"
    why = not_judged(report)
    if why is not None:
        return f"{head}  {_colour('NOT JUDGED', 'warn', colour)}  {why}"
    scores = {**report.get("features", {}),
              **{f"prediction.{k}": v for k, v in report.get("prediction", {}).items()}}
    joint = report.get("multivariate") or {}
    if report.get("drifted_features"):
        detail = ", ".join(
            f"{name} psi={scores[name]['metrics']['psi']:.2f}" if name in scores
            else f"{name} {joint.get('relative_change', 0.0):+.0%}"
            for name in report["drifted_features"]
        )
    elif scores:
        top = max(scores, key=lambda n: scores[n]["metrics"].get("psi", 0.0))
        detail = f"largest psi {scores[top]['metrics']['psi']:.3f} ({top})"
    else:
        detail = ""
    late = f"  late={report['late']}" if report.get("late") else ""
    warmup = "  vs warm-up" if reference.get("kind") == "warmup" else ""
    return (f"{head}  {_colour(status.upper().ljust(5), status, colour)}  "
            f"{detail}{late}{warmup}")


#: KPIs shown in a KPI line, in this order, when present
KPI_SHOWN = ("roc_auc", "f1", "precision", "recall", "mae", "rmse", "business_value",
             "error_rate", "latency_p99_ms")


def kpi_line(report: dict[str, Any], *, colour: bool = False) -> str:
    """One line per KpiReport: window, version/variant, label coverage, status, key KPIs."""
    rev = f" r{report['revision']}" if report.get("revision") else ""
    rev += " final" if report.get("final") else ""
    head = (
        f"{_hhmm(report['window_start'])}-{_hhmm(report['window_end'])}{rev}  "
        f"{report['model']} {report['model_version']}/{report['variant']}  "
        f"labeled {report['n_labeled']}/{report['n_predictions']}"
    )
    status = report["status"]
    metrics = report.get("metrics", {})
    shown = "  ".join(f"{k}={metrics[k]:.3g}" for k in KPI_SHOWN if k in metrics)
    flags = "  CONCEPT DRIFT" if report.get("concept_drift") else ""
    why = f"  ({'; '.join(report['breaches'])})" if report.get("breaches") else ""
    return (f"{head}  {_colour(status.upper().ljust(6), status, colour)}  "
            f"{shown}{_colour(flags, 'drift', colour)}{why}")


def deadletter_line(letter: dict[str, Any], *, colour: bool = False) -> str:
    """One line per DeadLetter: which agent refused what (each agent reading a topic
    writes its own), why, and whether the raw bytes in it are only the first ones."""
    where = f"{letter['topic']}[{letter['partition']}]@{letter['offset']}"
    index = f" #{letter['index']}" if letter.get("index") is not None else ""
    agent = f" {letter['agent']}:" if letter.get("agent") else ""
    kept = ""
    if letter.get("raw_truncated"):
        size = len(letter.get("raw", "")) // 4 * 3 - str(letter.get("raw", "")).count("=")
        kept = (f"  (holds the first {size} of {letter.get('raw_size')} bytes: "
                "`driftline deadletter fetch` reads the whole message)")
    return (f"{_colour('DEADLETTER', 'error', colour)}{agent} {where}{index}  "
            f"{letter['error']}{kept}")


def command_line(command: dict[str, Any], *, colour: bool = False) -> str:
    """One line per Command: who decided what for which versions, and why."""
    versions = " -> ".join(v for v in (command.get("from_version"), command.get("to_version"))
                           if v)
    weight = f" weight {command['canary_weight']:g}" if command.get("canary_weight") else ""
    head = _colour(f"COMMAND {command['type'].upper()}", "command", colour)
    return (f"{head}  {command['model']} {versions}{weight}  by {command.get('issued_by')}  "
            f"{command['reason']}  [{command['command_id'][:8]}]")


def deployment_line(event: dict[str, Any], *, colour: bool = False) -> str:
    """One line per DeploymentEvent: what the controller did and the resulting state."""
    state = event.get("state", {})
    canary = f", canary {state['canary']} at {state['canary_weight']:g}" \
        if state.get("canary") else ""
    canary += "".join(f", {role} {state[role]}" for role in ("shadow", "standby")
                      if state.get(role))
    status = event["status"]
    return (f"{_colour(f'DEPLOY {status.upper()}', status, colour)}  {event['model']} "
            f"{event['action']}: champion {state.get('champion')}{canary}  {event['reason']}  "
            f"[{event['command_id'][:8]}]")


def poisoning_line(report: dict[str, Any], *, colour: bool = False) -> str:
    """One line per PoisoningReport: window, status, records seen/quarantined and why."""
    sources = report.get("sources", {})
    seen = sum(c.get("seen", 0) for c in sources.values())
    held = sum(c.get("seen", 0) - c.get("passed", 0) for c in sources.values())
    status = report["status"]
    level = {"ok": "ok", "suspect": "warn", "campaign": "drift"}.get(status, status)
    return (f"{_hhmm(report['window_start'])}-{_hhmm(report['window_end'])}  "
            f"{report['model']} training data  {_colour(status.upper().ljust(8), level, colour)}"
            f"  quarantined {held}/{seen}  {report.get('reason', '')}")


def render(topic: str, value: bytes, *, colour: bool | None = None) -> str:
    """A readable line for a message of a known topic; compact JSON otherwise."""
    if colour is None:
        colour = sys.stdout.isatty()
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")
    try:
        if topic.endswith("drift"):
            return drift_line(doc, colour=colour)
        if topic.endswith("kpi"):
            return kpi_line(doc, colour=colour)
        if topic.endswith("deadletter"):
            return deadletter_line(doc, colour=colour)
        if topic.endswith("commands"):
            return command_line(doc, colour=colour)
        if topic.endswith("deployments"):
            return deployment_line(doc, colour=colour)
        if topic.endswith("poisoning"):
            return poisoning_line(doc, colour=colour)
    except (KeyError, TypeError):
        pass
    return orjson.dumps(doc).decode()
