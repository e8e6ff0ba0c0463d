"""`driftline bench`: throughput of the drift agent, measured end to end.

Side by side in one run, on the same messages (batches of 500 events, 20
numeric and 5 categorical features):

* decode: ``orjson.loads`` of every message, in this process, each result
  dropped before the next (the floor any JSON consumer pays). Keeping all of
  them alive instead would time the garbage collector walking 200,000 live
  dicts: 2.7x slower here, a baseline that flatters every ratio (bench before
  2026-11-23 did that);
* handler: the drift agent's code (decode, validate, fold, close windows)
  called directly, without Kafka;
* worker: the real ``driftline worker`` on the broker. The messages are
  published first; the rate is read from the drift reports' Kafka timestamps:
  between the report of window 0 and that of window K the worker processed
  windows 1..K, so startup and group join are not counted;
* floor: the same worker with a handler that reads nothing of its messages
  (``agents.bench_floor``): what Kafka, Faust and the runner cost per message
  whatever the handler does; the drift agent's worker is slower than its floor.

Also: the time to build one window's report for 25 features, and the worker's
peak resident memory. Medians of ``repeat`` runs where a figure is timed in
process. The machine is shared: compare figures from one run, not across runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agents import simulate, tail
from agents.broker import EmbeddedBroker
from agents.codec import Origin
from agents.config import Settings
from agents.drift_handler import DriftHandler
from agents.topics import ensure_topics
from schemas.policy import DriftPolicy, Policy
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor

WINDOW_S = 60


@dataclass
class BenchResult:
    events: int
    batch_size: int
    decode_events_per_s: float
    handler_events_per_s: float
    worker_events_per_s: float
    floor_events_per_s: float
    worker_to_decode_ratio: float
    report_ms_25_features: float
    worker_peak_rss_mb: float


def _messages(events_per_window: int, windows: int, batch_size: int) -> list[bytes]:
    traffic = simulate.FraudTraffic(seed=11)
    t0 = 1_800_000_000 - 1_800_000_000 % WINDOW_S
    out: list[bytes] = []
    for w in range(windows):
        events = traffic.events(events_per_window, start_s=t0 + w * WINDOW_S, span_s=WINDOW_S)
        out.extend(simulate.batches(events, batch_size))
    closer = traffic.events(1, start_s=t0 + windows * WINDOW_S + 1, span_s=1)
    out.extend(simulate.batches(closer, batch_size))
    return out


def median_rate(fn: Any, events: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return events / statistics.median(times)


def _policy_text() -> str:
    return "drift:\n  window: 60s\n  allowed_lateness: 0s\n  min_reference_events: 1000\n"


def _report_ms(repeat: int) -> float:
    """Median time to close one window of 25 features against its reference."""
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(policy=DriftPolicy(window=60, allowed_lateness=0))
    cols = simulate.FraudTraffic(seed=3).columns(20_000)
    cols.pop("@score")
    cols.pop("@label")

    def batch(minute: int) -> FeatureBatch:
        idx = rng.integers(0, 20_000, 5_000)
        return FeatureBatch(
            ts_ms=np.full(5_000, minute * 60_000, dtype=np.int64),
            columns={k: (v[idx] if v.dtype.kind == "f" else v[idx].tolist())
                     for k, v in cols.items()},
        )

    state = monitor.initialize("m", "v1")
    for minute in range(3):  # the reference is built when window 0 closes
        state = monitor.update(state, batch(minute))
        state, _ = monitor.close_ready(state)
    state = monitor.update(state, batch(3))  # window 2 (binned, steady state) can close
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        _, reports = monitor.close_ready(state)
        times.append(time.perf_counter() - start)
        assert len(reports) == 1 and len(reports[0].features) == 25
    return statistics.median(times) * 1000


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run(*, events: int = 200_000, batch_size: int = 500, repeat: int = 3,
        broker: str | None = None, windows: int = 10) -> BenchResult:
    per_window = max(events // windows, batch_size)
    messages = _messages(per_window, windows, batch_size)
    total = per_window * windows

    def decode_all() -> None:
        for m in messages:
            orjson.loads(m)

    decode = median_rate(decode_all, total, repeat)

    table: dict[bytes, bytes] = {}  # the handler's, kept for the size of its state

    def handle_all() -> None:
        handler = DriftHandler(policy=Policy.model_validate(
            {"drift": {"window": 60, "allowed_lateness": 0, "min_reference_events": 1000}}),
            predictions_topic="p", features_topic="f", max_message_bytes=1 << 26)
        table.clear()
        for i, m in enumerate(messages):
            handler.handle(m, Origin("p", 0, i, b"fraud-detector"), table)

    handler_rate = median_rate(handle_all, total, repeat)
    worker_rate, rss = _worker_rate(messages, per_window, windows, broker)
    floor_argv = ["-m", "agents.bench_floor", "--every", str(len(messages) // windows),
                  "--value-bytes", str(len(table[b"fraud-detector@v1"]))]
    floor_rate, _ = _worker_rate(messages, per_window, windows, broker, floor_argv)
    return BenchResult(
        events=total, batch_size=batch_size,
        decode_events_per_s=round(decode), handler_events_per_s=round(handler_rate),
        worker_events_per_s=round(worker_rate), floor_events_per_s=round(floor_rate),
        worker_to_decode_ratio=round(worker_rate / decode, 3),
        report_ms_25_features=round(_report_ms(max(repeat, 5)), 3),
        worker_peak_rss_mb=round(rss, 1),
    )


@contextmanager
def bench_worker(
    broker_address: str | None, policy: str, agents: str, before_start: Any = None,
    argv: list[str] | None = None,
) -> Iterator[tuple[Settings, subprocess.Popen[bytes], Path]]:
    """A broker (embedded unless given), fresh topics, and a ``driftline worker``
    running ``agents``; ``before_start(settings)`` runs before the worker starts.
    ``argv`` (after ``python``) starts another worker instead, given the broker,
    topic prefix and app id."""
    embedded = None if broker_address else EmbeddedBroker().start()
    bootstrap = broker_address or embedded.bootstrap  # type: ignore[union-attr]
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(broker=bootstrap, topic_prefix=prefix, app_id=f"driftline-{prefix}")
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    (workdir / "policy.yaml").write_text(policy)
    proc = None
    try:
        ensure_topics(settings)
        if before_start is not None:
            before_start(settings)
        args = ["--broker", bootstrap, "--topic-prefix", prefix, "--app-id", settings.app_id]
        command = argv or ["-m", "agents", "worker", "--policy", str(workdir / "policy.yaml"),
                           "--log-level", "warn", "--agents", agents]
        with open(workdir / "worker.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, *command, *args],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "DRIFTLINE_DATADIR": str(workdir)})
        yield settings, proc, workdir
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        if embedded is not None:
            embedded.stop()


def _worker_rate(
    messages: list[bytes], per_window: int, windows: int, broker_address: str | None,
    argv: list[str] | None = None,
) -> tuple[float, float]:
    def publish(settings: Settings) -> None:
        producer = simulate.make_producer(settings.bootstrap)
        simulate.publish(producer, settings.topic("predictions"), "fraud-detector", messages)

    with bench_worker(broker_address, _policy_text(), "drift", publish, argv) as (
            settings, proc, wd):
        stamps: list[int] = []
        for msg in tail.messages(settings.bootstrap, settings.topic("drift"),
                                 stop=lambda: len(stamps) >= windows or proc.poll() is not None):
            stamps.append(msg.timestamp()[1])
            if len(stamps) >= windows:
                break
        if len(stamps) < windows:
            raise RuntimeError(f"the worker stopped early; see {wd / 'worker.log'}")
        rss = peak_rss_mb(proc.pid)
        seconds = (stamps[-1] - stamps[0]) / 1000
        return per_window * (windows - 1) / max(seconds, 1e-3), rss


def render(result: BenchResult) -> str:
    r = result
    return "\n".join([
        f"driftline bench: {r.events:,} events in batches of {r.batch_size}, "
        "20 numeric + 5 categorical features",
        f"  decode only (orjson.loads)      {r.decode_events_per_s:>12,.0f} events/s",
        f"  drift handler, no Kafka         {r.handler_events_per_s:>12,.0f} events/s",
        f"  drift agent, worker on broker   {r.worker_events_per_s:>12,.0f} events/s",
        f"  worker's floor (reads nothing)  {r.floor_events_per_s:>12,.0f} events/s",
        f"  worker / decode ratio           {r.worker_to_decode_ratio:>12.3f}",
        f"  one window's report, 25 feat.   {r.report_ms_25_features:>12.3f} ms",
        f"  worker peak memory              {r.worker_peak_rss_mb:>12.1f} MB",
    ])

