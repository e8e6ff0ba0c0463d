"""The inventory as JSON, CSV or one self-contained HTML page (``agents.operator.inventory``).

* JSON: the whole :class:`~agents.operator.inventory.Inventory`, times as RFC 3339 UTC.
* CSV: one row per model version (a model without versions: one row), every
  model-level field repeated on its versions' rows, so a spreadsheet filter on
  any column works; the policy hash and the audit result on every row. A text
  cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a
  leading ``'`` so a spreadsheet shows it instead of running it as a formula
  (OWASP's advice on CSV injection): owners and model names come from cards
  and topics.
* HTML: like the audit report, no script, no stylesheet, font or image from the
  network, a Content-Security-Policy that forbids fetching anything; every value
  from the registry or the topics is escaped; times readable, in UTC.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.operator.audit_report import CSP
from agents.operator.audit_tables import Html, table
from agents.operator.inventory import Inventory, ModelEntry, VersionEntry

CSV_COLUMNS = (
    "model",
    "registered",
    "owner",
    "risk_tier",
    "purpose",
    "version",
    "sha256",
    "registered_at",
    "version_owner",
    "version_risk_tier",
    "card_problem",
    "serving",
    "weight",
    "training_data",
    "training_data_sha256",
    "evaluation",
    "drift_status",
    "drift_window_end",
    "kpi",
    "poisoning_status",
    "quarantine_open",
    "policy_tier",
    "approval_required",
    "notes",
    "policy_sha256",
    "audit_chain",
)


def to_json(inventory: Inventory) -> str:
    return orjson.dumps(inventory.as_dict(), option=orjson.OPT_INDENT_2).decode()


def _utc(value: object) -> str:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM UTC``; anything else as text."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _evaluation(v: VersionEntry) -> str:
    return "; ".join(f"{k}={val:.4g}" for k, val in sorted(v.evaluation.items()))


def _kpi(v: VersionEntry) -> str:
    return "; ".join(
        f"{r['variant']}: {r['status']} (window end {_utc(r['window_end'])})" for r in v.kpi
    )


def _audit(inventory: Inventory) -> str:
    a = inventory.audit
    if a["intact"]:
        return f"intact ({a['events']} events, {a['models']} models)"
    return f"BROKEN at event {a['broken_at']}: {a['reason']}"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(inventory: Inventory) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for m in inventory.models:
        common = {
            "model": m.model,
            "registered": m.registered,
            "owner": m.owner or "missing",
            "risk_tier": m.risk_tier or "missing",
            "purpose": m.purpose or "",
            "poisoning_status": (m.poisoning or {}).get("status") or "",
            "quarantine_open": m.quarantine_open,
            "policy_tier": m.policy_tier,
            "approval_required": m.approval_required,
            "notes": " | ".join(m.notes),
            "policy_sha256": inventory.policy_sha256 or "defaults",
            "audit_chain": _audit(inventory),
        }
        rows: list[dict[str, Any]] = [] if m.versions else [common]
        for v in m.versions:
            rows.append(
                {
                    **common,
                    "version": v.version,
                    "sha256": v.sha256,
                    "registered_at": v.registered_at,
                    "version_owner": v.owner or "missing",
                    "version_risk_tier": v.risk_tier or "missing",
                    "card_problem": v.card_problem or "",
                    "serving": v.serving,
                    "weight": "" if v.weight is None else f"{v.weight:g}",
                    "training_data": v.training_data or "",
                    "training_data_sha256": v.training_data_sha256 or "",
                    "evaluation": _evaluation(v),
                    "drift_status": (v.drift or {}).get("status") or "",
                    "drift_window_end": (v.drift or {}).get("window_end") or "",
                    "kpi": _kpi(v),
                }
            )
        writer.writerows({k: _safe(val) for k, val in row.items()} for row in rows)
    return out.getvalue()


def _cell(value: object, *, missing: str = "missing") -> str:
    if value is None or value == "":
        return f"<span class=bad>{html.escape(missing)}</span>"
    return html.escape(str(value))


def _status(value: object) -> str:
    if value is None:
        return "<em>none seen</em>"
    cls = "ok" if value == "ok" else "bad"
    return f"<span class={cls}>{html.escape(str(value))}</span>"


VERSION_HEADERS = (
    "version",
    "registered",
    "sha256",
    "owner",
    "risk tier",
    "serving",
    "training data",
    "evaluation",
    "drift",
    "KPI",
    "card problem",
)


def _version_cells(v: VersionEntry) -> list[str]:
    """A version's cells under :data:`VERSION_HEADERS` (HTML: the table keeps them as built)."""
    esc = html.escape
    drift = v.drift or {}
    cells = (
        esc(v.version),
        esc(_utc(v.registered_at)),
        f"<code>{esc(v.sha256[:16])}…</code>",
        _cell(v.owner),
        _cell(v.risk_tier),
        esc(v.serving) + (f" ({v.weight:g})" if v.weight is not None else ""),
        _cell(v.training_data, missing="not given")
        + (
            f"<br><code>{esc(v.training_data_sha256[:16])}…</code>"
            if v.training_data_sha256
            else ""
        ),
        esc(_evaluation(v)) or "-",
        _status(drift.get("status"))
        + (f"<br><small>{esc(_utc(drift.get('window_end')))}</small>" if drift else ""),
        "<br>".join(f"{esc(str(r['variant']))}: {_status(r['status'])}" for r in v.kpi)
        or "<em>none seen</em>",
        esc(v.card_problem or ""),
    )
    return [Html(c) for c in cells]


