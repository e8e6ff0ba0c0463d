"""The soak test behind ``scripts/soak``: a bounded run at a fixed rate against a real worker.

``scripts/soak`` starts the embedded broker on a free port (or uses ``--broker``),
a ``driftline worker`` subprocess running the drift agent (one-minute windows,
Prometheus metrics on a free port), and publishes batched predictions (500
events per message, the 20 numeric + 5 categorical features of ``driftline
bench``: ``simulate.FraudTraffic`` encoded by ``simulate.batches``) at
``--rate`` events/s for ``--minutes``. ``--format arrow`` sends the same events
as Arrow IPC streams (``schemas.arrow``: ``ts`` a timestamp, the features a
struct; header ``content-type: application/vnd.apache.arrow.stream``) instead
of JSON batches.

The publisher pre-encodes a pool of messages with a placeholder for the event
time (JSON: a string token; Arrow: a sentinel int64 in the ``ts`` column's
buffer) and only patches that per message (one ``bytes.replace``), so it costs
little CPU next to the worker; every event of a message gets the wall-clock
time it is sent (times ``--time-scale``), so windows close and drift reports
flow as they would in production. Request ids repeat once per pool cycle; the
drift agent does not look at them.

Each ``--interval`` seconds it prints: events published/s (acknowledged by
the broker) against the target, events the worker processed/s (its
``driftline_events_total`` counter), consumer lag in messages and events
(messages acknowledged minus the worker group's committed offset: the
embedded broker under-reports a partition's end offset after multi-record
batches, so the script counts what it produced), the worker's and the
broker's resident memory (VmRSS) and the drift reports emitted.

Phases: the drift agent runs slower until the first model version's reference
exists (its warm-up: the first window(s), whose state is larger and written
with every message). The report gives the worker's figures in that warm-up
phase (from the start to the first drift report, observed within a second) apart
from steady state (after it): events processed per second, the worker's CPU in
cores and in microseconds per event.

The verdict (exit code 0 when every line holds, else 1):

* warm-up: the first ``min(2 minutes, 20 % of the run)``, rounded up to whole
  intervals (at least one interval must follow it);
* lag bounded: the lag (events) at the end exceeds the lag at the end of
  warm-up by at most the larger of 10 s of traffic and 5 % of the events
  published after warm-up. (A looser "one minute of traffic" would pass a
  two-minute run in which the worker handled a third of the traffic.)
* memory flat: the worker's largest RSS after warm-up (sampled every second)
  is within 10 % of its RSS at the end of warm-up;
* the publisher kept up: it achieved at least 95 % of the target rate
  (otherwise the run did not test the rate asked for);
* the worker was alive to the end, and the run was not cut short.

The embedded broker keeps every message in memory (about 790 bytes an event,
i.e. 79 MB/s at 100,000 events/s). The script samples the machine's
available memory every second and stops the run early (verdict FAIL, with the
reason) when it falls below ``--min-free-gb``, rather than let the kernel's
OOM killer pick a process. For long runs at high rates use ``--broker`` with
a real Kafka (docker-compose).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agents.config import Settings
from agents.dev import simulate
from agents.dev.broker import EmbeddedBroker, free_port
from agents.kafka import client_config
from agents.operator import tail
from agents.topics import ensure_topics
from schemas import arrow

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fraud-detector"
TS_TOKEN = b'"@@driftline-soak-ts@@"'
#: The Arrow form's placeholder: an int64 of eight distinct bytes (no shifted match).
TS_SENTINEL_MS = 0x0123456789ABCDEF
TS_SENTINEL = struct.pack("<q", TS_SENTINEL_MS)
FORMS = ("json", "arrow")
POLICY = """\
# scripts/soak: one-minute windows of event time (the drift agent only).
drift:
  window: 60s
  allowed_lateness: 5s
  min_reference_events: 1000
