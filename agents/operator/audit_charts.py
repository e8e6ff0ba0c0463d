"""Inline SVG line charts for the audit report: labelled axes, reference lines, flags.

A :class:`Chart` is plain data (built by ``agents.operator.audit_report``);
:func:`svg` draws it: time (UTC) on x with its ticks and label, the value on y
with its unit, one polyline per series with a dot per window, the thresholds,
limits and targets as dashed horizontal lines named at the right, and every
flagged window marked (an orange ring: warn; a red square: drift or a breach),
each mark with a ``<title>`` a browser shows on hover. Nothing is fetched; the
SVG scales down to the page width when printed.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

COLOURS = ("#1f77b4", "#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
#: Colours of the reference lines and the marks, by kind.
LINE_COLOURS = {"warn": "#e08600", "limit": "#c00000", "target": "#c00000", "band": "#6a3d9a"}
FLAG_COLOURS = {"warn": "#e08600", "breach": "#c00000"}
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 28, 58


@dataclass(frozen=True)
class Point:
    t_ms: int  # the window's start, epoch ms
    value: float
    flag: str = ""  # "", "warn" or "breach"
    note: str = ""  # shown on hover over a flagged point


@dataclass(frozen=True)
class Line:
    """A horizontal reference line: a threshold, a limit or a target."""

    value: float
    label: str  # e.g. "drift level 0.2"
    kind: str = "limit"  # "warn", "limit", "target" or "band" (a reference band)


@dataclass(frozen=True)
class Chart:
    title: str
    y_label: str  # the quantity and its unit
    series: dict[str, list[Point]]
    lines: list[Line] = field(default_factory=list)
    x_label: str = "window start (UTC)"
    note: str = ""  # a sentence under the chart (what the lines are, where they come from)

    @property
    def flagged(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for points in self.series.values():
            for p in points:
                if p.flag:
                    counts[p.flag] = counts.get(p.flag, 0) + 1
        return counts


def utc(ms: int, *, seconds: bool = False) -> str:
    """``YYYY-MM-DD HH:MM UTC`` (with seconds when asked)."""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{when:%Y-%m-%d %H:%M} UTC"


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values covering [lo, hi]."""
    span = hi - lo
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


_TIME_STEPS_MS = (
    60_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    43_200_000,
    86_400_000,
    7 * 86_400_000,
)


