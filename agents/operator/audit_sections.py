"""The audit report's charts and tables, built from the model's reports and commands.

Pure functions from JSON dicts (as read from the topics) and the policy to
:class:`~agents.operator.audit_charts.Chart` data and rows of text; every time
is turned into UTC words here (:func:`when`, :func:`window`), so no epoch
milliseconds reach the page. The levels drawn come from the reports where they
record what they were judged by (a drift report's ``thresholds``), else from the
policy given; KPI targets and rollback limits from the policy given.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from agents.operator.audit_charts import Chart, Line, Point, utc
from agents.operator.audit_rules import policy_decided_under, rule_applied
from schemas.events import event_time_ms
from schemas.policy import DriftPolicy, Policy, Target
from schemas.rules import DecisionPolicy

MAX_FEATURES_CHARTED = 8
KPIS_CHARTED = {
    "roc_auc": "ROC AUC (0 to 1)",
    "accuracy": "accuracy (share correct, 0 to 1)",
    "error_rate": "serving error rate (share of requests)",
    "latency_p99_ms": "p99 latency (ms)",
    "business_value": "business value (cost-matrix units)",
}
ESTIMATES_TABULATED = ("roc_auc", "accuracy", "f1")
MAX_ESTIMATE_ROWS = 500
_FLAG = {"warn": "warn", "drift": "breach", "breach": "breach"}


def time_ms(value: object) -> int | None:
    """Epoch ms of a report's or command's time (an int already is); None if not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value  # the policy's evidence: epoch ms
    try:
        return event_time_ms(value)
    except (TypeError, ValueError):
        return None


def when(value: object, *, seconds: bool = False) -> str:
    """A time from a report or command (RFC 3339; an int is epoch ms) in UTC words."""
    ms = time_ms(value)
    return str(value) if ms is None else utc(ms, seconds=seconds)


def window(start: object, end: object = None) -> str:
    """``2026-11-01 00:05-00:10 UTC``; the end's date too when it is another day."""
    first = when(start)
    if end is None or time_ms(end) is None:
        return f"from {first}"
    last = when(end)
    if first[:10] == last[:10]:
        return f"{first[:-4]}-{last[11:]}"
    return f"{first} to {last}"


def _common(values: list[float], fallback: float) -> float:
    return Counter(values).most_common(1)[0][0] if values else fallback


def psi(drift: list[dict[str, Any]], policy: DriftPolicy) -> Chart:
    """PSI of the features that moved most, their warn and drift levels, flagged windows."""
    series: dict[str, list[Point]] = defaultdict(list)
    warn, level, own = [], [], set()
    for r in drift:
        start = time_ms(r.get("window_start"))
        for name, f in (r.get("features") or {}).items():
            value = (f.get("metrics") or {}).get("psi")
            if value is None or start is None:
                continue
            t = f.get("thresholds") or {}
            if "psi_warn" in t:
                warn.append(t["psi_warn"])
                level.append(t["psi_drift"])
                if (t["psi_warn"], t["psi_drift"]) != (policy.psi_warn, policy.psi_drift):
                    own.add(f"{name} (warn {t['psi_warn']:g}, drift {t['psi_drift']:g})")
            series[f"{r.get('model_version')} {name}"].append(
                Point(
                    start,
                    float(value),
                    _FLAG.get(str(f.get("status")), ""),
                    str(f.get("reason", "")),
                )
            )
    top = sorted(series, key=lambda k: -max(p.value for p in series[k]))[:MAX_FEATURES_CHARTED]
    w, d = _common(warn, policy.psi_warn), _common(level, policy.psi_drift)
    note = (
        "Levels as the reports record them (else the policy given). A feature is flagged "
        "(warn) when its PSI passes both the warn level and its window's noise threshold "
        f"(which depends on the window's size); drift once flagged in {policy.consecutive} "
        "windows in a row, or at once at the drift level."
    )
    if own:
        note += " Features with levels of their own: " + ", ".join(sorted(own)) + "."
    return Chart(
        f"PSI, the {len(top)} features that moved most",
        "PSI (population stability index, unitless)",
        {k: series[k] for k in top},
        [Line(w, f"warn level {w:g}", "warn"), Line(d, f"drift level {d:g}", "limit")],
        note=note,
    )