"""
WARMUP_MAX_S = 120.0
WARMUP_SHARE = 0.2
LAG_SLACK_S = 10.0
LAG_SLACK_SHARE = 0.05
RSS_TOLERANCE = 0.10
PUBLISHER_MIN_SHARE = 0.95


# --------------------------------------------------------------------------- traffic


def templates(batch: int, count: int, seed: int = 0, form: str = "json") -> list[bytes]:
    """``count`` messages of ``batch`` events each, their ``ts`` a placeholder (JSON:
    TS_TOKEN; Arrow: TS_SENTINEL, a ``timestamp[ms, UTC]`` column)."""
    events = simulate.FraudTraffic(seed=seed, model=MODEL).events(
        batch * count, start_s=0.0, span_s=1.0
    )
    if form == "arrow":
        pool = []
        for i in range(0, len(events), batch):
            table = arrow.to_table(events[i : i + batch])
            ts = pa.array([TS_SENTINEL_MS] * table.num_rows, pa.timestamp("ms", tz="UTC"))
            pool.append(
                arrow.to_ipc(
                    table.set_column(table.schema.get_field_index(arrow.TIME), arrow.TIME, ts)
                )
            )
        assert all(m.count(TS_SENTINEL) == batch for m in pool)
        return pool
    for event in events:
        event["ts"] = TS_TOKEN[1:-1].decode()
    out = list(simulate.batches(events, batch))
    assert all(m.count(TS_TOKEN) == batch for m in out)
    return out


def stamp(template: bytes, ts: float, form: str = "json") -> bytes:
    """The message with every event's time set to ``ts`` (epoch seconds)."""
    if form == "arrow":
        return template.replace(TS_SENTINEL, struct.pack("<q", round(ts * 1000)))
    return template.replace(TS_TOKEN, b"%.3f" % ts)


class Publisher(threading.Thread):
    """Sends ``rate`` events/s (whole messages) until ``end`` (monotonic) or ``stop``.

    Message ``n`` is due ``n / messages_per_s`` seconds after the start; when the
    publisher falls behind it sends back to back, so ``delivered`` tells the rate
    it achieved. Event time is ``time.time()`` at sending, run ``time_scale``
    times faster than the wall clock from the start.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        pool: list[bytes],
        *,
        rate: float,
        batch: int,
        time_scale: float,
        stop: threading.Event,
        form: str = "json",
    ) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        self.config = {
            **client_config(bootstrap),
            **simulate.PRODUCER_CONFIG,  # idempotent: a retried send keeps its order
            "batch.size": 4 * 1024 * 1024,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
        self.topic, self.pool, self.batch = topic, pool, batch
        self.form, self.headers = form, simulate.headers(form)
        self.per_s = rate / batch
        self.time_scale = time_scale
        self.stop = stop
        self.end = math.inf
        self.started_wall = 0.0
        self.started = 0.0
        self.enqueued = 0
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.ready = threading.Event()

    def event_time(self, wall: float) -> float:
        return self.started_wall + (wall - self.started_wall) * self.time_scale

    def wall_of(self, event_ts: float) -> float:
        """The wall-clock time at which the publisher's event clock reached ``event_ts``."""
        return self.started_wall + (event_ts - self.started_wall) / self.time_scale

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(err))

    def start_at(self, end: float) -> None:
        self.end = end
        self.start()
        self.ready.wait()

    def run(self) -> None:
        try:
            # Owned by this thread: closed when it ends, before the broker is stopped.
            producer = Producer(self.config)
            try:
                self._send(producer)
            finally:
                producer.flush(10)
        except Exception as exc:  # shown with the figures, never silently
            self.errors.append(f"the publisher stopped: {type(exc).__name__}: {exc}")
            self.failed += 1
        finally:
            self.ready.set()

    def _send(self, producer: Producer) -> None:
        key = MODEL.encode()
        self.started, self.started_wall = time.monotonic(), time.time()
        self.ready.set()
        n = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= self.end:
                break
            due_at = self.started + n / self.per_s
            if now < due_at:
                producer.poll(0)
                time.sleep(min(due_at - now, 0.05))
                continue
            value = stamp(self.pool[n % len(self.pool)], self.event_time(time.time()), self.form)
            try:
                producer.produce(
                    self.topic,
                    key=key,
                    value=value,
                    headers=self.headers,
                    on_delivery=self._delivered,
                )
            except BufferError:  # librdkafka's queue is full: the broker is behind
                producer.poll(0.01)
                continue
            n += 1
            self.enqueued = n
            producer.poll(0)


