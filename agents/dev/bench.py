"""`driftline bench`: throughput of the drift agent per input form, measured end to end.

Three input forms, side by side in one run, on the same events (20 numeric and
5 categorical features, ``simulate.FraudTraffic``):

* ``json``: ``{"events": [...]}`` JSON batches of 500 events (``--batch-size``);
* ``arrow``: the same events as Arrow IPC streams of 500 events (``schemas.arrow``:
  ``ts`` a timestamp, the features a struct, categories dictionary-encoded), each
  message with the header ``content-type: application/vnd.apache.arrow.stream``;
* ``arrow5k``: Arrow IPC streams of 5,000 events.

For each form:

* decode: in this process, each result dropped before the next (the floor any
  consumer pays). json: ``orjson.loads`` of every message; arrow: ``schemas.arrow.read``
  of every message, its event times and every feature column as numpy arrays
  (categories as their dictionary codes). Keeping all results alive instead would
  time the garbage collector walking 200,000 live dicts: 2.7x slower here, a
  baseline that flatters every ratio (bench before 2026-11-23 did that);
* handler: the drift agent's code (decode, validate, fold, close windows) called
  directly, without Kafka. The bench fails if it refuses any event;
* worker: the real ``driftline worker`` on the broker. The messages are published
  first; the rate is read from the drift reports' Kafka timestamps: between the
  report of window 0 and that of window K the worker processed windows 1..K, so
  startup and group join are not counted. Its CPU time per event: utime + stime of
  the worker process (``/proc/PID/stat``, every thread) read when the report of
  window 0 arrives and when that of window K does, over the events of windows 1..K
  (the kernel counts in clock ticks of 10 ms: the default sizes give the worker
  about a second of CPU or more between the two);
* floor: the same worker with a handler that reads nothing of its messages
  (``agents.dev.bench_floor``), on the same messages: what Kafka, Faust and the runner
  cost per message whatever the handler does (it grows with a message's bytes as
  well as with their number). No worker is faster than its floor.
  The worker runs the handler and that per-message work one after the other (one
  Python thread at a time), so their times add up: 1 / worker is about
  1 / handler + 1 / floor. Where the floor's share of that sum is large, the
  worker's figure is bounded by Faust and Kafka's cost per message (the consumer,
  the runner's redo record, the state write and its changelog record), not by
  decoding or folding, and only bigger messages (``arrow5k``: a tenth of the
  messages for the same events) or a cheaper path per message raise it.

Sizes: ``--events`` (default 500,000) per form, in ``--windows`` (default 10)
one-minute windows of event time: 50,000 events a window, i.e. 100 messages a
window for json and arrow and 10 for arrow5k. A form needs about ten messages a
window or more, else the rate between two reports times one or two messages.

Also: the time to build one window's report for 25 features (``report_ms``), the
worker's peak resident memory (``peak_rss_mb``: the largest of the forms' drift
workers), and with ``--labels`` the label join of ``agents.dev.bench_labels``
(``labels.worker_labels_per_s``, ...). Medians of ``repeat`` runs where a figure
is timed in process. The machine is shared: compare figures from one run, not
across runs. ``BenchResult.flat`` gives the figures as one flat JSON object with
dotted keys (``json.worker_events_per_s``, ...), as ``--json FILE`` writes them.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from agents.config import Settings
from agents.dev import simulate
from agents.dev.broker import EmbeddedBroker
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.operator import tail
from agents.topics import ensure_topics
from schemas import arrow
from schemas.policy import DriftPolicy, Policy
from streams.batch import FeatureBatch
from streams.drift.monitor import DriftMonitor

WINDOW_S = 60
MODEL = "fraud-detector"
#: form -> (encoding, events per message; None: ``--batch-size``)
FORMS: dict[str, tuple[str, int | None]] = {
    "json": ("json", None),
    "arrow": ("arrow", None),
    "arrow5k": ("arrow", 5_000),
}
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A figure could not be measured (a worker stopped, events were refused)."""


