"""The audit report's SVG charts: labelled axes, reference lines where they belong, marks."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from agents.operator.audit_charts import Chart, Line, Point, _nice_ticks, caption, svg

T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


def _attr(element: str, name: str) -> float:
    found = re.search(rf'\b{name}="([-0-9.]+)"', element)
    assert found, element
    return float(found.group(1))


def _elements(drawing: str, tag: str, needle: str = "") -> list[str]:
    return [e for e in re.findall(rf"<{tag}\b[^>]*>(?:.*?</{tag}>)?", drawing, re.S) if needle in e]


CHART = Chart(
    "PSI",
    "PSI (population stability index, unitless)",
    {
        "v1 amount": [
            Point(T0, 0.01),
            Point(T0 + 5 * MINUTE, 0.08, "warn"),
            Point(T0 + 10 * MINUTE, 0.31, "breach", "drift at once"),
        ]
    },
    [Line(0.05, "warn level 0.05", "warn"), Line(0.2, "drift level 0.2", "limit")],
)


def test_axes_are_labelled_with_units_and_utc_ticks() -> None:
    drawing = svg(CHART)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", drawing)
    assert "window start (UTC)" in texts
    assert "PSI (population stability index, unitless)" in texts
    assert "2026-11-01 00:00 UTC to 2026-11-01 00:10 UTC" in texts
    assert {"00:00", "00:05", "00:10"} <= set(texts)  # time ticks
    assert {"0", "0.1", "0.2", "0.3", "0.4"} <= set(texts)  # value ticks up to above the max


def test_reference_lines_sit_at_their_values_and_breaches_are_marked_beyond_them() -> None:
    drawing = svg(CHART)
    warn = _elements(drawing, "line", "warn level 0.05")[0]
    drift = _elements(drawing, "line", "drift level 0.2")[0]
    assert _attr(warn, "y1") > _attr(drift, "y1")  # SVG y grows downwards
    breach = _elements(drawing, "rect", "flag-breach")
    rings = _elements(drawing, "circle", "flag-warn")
    assert len(breach) == 1 and len(rings) == 1
    assert _attr(breach[0], "y") + 5 < _attr(drift, "y1")  # the 0.31 window: above the line
    assert _attr(warn, "y1") > _attr(rings[0], "cy") > _attr(drift, "y1")
    assert "window from 2026-11-01 00:10 UTC: 0.31 breach (drift at once)" in breach[0]


def test_the_caption_names_the_lines_and_counts_the_marks() -> None:
    said = caption(CHART)
    assert "Dashed lines: warn level 0.05; drift level 0.2." in said
    assert "1 window breach (red squares), 1 window warn (orange rings)" in said
    bare = Chart("x", "y", {"a": [Point(T0, 1.0)]})
    assert caption(bare).startswith(
        "No threshold, target or limit for this chart in the policy given. No window"
    )


def test_one_window_and_no_data() -> None:
    one = svg(Chart("one", "v", {"a": [Point(T0, 0.5)]}))
    assert "<circle" in one and "nan" not in one
    assert svg(Chart("empty", "v", {})) == "<p><em>empty: no data in this range.</em></p>"


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 0.25), (-50.0, 50.0), (0.0, 1e-4), (3.0, 7.0)])
def test_ticks_cover_the_range(lo: float, hi: float) -> None:
    ticks = _nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 8