class ReportCounter(threading.Thread):
    """Reads the drift topic: each report's status and its delay after its window's end."""

    def __init__(self, bootstrap: str, topic: str, stop: threading.Event) -> None:
        super().__init__(name="soak-reports", daemon=True)
        self.bootstrap, self.topic, self.stop = bootstrap, topic, stop
        #: (Kafka timestamp in s, window_end epoch s, status)
        self.reports: list[tuple[float, float, str]] = []
        self.error = ""

    def run(self) -> None:
        try:
            for msg in tail.messages(self.bootstrap, self.topic, stop=self.stop.is_set):
                doc = orjson.loads(msg.value())
                end = datetime.fromisoformat(doc["window_end"]).timestamp()
                self.reports.append((msg.timestamp()[1] / 1000, end, doc.get("status", "?")))
        except Exception as exc:  # reported in the figures, never silently
            self.error = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- probes


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process (VmRSS), in MB; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle, iowait
    return (sum(values[:8]) - idle) / TICKS


def meminfo_gb() -> tuple[float, float]:
    """(MemAvailable, MemTotal) of the machine, in GB."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) / 1024 / 1024
    return values.get("MemAvailable", 0.0), values.get("MemTotal", 0.0)


def scrape_events(port: int, topic: str) -> int | None:
    """The worker's ``driftline_events_total`` for the drift agent on ``topic``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("driftline_events_total{")
            and 'agent="drift"' in line
            and f'topic="{topic}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def committed_offset(admin: AdminClient, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 (0 before its first commit)."""
    try:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
        future = admin.list_consumer_group_offsets([request], request_timeout=10)[group]
        offset = future.result().topic_partitions[0].offset
    except Exception:
        return None
    return max(offset, 0)


# --------------------------------------------------------------------------- figures


@dataclass
class Interval:
    index: int
    t_s: float  # seconds since publishing started, at the end of the interval
    seconds: float
    published_msgs: int  # acknowledged by the broker, cumulative
    published_events: int
    published_per_s: float
    enqueued_msgs: int
    processed_events: int | None  # the worker's counter, cumulative
    processed_per_s: float | None
    committed_offset: int | None
    lag_msgs: int | None
    lag_events: int | None
    worker_rss_mb: float  # at the end of the interval
    worker_rss_max_mb: float  # largest of the per-second samples in the interval
    broker_rss_mb: float | None
    mem_available_gb: float
    reports: int  # drift reports in the interval
    reports_total: int
    report_statuses: dict[str, int]
    report_delay_max_s: float | None  # wall time from a window's end to its report
    # CPU used in the interval, in cores (1.0 = one core busy all the time): the
    # worker, the broker, this script (the publisher) and every other process.
    cpu_worker: float
    cpu_broker: float | None
    cpu_soak: float
    cpu_other: float
    #: the worker's CPU seconds since publishing started, at the end of the interval
    worker_cpu_s: float = 0.0


@dataclass
class PhaseMark:
    """The worker's figures when the first drift report was seen: the first version's
    reference exists from then on."""

    t_s: float  # seconds since publishing started
    processed_events: int | None
    worker_cpu_s: float


@dataclass
class Phase:
    name: str  # "warm-up" (no reference yet) or "steady state"
    start_s: float
    end_s: float
    processed_events: int | None
    processed_per_s: float | None
    worker_cores: float
    worker_cpu_us_per_event: float | None


def phases(mark: PhaseMark | None, last: Interval) -> list[Phase]:
    """The run split at ``mark``: warm-up before it, steady state after it (the run's
    end is ``last``); warm-up only when no report came."""

    def phase(
        name: str, t0: float, n0: int | None, cpu0: float, t1: float, n1: int | None, cpu1: float
    ) -> Phase:
        seconds = max(t1 - t0, 1e-9)
        events = None if n0 is None or n1 is None else n1 - n0
        return Phase(
            name=name,
            start_s=round(t0, 1),
            end_s=round(t1, 1),
            processed_events=events,
            processed_per_s=None if events is None else events / seconds,
            worker_cores=round((cpu1 - cpu0) / seconds, 3),
            worker_cpu_us_per_event=(round((cpu1 - cpu0) * 1e6 / events, 2) if events else None),
        )

    end = (last.t_s, last.processed_events, last.worker_cpu_s)
    if mark is None or mark.t_s >= last.t_s:
        return [phase("warm-up", 0.0, 0, 0.0, *end)]
    at = (mark.t_s, mark.processed_events, mark.worker_cpu_s)
    return [phase("warm-up", 0.0, 0, 0.0, *at), phase("steady state", *at, *end)]