def multivariate(
    drift: list[dict[str, Any]], policy: DriftPolicy
) -> tuple[Chart | None, list[list[str]]]:
    """The joint-distribution signal in % from its baseline, its levels either way, and
    the rows of windows flagged or with events beyond the reference's limits."""
    series: dict[str, list[Point]] = defaultdict(list)
    rows, warn, level = [], [], []
    for r in drift:
        m, start = r.get("multivariate"), time_ms(r.get("window_start"))
        if not m or start is None:
            continue
        t = r.get("thresholds") or {}
        warn.append(t.get("multivariate_warn", policy.multivariate_warn))
        level.append(t.get("multivariate_drift", policy.multivariate_drift))
        status = str(m.get("status", "ok"))
        series[str(r.get("model_version"))].append(
            Point(
                start,
                100 * float(m["relative_change"]),
                _FLAG.get(status, ""),
                str(m.get("reason", "")),
            )
        )
        if status != "ok" or m.get("beyond_limits", 0):
            rows.append(
                [
                    window(r.get("window_start"), r.get("window_end")),
                    str(r.get("model_version")),
                    status,
                    f"{m['relative_change']:+.1%}",
                    str(m.get("beyond_limits", 0)),
                    str(m.get("reason", "")),
                ]
            )
    if not series:
        return None, rows
    w = 100 * _common(warn, policy.multivariate_warn)
    d = 100 * _common(level, policy.multivariate_drift)
    lines = [
        Line(w, f"warn +{w:g} %", "warn"),
        Line(-w, f"warn -{w:g} %", "warn"),
        Line(d, f"drift +{d:g} %", "limit"),
        Line(-d, f"drift -{d:g} %", "limit"),
    ]
    return Chart(
        "reconstruction error, change from its baseline (negative: below)",
        "change from baseline (%)",
        dict(series),
        lines,
        note="A rise or a fall past a level is flagged (a two-sided test).",
    ), rows


def _beyond(value: float, target: Target) -> bool:
    return (target.min is not None and value < target.min) or (
        target.max is not None and value > target.max
    )


def _target_lines(target: Target | None, what: str) -> list[Line]:
    if target is None:
        return []
    return [
        Line(v, f"{what} {side} {v:g}", "target")
        for side, v in (("min", target.min), ("max", target.max))
        if v is not None
    ]


