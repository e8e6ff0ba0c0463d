"""KPI count windows (``kpi.window: {events: N}``) through the KPI handler, on a scripted
stream: every N predictions of a version and variant in offset order form one window,
whatever their times; a late label joins the window its prediction was counted in (also
after a restart: the number waits with the prediction); the final revision after
label_ttl; the same reports on a replay, told apart by their number."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.operator.audit_report import gather
from agents.operator.replay import ReplayResult, compare, identity
from schemas.policy import Policy, parse_policy
from schemas.reports import KpiReport
from streams.policy.chain import ChainCheck

MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 3600  # s
POLICY = parse_policy("""
kpi:
  window: {events: 3}
  label_ttl: 10m
  min_labeled: 1
  targets: {accuracy: {min: 0.6}}
""")
#: (request id, variant, ts offset in s, prediction): offset order. Window 1 of the
#: champion holds the earliest and the latest time of all; the canary counts apart.
PREDICTIONS = [
    [("p0", "champion", 10, 1), ("p1", "champion", 11, 0), ("c0", "canary", 12, 1),
     ("p2", "champion", 12, 1)],
    [("p3", "champion", 100, 1), ("p4", "champion", 1, 0), ("p5", "champion", 50, 0),
     ("p6", "champion", 60, 1), ("c1", "canary", 61, 0)],
]
LABELS = {"p0": 1, "p1": 1, "p3": 1, "p4": 0, "p5": 1}  # p2 is never labeled


def _at(offset_s: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset_s, UTC)


class Run:
    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.handler = self.restart()
        self.reports: list[KpiReport] = []
        self.offset = 0

    def restart(self, policy: Policy = POLICY) -> KpiHandler:
        self.handler = KpiHandler(policy=policy, predictions_topic="predictions",
                                  labels_topic="labels", max_message_bytes=1 << 20)
        return self.handler

    def send(self, topic: str, events: list[dict[str, Any]]) -> list[KpiReport]:
        self.offset += 1
        out = self.handler.handle(orjson.dumps({"events": events}),
                                  Origin(topic, 0, self.offset, MODEL.encode()), self.table)
        assert not out.dead
        self.reports += out.reports  # type: ignore[arg-type]
        return out.reports  # type: ignore[return-value]

    def predict(self, rows: list[tuple[str, str, int, int]]) -> list[KpiReport]:
        return self.send("predictions", [
            {"request_id": r, "model": MODEL, "model_version": "v1", "variant": variant,
             "ts": T0 + at, "prediction": y, "score": 0.8 if y else 0.2}
            for r, variant, at, y in rows])

    def label(self, ids: list[str], at: float) -> list[KpiReport]:
        return self.send("labels", [
            {"request_id": r, "model": MODEL, "ts": T0 + at, "label": LABELS.get(r, 0)}
            for r in ids])


def _script(run: Run, *, restart: bool = False) -> None:
    run.predict(PREDICTIONS[0])
    run.label(["p0", "p1"], 200)
    run.predict(PREDICTIONS[1])
    if restart:
        run.restart()  # the pending predictions' windows come back from the table
    run.label(["p3", "p4", "p5"], 300)
    run.label(["closer"], 2400)  # labels' clock past every full window's label_ttl


def test_every_n_predictions_of_a_series_form_one_window_in_offset_order() -> None:
    run = Run()
    first = run.predict(PREDICTIONS[0])
    # the champion's 3rd prediction closes window 0 at once; the canary has 1 of 3
    assert [(r.variant, r.window_index, r.revision, r.n_predictions) for r in first] == [
        ("champion", 0, 0, 3)
    ]
    assert (first[0].window_start, first[0].window_end) == (_at(10), _at(12.001))
    assert orjson.loads(first[0].model_dump_json())["window_index"] == 0
    revised = run.label(["p0", "p1"], 200)
    assert [(r.window_index, r.revision, r.n_labeled) for r in revised] == [(0, 1, 2)]
    second = run.predict(PREDICTIONS[1])
    # window 1 spans p3..p5: the earliest (1 s) and the latest (100 s) times of all
    assert [(r.window_index, r.n_predictions, r.window_start, r.window_end, r.late)
            for r in second] == [(1, 3, _at(1), _at(100.001), 0)]


def test_a_late_label_joins_the_window_its_prediction_was_counted_in() -> None:
    run = Run()
    _script(run, restart=True)
    # p4 (ts 1 s, inside window 0's time span) was counted in window 1
    labeled = [(r.window_index, r.n_labeled) for r in run.reports if r.window_index == 1]
    assert labeled[-1] == (1, 3)
    final = {r.window_index: r for r in run.reports if r.final}
    assert sorted(final) == [0, 1] and all(r.variant == "champion" for r in final.values())
    assert (final[0].n_predictions, final[0].n_labeled) == (3, 2)
    assert final[0].metrics["unlabeled_expired"] == 1  # p2
    assert final[0].metrics["accuracy"] == 0.5 and final[0].status == "breach"
    assert final[1].metrics["accuracy"] == 2 / 3 and final[1].status == "ok"
    assert [r.revision for r in run.reports if r.window_index == 1 and r.final] == [
        max(r.revision for r in run.reports if r.window_index == 1)
    ]
    # state: the final windows dropped; the partial ones (champion p6, canary c0 c1) kept
    windows = sorted(k.decode().split("|", 2)[2] for k in run.table if k.startswith(b"w|"))
    assert windows == ["v1|canary|0", "v1|champion|2"]
    series = orjson.loads(run.table[f"s|{MODEL}|v1|champion".encode()])
    assert series["counted"] == 7 and list(series["windows"]) == ["2"]


def test_a_replay_gives_the_same_reports_told_apart_by_their_number() -> None:
    live, replayed = Run(), Run()
    _script(live)
    _script(replayed, restart=True)
    docs = [[orjson.loads(r.model_dump_json()) for r in run.reports] for run in (live, replayed)]
    assert docs[0] == docs[1]
    keys = [identity("kpi", d) for d in docs[0]]
    assert len(set(keys)) == len(keys) and all("#" in k for k in keys)
    result = ReplayResult(kpi=docs[1])
    compare(result, {"kpi": docs[0]})
    assert result.differences == [] and result.compared == 2
    # two windows may share a start time: their number keeps them apart
    twin = [{**docs[0][0], "window_index": 5, "n_predictions": 99}]
    result = ReplayResult(kpi=docs[1])
    compare(result, {"kpi": docs[0] + twin})
    assert [d.what for d in result.differences] == ["only live"]


def test_windows_of_time_left_when_the_window_becomes_a_count_end_at_once() -> None:
    run = Run()
    run.restart(parse_policy("kpi: {window: 60s, label_ttl: 10m, min_labeled: 1}"))
    run.predict([("a0", "champion", -3000, 1)])  # a window of time reported and retired
    run.predict(PREDICTIONS[0][:2])  # p0, p1: a 60-s window, open
    assert [(r.window_index, r.final, r.n_predictions) for r in run.reports] == [(None, True, 1)]
    run.restart()  # the same table under {events: 3}
    run.label(["p0"], 20)  # a prediction counted in no count window: lost, no failure
    out = run.predict(PREDICTIONS[1][:3])
    assert [(r.window_index, r.final, r.n_predictions) for r in run.reports[1:]] == [
        (None, True, 2), (0, False, 3)
    ]
    assert out[-1].window_start == _at(1)  # the count window holds p3..p5 only
    assert (out[-1].late, out[-1].n_labeled) == (0, 0)
    # and back to windows of time: the open count windows end, the next time window opens
    run.restart(parse_policy("kpi: {window: 60s, label_ttl: 10m, min_labeled: 1}"))
    back = run.predict([("b0", "champion", 400, 1), ("b1", "champion", 401, 0)])
    assert "counted" not in orjson.loads(run.table[f"s|{MODEL}|v1|champion".encode()])
    run.predict([("b2", "champion", 480, 1)])  # past b0's window: it is reported
    assert [(r.window_start, r.n_predictions) for r in run.reports if not r.final][-1] == (
        _at(360), 2)
    assert all(r.window_index is None for r in back)


def test_the_audit_counts_count_windows_by_their_number() -> None:
    run = Run()
    _script(run)
    docs = [orjson.loads(r.model_dump_json()) for r in run.reports]
    twin = {**docs[-1], "window_index": 7}  # another window that starts at the same time
    data = gather(MODEL, start_ms=0, end_ms=2**62, drift=[], kpi=[*docs, twin], commands=[],
                  deployments=[], poisoning=[], check=ChainCheck(events=0, models=0))
    assert data.counts["KPI windows"] == 3
