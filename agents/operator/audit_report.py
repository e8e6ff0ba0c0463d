"""`driftline audit report`: one self-contained HTML file for a reviewer.

For one model and a time range: drift per feature over time and KPIs per
variant as inline SVG charts (a metric estimated from scores before labels
charted beside the realized one, and a table of each window's estimates,
their 95 % bands and the realized values), every command with its evidence and what the
controller did with it, the training-data quarantine summary, and the result
of the audit-chain check. No script, no stylesheet or font from the network:
it opens in a browser on an air-gapped machine and can be archived as is; its
Content-Security-Policy forbids the browser any script and any fetch.
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.config import Settings
from agents.operator.tail import read_to_end
from schemas.events import event_time_ms
from streams.policy.chain import ChainCheck, verify_chain

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf")
MAX_FEATURES_CHARTED = 8
#: The page may use its own inline style and nothing else: no script runs and nothing is
#: fetched, even if a value from a topic ever reached the page unescaped.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
KPIS_CHARTED = ("roc_auc", "accuracy", "error_rate", "latency_p99_ms", "business_value")
#: Estimated metrics in the table of estimates against realized values, and its length.
ESTIMATES_TABULATED = ("roc_auc", "accuracy", "f1")
MAX_ESTIMATE_ROWS = 500


def _when(ms: int) -> str:
    if ms <= 0:
        return "the start"
    if ms >= 4_102_444_800_000:  # 2100: an open end
        return "the end"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def chart(title: str, series: dict[str, list[tuple[int, float]]], *, width: int = 760,
          height: int = 240) -> str:
    """An SVG line chart: one polyline per series, time on x."""
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<p><em>{html.escape(title)}: no data in this range.</em></p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 60, 180, 24, 30
    w, h = width - left - right, height - top - bottom

    def xy(t: int, v: float) -> str:
        return f"{left + (t - x0) / (x1 - x0) * w:.1f},{top + h - (v - y0) / (y1 - y0) * h:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 10}" font-size="10" '
             f'text-anchor="end">{y1:.3g}</text>',
             f'<text x="{left - 6}" y="{top + h}" font-size="10" '
             f'text-anchor="end">{y0:.3g}</text>',
             f'<text x="{left}" y="{height - 8}" font-size="10">{_when(x0)}</text>',
             f'<text x="{left + w}" y="{height - 8}" font-size="10" text-anchor="end">'
             f'{_when(x1)}</text>']
    for i, (name, values) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(xy(t, v) for t, v in sorted(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{path}"/>')
        parts.append(f'<text x="{left + w + 8}" y="{top + 12 + 14 * i}" font-size="11" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(model: str, *, start_ms: int, end_ms: int, drift: list[dict[str, Any]],
           kpi: list[dict[str, Any]], commands: list[dict[str, Any]],
           deployments: list[dict[str, Any]], poisoning: list[dict[str, Any]],
           check: ChainCheck) -> str:
    """The HTML document; every value from the topics is escaped."""
    esc = html.escape
    psi: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in drift:
        for name, f in r.get("features", {}).items():
            if "psi" in f.get("metrics", {}):
                psi[f"{r['model_version']} {name}"].append(
                    (event_time_ms(r["window_start"]), f["metrics"]["psi"]))
    top = sorted(psi, key=lambda k: -max(v for _, v in psi[k]))[:MAX_FEATURES_CHARTED]
    joint: dict[str, list[tuple[int, float]]] = defaultdict(list)
    joint_rows = []
    for r in drift:
        m = r.get("multivariate")
        if not m:
            continue
        joint[str(r["model_version"])].append(
            (event_time_ms(r["window_start"]), m["relative_change"]))
        if m.get("status", "ok") != "ok" or m.get("beyond_limits", 0):
            joint_rows.append([esc(str(r["window_start"])), esc(str(r["model_version"])),
                               esc(m.get("status", "")), f"{m['relative_change']:+.1%}",
                               esc(str(m.get("beyond_limits", 0))), esc(m.get("reason", ""))])
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in kpi:  # the newest revision of each window
        key = (r["model_version"], r["variant"], str(r["window_start"]))
        if key not in latest or r.get("revision", 0) >= latest[key].get("revision", 0):
            latest[key] = r
    kpi_charts = []
    for metric in KPIS_CHARTED:
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for (version, variant, _), r in latest.items():
            if metric in r.get("metrics", {}):
                series[f"{version}/{variant}"].append((event_time_ms(r["window_start"]),
                                                       r["metrics"][metric]))
            estimate = r.get("estimated_metrics", {}).get(metric)
            if estimate is not None:
                series[f"{version}/{variant} estimated"].append(
                    (event_time_ms(r["window_start"]), estimate["value"]))
        if series:
            kpi_charts.append(chart(f"{metric} per version/variant", series))
    estimate_rows = _estimate_rows(latest)
    outcome = defaultdict(list)
    for e in deployments:
        outcome[e["command_id"]].append(e)
    command_rows = []
    for c in sorted(commands, key=lambda c: str(c.get("issued_at"))):
        evidence = "<br>".join(
            esc(f"{e.get('kind', '')} {e.get('model_version', '')}/{e.get('variant', '')} "
                f"window {e.get('window_start')} status {e.get('status')}"
                f"{' (on estimates)' if e.get('estimated') else ''} "
                f"{', '.join(map(str, e.get('why', [])))}")
            for e in c.get("evidence", []))
        done = "<br>".join(esc(f"{e['status']}: {e['reason']}") for e in outcome[c["command_id"]])
        versions = " -> ".join(v for v in (c.get("from_version"), c.get("to_version")) if v)
        command_rows.append([esc(str(c.get("issued_at"))), esc(c["type"]), esc(versions),
                             esc(str(c.get("issued_by"))), esc(c["reason"]),
                             evidence or "-", done or "<em>no deployment event</em>",
                             f"<code>{esc(c['command_id'])}</code>"])
    quarantine: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in poisoning:
        for source, counts in p.get("sources", {}).items():
            for reason, n in counts.get("quarantined", {}).items():
                quarantine[source][reason] += n
    statuses = defaultdict(int)
    for p in poisoning:
        statuses[p["status"]] += 1
    chain = ("<p class=ok>Audit chain intact: " if check.intact else "<p class=bad>Audit chain "
             "BROKEN: ") + esc(f"{check.events} deployment events"
                               + (f"; {check.reason}" if not check.intact else "")) + "</p>"
    css = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:"
           "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
           ".ok{color:#2a7d2a}.bad{color:#b00;font-weight:bold}")
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>driftline audit: {esc(model)}</title><style>{css}</style></head><body>",
        f"<h1>driftline audit report: {esc(model)}</h1>",
        f"<p>From {_when(start_ms)} to {_when(end_ms)} (UTC); generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {len(drift)} drift reports, "
        f"{len(latest)} KPI windows, {len(commands)} commands, {len(deployments)} deployment "
        f"events, {len(poisoning)} poisoning reports.</p>",
        "<h2>Audit chain</h2>", chain,
        "<h2>Drift per feature (PSI)</h2>",
        chart(f"PSI, the {len(top)} features that moved most", {k: psi[k] for k in top}),
        "<h2>Joint distribution (multivariate signal)</h2>",
        chart("reconstruction error, change from its baseline (negative: below)", joint)
        if joint else "<p><em>no multivariate results.</em></p>",
        _table(["window start", "version", "status", "change", "events beyond limits",
                "reason"], joint_rows) if joint_rows
        else "<p><em>no window flagged or with events beyond the limits.</em></p>",
        "<h2>KPIs per variant</h2>", *(kpi_charts or ["<p><em>no KPI reports.</em></p>"]),
        "<h3>Estimated before labels, against realized</h3>",
        "<p>Estimates come from each window's scores and the reference's calibration as "
        "soon as it closes (confidence-based performance estimation), with a 95 % band for "
        "the value the labels will give; realized values come with the labels. An estimate "
        "cannot see concept drift (a change of P(y|x)): a realized value outside the band "
        "is the sign of one.</p>",
        (_table(["window start", "version/variant", "labels",
                 *(f"{m} estimated [95 % band] / realized" for m in ESTIMATES_TABULATED),
                 "status"], estimate_rows) if estimate_rows
         else "<p><em>no estimates (no calibration published, or no scored predictions)."
              "</em></p>"),
        "<h2>Commands, their evidence and what the controller did</h2>",
        _table(["issued at (event time)", "type", "versions", "by", "reason", "evidence",
                "deployment", "command id"], command_rows) if command_rows
        else "<p><em>no commands.</em></p>",
        "<h2>Training data quarantine</h2>",
        f"<p>Windows by status: {esc(dict(statuses).__repr__())}</p>",
        _table(["source", "quarantined by reason"],
               [[esc(src), esc(", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())))]
                for src, reasons in sorted(quarantine.items())]) if quarantine
        else "<p><em>nothing quarantined.</em></p>",
        "</body></html>"])


def _estimate_rows(latest: dict[tuple[str, str, str], dict[str, Any]]) -> list[list[str]]:
    """One row per window with estimates (the newest ``MAX_ESTIMATE_ROWS``): each estimate
    with its band beside the realized value, the realized one marked when outside."""
    esc = html.escape
    rows = []
    for (version, variant, start), r in sorted(latest.items(), key=lambda kv: kv[0][2]):
        estimates = r.get("estimated_metrics") or {}
        if not estimates:
            continue
        cells = []
        for metric in ESTIMATES_TABULATED:
            e = estimates.get(metric)
            realized = r.get("metrics", {}).get(metric)
            if e is None:
                cells.append("-")
                continue
            text = f"{e['value']:.3f} [{e['lower']:.3f}, {e['upper']:.3f}] / "
            if realized is None:
                text += "not yet"
            elif e["lower"] <= realized <= e["upper"]:
                text += f"{realized:.3f}"
            else:
                text += f"{realized:.3f} (outside the band)"
            cells.append(esc(text))
        status = r.get("status", "")
        if r.get("estimated"):
            status += " (on estimates)"
        rows.append([esc(start), esc(f"{version}/{variant}"), esc(str(r.get("n_labeled", 0))),
                     *cells, esc(status)])
    return rows[-MAX_ESTIMATE_ROWS:]


def build(settings: Settings, model: str, *, start_ms: int, end_ms: int) -> str:
    """Read the output topics and render the report for ``model`` in ``[start, end)``."""
    def docs(topic: str) -> list[dict[str, Any]]:
        found = []
        for value in read_to_end(settings.bootstrap, settings.topic(topic)):
            doc = orjson.loads(value)
            if isinstance(doc, dict) and doc.get("model") == model:
                found.append(doc)
        return found

    def within(items: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
        return [d for d in items if start_ms <= event_time_ms(d[field]) < end_ms]

    deployments = docs("deployments")
    return render(
        model, start_ms=start_ms, end_ms=end_ms,
        drift=within(docs("drift"), "window_start"), kpi=within(docs("kpi"), "window_start"),
        commands=within(docs("commands"), "issued_at"),
        deployments=within(deployments, "at"),
        poisoning=within(docs("poisoning"), "window_start"),
        check=verify_chain(deployments),  # the whole chain: a range cannot prove it
    )
