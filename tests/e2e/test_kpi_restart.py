"""End to end: predictions waiting for their labels survive a worker restart.

A KPI worker consumes the predictions of a few windows and is stopped (SIGTERM)
before any label comes. A new worker process with the same app id, topic
prefix and datadir then gets the labels: every label must meet its prediction,
so the label join's pending predictions (and the KPI windows) came back from
the table. With ``memory://`` the table is rebuilt from its changelog topic;
with ``rocksdb://`` it is read from the local store (plus the changelog's tail).
On the embedded broker ``WorkerProcess.restart`` closes the changelogs with a
one-record batch in between (see there); on Apache Kafka it does not.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.dev import simulate
from agents.operator import tail

pytestmark = pytest.mark.e2e

POLICY = """
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 10m
  min_labeled: 50
"""
T0 = 1_800_000_000 - 1_800_000_000 % 60
PER_WINDOW = 500
WINDOWS = 4
EARLY_LABELS = 100  # of about 1800, published before the restart
MODEL = "fraud-detector"


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_pending_predictions_survive_a_restart(worker_factory: object, store: str) -> None:
    worker = worker_factory(POLICY, agents="kpi", store=store, log_level="info")  # type: ignore[operator]
    bootstrap = worker.settings.bootstrap
    traffic = simulate.FraudTraffic(seed=11)
    predictions: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    for w in range(WINDOWS):
        p, lab = traffic.events_with_labels(PER_WINDOW, start_s=T0 + 60 * w, span_s=60,
                                            label_delay_s=20.0, label_share=0.9)
        predictions += p
        labels += lab
    labels.sort(key=lambda e: e["ts"])  # type: ignore[arg-type, return-value]
    producer = simulate.make_producer(bootstrap)
    worker.wait_ready(timeout_s=60)

    # Before the restart: the predictions. Each window but the last is reported
    # (revision 0, nothing labeled yet) once a later window's predictions come.
    sent = list(simulate.batches(predictions, 250))
    simulate.publish(producer, worker.topic("predictions"), MODEL, sent)
    starts = [_iso(T0 + 60 * w) for w in range(WINDOWS)]

    def first_reports(seen: list[dict[str, object]]) -> bool:
        got = {r["window_start"] for r in seen if r["revision"] == 0}
        return all(s in got for s in starts[:-1])

    before = tail.collect(bootstrap, worker.topic("kpi"), first_reports, timeout_s=60)
    assert first_reports(before), f"{before}\n{worker.log()}"
    assert all(r["n_labeled"] == 0 for r in before), before
    # A first few labels too, as a live label feed would have sent.
    early, late = labels[:EARLY_LABELS], labels[EARLY_LABELS:]
    simulate.publish(producer, worker.topic("labels"), MODEL, list(simulate.batches(early, 250)))
    # Every message is consumed and committed (offsets 0..n-1 on the new topics'
    # one partition): nothing is left for the new worker to read again, so the
    # pending predictions can only come from the table. (The embedded broker
    # under-reports a partition's end offset when its last record batch holds
    # several records, so the count of messages sent is the reference.)
    worker.wait_committed("predictions", len(sent))
    worker.wait_committed("labels", 1)

    code = worker.restart()
    assert code == 0, f"the worker did not stop cleanly on SIGTERM ({code})\n{worker.log()}"
    # Input is sent once the new worker has recovered its table: faust-streaming
    # 0.15 may lose input that it fetches while it recovers (seen here: labels
    # skipped, a prediction never handed to the agent; faust-streaming/faust#596).
    # The stopped worker has left the group (on the embedded broker, conftest's
    # stop() sends the LeaveGroup aiokafka leaves out at generation 0, see
    # WorkerProcess._leave_first_generation), so the new one joins at once.
    worker.wait_ready(timeout_s=60)
    if store == "rocksdb://":
        tables = Path(worker.settings.datadir)
        assert list(tables.rglob("kpi-state-*.db")), f"no RocksDB store under {tables}"

    # After the restart: the other labels, then a far-future prediction and label
    # that move both event-time clocks past every window's label_ttl, so each
    # window is retired with a last revision holding all of its labels.
    end = T0 + 60 * WINDOWS + 700
    simulate.publish(producer, worker.topic("labels"), MODEL, list(simulate.batches(late, 250)))
    closer = simulate.FraudTraffic(seed=12).events(1, start_s=end, span_s=1)
    simulate.publish(producer, worker.topic("predictions"), MODEL,
                     [orjson.dumps({"events": closer})])
    simulate.publish(producer, worker.topic("labels"), MODEL, [orjson.dumps(
        {"request_id": "closer", "model": MODEL, "ts": end, "label": 0})])

    truth = {e["request_id"] for e in labels}
    windows = []
    for w in range(WINDOWS):
        in_window = [p for p in predictions
                     if T0 + 60 * w <= p["ts"] < T0 + 60 * (w + 1)]  # type: ignore[operator]
        windows.append((in_window, [p for p in in_window if p["request_id"] in truth]))

    def complete(seen: list[dict[str, object]]) -> bool:
        got = {(r["window_start"], r["n_labeled"]) for r in seen}
        return all((s, len(lab)) in got for s, (_, lab) in zip(starts, windows, strict=True))

    kpi = tail.collect(bootstrap, worker.topic("kpi"), complete, timeout_s=60)
    assert complete(kpi), (
        f"{[(r['window_start'], r['revision'], r['n_labeled']) for r in kpi]}\n{worker.log()}")
    for start, (in_window, labeled) in zip(starts, windows, strict=True):
        mine = sorted((r for r in kpi if r["window_start"] == start), key=lambda r: r["revision"])
        # Revisions go on from where the stopped worker left them: no window was
        # reported afresh (as revision 0 again) by the new process.
        assert [r["revision"] for r in mine] == list(range(len(mine))), mine
        final = mine[-1]
        assert final["n_predictions"] == len(in_window)
        assert final["n_labeled"] == len(labeled), "every label met its prediction"
