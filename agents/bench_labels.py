"""`driftline bench --labels`: how fast the KPI agent joins batched labels, and what
a prediction waiting for its label costs.

* handler: the KPI agent's code without Kafka. ``predictions`` are folded in
  first (they wait for labels), then their labels in batches; the rate is
  labels per second over the label phase. Median of ``repeat`` runs.
* memory per pending prediction: Python heap growth (tracemalloc) while the
  predictions are folded in, divided by the predictions then waiting: the
  in-memory working set plus the table's copy (a ``memory://`` store keeps
  both in RAM; ``rocksdb://`` moves the table's copy to disk).
* worker: the real ``driftline worker --agents kpi`` on the broker. Predictions
  are published and consumed first (the report of their last window says so),
  then the labels and one far-future label that retires every window; the
  rate is labels / (Kafka time of the last report - wall time the label
  publishing started), so publishing counts against the worker.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents import simulate, tail
from agents.bench import bench_worker, peak_rss_mb
from agents.codec import Origin
from agents.kpi_handler import KpiHandler
from schemas.policy import parse_policy

#: The policy's default KPI window; the traffic spans two of them.
WINDOW_S = 3600
POLICY = "kpi:\n  window: 1h\n  allowed_lateness: 0s\n  label_ttl: 1d\n"
MODEL = "fraud-detector"


@dataclass
class LabelBenchResult:
    labels: int
    batch_size: int
    handler_labels_per_s: float
    bytes_per_pending_prediction: float
    worker_labels_per_s: float
    worker_peak_rss_mb: float


def _traffic(n: int, batch_size: int) -> tuple[list[bytes], list[bytes], int]:
    """Prediction and label messages; labels sorted by their time, as a feed sends them."""
    gen = simulate.FraudTraffic(seed=21)
    t0 = 1_800_000_000 - 1_800_000_000 % WINDOW_S
    windows = 2
    preds: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for w in range(windows):
        p, lab = gen.events_with_labels(n // windows, start_s=t0 + w * WINDOW_S, span_s=WINDOW_S,
                                        label_delay_s=600.0, label_share=1.0)
        preds += p
        labels += lab
    labels.sort(key=lambda e: e["ts"])
    return (list(simulate.batches(preds, batch_size)), list(simulate.batches(labels, batch_size)),
            t0 + windows * WINDOW_S)


def _handler() -> KpiHandler:
    return KpiHandler(policy=parse_policy(POLICY), predictions_topic="p", labels_topic="l",
                      max_message_bytes=1 << 26)


def _handler_figures(preds: list[bytes], labels: list[bytes], n: int,
                     repeat: int) -> tuple[float, float]:
    rates, sizes = [], []
    for _ in range(repeat):
        handler, table = _handler(), {}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i, m in enumerate(preds):
            handler.handle(m, Origin("p", 0, i, MODEL.encode()), table)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        pending = handler._for(MODEL)[1].pending(table, MODEL)[0]
        sizes.append(grown / max(pending, 1))
        start = time.perf_counter()
        for i, m in enumerate(labels):
            handler.handle(m, Origin("l", 0, i, MODEL.encode()), table)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), statistics.median(sizes)


def _worker_figures(preds: list[bytes], labels: list[bytes], end_s: int, n: int,
                    broker: str | None) -> tuple[float, float]:
    last_window = datetime.fromtimestamp(end_s - WINDOW_S, tz=UTC)
    closer = orjson.dumps({"request_id": "closer", "model": MODEL, "ts": end_s + 2 * 86_400,
                           "label": 0})
    with bench_worker(broker, POLICY, "kpi") as (settings, proc, workdir):
        producer = simulate.make_producer(settings.bootstrap)
        simulate.publish(producer, settings.topic("predictions"), MODEL, preds)
        # One more prediction closes the last window: its first report says the
        # predictions have all been consumed.
        simulate.publish(producer, settings.topic("predictions"), MODEL, [orjson.dumps(
            simulate.FraudTraffic(seed=5).events(1, start_s=end_s + 1, span_s=1)[0])])
        for msg in tail.messages(settings.bootstrap, settings.topic("kpi"),
                                 stop=lambda: proc.poll() is not None):
            report = orjson.loads(msg.value())
            if datetime.fromisoformat(report["window_start"]) == last_window:
                break
        else:
            raise RuntimeError(f"the worker stopped early; see {workdir / 'worker.log'}")
        started = time.time()
        simulate.publish(producer, settings.topic("labels"), MODEL, [*labels, closer])
        # The closer retires every window: the last report is the last window's final one.
        stamps: list[int] = []
        for msg in tail.messages(settings.bootstrap, settings.topic("kpi"), from_beginning=True,
                                 idle_timeout_s=10, stop=lambda: proc.poll() is not None):
            report = orjson.loads(msg.value())
            if report["revision"] > 0 and report["n_labeled"] > 0:
                stamps.append(msg.timestamp()[1])
                if (datetime.fromisoformat(report["window_start"]) == last_window
                        and "final revision" in " ".join(report["notes"])):
                    break
        if not stamps:
            raise RuntimeError(f"no label was joined; see {workdir / 'worker.log'}")
        rss = peak_rss_mb(proc.pid)
        return n / max(stamps[-1] / 1000 - started, 1e-3), rss


def run(*, labels: int = 200_000, batch_size: int = 500, repeat: int = 3,
        broker: str | None = None) -> LabelBenchResult:
    preds, label_messages, end_s = _traffic(labels, batch_size)
    handler_rate, per_pending = _handler_figures(preds, label_messages, labels, repeat)
    worker_rate, rss = _worker_figures(preds, label_messages, end_s, labels, broker)
    return LabelBenchResult(
        labels=labels, batch_size=batch_size,
        handler_labels_per_s=round(handler_rate), bytes_per_pending_prediction=round(per_pending),
        worker_labels_per_s=round(worker_rate), worker_peak_rss_mb=round(rss, 1),
    )


def render(r: LabelBenchResult) -> str:
    return "\n".join([
        f"driftline bench --labels: {r.labels:,} predictions, then their labels in batches "
        f"of {r.batch_size}",
        f"  label join, KPI handler, no Kafka {r.handler_labels_per_s:>10,.0f} labels/s",
        f"  label join, worker on broker      {r.worker_labels_per_s:>10,.0f} labels/s",
        f"  memory per pending prediction     {r.bytes_per_pending_prediction:>10,.0f} bytes",
        f"  worker peak memory                {r.worker_peak_rss_mb:>10.1f} MB",
    ])
