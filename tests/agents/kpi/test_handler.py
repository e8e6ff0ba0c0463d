"""The KPI handler on a dict table: label join, KPI windows, revisions, concept drift."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from agents.dev import simulate
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from schemas.policy import Policy, parse_policy
from schemas.reports import KpiReport

T0 = 1_800_000_000 - 1_800_000_000 % 60
MODEL = "fraud-detector"
BASE = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 200
"""

Event = dict[str, Any]


class Run:
    """A KPI handler, its table, and every report it emitted."""

    def __init__(self, policy: Policy) -> None:
        self.handler = KpiHandler(policy=policy, predictions_topic="predictions",
                                  labels_topic="labels", max_message_bytes=1 << 26)
        self.table: dict[bytes, bytes] = {}
        self.reports: list[KpiReport] = []
        self.dead: list[Any] = []
        self.offset = 0

    def send(self, topic: str, events: list[Event], *, raw: bytes | None = None) -> None:
        self.offset += 1
        payload = raw if raw is not None else orjson.dumps({"events": events})
        out = self.handler.handle(payload, Origin(topic, 0, self.offset, MODEL.encode()),
                                  self.table)
        self.reports += out.reports  # type: ignore[arg-type]
        self.dead += out.dead

    def final(self) -> dict[str, KpiReport]:
        """The latest revision of each window, by window start."""
        out: dict[str, KpiReport] = {}
        for r in self.reports:
            key = r.window_start.isoformat()
            if key not in out or r.revision > out[key].revision:
                out[key] = r
        return out


def traffic(windows: int, *, per_window: int = 2000, concept_from: int | None = None,
            seed: int = 1, delay_s: float = 20.0, share: float = 0.9,
            start_s: int = T0) -> tuple[list[Event], list[Event]]:
    gen = simulate.FraudTraffic(seed=seed)
    preds: list[Event] = []
    labels: list[Event] = []
    for w in range(windows):
        concept = concept_from is not None and w >= concept_from
        p, lab = gen.events_with_labels(per_window, start_s=start_s + 60 * w, span_s=60,
                                        concept=concept, label_delay_s=delay_s,
                                        label_share=share)
        preds += p
        labels += lab
    return preds, labels


def in_time_order(preds: list[Event], labels: list[Event],
                  size: int = 500) -> Iterable[tuple[str, list[Event]]]:
    """Messages as serving and a label feed publish them: by event time."""
    queue: list[tuple[float, int, str, list[Event]]] = []
    labels = sorted(labels, key=lambda e: e["ts"])
    for topic, events in (("predictions", preds), ("labels", labels)):
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            heapq.heappush(queue, (chunk[-1]["ts"], len(queue), topic, chunk))
    while queue:
        _, _, topic, chunk = heapq.heappop(queue)
        yield topic, chunk


def close_all(run: Run, after_s: float) -> None:
    """Far-future events on both inputs: every window passes its label_ttl and is retired."""
    run.send("predictions", simulate.FraudTraffic(seed=99).events(1, start_s=after_s, span_s=1))
    run.send("labels", [{"request_id": "closer", "model": MODEL, "ts": after_s, "label": 0}])


def window_of(event: Event) -> int:
    return int((event["ts"] - T0) // 60)


def test_kpis_equal_sklearn_on_the_same_events() -> None:
    run = Run(parse_policy(BASE))
    preds, labels = traffic(3)
    for topic, chunk in in_time_order(preds, labels):
        run.send(topic, chunk)
    close_all(run, T0 + 3 * 60 + 700)
    truth = {e["request_id"]: e["label"] for e in labels}
    final = run.final()
    assert len(final) == 3
    for w, report in enumerate(sorted(final.values(), key=lambda r: r.window_start)):
        mine = [p for p in preds if window_of(p) == w]
        done = [p for p in mine if p["request_id"] in truth]
        y = np.array([truth[p["request_id"]] for p in done])
        yhat = np.array([p["prediction"] for p in done])
        s = np.array([p["score"] for p in done])
        m = report.metrics
        assert (report.n_predictions, report.n_labeled) == (len(mine), len(done))
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat), rel=1e-12)
        assert m["recall"] == pytest.approx(skm.recall_score(y, yhat), rel=1e-12)
        assert m["precision"] == pytest.approx(skm.precision_score(y, yhat), rel=1e-12)
        assert m["f1"] == pytest.approx(skm.f1_score(y, yhat), rel=1e-12)
        assert m["log_loss"] == pytest.approx(skm.log_loss(y, s), rel=1e-9)
        assert m["brier"] == pytest.approx(skm.brier_score_loss(y, s), rel=1e-9)
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=0.005)
        assert m["label_coverage"] == pytest.approx(len(done) / len(mine))
        lat = np.sort([p["latency_ms"] for p in mine])  # the order statistic, to 1 %
        assert m["latency_p99_ms"] == pytest.approx(lat[int(0.99 * lat.size)], rel=0.011)
        assert m["error_rate"] == 0.0
        assert m["unlabeled_expired"] == len(mine) - len(done)


