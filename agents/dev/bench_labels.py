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
  then the labels and one far-future label that retires every window (two days
  ahead: this worker's ``DRIFTLINE_MAX_FUTURE_S`` is three days, else the label
  would be dead-lettered and no window's final revision would come); the
  rate is labels / (Kafka time of the last report - wall time the label
  publishing started), so publishing counts against the worker.

``form`` (``driftline bench --labels-format``) is how the predictions and labels
are sent: ``json`` batches or ``arrow`` IPC streams (``simulate.encode``), the
same events either way.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.dev import simulate
from agents.dev.bench import BenchError, bench_worker, peak_rss_mb
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.operator import tail
from agents.runtime.runner import Outcome
from schemas.policy import parse_policy

#: The policy's default KPI window; the traffic spans two of them.
WINDOW_S = 3600
#: how far after the last window the closing label is: past every window's label_ttl
CLOSER_AHEAD_S = 2 * 86_400
#: labels later than this after the last window are not sent (see ``_traffic``)
LABEL_HORIZON_S = 1800
POLICY = "kpi:\n  window: 1h\n  allowed_lateness: 0s\n  label_ttl: 1d\n"
MODEL = "fraud-detector"


@dataclass
class LabelBenchResult:
    labels: int  # predictions, each with a label
    labels_sent: int  # the labels sent (``_traffic``: all but the far tail)
    batch_size: int
    form: str
    handler_labels_per_s: float
    bytes_per_pending_prediction: float
    worker_labels_per_s: float
    worker_peak_rss_mb: float


def _traffic(n: int, batch_size: int, form: str) -> tuple[list[bytes], list[bytes], int, int]:
    """Prediction and label messages, the end of the last window, and the labels sent:
    labels sorted by their time, as a feed sends them, and none later than
    ``LABEL_HORIZON_S`` after the last window (the exponential delays' far tail would
    otherwise put a small run's last message more than the future bound, one hour,
    ahead of the stream, and it would be dead-lettered)."""
    gen = simulate.FraudTraffic(seed=21)
    t0 = 1_800_000_000 - 1_800_000_000 % WINDOW_S
    windows = 2
    preds: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for w in range(windows):
        p, lab = gen.events_with_labels(
            n // windows,
            start_s=t0 + w * WINDOW_S,
            span_s=WINDOW_S,
            label_delay_s=600.0,
            label_share=1.0,
        )
        preds += p
        labels += lab
    end_s = t0 + windows * WINDOW_S
    labels = sorted(
        (e for e in labels if e["ts"] <= end_s + LABEL_HORIZON_S), key=lambda e: e["ts"]
    )
    return (
        list(simulate.encode(preds, batch_size, form=form)),
        list(simulate.encode(labels, batch_size, form=form)),
        end_s,
        len(labels),
    )


def _handler() -> KpiHandler:
    return KpiHandler(
        policy=parse_policy(POLICY),
        predictions_topic="p",
        labels_topic="l",
        max_message_bytes=1 << 26,
    )


def _refused(out: Outcome, index: int) -> None:
    if out.dead:
        raise BenchError(f"the KPI handler dead-lettered message {index}: {out.dead[0].error}")


def _handler_figures(
    preds: list[bytes], labels: list[bytes], n: int, repeat: int
) -> tuple[float, float]:
    rates, sizes = [], []
    for _ in range(repeat):
        handler, table = _handler(), {}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i, m in enumerate(preds):
            _refused(handler.handle(m, Origin("p", 0, i, MODEL.encode()), table), i)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        pending = handler._for(MODEL)[1].pending(table, MODEL)[0]
        sizes.append(grown / max(pending, 1))
        start = time.perf_counter()
        for i, m in enumerate(labels):
            _refused(handler.handle(m, Origin("l", 0, i, MODEL.encode()), table), i)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), statistics.median(sizes)