def _band_lines(latest: dict[tuple[str, str, str], dict[str, Any]], metric: str) -> list[Line]:
    """Per version and variant, the reference band its windows were held to on ``metric``
    (from the window with the most labels: the band is widened for fewer labels)."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for (version, variant, _), r in latest.items():
        for bound in (r.get("thresholds") or {}).get(metric) or []:
            if bound.get("source") != "reference":
                continue
            key, labeled = f"{version}/{variant}", int(r.get("n_labeled") or 0)
            if key not in best or labeled > best[key][0]:
                best[key] = (labeled, bound)
    return [
        Line(float(v), f"{key} reference band {side} {v:.4g}", "band")
        for key, (_, bound) in sorted(best.items())
        for side, v in (("lower", bound.get("lower")), ("upper", bound.get("upper")))
        if v is not None
    ]


def kpis(
    latest: dict[tuple[str, str, str], dict[str, Any]], policy: Policy, model: str
) -> list[Chart]:
    """One chart per KPI with data: realized and estimated series, targets, limits."""
    k, limits = policy.kpi_for(model), policy.decisions_for(model).rollback
    out = []
    for metric, y_label in KPIS_CHARTED.items():
        target, estimated = k.targets.get(metric), k.estimated_targets.get(metric)
        limit = {
            "error_rate": limits.max_error_rate,
            "latency_p99_ms": limits.max_latency_p99_ms,
        }.get(metric)
        series: dict[str, list[Point]] = defaultdict(list)
        for (version, variant, _), r in latest.items():
            start = time_ms(r.get("window_start"))
            if start is None:
                continue
            named = [b for b in r.get("breaches") or [] if str(b).startswith(metric)]
            value = (r.get("metrics") or {}).get(metric)
            if value is not None:
                breach = (
                    bool(named and not r.get("estimated"))
                    or (target is not None and _beyond(value, target))
                    or (limit is not None and value > limit)
                )
                series[f"{version}/{variant}"].append(
                    Point(start, float(value), "breach" if breach else "", "; ".join(named))
                )
            e = (r.get("estimated_metrics") or {}).get(metric)
            if e is not None:
                breach = bool(named and r.get("estimated")) or (
                    estimated is not None and _beyond(e["value"], estimated)
                )
                series[f"{version}/{variant} estimated"].append(
                    Point(start, float(e["value"]), "breach" if breach else "", "; ".join(named))
                )
        if not series:
            continue
        lines = _target_lines(target, "target") + _target_lines(estimated, "estimated target")
        lines += _band_lines(latest, metric)
        if limit is not None:
            lines.append(Line(limit, f"rollback limit {limit:g}", "limit"))
        out.append(
            Chart(
                f"{metric} per version/variant",
                y_label,
                dict(series),
                lines,
                note="Targets and limits from the policy given, reference bands from the "
                "reports (the band of each version's window with the most labels); a window "
                "is marked when its value is beyond a target or limit, or its report names it "
                "breached."
                if lines
                else "A window is marked when its report names it breached.",
            )
        )
    return out


def estimate_rows(latest: dict[tuple[str, str, str], dict[str, Any]]) -> list[list[str]]:
    """One row per window with estimates (the newest ``MAX_ESTIMATE_ROWS``): each estimate
    with its band beside the realized value, the realized one marked when outside."""
    rows = []
    for (version, variant, _), r in sorted(
        latest.items(), key=lambda kv: time_ms(kv[1].get("window_start")) or 0
    ):
        estimates = r.get("estimated_metrics") or {}
        if not estimates:
            continue
        cells = []
        for metric in ESTIMATES_TABULATED:
            e = estimates.get(metric)
            realized = (r.get("metrics") or {}).get(metric)
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
            cells.append(text)
        status = str(r.get("status", "")) + (" (on estimates)" if r.get("estimated") else "")
        rows.append(
            [
                window(r.get("window_start"), r.get("window_end")),
                f"{version}/{variant}",
                str(r.get("n_labeled", 0)),
                *cells,
                status,
            ]
        )
    return rows[-MAX_ESTIMATE_ROWS:]


def concept_rows(latest: dict[tuple[str, str, str], dict[str, Any]]) -> list[list[str]]:
    """One row per version and variant: the concept-drift detector of its newest report,
    calibrated on the reference (its parameters and measured false-alarm rate) or why not."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for (version, variant, _), r in sorted(
        latest.items(), key=lambda kv: time_ms(kv[1].get("window_start")) or 0
    ):
        if r.get("concept"):
            newest[(version, variant)] = r
    rows = []
    for (version, variant), r in sorted(newest.items()):
        c = r["concept"]
        params = ", ".join(f"{k}={v:.4g}" for k, v in sorted((c.get("params") or {}).items()))
        if c.get("calibrated"):
            rate = c.get("false_alarm_rate")
            target = c.get("target_false_alarm_rate")
            how = (
                f"calibrated on the reference: alarms in {rate:.1%} of windows of "
                f"{c.get('window_events')} errors (at most {target:.1%} stated)"
                if rate is not None and target is not None
                else "calibrated on the reference"
            )
        else:
            how = "not calibrated: " + (c.get("reason") or "no reason given")
        rows.append([f"{version}/{variant}", str(c.get("detector", "")), params or "-", how])
    return rows


SHADOW_HEADERS = ["shadow window", "beside", "pairs", "agreement / mean |Δ prediction|",
                  "mean |Δ score| (max)", "mean Δ score", "labeled pairs", "served",
                  "shadow", "status"]


def _paired(metrics: dict[str, float]) -> str:
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.3f}"
    if "mae" in metrics:
        return f"mae {metrics['mae']:.4g}"
    return "not yet"