def test_the_order_of_labels_and_predictions_does_not_matter() -> None:
    preds, labels = traffic(2, seed=4)
    in_order, labels_first = Run(parse_policy(BASE)), Run(parse_policy(BASE))
    for topic, chunk in in_time_order(preds, labels):
        in_order.send(topic, chunk)
    for i in range(0, len(labels), 500):
        labels_first.send("labels", labels[i:i + 500])
    for i in range(0, len(preds), 500):
        labels_first.send("predictions", preds[i:i + 500])
    for run in (in_order, labels_first):
        close_all(run, T0 + 2 * 60 + 700)
    # A label feed consumed to its end (clock far ahead) before any prediction:
    # windows still wait for their predictions before they are reported.
    feed_ahead = Run(parse_policy(BASE))
    end = T0 + 2 * 60 + 700
    feed_ahead.send("labels", labels)
    feed_ahead.send("labels", [{"request_id": "closer", "model": MODEL, "ts": end, "label": 0}])
    for i in range(0, len(preds), 500):
        feed_ahead.send("predictions", preds[i:i + 500])
    close_all(feed_ahead, end)
    a = in_order.final()
    assert a.keys() == labels_first.final().keys() == feed_ahead.final().keys()
    for other in (labels_first.final(), feed_ahead.final()):
        for key in a:
            assert a[key].n_predictions == other[key].n_predictions == 2000
            assert a[key].n_labeled == other[key].n_labeled > 1500
            assert a[key].metrics == pytest.approx(other[key].metrics)


def test_late_labels_re_emit_the_window_with_the_next_revision() -> None:
    run = Run(parse_policy(BASE))
    preds, labels = traffic(1, seed=2, delay_s=0.0)
    labels.sort(key=lambda e: e["ts"])
    run.send("predictions", preds)
    run.send("labels", labels[:400])
    # Predictions of the next two windows close window 0: revision 0 has 400 labels.
    later, _ = traffic(2, seed=3, start_s=T0 + 60)
    run.send("predictions", later[:2000])
    first = [r for r in run.reports if r.window_start.timestamp() == T0]
    assert [(r.revision, r.n_labeled) for r in first] == [(0, 400)]
    assert any("not judged yet" in n for n in first[0].notes) is False  # no targets set
    run.send("labels", labels[400:])  # late labels: the window changes ...
    run.send("predictions", later[2000:])  # ... and is re-emitted once the clock has moved on
    revisions = [(r.revision, r.n_labeled) for r in run.reports if r.window_start.timestamp() == T0]
    assert revisions == [(0, 400), (1, len(labels))]


def test_predictions_that_never_get_a_label_are_counted_when_the_ttl_ends() -> None:
    run = Run(parse_policy(BASE))
    preds, labels = traffic(1, seed=5, share=0.5)
    run.send("predictions", preds)
    run.send("labels", labels)
    run.send("labels", [{"request_id": "never-predicted", "model": MODEL, "ts": T0 + 30,
                         "label": 1}])
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    assert report.metrics["unlabeled_expired"] == len(preds) - len(labels)
    assert report.n_labeled == len(labels)
    assert any("1 labels of this model never met their prediction" in n for n in report.notes)


def test_a_concept_change_drops_kpis_and_fires_the_detector_but_no_feature_drifts() -> None:
    policy = parse_policy(BASE + "  targets:\n    roc_auc: {min: 0.65}\n")
    run = Run(policy)
    preds, labels = traffic(6, concept_from=3, seed=7)
    for topic, chunk in in_time_order(preds, labels):
        run.send(topic, chunk)
    close_all(run, T0 + 6 * 60 + 700)
    final = sorted(run.final().values(), key=lambda r: r.window_start)
    assert [r.status for r in final] == ["ok"] * 3 + ["breach"] * 3
    assert all(r.metrics["roc_auc"] > 0.7 for r in final[:3])
    assert all(r.metrics["roc_auc"] < 0.6 for r in final[3:])
    flagged = [i for i, r in enumerate(final) if r.concept_drift]
    assert flagged and min(flagged) >= 3, flagged
    assert "roc_auc" in final[3].breaches[0]

    drift = DriftHandler(policy=policy, predictions_topic="predictions",
                         features_topic="features", max_message_bytes=1 << 26)
    table: dict[bytes, bytes] = {}
    reports = []
    for i in range(0, len(preds), 500):
        out = drift.handle(orjson.dumps({"events": preds[i:i + 500]}),
                           Origin("predictions", 0, i, MODEL.encode()), table)
        reports += out.reports
    assert len(reports) >= 5
    assert all(r.status == "ok" for r in reports), [r.drifted_features for r in reports]


def test_a_stationary_model_never_raises_concept_drift() -> None:
    run = Run(parse_policy(BASE))
    preds, labels = traffic(8, seed=11, per_window=3000)
    for topic, chunk in in_time_order(preds, labels):
        run.send(topic, chunk)
    close_all(run, T0 + 8 * 60 + 700)
    assert not any(r.concept_drift for r in run.reports)
    assert all(r.status == "ok" for r in run.reports)


