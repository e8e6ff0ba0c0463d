"""The audit report's HTML: one page from :class:`~agents.operator.audit_report.AuditData`.

Every value from the topics, the registry or the policy is escaped here (the
charts escape their own). Inline style only; print styles lay it out on A4:
each section from a new page, charts scaled to the page and never split, table
headers repeated, hashes wrapped rather than clipped. A sign-off block ends it.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.operator import audit_charts as charts
from agents.operator.audit_report import CSP, AuditData, TimeRange
from agents.operator.audit_sections import ESTIMATES_TABULATED, SHADOW_HEADERS
from agents.operator.audit_tables import (
    chain_section,
    decisions_section,
    facts,
    quarantine_section,
    table,
    versions_section,
)

esc = html.escape
#: The policy section's short list (the appendix has every setting).
KEY_SETTINGS = (
    "drift.window",
    "drift.hop",
    "drift.psi_",
    "drift.consecutive",
    "drift.false_alarm_rate",
    "drift.min_window_events",
    "drift.multivariate_warn",
    "drift.multivariate_drift",
    "drift.features",
    "kpi.window",
    "kpi.min_labeled",
    "kpi.targets",
    "kpi.estimated_targets",
    "kpi.reference_bands",
    "kpi.min_positives",
    "decisions.",
)

CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#111}"
    "table{border-collapse:collapse;font-size:12px;margin:0.4em 0 1em}"
    "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left;"
    "overflow-wrap:anywhere}"
    "th{background:#f3f3f3}table.facts th{width:13em}"
    "code{font-size:11px;overflow-wrap:anywhere;word-break:break-all}"
    ".ok{color:#2a7d2a}.bad{color:#b00;font-weight:bold}"
    "figure{margin:0.5em 0 1.2em}figcaption{font-size:12px;color:#333;max-width:760px}"
    "svg{max-width:100%;height:auto;display:block}"
    ".decision{border:1px solid #ccc;padding:0.4em 0.8em;margin:0 0 0.8em}"
    ".decision h3{font-size:14px;margin:0.2em 0}.signoff td{height:2.2em;width:16em}"
    "@page{size:A4;margin:16mm 14mm}"
    "@media print{body{margin:0;max-width:none;font-size:11px}"
    "section{break-before:page}section#summary{break-before:auto}"
    "figure,.decision,tr{break-inside:avoid}thead{display:table-header-group}"
    "h2,h3{break-after:avoid}table{width:100%}}"
)


def _duration(ms: int) -> str:
    left, parts = timedelta(milliseconds=ms), []
    for unit, size in (
        ("day", timedelta(days=1)),
        ("hour", timedelta(hours=1)),
        ("minute", timedelta(minutes=1)),
    ):
        n, left = divmod(left, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts) or "under a minute"


def _words(ms: int) -> str:
    """``Sunday 1 November 2026, 00:05 UTC``."""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{when:%A} {when.day} {when:%B %Y, %H:%M} UTC"


def range_text(r: TimeRange) -> str:
    """The range asked for, in words and UTC, and the range the records cover."""
    if r.start_ms is not None and r.end_ms is not None:
        asked = (
            f"From {_words(r.start_ms)} to {_words(r.end_ms)} "
            f"({_duration(r.end_ms - r.start_ms)}; the end excluded)."
        )
    else:
        start = f"from {_words(r.start_ms)}" if r.start_ms is not None else "from the first"
        end = f"to {_words(r.end_ms)}" if r.end_ms is not None else "to the last"
        asked = f"All records {start} {end} on the topics (no {_missing(r)} given)."
    if r.covered is None:
        return asked + " No record of this model falls in it."
    first, last = r.covered
    return (
        f"{asked} The records shown cover {_words(first)} to {_words(last)} "
        f"({_duration(last - first)})."
    )


def _missing(r: TimeRange) -> str:
    return " and no ".join(
        flag for flag, value in (("--from", r.start_ms), ("--to", r.end_ms)) if value is None
    )


def _chain_sentence(data: AuditData) -> str:
    c = data.check
    if c.intact:
        return esc(f"{c.events} deployment events of {data.model}")
    return esc(f"{c.events} deployment events; {c.reason}")


def summary(data: AuditData) -> str:
    g, p = data.generator, data.policy
    chain = (
        f"<span class=ok>Audit chain intact: {_chain_sentence(data)}</span>"
        if data.check.intact
        else f"<span class=bad>Audit chain BROKEN: {_chain_sentence(data)}</span>"
    )
    policy = (
        f"<code>{esc(p.file)}</code>, SHA-256 <code>{esc(p.sha256 or '')}</code>"
        if p.file
        else "the built-in defaults (no policy file given)"
    )
    return "\n".join(
        [
            "<section id=summary>",
            f"<h1>driftline audit report: {esc(data.model)}</h1>",
            facts(
                [
                    ("model", esc(data.model)),
                    ("time range", esc(range_text(data.range))),
                    (
                        "generated",
                        esc(
                            f"{g.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by {g.user} on "
                            f"{g.host}, driftline {g.version}"
                        ),
                    ),
                    ("policy given", policy),
                    ("audit chain", chain),
                    ("records", esc(", ".join(f"{n} {what}" for what, n in data.counts.items()))),
                ]
            ),
            "</section>",
        ]
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}.{k}")]
    if value is None:
        return [(prefix.lstrip("."), "off / not set")]
    if value == {} or value == []:
        return [(prefix.lstrip("."), "none")]
    return [(prefix.lstrip("."), str(value))]


def policy_section(data: AuditData) -> str:
    p, model = data.policy, data.model
    rows = _policy_rows(data)
    source = (
        f"<p>File <code>{esc(p.file)}</code>, SHA-256 of its bytes "
        f"<code>{esc(p.sha256 or '')}</code> (as <code>driftline inventory</code> "
        "hashes it). Compare the hash with the file the worker ran with.</p>"
        if p.file
        else "<p>No policy file was given to the report: the built-in "
        "defaults below. Pass <code>--policy</code> (or DRIFTLINE_POLICY) with the "
        "file the worker runs with, so its hash is recorded here.</p>"
    )
    override = (
        f"<p>The model has its own sections in the policy (models.{esc(model)}).</p>"
        if model in p.policy.models
        else ""
    )
    return "\n".join(
        [
            "<section id=policy>",
            "<h2>Policy in force</h2>",
            source,
            override,
            f"<p>The settings the charts and the decisions rest on, as they apply to "
            f"{esc(model)} (every setting: the appendix):</p>",
            table(["setting", "value"], [[k, v] for k, v in rows if k.startswith(KEY_SETTINGS)]),
            "</section>",
        ]
    )


def policy_appendix(data: AuditData) -> str:
    rows = _policy_rows(data)
    return "\n".join(
        [
            "<section id=policy-settings>",
            f"<h2>Appendix: every policy setting for {esc(data.model)}</h2>",
            table(["setting", "value"], [[k, v] for k, v in rows]),
            "</section>",
        ]
    )


def _policy_rows(data: AuditData) -> list[tuple[str, str]]:
    p, model = data.policy, data.model
    sections = {
        "drift": p.policy.drift_for(model),
        "kpi": p.policy.kpi_for(model),
        "decisions": p.policy.decisions_for(model),
        "poisoning": p.policy.poisoning_for(model),
    }
    return [
        row
        for name, s in sections.items()
        for row in _flatten(s.model_dump(mode="json", warnings=False), name)
    ]


def shadow_tables(data: AuditData) -> list[str]:
    """A small table per shadow: its windows against the version that served the same
    requests (nothing when no shadow ran)."""
    if not data.shadows:
        return []
    out = [
        "<h3>Shadows beside the served version</h3>",
        "<p>Each request the shadow answered, paired with the served answer by request id: "
        "agreement (same class; mean |Δ prediction| for regression), the paired score "
        "differences, and both versions' metrics on the same labeled requests.</p>",
    ]
    for version, rows in data.shadows.items():
        out.append(f"<h4>shadow {esc(version)}</h4>")
        out.append(table(SHADOW_HEADERS, rows))
    return out


def page(data: AuditData) -> str:
    """The whole document."""
    estimates = (
        table(
            [
                "window",
                "version/variant",
                "labels",
                *(f"{m} estimated [95 % band] / realized" for m in ESTIMATES_TABULATED),
                "status",
            ],
            data.estimates,
        )
        if data.estimates
        else "<p><em>no estimates (no calibration published, or no scored predictions).</em></p>"
    )
    return "\n".join(
        [
            "<!doctype html><html lang=en><head><meta charset='utf-8'>",
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>driftline audit: {esc(data.model)}</title><style>{CSS}</style></head><body>",
            summary(data),
            policy_section(data),
            versions_section(data),
            "<section id=drift>",
            "<h2>Drift per feature (PSI)</h2>",
            charts.figure(data.psi),
            "<h2>Joint distribution (multivariate signal)</h2>",
            charts.figure(data.multivariate)
            if data.multivariate
            else "<p><em>no multivariate results.</em></p>",
            table(
                ["window", "version", "status", "change", "events beyond limits", "reason"],
                data.multivariate_rows,
            )
            if data.multivariate_rows
            else "<p><em>no window flagged or with events beyond the limits.</em></p>",
            "</section>",
            "<section id=kpi>",
            "<h2>KPIs per variant</h2>",
            *([charts.figure(c) for c in data.kpis] or ["<p><em>no KPI reports.</em></p>"]),
            "<h3>Estimated before labels, against realized</h3>",
            "<p>Estimates come from each window's scores and the reference's calibration as "
            "soon as it closes (confidence-based performance estimation), with a 95 % band for "
            "the value the labels will give; realized values come with the labels. An estimate "
            "cannot see concept drift (a change of P(y|x)): a realized value outside the band "
            "is the sign of one.</p>",
            estimates,
            "<h3>Concept-drift detector</h3>",
            table(["version/variant", "detector", "parameters", "false alarms"], data.concept)
            if data.concept
            else "<p><em>no KPI report names its concept-drift detector.</em></p>",
            *shadow_tables(data),
            "</section>",
            decisions_section(data),
            chain_section(data),
            quarantine_section(data.quarantine),
            "<section id=signoff>",
            "<h2>Sign-off</h2>",
            "<p>Reviewed against the policy hash, the registry checksums and the hash chain "
            "above.</p>",
            "<table class=signoff><thead><tr><th>name</th><th>role</th><th>date</th>"
            "<th>signature</th></tr></thead><tbody>" + "<tr><td></td><td></td><td></td><td></td>"
            "</tr>" * 2 + "</tbody></table>",
            "</section>",
            policy_appendix(data),
            "</body></html>",
        ]
    )