@dataclass
class FormResult:
    form: str
    batch_size: int
    messages_per_window: int
    decode_events_per_s: float
    handler_events_per_s: float
    worker_events_per_s: float
    floor_events_per_s: float
    worker_cpu_us_per_event: float
    worker_to_decode_ratio: float
    worker_peak_rss_mb: float
    broker_cpu_us_per_event: float  # the embedded broker's, while the worker ran
    aiokafka_events_per_s: float  # the Kafka clients alone (agents.dev.bench_client)
    aiokafka_cpu_us_per_event: float
    confluent_events_per_s: float
    confluent_cpu_us_per_event: float


@dataclass
class BenchResult:
    events: int
    windows: int
    events_per_window: int
    forms: dict[str, FormResult]
    report_ms: float
    peak_rss_mb: float
    labels: Any = None  # bench_labels.LabelBenchResult with --labels

    def flat(self) -> dict[str, Any]:
        """One flat object: ``FORM.figure`` per form, ``labels.figure``, the rest as is."""
        out: dict[str, Any] = {
            "events": self.events,
            "windows": self.windows,
            "events_per_window": self.events_per_window,
        }
        for name, result in self.forms.items():
            out.update({f"{name}.{k}": v for k, v in asdict(result).items() if k != "form"})
        out["report_ms"] = self.report_ms
        out["peak_rss_mb"] = self.peak_rss_mb
        if self.labels is not None:
            out.update({f"labels.{k}": v for k, v in asdict(self.labels).items()})
        return out


def parse_forms(text: str) -> list[str]:
    """``json,arrow,arrow5k`` (any of them, in any order; ``none`` for none) as a list.

    >>> parse_forms("arrow5k, json"), parse_forms("none")
    (['arrow5k', 'json'], [])
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in FORMS]
    if unknown or not names:
        raise ValueError(
            f"unknown form(s) {', '.join(unknown) or repr(text)}: "
            f"choose from {', '.join(FORMS)} (comma-separated), or none"
        )
    return list(dict.fromkeys(names))


def _messages(
    per_window: int, windows: int, sizes: dict[str, tuple[str, int]]
) -> dict[str, list[bytes]]:
    """The same events, window by window, as each form's messages (name -> messages);
    one more message closes the last window."""
    traffic = simulate.FraudTraffic(seed=11, model=MODEL)
    t0 = 1_800_000_000 - 1_800_000_000 % WINDOW_S
    out: dict[str, list[bytes]] = {name: [] for name in sizes}

    def add(events: list[dict[str, Any]]) -> None:
        table = arrow.to_table(events) if any(e == "arrow" for e, _ in sizes.values()) else None
        for name, (encoding, size) in sizes.items():
            if encoding == "json":
                out[name].extend(simulate.batches(events, size))
            else:  # the window's table, sliced: the same rows as to_ipc of each batch
                out[name].extend(
                    arrow.to_ipc(table.slice(i, size))  # type: ignore[union-attr]
                    for i in range(0, len(events), size)
                )

    for w in range(windows):
        add(traffic.events(per_window, start_s=t0 + w * WINDOW_S, span_s=WINDOW_S))
    add(traffic.events(1, start_s=t0 + windows * WINDOW_S + 1, span_s=1))
    return out


def median_rate(fn: Any, events: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return events / statistics.median(times)


def decode_arrow(raw: bytes) -> None:
    """What any Arrow consumer pays at least: the stream read, its event times and every
    feature column as a numpy array (a category as its dictionary codes)."""
    table = arrow.read(raw)
    arrow.times_ms(table.column(arrow.TIME))
    for chunk in table.column("features").chunks:
        for child in chunk.flatten():
            if pa.types.is_string(child.type):
                child = child.dictionary_encode()
            if pa.types.is_dictionary(child.type):
                child = child.indices
            child.to_numpy(zero_copy_only=False)


def _policy_text() -> str:
    return "drift:\n  window: 60s\n  allowed_lateness: 0s\n  min_reference_events: 1000\n"


def _report_ms(repeat: int) -> float:
    """Median time to close one window of 25 features against its reference."""
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(policy=DriftPolicy(window=60, allowed_lateness=0))
    # the features only: "@" columns are the traffic's own (score, label, logit)
    cols = {
        k: v for k, v in simulate.FraudTraffic(seed=3).columns(20_000).items()
        if not k.startswith("@")
    }

    def batch(minute: int) -> FeatureBatch:
        idx = rng.integers(0, 20_000, 5_000)
        return FeatureBatch(
            ts_ms=np.full(5_000, minute * 60_000, dtype=np.int64),
            columns={
                k: (v[idx] if v.dtype.kind == "f" else v[idx].tolist()) for k, v in cols.items()
            },
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


def cpu_s(pid: int) -> float:
    """CPU seconds (utime + stime, every thread) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


