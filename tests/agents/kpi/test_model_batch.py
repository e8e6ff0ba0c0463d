"""The label join's matches folded on columns (agents.kpi.model_batch.ModelBatch._joined).

``_joined`` groups a call's matches by series and window with numpy and folds each
group through ``KpiWindow.add_labeled_columns``. ``reference_joined`` below is the
code it replaced (one Python step per match per stage, ``add_labeled`` on
``(prediction, label, label_ts)`` rows): on the same matches, with several versions
and variants, windows, segments, labels and predictions of every JSON kind, missing
ones, scores outside [0, 1], a retired window and expired predictions, both must
leave the same windows, series marks, concept detectors and table bytes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.kpi.handler import KpiHandler
from agents.kpi.model_batch import ModelBatch, Series
from schemas.policy import parse_policy
from streams.join import JoinOutcome
from streams.kpi import series as lifecycle

MODEL = "m"
WINDOW_MS = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS
POLICY = parse_policy("""
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  positive_label: 1
  segments: [region]
""")

LABELS = st.sampled_from([0, 1, 1, 0, True, False, 1.0, "1", "0", " 1 ", "fraud", None, "", 2])
SCORES = st.one_of(st.none(), st.floats(0.0, 1.0), st.sampled_from([-0.5, 1.5]))
SERIES = st.sampled_from([("v1", "champion"), ("v1", "canary"), ("v2", "champion")])


@st.composite
def outcomes(draw: st.DrawFn) -> JoinOutcome:
    n = draw(st.integers(1, 120))
    out = JoinOutcome()
    for _ in range(n):
        version, variant = draw(SERIES)
        t = T0 + draw(st.integers(0, 3 * WINDOW_MS - 1))
        region = draw(st.sampled_from([None, "eu", "us", "apac"]))
        out.predictions.append(
            {
                "v": version,
                "a": variant,
                "t": t,
                "p": draw(LABELS),
                "s": draw(SCORES),
                "g": {} if region is None else {"region": region},
            }
        )
        out.labels.append(draw(LABELS))
        out.label_ts_ms.append(t + draw(st.integers(0, 400_000)))
    for _ in range(draw(st.integers(0, 5))):
        version, variant = draw(SERIES)
        out.expired.append({"v": version, "a": variant, "t": T0 + draw(st.integers(0, 119_999))})
    return out


def reference_joined(work: ModelBatch, joined: JoinOutcome) -> None:
    """``ModelBatch._joined`` before the columns: one step per match per stage."""
    matches = joined.matches
    keys: list[tuple[Series, int]] = []
    groups: dict[tuple[Series, int], list[int]] = {}
    for i, m in enumerate(matches):
        p = m.prediction
        key = ((p["v"], p["a"]), work.start_of(p["t"]))
        keys.append(key)
        groups.setdefault(key, []).append(i)
    errors = np.full(len(keys), np.nan)
    for (series, start), rows in groups.items():
        if lifecycle.retired(work.index(series), start):
            work.index(series)["lost"] += len(rows)
            continue
        matched = [(matches[i].prediction, matches[i].label, matches[i].label_ts_ms) for i in rows]
        state, errs = work.kpi.add_labeled(work.window(series, start), matched)  # type: ignore[arg-type]
        errors[rows] = errs
        work.windows[(series, start)] = state
        work.touched(series, start)
    for series in {s for s, _ in groups}:
        order = [i for i, (s, _) in enumerate(keys) if s == series and errors[i] == errors[i]]
        if not order:
            continue
        detector = work._detector(series)
        for fired in detector.update(errors[order]):
            window = keys[order[fired]]
            work.windows[window] = work.kpi.mark_concept_drift(work.window(*window))
    expired: dict[tuple[Series, int], int] = {}
    for p in joined.expired:
        key = ((p["v"], p["a"]), work.start_of(p["t"]))
        expired[key] = expired.get(key, 0) + 1
    for (series, start), n in expired.items():
        if lifecycle.is_open(work.index(series), start):
            work.windows[(series, start)] = work.kpi.add_expired(work.window(series, start), n)
            work.touched(series, start)


def table_before() -> dict[bytes, bytes]:
    """A table where the three series have open windows, and v2's first window retired."""
    handler = KpiHandler(
        policy=POLICY,
        predictions_topic="p",
        labels_topic="l",
        max_message_bytes=1 << 22,
        clock_ms=lambda: 0,
    )
    table: dict[bytes, bytes] = {}
    work = handler._batch(MODEL, table, 0)
    for series in [("v1", "champion"), ("v1", "canary"), ("v2", "champion")]:
        work._tracked(series)
        for w in range(3):
            work.window(series, T0 + w * WINDOW_MS)
    work.index(("v2", "champion"))["retired_until_ms"] = T0 + WINDOW_MS
    del work.index(("v2", "champion"))["windows"][str(T0)]
    work.write()
    return table


def fold(joined: JoinOutcome, columns: bool) -> tuple[dict[bytes, bytes], Any]:
    ticks = itertools.count()
    handler = KpiHandler(
        policy=POLICY,
        predictions_topic="p",
        labels_topic="l",
        max_message_bytes=1 << 22,
        clock_ms=lambda: next(ticks),
    )
    table = table_before()
    work = handler._batch(MODEL, table, 5)
    if columns:
        work._joined(joined)
    else:
        reference_joined(work, joined)
    work.write()
    return table, dict(handler._changed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(joined=outcomes())
def test_columns_fold_as_the_rows_did(joined: JoinOutcome) -> None:
    rows_table, rows_changed = fold(joined, columns=False)
    columns_table, columns_changed = fold(joined, columns=True)
    assert columns_table == rows_table
    assert columns_changed == rows_changed


def test_the_scenario_reaches_every_branch() -> None:
    """Several groups, a retired window (its matches counted as lost), usable and
    unusable labels, and a detector that fires."""
    rng = np.random.default_rng(3)
    out = JoinOutcome()
    for i in range(3000):
        series = [("v1", "champion"), ("v1", "canary"), ("v2", "champion")][i % 3]
        t = T0 + int(rng.integers(0, 3 * WINDOW_MS))
        wrong = rng.random() < (0.05 if i < 1500 else 0.6)  # the error rate jumps
        out.predictions.append(
            {"v": series[0], "a": series[1], "t": t, "p": 1, "s": 0.9, "g": {"region": "eu"}}
        )
        out.labels.append(None if i % 50 == 0 else (0 if wrong else 1))
        out.label_ts_ms.append(t + 1000)
    table, _ = fold(out, columns=True)
    assert table == fold(out, columns=False)[0]
    handler = KpiHandler(
        policy=POLICY, predictions_topic="p", labels_topic="l", max_message_bytes=1 << 22
    )
    work = handler._batch(MODEL, table, 0)
    assert work.index(("v2", "champion"))["lost"] > 0
    every = [("v1", "champion"), ("v1", "canary"), ("v2", "champion")]
    windows = [work._accumulators(s, T0 + w * WINDOW_MS) for s in every for w in range(3)]
    assert sum(w["concept_drift"] for w in windows) > 0
    assert sum(w["unusable_labels"] for w in windows) > 0
