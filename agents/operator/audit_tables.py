"""The audit report's tabular sections: registry versions, commands, hash chain, quarantine.

HTML fragments from :class:`~agents.operator.audit_report.AuditData`; every
value from the topics, the registry or the policy is escaped here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime

from agents.operator import audit_charts as charts
from agents.operator.audit_report import AuditData, Quarantine
from agents.operator.inventory import ModelEntry, VersionEntry

esc = html.escape


class Html(str):
    """A cell that is HTML already, every value in it escaped where it was built:
    :func:`table` puts it in as it is."""


def _cell(value: str) -> str:
    return value if isinstance(value, Html) else esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """Headers and cells as text, every one escaped but for :class:`Html` cells. The audit
    report's tables and the inventory's (``agents.operator.inventory_render``) use it."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f" class={cls}" if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    return (
        "<table class=facts><tbody>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
        + "</tbody></table>"
    )


def missing_cell(value: str | None, missing: str = "missing") -> Html:
    return Html(esc(value) if value else f"<span class=bad>{esc(missing)}</span>")


VERSION_HEADERS = (
    "version",
    "registered",
    "artifact SHA-256",
    "owner",
    "risk tier",
    "purpose",
    "training data",
    "evaluation",
    "held-out set",
    "per segment",
    "serving",
    "model card",
)


def _version_row(v: VersionEntry) -> list[str]:
    """A registry version's cells under :data:`VERSION_HEADERS`."""
    training = v.training_data or "not given"
    if v.training_data_sha256:
        training += f" (SHA-256 {v.training_data_sha256})"
    registered = int(datetime.fromisoformat(v.registered_at).timestamp() * 1000)
    metrics = "; ".join(f"{k} {val:.4g}" for k, val in sorted(v.evaluation.items()))
    return [
        v.version,
        charts.utc(registered),
        Html(f"<code>{esc(v.sha256)}</code>"),
        missing_cell(v.owner),
        missing_cell(v.risk_tier),
        missing_cell(v.purpose, "not given"),
        training,
        metrics or Html("<span class=bad>none recorded</span>"),
        _held_out(v),
        "; ".join(
            f"{segment}: " + ", ".join(f"{k} {val:.4g}" for k, val in sorted(m.items()))
            for segment, m in sorted(v.segments.items())
        )
        or "-",
        v.serving,
        v.card_problem or "complete",
    ]


def _held_out(v: VersionEntry) -> str:
    """The held-out set the metrics were measured on: its digest and size, so a reviewer
    sees whether two versions were judged on the same data."""
    if v.held_out is None:  # a flat evaluation of the earlier form records none
        return Html("<span class=bad>not recorded</span>") if v.evaluation else "-"
    held = v.held_out
    text = f"SHA-256 {held.get('sha256')}, {held.get('size')} examples"
    if held.get("description"):
        text += f" ({held['description']})"
    return text


def versions_section(data: AuditData) -> str:
    out = ["<section id=versions>", "<h2>Model versions in the registry</h2>"]
    entry: ModelEntry | None = data.entry
    if data.registry_problem:
        out.append(f"<p class=bad>{esc(data.registry_problem)}</p>")
    elif entry is None:
        out.append(
            f"<p class=bad>{esc(data.model)} is not in the registry the report was "
            "given: no checksum, model card or evaluation to show.</p>"
        )
    else:
        out.append(
            facts(
                [
                    ("owner", missing_cell(entry.owner)),
                    ("risk tier", missing_cell(entry.risk_tier)),
                    ("purpose", missing_cell(entry.purpose, "not given")),
                    (
                        "serving (registry)",
                        esc(
                            f"champion {entry.champion or 'none'}"
                            + (
                                f", canary {entry.canary} at {entry.canary_weight:g}"
                                if entry.canary
                                else ""
                            )
                            + f", last known good {entry.last_known_good or 'none'}"
                            + (f", shadow {entry.shadow}" if entry.shadow else "")
                            + (f", standby {entry.standby}" if entry.standby else "")
                        ),
                    ),
                ]
            )
        )
        out.append(table(VERSION_HEADERS, [_version_row(v) for v in entry.versions]))
        out += [f"<p class=bad>{esc(n)}</p>" for n in entry.notes]
    out.append("</section>")
    return "\n".join(out)