#: messages per handler call: the worker's default batch (DRIFTLINE_BATCH_MAX_MESSAGES)
HANDLER_BATCH: int = Settings.batch_max_messages


def _handler_rate(name: str, messages: list[bytes], total: int, repeat: int) -> tuple[float, int]:
    """The drift handler's rate on the messages, and the size of its state value: in
    batches of the worker's default size, as the worker's runner calls it."""
    table: dict[bytes, bytes] = {}  # the handler's, kept for the size of its state
    counted: list[int] = []

    def handle_all() -> None:
        handler = DriftHandler(
            policy=Policy.model_validate(
                {"drift": {"window": 60, "allowed_lateness": 0, "min_reference_events": 1000}}
            ),
            predictions_topic="p",
            features_topic="f",
            max_message_bytes=1 << 26,
        )
        table.clear()
        n = 0
        for first in range(0, len(messages), HANDLER_BATCH):
            batch = [
                (m, Origin("p", 0, first + j, MODEL.encode()))
                for j, m in enumerate(messages[first : first + HANDLER_BATCH])
            ]
            for out, (_, origin) in zip(handler.handle_batch(batch, table), batch, strict=True):
                if out.dead:
                    raise BenchError(
                        f"{name}: the drift handler dead-lettered message {origin.offset}: "
                        f"{out.dead[0].error}"
                    )
                n += out.counted
        counted.append(n)

    rate = median_rate(handle_all, total, repeat)
    if counted[-1] != total + 1:  # the closer too
        raise BenchError(
            f"{name}: the drift handler counted {counted[-1]:,} of {total + 1:,} events"
        )
    value = table.get(f"{MODEL}@v1".encode())
    if value is None:
        raise BenchError(f"{name}: the drift handler wrote no state for {MODEL}@v1")
    return rate, len(value)