def shadow_rows(
    latest: dict[tuple[str, str, str], dict[str, Any]],
) -> dict[str, list[list[str]]]:
    """Per shadow version, one row per window (newest ``MAX_ESTIMATE_ROWS``) and served
    version it was compared with (KpiReport.shadow): pairs, agreement, score differences,
    and both versions' metrics on the same labeled requests."""
    out: dict[str, list[list[str]]] = defaultdict(list)
    for (version, variant, _), r in sorted(
        latest.items(), key=lambda kv: time_ms(kv[1].get("window_start")) or 0
    ):
        if variant != "shadow":
            continue
        for c in r.get("shadow") or []:
            if c.get("agreement") is not None:
                agree = f"{c['agreement']:.3f}"
            elif c.get("prediction_mean_abs_diff") is not None:
                agree = f"{c['prediction_mean_abs_diff']:.4g}"
            else:
                agree = "-"
            score = ("-" if c.get("score_mean_abs_diff") is None else
                     f"{c['score_mean_abs_diff']:.3f} ({c.get('score_max_abs_diff') or 0:.3f})")
            bias = "-" if c.get("score_mean_diff") is None else f"{c['score_mean_diff']:+.3f}"
            out[version].append([
                window(r.get("window_start"), r.get("window_end")),
                str(c.get("versus", "")), str(c.get("pairs", 0)), agree, score, bias,
                str(c.get("labeled_pairs", 0)), _paired(c.get("served_metrics") or {}),
                _paired(c.get("shadow_metrics") or {}), str(r.get("status", "")),
            ])
    return {v: rows[-MAX_ESTIMATE_ROWS:] for v, rows in sorted(out.items())}


@dataclass(frozen=True)
class Decision:
    issued_at: str  # UTC
    type: str
    versions: str
    issued_by: str
    reason: str
    rule: str
    evidence: list[str]
    outcomes: list[str]
    command_id: str
    policy: str  # the policy file's SHA-256 it was decided under (audit_rules)
    policy_differs: bool  # from the policy the report was given


def evidence_text(e: dict[str, Any]) -> str:
    """One evidence report of a command in words, its window in UTC."""
    n = f", {e['n']} events" if e.get("n") else ""
    labeled = f", {e['n_labeled']} labeled" if e.get("n_labeled") else ""
    why = ", ".join(map(str, e.get("why") or []))
    number = f" #{e['window_index']}" if e.get("window_index") is not None else ""  # count
    return (
        f"{e.get('kind', '')} {e.get('model_version', '')}/{e.get('variant', '')} "
        f"window{number} {window(e.get('window_start'), e.get('window_end'))}{n}{labeled}: "
        f"status {e.get('status')}{' (on estimates)' if e.get('estimated') else ''}"
        + (f"; {why}" if why else "")
    )


def decisions(
    commands: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    rules: DecisionPolicy,
    policy_sha256: str | None = None,
) -> list[Decision]:
    """Every command, oldest first, with its rule, evidence and the controller's answers;
    ``policy_sha256``: the policy given's (None: the built-in defaults)."""
    outcome: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in deployments:
        outcome[str(e.get("command_id"))].append(e)
    out = []
    for c in sorted(commands, key=lambda c: time_ms(c.get("issued_at")) or 0):
        versions = " -> ".join(str(v) for v in (c.get("from_version"), c.get("to_version")) if v)
        if c.get("canary_weight") is not None:
            versions += f" (weight {c['canary_weight']:g})"
        under, differs = policy_decided_under(c, policy_sha256)
        out.append(
            Decision(
                issued_at=when(c.get("issued_at"), seconds=True),
                type=str(c.get("type")),
                versions=versions,
                issued_by=str(c.get("issued_by")),
                reason=str(c.get("reason")),
                rule=rule_applied(c, rules),
                evidence=[evidence_text(e) for e in c.get("evidence") or []],
                outcomes=[
                    f"{e.get('status')}: {e.get('reason')} ({when(e.get('at'), seconds=True)},"
                    f" event {str(e.get('hash'))[:12]}...)"
                    for e in outcome[str(c.get("command_id"))]
                ],
                command_id=str(c.get("command_id")),
                policy=under,
                policy_differs=differs,
            )
        )
    return out