def decisions_section(data: AuditData) -> str:
    out = ["<section id=commands>", "<h2>Commands, their evidence and what the controller did</h2>"]
    for d in data.decisions:
        evidence = (
            "<ul>" + "".join(f"<li>{esc(e)}</li>" for e in d.evidence) + "</ul>"
            if d.evidence
            else "-"
        )
        done = (
            "<br>".join(esc(o) for o in d.outcomes)
            if d.outcomes
            else "<em>no deployment event</em>"
        )
        out.append(
            f"<div class=decision><h3>{esc(d.issued_at)}: {esc(d.type)} {esc(d.versions)}</h3>"
            + facts(
                [
                    ("issued by", esc(d.issued_by)),
                    ("reason", esc(d.reason)),
                    ("rule applied", esc(d.rule)),
                    (
                        "policy SHA-256",
                        f"<span class=bad>{esc(d.policy)}</span>"
                        if d.policy_differs
                        else esc(d.policy),
                    ),
                    ("evidence", evidence),
                    ("controller", done),
                    ("command id", f"<code>{esc(d.command_id)}</code>"),
                ]
            )
            + "</div>"
        )
    if not data.decisions:
        out.append("<p><em>no commands.</em></p>")
    out.append("</section>")
    return "\n".join(out)


def chain_section(data: AuditData) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>"
            for c in (
                esc(r.at),
                esc(r.action),
                esc(r.status),
                esc(r.reason),
                esc(r.state),
                f"<code>{esc(r.command_id)}</code>",
                f"<code>{esc(r.prev_hash) or '-'}</code>",
                f"<code>{esc(r.hash)}</code>",
                esc(r.link) if r.link == "links" else f"<span class=bad>{esc(r.link)}</span>",
            )
        )
        + "</tr>"
        for r in data.chain
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "at",
            "action",
            "status",
            "reason",
            "resulting state",
            "command id",
            "previous hash",
            "hash",
            "link",
        )
    )
    return "\n".join(
        [
            "<section id=chain>",
            "<h2>Deployment events and their hash chain</h2>",
            "<p>Each event's hash is the SHA-256 of its canonical JSON without the hash; its "
            "previous hash is the hash of the model's event before it (all zeros for the first). "
            "<code>driftline audit verify</code> recomputes them over the whole topic.</p>",
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            if rows
            else "<p><em>no deployment event in this range.</em></p>",
            "</section>",
        ]
    )


def quarantine_section(q: Quarantine) -> str:
    out = [
        "<section id=quarantine>",
        "<h2>Training data quarantine</h2>",
        "<h3>Poisoning-guard windows by status</h3>",
        table(["status", "windows"], [[s, str(n)] for s, n in q.statuses.items()])
        if q.statuses
        else "<p><em>no poisoning report in this range.</em></p>",
        "<h3>Records by source and reason</h3>",
    ]
    if q.sources:
        label = {"no_trusted_set": "no_trusted_set (held, no trusted set in time)"}
        headers = ["source", "seen", "passed", *(label.get(r, r) for r in q.reasons)]
        rows = [
            [
                s,
                str(c.get("seen", 0)),
                str(c.get("passed", 0)),
                *(str(c.get(r, 0)) for r in q.reasons),
            ]
            for s, c in q.sources.items()
        ]
        rows.append(
            ["all sources", *(str(sum(int(r[i]) for r in rows)) for i in range(1, len(headers)))]
        )
        out.append(table(headers, rows))
    else:
        out.append("<p><em>nothing screened in this range.</em></p>")
    out.append(
        table(
            ["records held for lack of a trusted set", "count"],
            [
                ["held (arrived before the model's trusted set)", str(q.held)],
                ["released: screened once the trusted set arrived", str(q.released)],
                ["quarantined unscreened (no_trusted_set)", str(q.unscreened)],
            ],
        )
    )
    out.append("</section>")
    return "\n".join(out)