def render_phase(p: Phase) -> str:
    def clock(t: float) -> str:
        minutes, seconds = divmod(round(t), 60)
        return f"{minutes}:{seconds:02d}"

    rate = f"{p.processed_per_s:>10,.0f}" if p.processed_per_s is not None else f"{'n/a':>10}"
    per = (
        f"{p.worker_cpu_us_per_event:>7,.2f} us/event"
        if p.worker_cpu_us_per_event is not None
        else ""
    )
    return (
        f"{p.name:<13} {clock(p.start_s):>5}-{clock(p.end_s):<5}  {rate} events/s "
        f"processed, worker {p.worker_cores:.2f} core  {per}"
    )


@dataclass
class Verdict:
    passed: bool
    warmup_intervals: int
    warmup_s: float
    lines: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, float | None] = field(default_factory=dict)


def warmup_intervals(minutes: float, interval_s: float) -> int:
    """Intervals of warm-up: min(2 minutes, 20 % of the run), rounded up, at least one."""
    warm = min(WARMUP_MAX_S, WARMUP_SHARE * minutes * 60)
    return max(1, math.ceil(warm / interval_s - 1e-9))


def judge(
    intervals: list[Interval],
    *,
    minutes: float,
    interval_s: float,
    rate: float,
    stopped_early: str = "",
) -> Verdict:
    """The verdict on a run's intervals (see the module's docstring for the rules)."""
    k = warmup_intervals(minutes, interval_s)
    verdict = Verdict(
        passed=False,
        warmup_intervals=k,
        warmup_s=intervals[k - 1].t_s if len(intervals) >= k else 0.0,
    )
    if stopped_early:
        verdict.checks["completed"] = False
        verdict.lines.append(f"run:          stopped early: {stopped_early}")
    if len(intervals) <= k:
        verdict.checks["enough_intervals"] = False
        verdict.lines.append(
            f"inconclusive: {len(intervals)} interval(s), warm-up takes {k}; "
            "no interval after warm-up to judge"
        )
        return verdict
    warm, last = intervals[k - 1], intervals[-1]
    after = intervals[k:]

    if warm.lag_events is None or last.lag_events is None:
        verdict.checks["lag_bounded"] = False
        verdict.lines.append("lag bounded:  NO   the group's committed offset could not be read")
    else:
        published_after = last.published_events - warm.published_events
        seconds_after = last.t_s - warm.t_s
        achieved = published_after / seconds_after if seconds_after > 0 else 0.0
        allowed = max(LAG_SLACK_S * achieved, LAG_SLACK_SHARE * published_after)
        growth = last.lag_events - warm.lag_events
        ok = growth <= allowed
        verdict.checks["lag_bounded"] = ok
        verdict.figures.update(
            lag_warmup_events=warm.lag_events,
            lag_end_events=last.lag_events,
            lag_growth_events=growth,
            lag_allowed_growth_events=allowed,
        )
        verdict.lines.append(
            f"lag bounded:  {'yes' if ok else 'NO '}  {warm.lag_events:,} events at the end of "
            f"warm-up, {last.lag_events:,} at the end ({growth:+,}); allowed growth "
            f"{allowed:,.0f} (the larger of {LAG_SLACK_S:.0f} s of traffic and "
            f"{LAG_SLACK_SHARE:.0%} of the {published_after:,} events published after warm-up)"
        )

    rss_warm = warm.worker_rss_mb
    rss_max = max(i.worker_rss_max_mb for i in after)
    ok = rss_warm > 0 and rss_max <= rss_warm * (1 + RSS_TOLERANCE)
    verdict.checks["memory_flat"] = ok
    growth_pct = (rss_max / rss_warm - 1) * 100 if rss_warm > 0 else float("nan")
    verdict.figures.update(rss_warmup_mb=rss_warm, rss_max_after_warmup_mb=rss_max)
    verdict.lines.append(
        f"memory flat:  {'yes' if ok else 'NO '}  worker RSS {rss_warm:,.0f} MB at the end of "
        f"warm-up, at most {rss_max:,.0f} MB after it ({growth_pct:+.1f} %, limit "
        f"+{RSS_TOLERANCE:.0%})"
    )

    achieved_all = last.published_events / last.t_s if last.t_s > 0 else 0.0
    ok = achieved_all >= PUBLISHER_MIN_SHARE * rate
    verdict.checks["publisher_kept_up"] = ok
    in_flight = last.enqueued_msgs - last.published_msgs
    verdict.figures.update(published_per_s=achieved_all, in_flight_msgs_at_end=in_flight)
    why = ""
    if not ok:
        sent = last.enqueued_msgs * (last.published_events / max(last.published_msgs, 1))
        why = (
            f"; it handed {sent / last.t_s:,.0f} events/s to its Kafka client, "
            f"{in_flight:,} messages were still waiting for the broker's acknowledgement "
            "at the end"
            if in_flight > 0
            else ""
        )
        why += "; the run did not test the rate asked for"
    verdict.lines.append(
        f"publisher:    {'yes' if ok else 'NO '}  {achieved_all:,.0f} events/s acknowledged by "
        f"the broker of {rate:,.0f} (at least {PUBLISHER_MIN_SHARE:.0%}){why}"
    )

    processed = [i.processed_per_s for i in after if i.processed_per_s is not None]
    if processed:
        mean = sum(processed) / len(processed)
        verdict.figures.update(processed_per_s_after_warmup=mean)
        verdict.lines.append(
            f"worker:       processed {mean:,.0f} events/s on average after "
            f"warm-up ({mean / max(achieved_all, 1):.0%} of what was published)"
        )
    verdict.passed = all(verdict.checks.values())
    return verdict