def _time_ticks(x0: int, x1: int, count: int = 5) -> list[int]:
    raw = (x1 - x0) / max(count - 1, 1)
    step = next((s for s in _TIME_STEPS_MS if s >= raw), _TIME_STEPS_MS[-1])
    first = -(-x0 // step) * step
    return list(range(first, x1 + 1, step))


def _tick_label(ms: int, span_ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{when:%H:%M}" if span_ms < 86_400_000 else f"{when:%m-%d %H:%M}"


def svg(chart: Chart, *, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The chart as an ``<svg>`` element, or a sentence when it has no data."""
    esc = html.escape
    points = [p for s in chart.series.values() for p in s]
    if not points:
        return f"<p><em>{esc(chart.title)}: no data in this range.</em></p>"
    x0, x1 = min(p.t_ms for p in points), max(p.t_ms for p in points)
    if x1 == x0:
        x0, x1 = x0 - 60_000, x1 + 60_000
    values = [p.value for p in points] + [line.value for line in chart.lines]
    y0, y1 = min(0.0, *values), max(values)
    if y1 <= y0:
        y1 = y0 + 1
    ticks = _nice_ticks(y0, y1)
    y0, y1 = min(y0, ticks[0]), max(y1, ticks[-1])
    w, h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def x(t: int) -> float:
        return LEFT + (t - x0) / (x1 - x0) * w

    def y(v: float) -> float:
        return TOP + h - (v - y0) / (y1 - y0) * h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{esc(chart.title)}">',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{esc(chart.title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
    ]
    for v in ticks:
        out.append(
            f'<line x1="{LEFT - 4}" x2="{LEFT + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e4e4e4"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{v:.4g}</text>'
        )
    span = x1 - x0
    for t in _time_ticks(x0, x1):
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + h}" y2="{TOP + h + 4}" '
            'stroke="#999"/>'
        )
        out.append(
            f'<text x="{x(t):.1f}" y="{TOP + h + 15}" font-size="10" '
            f'text-anchor="middle">{_tick_label(t, span)}</text>'
        )
    first, last = utc(x0), utc(x1)
    out.append(
        f'<text x="{LEFT + w / 2:.1f}" y="{height - 22}" font-size="11" '
        f'text-anchor="middle">{esc(chart.x_label)}</text>'
    )
    out.append(
        f'<text x="{LEFT + w / 2:.1f}" y="{height - 8}" font-size="10" fill="#555" '
        f'text-anchor="middle">{esc(first)} to {esc(last)}</text>'
    )
    out.append(
        f'<text transform="translate(14 {TOP + h / 2:.1f}) rotate(-90)" font-size="11" '
        f'text-anchor="middle">{esc(chart.y_label)}</text>'
    )
    for line in chart.lines:
        colour = LINE_COLOURS.get(line.kind, "#c00000")
        dash = "2 3" if line.kind == "warn" else "6 3"
        # above its line, or below it where the line runs along the top of the plot
        label_y = y(line.value) - 3 if y(line.value) > TOP + 12 else y(line.value) + 11
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y(line.value):.1f}" '
            f'y2="{y(line.value):.1f}" stroke="{colour}" stroke-width="1.2" '
            f'stroke-dasharray="{dash}"><title>{esc(line.label)}</title></line>'
        )
        out.append(
            f'<text x="{LEFT + w - 4}" y="{label_y:.1f}" font-size="10" '
            f'text-anchor="end" fill="{colour}">{esc(line.label)}</text>'
        )
    for i, (name, series) in enumerate(sorted(chart.series.items())):
        colour = COLOURS[i % len(COLOURS)]
        ordered = sorted(series, key=lambda p: p.t_ms)
        path = " ".join(f"{x(p.t_ms):.1f},{y(p.value):.1f}" for p in ordered)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        for p in ordered:
            out.append(
                f'<circle cx="{x(p.t_ms):.1f}" cy="{y(p.value):.1f}" r="2" fill="{colour}"/>'
            )
        out.append(
            f'<text x="{LEFT + w + 8}" y="{TOP + 10 + 13 * i}" font-size="10" '
            f'fill="{colour}">{esc(name)}</text>'
        )
        for p in ordered:
            if p.flag:
                out.append(_mark(p, x(p.t_ms), y(p.value), name))
    out.append("</svg>")
    return "\n".join(out)


def _mark(p: Point, cx: float, cy: float, series: str) -> str:
    colour = FLAG_COLOURS.get(p.flag, "#c00000")
    tip = html.escape(
        f"{series}, window from {utc(p.t_ms)}: {p.value:.4g} {p.flag}"
        + (f" ({p.note})" if p.note else "")
    )
    if p.flag == "warn":
        return (
            f'<circle class="flag-warn" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="none" '
            f'stroke="{colour}" stroke-width="2"><title>{tip}</title></circle>'
        )
    return (
        f'<rect class="flag-breach" x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" '
        f'height="10" fill="none" stroke="{colour}" stroke-width="2.5"><title>{tip}</title>'
        "</rect>"
    )


def caption(chart: Chart) -> str:
    """A sentence naming the lines and counting the marked windows (escaped HTML)."""
    parts = []
    if chart.lines:
        parts.append("Dashed lines: " + "; ".join(line.label for line in chart.lines) + ".")
    else:
        parts.append("No threshold, target or limit for this chart in the policy given.")
    flagged = chart.flagged
    if flagged:
        said = {"breach": "red squares", "warn": "orange rings"}
        parts.append(
            "Marked: "
            + ", ".join(
                f"{n} window{'s' if n != 1 else ''} {flag} ({said.get(flag, flag)})"
                for flag, n in sorted(flagged.items())
            )
            + "."
        )
    else:
        parts.append("No window flagged.")
    if chart.note:
        parts.append(chart.note)
    return html.escape(" ".join(parts))


def figure(chart: Chart) -> str:
    """The chart and its caption, kept together on a printed page."""
    return f"<figure class=chart>{svg(chart)}<figcaption>{caption(chart)}</figcaption></figure>"
