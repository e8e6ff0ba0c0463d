"""`driftline demo`: broker, worker and a drifting serving app in one terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agents import simulate, tail, view
from agents.broker import EmbeddedBroker
from agents.config import Settings
from agents.topics import ensure_topics

DEMO_POLICY = """\
# The demo's policy: one-minute windows of simulated event time.
drift:
  window: 60s
  allowed_lateness: 5s
  min_reference_events: 2000
kpi:
  window: 60s
  allowed_lateness: 5s
  label_ttl: 3m
  min_labeled: 200
  targets:
    roc_auc: {min: 0.7}
    latency_p99_ms: {max: 80}
"""
#: Mean label delay, in event seconds (chargebacks come quickly in the demo).
LABEL_DELAY_S = 30.0


def _stop_process(proc: subprocess.Popen[bytes], *, timeout_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # it exited between poll() and here
        proc.wait()
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Interrupted:
    """Set by the signal handler, so an interrupt is recognised whichever
    exception it surfaces as (a client library may wrap it)."""

    seen = False


def _interrupt(signum: int, frame: object) -> None:
    _Interrupted.seen = True
    raise KeyboardInterrupt


def run(*, duration_s: float = 90.0, rate: float = 2000.0, time_scale: float = 10.0,
        shift_at: float = 0.45, seed: int = 0) -> int:
    """Run the whole loop for ``duration_s`` seconds (or until Ctrl-C); leave nothing behind."""
    workdir = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    policy = workdir / "policy.yaml"
    policy.write_text(DEMO_POLICY)
    stop = threading.Event()
    # SIGTERM ends the demo like Ctrl-C does, so the children are cleaned up
    # (and SIGINT is handled even when started with it ignored, e.g. by nohup).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print(f"driftline demo: {duration_s:.0f} s; logs in {workdir}", flush=True)
    broker = EmbeddedBroker(log_path=str(workdir / "broker.log"))
    worker: subprocess.Popen[bytes] | None = None
    sim: threading.Thread | None = None
    try:
        broker.start()
        settings = Settings(broker=broker.bootstrap, app_id=f"driftline-demo-{os.getpid()}")
        ensure_topics(settings)
        print(f"  broker   embedded Kafka-protocol broker at {broker.bootstrap}", flush=True)
        with open(workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "agents", "worker", "--broker", broker.bootstrap,
                 "--app-id", settings.app_id, "--policy", str(policy), "--log-level", "warn"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        print(f"  worker   drift and KPI agents, 60 s windows of event time, app id "
              f"{settings.app_id}", flush=True)
        sim = threading.Thread(
            target=simulate.run, daemon=True,
            kwargs=dict(bootstrap=broker.bootstrap, topic=settings.topic("predictions"),
                        rate=rate, duration_s=duration_s, scenario="drift", shift_at=shift_at,
                        time_scale=time_scale, seed=seed, should_stop=stop.is_set,
                        labels_topic=settings.topic("labels"), label_delay_s=LABEL_DELAY_S),
        )
        sim.start()
        print(
            f"  serving  fraud-detector v1, {rate:.0f} events/s, event time x{time_scale:g}; "
            f"amount and distance_from_home_km shift after {shift_at * duration_s:.0f} s;\n"
            f"           labels follow about {LABEL_DELAY_S:.0f} event seconds later, and a "
            "window's KPIs are shown once all its labels are in\n",
            flush=True,
        )
        deadline = time.monotonic() + duration_s + 5
        colour = sys.stdout.isatty()
        for msg in tail.messages(broker.bootstrap, [settings.topic("drift"), settings.topic("kpi")],
                                 stop=lambda: time.monotonic() > deadline):
            if msg.topic() == settings.topic("kpi") and b"final revision" not in msg.value():
                continue  # revisions while labels arrive; the demo shows the complete window
            print(view.render(msg.topic(), msg.value(), colour=colour), flush=True)
            if worker.poll() is not None:
                break
        if worker.poll() is not None:
            print(f"the worker stopped (code {worker.returncode}); see {workdir}/worker.log")
            return 1
        print("\ndemo finished", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", flush=True)
        return 130
    except Exception:
        if not _Interrupted.seen:
            raise
        print("\ninterrupted; stopping", flush=True)
        return 130
    finally:
        stop.set()
        if sim is not None:
            sim.join(timeout=10)
        if worker is not None:
            _stop_process(worker)
        broker.stop()