def _model_html(m: ModelEntry) -> str:
    esc = html.escape
    head = [
        f"<h2 id='{esc(m.model)}'>{esc(m.model)}"
        + ("" if m.registered else " <span class=bad>(unregistered)</span>")
        + "</h2>",
        "<table class=facts>",
        f"<tr><th>owner</th><td>{_cell(m.owner)}</td></tr>",
        f"<tr><th>risk tier</th><td>{_cell(m.risk_tier)}</td></tr>",
        f"<tr><th>purpose</th><td>{_cell(m.purpose, missing='not given')}</td></tr>",
        f"<tr><th>serving now</th><td>champion {_cell(m.champion, missing='none')}"
        + (f", canary {esc(m.canary)} at {m.canary_weight:g}" if m.canary else "")
        + (f", shadow {esc(m.shadow)} (answers not served)" if m.shadow else "")
        + (f", standby {esc(m.standby)} (the champion before the switch)" if m.standby else "")
        + f" <small>(from {esc(m.state_from)})</small></td></tr>",
    ]
    if m.last_deployment:
        d = m.last_deployment
        head.append(
            f"<tr><th>last deployment event</th><td>{esc(str(d.get('action')))} "
            f"{esc(str(d.get('status')))} at {esc(_utc(d.get('at')))}: "
            f"{esc(str(d.get('reason')))}</td></tr>"
        )
    poisoning = m.poisoning or {}
    head += [
        f"<tr><th>poisoning</th><td>{_status(poisoning.get('status'))}"
        + (f" (window end {esc(_utc(poisoning.get('window_end')))})" if poisoning else "")
        + "</td></tr>",
        f"<tr><th>open quarantine</th><td>{m.quarantine_open} records</td></tr>",
        f"<tr><th>policy</th><td>decision tier {esc(m.policy_tier)}; commands "
        f"{'wait for an operator' if m.approval_required else 'applied without approval'}"
        "</td></tr>",
    ]
    if m.seen_on:
        head.append(f"<tr><th>seen on</th><td>{esc(', '.join(m.seen_on))}</td></tr>")
    head.append("</table>")
    if m.notes:
        head.append("<ul>" + "".join(f"<li class=bad>{esc(n)}</li>" for n in m.notes) + "</ul>")
    if m.versions:
        head.append(table(VERSION_HEADERS, [_version_cells(v) for v in m.versions]))
    return "\n".join(head)


def to_html(inventory: Inventory) -> str:
    esc = html.escape
    css = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:"
        "collapse;font-size:12px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top;text-align:left}.ok{color:#2a7d2a}.bad{color:#b00}"
    )
    chain = (
        f"<p class=ok>Audit chain {esc(_audit(inventory))}"
        if inventory.audit["intact"]
        else f"<p class=bad>Audit chain {esc(_audit(inventory))}"
    ) + f" (checked {esc(_utc(inventory.audit['checked_at']))}).</p>"
    policy = (
        f"<p>Policy in force: <code>{esc(inventory.policy_file)}</code>, SHA-256 "
        f"<code>{esc(inventory.policy_sha256 or '')}</code>.</p>"
        if inventory.policy_file
        else "<p>Policy in force: the built-in defaults (no policy file).</p>"
    )
    registered = sum(m.registered for m in inventory.models)
    summary = (
        f"<p>Generated {esc(_utc(inventory.generated_at))}. Registry "
        f"<code>{esc(inventory.registry)}</code>: {registered} registered models, "
        f"{len(inventory.models) - registered} unregistered seen on the topics. Latest "
        f"reports from the last {inventory.last_n} messages of each partition of drift, "
        f"kpi and poisoning; predictions: the last {inventory.last_inputs}.</p>"
    )
    index = (
        "<ul>"
        + "".join(
            f"<li><a href='#{esc(m.model)}'>{esc(m.model)}</a>: owner {_cell(m.owner)}, risk "
            f"{_cell(m.risk_tier)}"
            + ("" if m.registered else ", <span class=bad>unregistered</span>")
            + "</li>"
            for m in inventory.models
        )
        + "</ul>"
    )
    return "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>driftline AI inventory</title><style>{css}</style></head><body>",
            "<h1>driftline AI inventory</h1>",
            summary,
            policy,
            chain,
            index,
            *([_model_html(m) for m in inventory.models] or ["<p><em>no models.</em></p>"]),
            "</body></html>",
        ]
    )


def render(inventory: Inventory, form: str) -> str:
    """``form``: json, csv or html."""
    renderers: dict[str, Any] = {"json": to_json, "csv": to_csv, "html": to_html}
    return str(renderers[form](inventory))


def text(inventory: Inventory) -> str:
    """A terminal summary: one line per model, one per version."""
    lines = []
    for m in inventory.models:
        lines.append(
            f"{m.model}{'' if m.registered else ' (UNREGISTERED)'}  owner: "
            f"{m.owner or 'missing'}  risk: {m.risk_tier or 'missing'}  champion "
            f"{m.champion}"
            + (f", canary {m.canary} ({m.canary_weight:g})" if m.canary else "")
            + (f", shadow {m.shadow}" if m.shadow else "")
            + (f", standby {m.standby}" if m.standby else "")
            + f"  poisoning {(m.poisoning or {}).get('status', 'none seen')}  "
            f"quarantine {m.quarantine_open}"
        )
        for v in m.versions:
            lines.append(
                f"  {v.version}  {_utc(v.registered_at)}  sha256 {v.sha256[:12]}...  "
                f"{v.serving}  drift {(v.drift or {}).get('status', 'none seen')}  "
                f"{_evaluation(v)}"
            )
        lines += [f"  ! {n}" for n in m.notes]
    lines.append(
        f"policy: {inventory.policy_file or 'defaults'} {inventory.policy_sha256 or ''}".rstrip()
    )
    lines.append(f"audit chain: {_audit(inventory)}")
    return "\n".join(lines)