def run(
    *,
    events: int = 500_000,
    batch_size: int = 500,
    repeat: int = 3,
    broker: str | None = None,
    windows: int = 10,
    forms: list[str] | None = None,
    labels: bool = False,
    label_events: int = 200_000,
    labels_form: str = "json",
) -> BenchResult:
    if windows < 2:
        raise ValueError("--windows must be at least 2: the rate is read between reports")
    names = list(FORMS) if forms is None else forms
    per_window = max(events // windows, 1)
    total = per_window * windows
    sizes = {n: (FORMS[n][0], FORMS[n][1] or batch_size) for n in names}
    messages = _messages(per_window, windows, sizes) if names else {}
    results: dict[str, FormResult] = {}
    rss_all: list[float] = []
    for name in names:
        encoding, size = sizes[name]
        form_messages = messages.pop(name)  # freed once measured
        if encoding == "json":

            def decode_all(ms: list[bytes] = form_messages) -> None:
                for m in ms:
                    orjson.loads(m)
        else:

            def decode_all(ms: list[bytes] = form_messages) -> None:
                for m in ms:
                    decode_arrow(m)

        decode = median_rate(decode_all, total, repeat)
        handler_rate, value_bytes = _handler_rate(name, form_messages, total, repeat)
        worker = _worker_rate(
            form_messages, per_window, windows, broker, headers=simulate.headers(encoding)
        )
        every = max(1, (len(form_messages) - 1) // windows)
        floor_argv = [
            "-m",
            "agents.dev.bench_floor",
            "--every",
            str(every),
            "--value-bytes",
            str(value_bytes),
        ]
        floor = _worker_rate(
            form_messages,
            per_window,
            windows,
            broker,
            headers=simulate.headers(encoding),
            argv=floor_argv,
        )
        from agents.dev import bench_client

        client = bench_client.client_rates(form_messages, total + 1, broker,
                                           headers=simulate.headers(encoding))
        rss_all.append(worker.rss_mb)
        results[name] = FormResult(
            form=name,
            batch_size=size,
            messages_per_window=math.ceil(per_window / size),
            decode_events_per_s=round(decode),
            handler_events_per_s=round(handler_rate),
            worker_events_per_s=round(worker.rate),
            floor_events_per_s=round(floor.rate),
            worker_cpu_us_per_event=round(worker.cpu_us_per_event, 3),
            worker_to_decode_ratio=round(worker.rate / decode, 3),
            worker_peak_rss_mb=round(worker.rss_mb, 1),
            broker_cpu_us_per_event=round(worker.broker_cpu_us_per_event, 3),
            aiokafka_events_per_s=round(client.aiokafka_events_per_s),
            aiokafka_cpu_us_per_event=round(client.aiokafka_cpu_us_per_event, 3),
            confluent_events_per_s=round(client.confluent_events_per_s),
            confluent_cpu_us_per_event=round(client.confluent_cpu_us_per_event, 3),
        )
    label_result = None
    if labels:
        from agents.dev import bench_labels

        label_result = bench_labels.run(
            labels=label_events,
            batch_size=batch_size,
            repeat=repeat,
            broker=broker,
            form=labels_form,
        )
    return BenchResult(
        events=total,
        windows=windows,
        events_per_window=per_window,
        forms=results,
        report_ms=round(_report_ms(max(repeat, 5)), 3),
        peak_rss_mb=round(max(rss_all), 1) if rss_all else float("nan"),
        labels=label_result,
    )


class BenchWorker(NamedTuple):
    settings: Settings
    proc: subprocess.Popen[bytes]
    workdir: Path
    broker_pid: int | None  # the embedded broker's process, else None


@contextmanager
def bench_worker(
    broker_address: str | None,
    policy: str,
    agents: str,
    before_start: Any = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[BenchWorker]:
    """A broker (embedded unless given), fresh topics, and a ``driftline worker``
    running ``agents``; ``before_start(settings)`` runs before the worker starts.
    ``argv`` (after ``python``) starts another worker instead, given the broker,
    topic prefix and app id; ``env``: more environment for it."""
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
        command = argv or [
            "-m",
            "agents",
            "worker",
            "--policy",
            str(workdir / "policy.yaml"),
            "--log-level",
            "warn",
            "--agents",
            agents,
        ]
        with open(workdir / "worker.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *command, *args],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "DRIFTLINE_DATADIR": str(workdir), **(env or {})},
            )
        yield BenchWorker(settings, proc, workdir, embedded.pid if embedded else None)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        if embedded is not None:
            embedded.stop()


@dataclass
class WorkerRun:
    rate: float  # events/s between the first and the last counted report
    cpu_us_per_event: float
    broker_cpu_us_per_event: float  # NaN unless the broker is the embedded one
    rss_mb: float


def _first_dead_letter(settings: Settings) -> str:
    """The first dead letter's error, if the worker wrote any (for the bench's error)."""
    for msg in tail.messages(settings.bootstrap, settings.topic("deadletter"), idle_timeout_s=2):
        return f"; it dead-lettered messages: {orjson.loads(msg.value()).get('error')}"
    return ""


def _worker_rate(
    messages: list[bytes],
    per_window: int,
    windows: int,
    broker_address: str | None,
    *,
    headers: list[tuple[str, bytes]] | None = None,
    argv: list[str] | None = None,
    timeout_s: float = 600.0,
) -> WorkerRun:
    def publish(settings: Settings) -> None:
        producer = simulate.make_producer(settings.bootstrap)
        simulate.publish(producer, settings.topic("predictions"), MODEL, messages, headers=headers)

    with bench_worker(broker_address, _policy_text(), "drift", publish, argv) as (
        settings,
        proc,
        wd,
        broker_pid,
    ):
        stamps: list[int] = []
        cpu: list[float] = []
        broker_cpu: list[float] = []
        deadline = time.monotonic() + timeout_s
        for msg in tail.messages(
            settings.bootstrap,
            settings.topic("drift"),
            stop=lambda: (
                len(stamps) >= windows or proc.poll() is not None or time.monotonic() > deadline
            ),
        ):
            late = orjson.loads(msg.value()).get("late", 0)
            if late:
                # The messages were published in event-time order: a late event means
                # they reached the topic in another order, and the rate would be wrong.
                raise BenchError(
                    f"the worker counted {late:,} events late in a window: the bench's "
                    "messages reached the topic out of order"
                )
            if len(stamps) in (0, windows - 1):
                cpu.append(cpu_s(proc.pid))
                broker_cpu.append(float("nan") if broker_pid is None else cpu_s(broker_pid))
            stamps.append(msg.timestamp()[1])
            if len(stamps) >= windows:
                break
        if len(stamps) < windows:
            why = (
                "stopped early"
                if proc.poll() is not None
                else f"sent {len(stamps)} of {windows} reports within {timeout_s:.0f} s"
            )
            raise BenchError(
                f"the worker {why}; see {wd / 'worker.log'}{_first_dead_letter(settings)}"
            )
        rss = peak_rss_mb(proc.pid)
        seconds = (stamps[-1] - stamps[0]) / 1000
        events = per_window * (windows - 1)
        return WorkerRun(
            rate=events / max(seconds, 1e-3),
            cpu_us_per_event=(cpu[-1] - cpu[0]) * 1e6 / events,
            broker_cpu_us_per_event=(broker_cpu[-1] - broker_cpu[0]) * 1e6 / events,
            rss_mb=rss,
        )


_ROWS = (
    ("events per message", "batch_size", "{:,.0f}"),
    ("messages per window", "messages_per_window", "{:,.0f}"),
    ("decode only (events/s)", "decode_events_per_s", "{:,.0f}"),
    ("drift handler, no Kafka", "handler_events_per_s", "{:,.0f}"),
    ("drift agent, worker on broker", "worker_events_per_s", "{:,.0f}"),
    ("worker's floor (reads nothing)", "floor_events_per_s", "{:,.0f}"),
    ("worker CPU per event (us)", "worker_cpu_us_per_event", "{:,.2f}"),
    ("worker / decode ratio", "worker_to_decode_ratio", "{:.3f}"),
    ("worker peak memory (MB)", "worker_peak_rss_mb", "{:,.1f}"),
    ("broker CPU per event (us)", "broker_cpu_us_per_event", "{:,.2f}"),
    ("aiokafka alone (events/s)", "aiokafka_events_per_s", "{:,.0f}"),
    ("aiokafka CPU per event (us)", "aiokafka_cpu_us_per_event", "{:,.2f}"),
    ("confluent-kafka alone (events/s)", "confluent_events_per_s", "{:,.0f}"),
    ("confluent-kafka CPU/event (us)", "confluent_cpu_us_per_event", "{:,.2f}"),
)


def render(result: BenchResult) -> str:
    r = result
    lines = [
        f"driftline bench: {r.events:,} events per form in {r.windows} windows "
        f"({r.events_per_window:,} each), 20 numeric + 5 categorical features"
    ]
    if r.forms:
        names = list(r.forms)
        lines.append(f"  {'':<32}" + "".join(f"{n:>13}" for n in names))
        for label, key, fmt in _ROWS:
            lines.append(
                f"  {label:<32}"
                + "".join(f"{fmt.format(getattr(r.forms[n], key)):>13}" for n in names)
            )
        lines.append(
            "  decode: json orjson.loads; arrow: IPC read, times and feature columns to numpy"
        )
        lines.append(f"  worker peak memory (largest)     {r.peak_rss_mb:>10.1f} MB")
    lines.append(f"  one window's report, 25 features {r.report_ms:>10.3f} ms")
    if r.labels is not None:
        from agents.dev import bench_labels

        lines += ["", bench_labels.render(r.labels)]
    return "\n".join(lines)
