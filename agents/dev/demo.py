"""`driftline demo`: broker, worker and a serving app in one terminal, the whole loop.

The story, in simulated event time (60-s windows, ten times faster than wall time):

1. fraud-detector v1 is the champion; an operator deploys v2 as a canary at 50 %.
   v2 is bad (noisy scores): once its first KPI window has labels, the policy
   agent finds it significantly worse than the champion and issues a signed
   rollback; the controller applies it and the serving app sends all traffic
   back to v1.
2. Halfway, two features drift. After two drift windows the policy agent
   issues a retrain; the controller runs scripts/retrain_example.py, which
   trains v3 on the screened training data, registers it and deploys it as a
   canary; v3 is healthy and no worse than v1, so it is promoted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient

from agents.config import Settings
from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.dev.broker import EmbeddedBroker
from agents.kafka import client_config
from agents.operator import commands as operator
from agents.operator import reference_build, tail, view
from agents.runtime.group_lag import GroupLag
from agents.topics import ensure_topics
from schemas.errors import DriftlineError
from schemas.policy import Policy, load_policy

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
poisoning:
  window: 60s
  allowed_lateness: 5s
decisions:
  retrain:
    drift_windows: 2          # sustained drift: two drift windows in a row
    kpi_breach_windows: 0     # the demo's story is feature drift
    on_concept_drift: false
    hook_command: "{python} {retrain} --min-records 1000 --max-records 20000"
  rollback: {min_labeled: 200}
  delivery: {canary_steps: [0.5, 1.0], healthy_windows: 1}
"""
MODEL = "fraud-detector"
RETRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "retrain_example.py"
#: Mean label delay, in event seconds (chargebacks come quickly in the demo).
LABEL_DELAY_S = 30.0
#: Where the serving app's labeled records go for retraining: the poisoning
#: guard screens them; the retrain hook reads what it lets through.
TRAINING_TOPIC = "training-data"
#: When (a fraction of the run) a "bot" source floods the training data.
FLOOD_AT = 0.2


#: seconds the demo's worker has to stop before its watchdog ends it (agents.runtime.watchdog)
WORKER_STOP_S = 10.0


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


def _publish_reference(settings: Settings, workdir: Path, policy: Policy) -> None:
    """v1's training data, profiled: the drift reference and the poisoning guard's trusted set."""
    traffic = simulate.FraudTraffic(seed=99, model=MODEL)
    preds, labels = traffic.events_with_labels(20_000, start_s=0.0, span_s=3600.0,
                                               label_delay_s=0.0)
    data = workdir / "fraud-detector-v1-training.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({**r["features"], "label": r["label"]})
                                for r in simulate.training_records(labels, preds)))
    profile = reference_build.build(data, model=MODEL, version="v1",
                                    policy=policy.drift_for(MODEL))
    reference_build.publish(profile, settings)


def _deploy_v1_and_a_bad_canary(settings: Settings, workdir: Path) -> None:
    """Register v1 and v2 and deploy them as an operator would, through signed commands."""
    registry = open_registry(settings.registry)
    for version, note in (("v1", "the champion"), ("v2", "a canary with noisy scores")):
        artifact = workdir / f"{MODEL}-{version}.bin"
        artifact.write_bytes(f"demo model {version}: {note}".encode())
        registry.register(MODEL, version, artifact, model_card={
            "owner": "demo", "risk_tier": "minimal", "note": note,
            "purpose": "scores card payments for fraud (simulated traffic)"})
    operator.send(settings, operator.operator_command(settings, "promote", MODEL,
                                                      to_version="v1", issuer="demo"))
    operator.send(settings, operator.operator_command(settings, "canary", MODEL,
                                                      to_version="v2", weight=0.5,
                                                      issuer="demo"))


def _wait_until_read(settings: Settings, topic: str, worker: subprocess.Popen[bytes], *,
                     timeout_s: float) -> float:
    """Wait until the worker's consumer group has committed ``topic`` to its end: its
    agents have handled every message on it (v1's reference). Return the seconds waited.

    Faust commits an offset once every agent reading the topic has acknowledged the
    message, so this is the worker's own word, not a guess from a log line.
    """
    started = time.monotonic()
    lag = GroupLag(settings.bootstrap, group=settings.app_id)
    try:
        listed = AdminClient(client_config(settings.bootstrap)).list_topics(topic, timeout=10)
        partitions = [(topic, p) for p in sorted(listed.topics[topic].partitions)]
        while True:
            if all(part.committed is not None and part.committed >= part.end
                   for part in lag.read(partitions)):
                return time.monotonic() - started
            if worker.poll() is not None:
                raise DemoError(f"the worker stopped (code {worker.returncode}) before it "
                                f"read {topic}")
            if time.monotonic() - started > timeout_s:
                raise DemoError(f"the worker did not read {topic} within {timeout_s:.0f} s")
            time.sleep(0.2)  # polling interval of the condition
    finally:
        lag.close()


class DemoError(DriftlineError):
    """A part of the demo did not start."""