HEADER = (
    f"{'time':>6}  {'published/s':>12}  {'processed/s':>11}  {'lag msgs':>9}  "
    f"{'lag events':>11}  {'worker RSS':>10}  {'broker RSS':>10}  "
    f"{'CPU w/b/p/other':>19}  {'reports':>9}"
)


def render(i: Interval) -> str:
    def num(v: float | None, width: int) -> str:
        return f"{v:>{width},.0f}" if v is not None else f"{'n/a':>{width}}"

    minutes, seconds = divmod(round(i.t_s), 60)
    reports = f"{i.reports} ({i.reports_total})"
    delay = f" delay<={i.report_delay_max_s:.0f}s" if i.report_delay_max_s is not None else ""
    broker = f"{i.broker_rss_mb:>7,.0f} MB" if i.broker_rss_mb is not None else f"{'n/a':>10}"
    cpu = (
        f"{i.cpu_worker:.2f}/{i.cpu_broker if i.cpu_broker is not None else 0:.2f}/"
        f"{i.cpu_soak:.2f}/{i.cpu_other:.2f}"
    )
    return (
        f"{minutes:>3}:{seconds:02d}  {i.published_per_s:>12,.0f}  "
        f"{num(i.processed_per_s, 11)}  {num(i.lag_msgs, 9)}  {num(i.lag_events, 11)}  "
        f"{i.worker_rss_mb:>7,.0f} MB  {broker}  {cpu:>19}  {reports:>9}{delay}"
    )