def _worker_figures(
    preds: list[bytes],
    labels: list[bytes],
    end_s: int,
    n: int,
    broker: str | None,
    form: str,
    timeout_s: float = 600.0,
) -> tuple[float, float]:
    last_window = datetime.fromtimestamp(end_s - WINDOW_S, tz=UTC)
    (closer,) = simulate.encode(
        [{"request_id": "closer", "model": MODEL, "ts": end_s + CLOSER_AHEAD_S, "label": 0}],
        1,
        form=form,
    )
    headers = simulate.headers(form)
    # The closer is two days ahead of the labels: beyond the default future bound (one
    # hour), which would dead-letter it, so this worker's bound is three days.
    env = {"DRIFTLINE_MAX_FUTURE_S": str(CLOSER_AHEAD_S + 86_400)}
    with bench_worker(broker, POLICY, "kpi", env=env) as (settings, proc, workdir, _):
        producer = simulate.make_producer(settings.bootstrap)
        simulate.publish(producer, settings.topic("predictions"), MODEL, preds, headers=headers)
        # One more prediction closes the last window: its first report says the
        # predictions have all been consumed.
        simulate.publish(
            producer,
            settings.topic("predictions"),
            MODEL,
            list(
                simulate.encode(
                    simulate.FraudTraffic(seed=5).events(1, start_s=end_s + 1, span_s=1),
                    1,
                    form=form,
                )
            ),
            headers=headers,
        )
        deadline = time.monotonic() + timeout_s
        for msg in tail.messages(
            settings.bootstrap,
            settings.topic("kpi"),
            stop=lambda: proc.poll() is not None or time.monotonic() > deadline,
        ):
            report = orjson.loads(msg.value())
            if datetime.fromisoformat(report["window_start"]) == last_window:
                break
        else:
            why = (
                "stopped early"
                if proc.poll() is not None
                else f"did not report the predictions' last window within {timeout_s:.0f} s"
            )
            raise BenchError(f"the worker {why}; see {workdir / 'worker.log'}")
        started = time.time()
        simulate.publish(
            producer, settings.topic("labels"), MODEL, [*labels, closer], headers=headers
        )
        # The closer retires every window: the last report is the last window's final one.
        stamps: list[int] = []
        final = False
        for msg in tail.messages(
            settings.bootstrap,
            settings.topic("kpi"),
            from_beginning=True,
            idle_timeout_s=10,
            stop=lambda: proc.poll() is not None,
        ):
            report = orjson.loads(msg.value())
            if report["revision"] > 0 and report["n_labeled"] > 0:
                stamps.append(msg.timestamp()[1])
                if datetime.fromisoformat(
                    report["window_start"]
                ) == last_window and "final revision" in " ".join(report["notes"]):
                    final = True
                    break
        if not stamps:
            raise BenchError(f"no label was joined; see {workdir / 'worker.log'}")
        if not final:
            raise BenchError(
                "the last window's final revision did not come (was the closing "
                f"label refused?); see {workdir / 'worker.log'}"
            )
        rss = peak_rss_mb(proc.pid)
        return n / max(stamps[-1] / 1000 - started, 1e-3), rss


def run(
    *,
    labels: int = 200_000,
    batch_size: int = 500,
    repeat: int = 3,
    broker: str | None = None,
    form: str = "json",
) -> LabelBenchResult:
    preds, label_messages, end_s, sent = _traffic(labels, batch_size, form)
    handler_rate, per_pending = _handler_figures(preds, label_messages, sent, repeat)
    worker_rate, rss = _worker_figures(preds, label_messages, end_s, sent, broker, form)
    return LabelBenchResult(
        labels=labels,
        labels_sent=sent,
        batch_size=batch_size,
        form=form,
        handler_labels_per_s=round(handler_rate),
        bytes_per_pending_prediction=round(per_pending),
        worker_labels_per_s=round(worker_rate),
        worker_peak_rss_mb=round(rss, 1),
    )


def render(r: LabelBenchResult) -> str:
    return "\n".join(
        [
            f"driftline bench --labels: {r.labels:,} predictions, then {r.labels_sent:,} of "
            f"their labels in {r.form} batches of {r.batch_size}",
            f"  label join, KPI handler, no Kafka {r.handler_labels_per_s:>10,.0f} labels/s",
            f"  label join, worker on broker      {r.worker_labels_per_s:>10,.0f} labels/s",
            f"  memory per pending prediction     {r.bytes_per_pending_prediction:>10,.0f} bytes",
            f"  worker peak memory                {r.worker_peak_rss_mb:>10.1f} MB",
        ]
    )