def run(*, duration_s: float = 120.0, rate: float = 2000.0, time_scale: float = 10.0,
        shift_at: float = 0.45, seed: int = 0, ready_timeout_s: float = 120.0) -> int:
    """Run the whole loop for ``duration_s`` seconds (or until Ctrl-C); leave nothing behind.

    The broker and the worker run in their own sessions: a terminal's Ctrl-C reaches
    only this process, which stops the traffic, then the worker, checks the audit
    chain and stops the broker last.
    """
    workdir = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    policy = workdir / "policy.yaml"
    policy.write_text(DEMO_POLICY.replace("{python}", sys.executable)
                      .replace("{retrain}", str(RETRAIN_SCRIPT)))
    stop = threading.Event()
    # SIGTERM ends the demo like Ctrl-C does, so the children are cleaned up
    # (and SIGINT is handled even when started with it ignored, e.g. by nohup).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print(f"driftline demo: {duration_s:.0f} s; logs in {workdir}", flush=True)
    broker = EmbeddedBroker(log_path=str(workdir / "broker.log"), new_session=True)
    settings: Settings | None = None
    worker: subprocess.Popen[bytes] | None = None
    sim: threading.Thread | None = None
    follower: simulate.DeploymentFollower | None = None
    code = 0
    try:
        broker.start()
        settings = Settings(broker=broker.bootstrap, app_id=f"driftline-demo-{os.getpid()}",
                            datadir=str(workdir / "data"), registry=str(workdir / "registry"))
        ensure_topics(settings)
        print(f"  broker   embedded Kafka-protocol broker at {broker.bootstrap}", flush=True)
        # The worker's own watchdog ends a stop that hangs (and logs what it left)
        # before _stop_process's kill: Ctrl-C stops the demo in seconds, not minutes.
        env = {**os.environ, "DRIFTLINE_DATADIR": settings.datadir,
               "DRIFTLINE_REGISTRY": settings.registry,
               "DRIFTLINE_SHUTDOWN_GRACE_S": str(WORKER_STOP_S)}
        with open(workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "agents", "worker", "--broker", broker.bootstrap,
                 "--app-id", settings.app_id, "--policy", str(policy), "--log-level", "warn"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                env=env,
            )
        print(f"  worker   drift, KPI, poisoning, policy and controller agents; 60 s windows "
              f"of event time; app id {settings.app_id}", flush=True)
        _publish_reference(settings, workdir, load_policy(str(policy)))
        _deploy_v1_and_a_bad_canary(settings, workdir)
        waited = _wait_until_read(settings, settings.topic("references"), worker,
                                  timeout_s=ready_timeout_s)
        print(f"  ready    the worker has read v1's reference profile ({waited:.0f} s)",
              flush=True)
        follower = simulate.DeploymentFollower(broker.bootstrap, settings.topic("deployments"))
        sim = threading.Thread(
            target=simulate.run, daemon=True,
            kwargs=dict(bootstrap=broker.bootstrap, topic=settings.topic("predictions"),
                        rate=rate, duration_s=duration_s, scenario="drift", shift_at=shift_at,
                        time_scale=time_scale, seed=seed, should_stop=stop.is_set,
                        labels_topic=settings.topic("labels"), label_delay_s=LABEL_DELAY_S,
                        follower=follower, bad_versions={"v2"},
                        training_topic=settings.topic(TRAINING_TOPIC), flood_at=FLOOD_AT),
        )
        sim.start()
        print(
            f"  serving  {MODEL}: v1 champion, v2 canary at 50 % (a bad one), {rate:.0f} "
            f"events/s, event time x{time_scale:g};\n"
            f"           amount and distance_from_home_km shift after "
            f"{shift_at * duration_s:.0f} s; labels follow about {LABEL_DELAY_S:.0f} event "
            "seconds later\n"
            "           (a window's KPIs are shown once all its labels are in; commands and "
            "deployments as they happen)\n",
            flush=True,
        )
        deadline = time.monotonic() + duration_s + 5
        colour = sys.stdout.isatty()
        shown = [settings.topic(t)
                 for t in ("drift", "kpi", "commands", "deployments", "poisoning")]
        running = worker
        for msg in tail.messages(broker.bootstrap, shown,
                                 stop=lambda: time.monotonic() > deadline
                                 or running.poll() is not None):
            if msg.topic() == settings.topic("kpi") and b'"final":true' not in msg.value():
                continue  # revisions while labels arrive; the demo shows each final report
            if msg.topic() == settings.topic("poisoning") and b'"status":"ok"' in msg.value():
                continue  # the demo shows the training-data windows that are not ok
            print(view.render(msg.topic(), msg.value(), colour=colour), flush=True)
        if worker.poll() is not None:
            print(f"the worker stopped (code {worker.returncode}); see {workdir}/worker.log",
                  flush=True)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception:
        if not _Interrupted.seen:
            raise
        code = 130
    finally:
        # A second Ctrl-C must not cut the stop short: the parts run in their own
        # sessions and would outlive the demo.
        signal.signal(signal.SIGINT, _again)
        signal.signal(signal.SIGTERM, _again)
        if code == 130:
            print("\ninterrupted; stopping the traffic, the worker, then the broker", flush=True)
        stop.set()
        if sim is not None:
            sim.join(timeout=10)
        if follower is not None:
            follower.close()
        if worker is not None:
            _stop_process(worker)
        if settings is not None and broker.pid is not None:
            _print_audit(settings, finished=code == 0)
        broker.stop()
    return code


def _again(signum: int, frame: object) -> None:
    print("stopping; a moment please (the broker stops last)", flush=True)


def _print_audit(settings: Settings, *, finished: bool) -> None:
    try:
        check, events = operator.audit(settings)
    except Exception as exc:  # the demo still stops its broker; say why there is no check
        print(f"\naudit check failed: {exc}", flush=True)
        return
    print(f"\ndemo {'finished' if finished else 'stopped'}; audit chain of {len(events)} "
          f"deployment events: {'intact' if check.intact else 'BROKEN: ' + check.reason}",
          flush=True)