# --------------------------------------------------------------------------- the run


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until the worker has logged Faust's "Ready" (partitions assigned and seeked)."""
    deadline = time.monotonic() + timeout_s
    while "[^Worker]: Ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited at start (code {proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker was not ready within {timeout_s:.0f} s; see {log}")
        time.sleep(0.2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/soak",
        description="Soak test: a bounded run of batched predictions at a fixed rate against "
        "a real `driftline worker` (drift agent) on the embedded broker; prints the "
        "figures every interval and a verdict (exit code 0 pass, 1 fail).",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    p.add_argument(
        "--rate",
        type=float,
        default=100_000.0,
        help="events per second to publish (default 100000)",
    )
    p.add_argument("--batch", type=int, default=500, help="events per message (default 500)")
    p.add_argument(
        "--format",
        choices=FORMS,
        default="json",
        help="json batches (default) or arrow: Arrow IPC streams of the same events",
    )
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between printed figures (default 60)"
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the configuration, every interval's figures and the verdict to FILE",
    )
    p.add_argument(
        "--store",
        default="memory://",
        help="the worker's table store: memory:// (default) or rocksdb://",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="event time runs this many times faster than the wall clock (default 1)",
    )
    p.add_argument(
        "--broker", help="use this Kafka (host:port) instead of starting the embedded broker"
    )
    p.add_argument(
        "--workdir",
        help="where the policy, logs and table data go (default: a new "
        "temporary directory, kept for its logs; table data are removed)",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=100,
        help="distinct pre-encoded messages the publisher cycles through (default 100)",
    )
    p.add_argument(
        "--min-free-gb",
        type=float,
        default=None,
        help="stop early when the machine's available memory falls below this "
        "(default: the larger of 3 GB and 15%% of the total)",
    )
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.batch <= 0 or args.interval <= 0:
        p.error("--minutes, --rate, --batch and --interval must be positive")
    if args.time_scale <= 0:
        p.error("--time-scale must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="driftline-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"driftline soak: starting the broker and the worker (logs in {workdir})", flush=True)
    stop = threading.Event()
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    publisher: Publisher | None = None
    counter: ReportCounter | None = None
    mark: PhaseMark | None = None
    intervals: list[Interval] = []
    config: dict[str, Any] = {}
    stopped_early = ""
    admin: AdminClient | None = None
    try:
        if args.broker:
            bootstrap = args.broker
        else:
            broker = EmbeddedBroker(log_path=str(workdir / "broker.log")).start()
            bootstrap = broker.bootstrap
        prefix = f"soak{uuid.uuid4().hex[:8]}."
        settings = Settings(
            broker=bootstrap,
            topic_prefix=prefix,
            app_id=f"driftline-{prefix.rstrip('.')}",
            store=args.store,
            datadir=str(workdir / "data"),
        )
        ensure_topics(settings)
        (workdir / "policy.yaml").write_text(POLICY)
        metrics_port = free_port()
        log_path = workdir / "worker.log"
        env = {
            **os.environ,
            "DRIFTLINE_DATADIR": settings.datadir,
            "DRIFTLINE_REGISTRY": str(workdir / "registry"),
            "DRIFTLINE_METRICS_PORT": str(metrics_port),
        }
        with open(log_path, "ab") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agents",
                    "worker",
                    "--broker",
                    bootstrap,
                    "--topic-prefix",
                    prefix,
                    "--app-id",
                    settings.app_id,
                    "--policy",
                    str(workdir / "policy.yaml"),
                    "--agents",
                    "drift",
                    "--store",
                    args.store,
                    "--log-level",
                    "info",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches this script, which stops it
            )
        # EmbeddedBroker does not publish its process id; its memory is a figure here.
        proc = getattr(broker, "_proc", None)
        broker_pid: int | None = proc.pid if proc is not None else None
        config.update(worker_pid=worker.pid, broker_pid=broker_pid, workdir=str(workdir))
        pool = templates(args.batch, args.pool, form=args.format)
        msg_bytes = sum(map(len, pool)) / len(pool)
        _wait_ready(worker, log_path, timeout_s=90)

        avail, total = meminfo_gb()
        floor = args.min_free_gb if args.min_free_gb is not None else max(3.0, 0.15 * total)
        duration = args.minutes * 60
        projected = msg_bytes * args.rate / args.batch * duration / 1e9
        config.update(
            minutes=args.minutes,
            rate=args.rate,
            batch=args.batch,
            format=args.format,
            interval_s=args.interval,
            store=args.store,
            time_scale=args.time_scale,
            broker=bootstrap,
            embedded_broker=broker is not None,
            message_bytes=round(msg_bytes),
            pool=args.pool,
            topic_prefix=prefix,
            app_id=settings.app_id,
            metrics_port=metrics_port,
            min_free_gb=floor,
            warmup_intervals=warmup_intervals(args.minutes, args.interval),
        )
        print(
            f"driftline soak: {args.rate:,.0f} events/s for {args.minutes:g} min in batches "
            f"of {args.batch} ({args.rate / args.batch:,.1f} {args.format} messages/s of "
            f"{msg_bytes / 1000:,.0f} KB), drift agent, store {args.store}",
            flush=True,
        )
        print(
            f"  broker {bootstrap} ({'embedded' if broker else 'external'}), worker pid "
            f"{worker.pid}, metrics :{metrics_port}",
            flush=True,
        )
        k = config["warmup_intervals"]
        print(
            f"  warm-up: the first {k} interval(s) ({k * args.interval:g} s; min(2 min, 20 % "
            f"of the run) rounded up to whole intervals)",
            flush=True,
        )
        if broker is not None:
            note = (
                f"  the embedded broker keeps every message in memory: about "
                f"{projected:,.1f} GB for this run; {avail:,.1f} GB available"
            )
            if projected > avail - floor:
                note += (
                    f" -- NOT ENOUGH: the run will stop early when less than "
                    f"{floor:,.1f} GB is left"
                )
            print(note, flush=True)
        print("\n" + HEADER, flush=True)

        counter = ReportCounter(bootstrap, settings.topic("drift"), stop)
        counter.start()
        admin = AdminClient(client_config(bootstrap))
        topic = settings.topic("predictions")
        publisher = Publisher(
            bootstrap,
            topic,
            pool,
            rate=args.rate,
            batch=args.batch,
            time_scale=args.time_scale,
            stop=stop,
            form=args.format,
        )
        start = time.monotonic()
        end = start + duration
        publisher.start_at(end)

        previous_t, previous_pub, previous_processed = 0.0, 0, 0
        cpu_before = (cpu_s(worker.pid), cpu_s(broker_pid), cpu_s(os.getpid()), machine_busy_s())
        worker_cpu0 = cpu_before[0]
        reports_seen = 0
        index = 0
        while True:
            index += 1
            boundary = min(start + index * args.interval, end)
            rss_max = 0.0
            while True:  # per-second samples: memory, the worker's health, the phase
                rss_max = max(rss_max, rss_mb(worker.pid))
                if mark is None and counter.reports:  # the first version's reference exists
                    mark = PhaseMark(
                        t_s=round(time.monotonic() - start, 3),
                        processed_events=scrape_events(metrics_port, topic),
                        worker_cpu_s=round(cpu_s(worker.pid) - worker_cpu0, 3),
                    )
                if worker.poll() is not None:
                    stopped_early = f"the worker exited (code {worker.returncode}); see {log_path}"
                elif broker is not None and meminfo_gb()[0] < floor:
                    stopped_early = (
                        f"less than {floor:.1f} GB of memory left (the embedded "
                        f"broker holds {rss_mb(broker_pid) / 1024:.1f} GB)"
                    )
                now = time.monotonic()
                if stopped_early or now >= boundary:
                    break
                time.sleep(min(1.0, boundary - now))
            if stopped_early:
                stop.set()  # the publisher stops; this interval is the last
            t = time.monotonic() - start
            delivered = publisher.delivered
            processed = scrape_events(metrics_port, topic)
            offset = committed_offset(admin, settings.app_id, topic)
            rss = rss_mb(worker.pid)
            reports = list(counter.reports)
            new = reports[reports_seen:]
            reports_seen = len(reports)
            statuses: dict[str, int] = {}
            for _, _, status in reports:
                statuses[status] = statuses.get(status, 0) + 1
            delays = [ts - publisher.wall_of(window_end) for ts, window_end, _ in new]
            seconds = t - previous_t
            cpu_now = (cpu_s(worker.pid), cpu_s(broker_pid), cpu_s(os.getpid()), machine_busy_s())
            used = [(b - a) / seconds for a, b in zip(cpu_before, cpu_now, strict=True)]
            cpu_before = cpu_now
            row = Interval(
                index=index,
                t_s=round(t, 3),
                seconds=round(seconds, 3),
                published_msgs=delivered,
                published_events=delivered * args.batch,
                published_per_s=(delivered - previous_pub) * args.batch / seconds,
                enqueued_msgs=publisher.enqueued,
                processed_events=processed,
                processed_per_s=(
                    None if processed is None else (processed - previous_processed) / seconds
                ),
                committed_offset=offset,
                lag_msgs=None if offset is None else delivered - offset,
                lag_events=None if offset is None else (delivered - offset) * args.batch,
                worker_rss_mb=round(rss, 1),
                worker_rss_max_mb=round(max(rss_max, rss), 1),
                broker_rss_mb=round(rss_mb(broker_pid), 1) if broker_pid else None,
                mem_available_gb=round(meminfo_gb()[0], 2),
                reports=len(new),
                reports_total=len(reports),
                report_statuses=statuses,
                report_delay_max_s=round(max(delays), 1) if delays else None,
                cpu_worker=round(used[0], 2),
                cpu_broker=round(used[1], 2) if broker_pid else None,
                cpu_soak=round(used[2], 2),
                cpu_other=round(max(0.0, used[3] - used[0] - used[1] - used[2]), 2),
                worker_cpu_s=round(cpu_now[0] - worker_cpu0, 3),
            )
            intervals.append(row)
            print(render(row), flush=True)
            previous_t, previous_pub = t, delivered
            previous_processed = processed if processed is not None else previous_processed
            if stopped_early or time.monotonic() >= end - 1e-3:
                break
        stop.set()
        publisher.join(timeout=30)
        return _finish(args, config, intervals, stopped_early, publisher, counter, mark)
    except _Interrupted as exc:
        print(f"\ninterrupted ({exc}); stopping the worker and the broker", flush=True)
        _write_json(args, config, intervals, None, interrupted=True)
        return 130
    finally:
        # The cleanup is bounded (about 30 s at worst); a second Ctrl-C must not cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        _stop(worker)
        if publisher is not None:
            publisher.join(timeout=15)  # its producer is closed: the broker then stops at once
        if counter is not None:
            counter.join(timeout=5)
        admin = None
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)