def test_targets_are_judged_only_with_enough_labels() -> None:
    run = Run(parse_policy(BASE.replace("min_labeled: 200", "min_labeled: 5000")
                           + "  targets:\n    roc_auc: {min: 0.99}\n"
                           + "    latency_p99_ms: {max: 10}\n"))
    preds, labels = traffic(1, seed=8)
    run.send("predictions", preds)
    run.send("labels", labels)
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    assert report.status == "breach"
    assert report.breaches == [
        f"latency_p99_ms {report.metrics['latency_p99_ms']:.4g} is above its target 10"]
    assert any("not judged yet" in n and "roc_auc" in n for n in report.notes)


def test_segments_show_where_the_model_is_worse() -> None:
    run = Run(parse_policy(BASE + "  segments: [channel]\n  min_segment_labeled: 100\n"))
    preds, labels = traffic(1, seed=9, share=1.0)
    by_id = {p["request_id"]: p for p in preds}
    for label in labels:  # on the phone channel the labels are the opposite
        if by_id[label["request_id"]]["segment"]["channel"] == "phone":
            label["label"] = 1 - by_id[label["request_id"]]["prediction"]
    run.send("predictions", preds)
    run.send("labels", labels)
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    assert report.segments["channel"]["phone"]["accuracy"] == 0.0
    assert report.segments["channel"]["web"]["accuracy"] > 0.9
    assert report.disparity["channel"]["accuracy"] == pytest.approx(
        max(v["accuracy"] for v in report.segments["channel"].values()))
    assert any(n.startswith("channel: accuracy ranges from 0 (phone)") for n in report.notes)


def test_business_value_from_the_cost_matrix() -> None:
    run = Run(parse_policy(BASE + "  cost: {fn: -120, fp: -5, tp: 80}\n"))
    preds, labels = traffic(1, seed=10, share=1.0)
    run.send("predictions", preds)
    run.send("labels", labels)
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    truth = {e["request_id"]: e["label"] for e in labels}
    y = np.array([truth[p["request_id"]] for p in preds])
    yhat = np.array([p["prediction"] for p in preds])
    _tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert report.metrics["business_value"] == pytest.approx(-120 * fn - 5 * fp + 80 * tp)


def test_regression_kpis_equal_sklearn() -> None:
    run = Run(parse_policy(BASE + "  task: regression\n"))
    rng = np.random.default_rng(3)
    preds = [{"request_id": f"r{i}", "model": MODEL, "model_version": "v1",
              "ts": T0 + i * 0.05, "prediction": float(rng.normal(100, 20))}
             for i in range(1000)]
    labels = [{"request_id": p["request_id"], "model": MODEL, "ts": p["ts"] + 1,
               "label": p["prediction"] + float(rng.normal(0, 5))} for p in preds]
    run.send("predictions", preds)
    run.send("labels", labels)
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    y = np.array([e["label"] for e in labels])
    yhat = np.array([p["prediction"] for p in preds])
    assert report.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat), rel=1e-9)
    assert report.metrics["rmse"] == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, yhat)), rel=1e-9)
    assert report.metrics["mape"] == pytest.approx(
        skm.mean_absolute_percentage_error(y, yhat), rel=1e-9)


def test_a_bad_label_is_dead_lettered_and_the_rest_of_its_batch_counted() -> None:
    run = Run(parse_policy(BASE))
    preds, labels = traffic(1, seed=12, share=1.0)
    run.send("predictions", preds)
    bad = dict(labels[3])
    del bad["label"]
    run.send("labels", [*labels[:3], bad, *labels[4:]])
    run.send("labels", [], raw=b"{not json")
    close_all(run, T0 + 60 + 700)
    (report,) = run.final().values()
    assert report.n_labeled == len(labels) - 1
    assert [d.index for d in run.dead] == [3, None]
    assert "label" in run.dead[0].error and "not valid UTF-8 JSON" in run.dead[1].error


def test_state_stays_bounded_by_the_ttl() -> None:
    """Windows, pending predictions and expiry chunks older than label_ttl are gone."""
    run = Run(parse_policy(BASE.replace("label_ttl: 10m", "label_ttl: 3m")))
    preds, labels = traffic(30, seed=13, per_window=500, share=0.7)
    sizes = []
    for topic, chunk in in_time_order(preds, labels):
        run.send(topic, chunk)
        sizes.append(len(run.table))
    windows = [k for k in run.table if k.startswith(b"w|")]
    assert len(windows) <= 3 + 2  # label_ttl / window, plus the open ones
    assert max(sizes[len(sizes) // 2:]) <= max(sizes[: len(sizes) // 2]) * 1.2
    assert len({r.window_start for r in run.reports}) >= 25


def test_a_replay_gives_identical_reports() -> None:
    preds, labels = traffic(3, concept_from=1, seed=14)

    def replay() -> list[str]:
        run = Run(parse_policy(BASE))
        for topic, chunk in in_time_order(preds, labels):
            run.send(topic, chunk)
        close_all(run, T0 + 3 * 60 + 700)
        return [r.model_dump_json() for r in run.reports]

    assert replay() == replay()