def _finish(
    args: argparse.Namespace,
    config: dict[str, Any],
    intervals: list[Interval],
    stopped_early: str,
    publisher: Publisher,
    counter: ReportCounter,
    mark: PhaseMark | None,
) -> int:
    if publisher.failed:
        print(f"\n{publisher.failed} messages were not delivered: {publisher.errors}")
        stopped_early = stopped_early or f"the publisher failed: {publisher.errors[:1]}"
    if counter.error:
        print(f"\nthe drift topic could not be read: {counter.error}")
    if not intervals:
        print("\nverdict: FAIL (no interval completed)")
        _write_json(args, config, intervals, None)
        return 1
    split = phases(mark, intervals[-1])
    print(
        "\nphases (the first version's reference exists from its first drift report on"
        + (f", seen at {mark.t_s:.0f} s" if mark is not None else ": none came")
        + "):"
    )
    for phase in split:
        print(f"  {render_phase(phase)}")
    verdict = judge(
        intervals,
        minutes=args.minutes,
        interval_s=args.interval,
        rate=args.rate,
        stopped_early=stopped_early,
    )
    print(f"\nverdict: {'PASS' if verdict.passed else 'FAIL'}")
    for line in verdict.lines:
        print(f"  {line}")
    _write_json(args, config, intervals, verdict, split=split)
    return 0 if verdict.passed else 1


def _write_json(
    args: argparse.Namespace,
    config: dict[str, Any],
    intervals: list[Interval],
    verdict: Verdict | None,
    *,
    interrupted: bool = False,
    split: list[Phase] | None = None,
) -> None:
    if not args.json:
        return
    doc = {
        "config": config,
        "intervals": [asdict(i) for i in intervals],
        "phases": [asdict(p) for p in split or []],
        "verdict": asdict(verdict) if verdict is not None else None,
        "interrupted": interrupted,
    }
    Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
