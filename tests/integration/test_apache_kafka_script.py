"""scripts/apache-kafka as a person runs it: ready line, a working broker, and a
stop on SIGTERM or Ctrl-C within 10 s that leaves no JVM and no storage behind.
Needs Java and Maven: run by ``make test-integration``, not ``make test``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from agents.dev.broker import free_port
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "apache-kafka"
STARTED = re.compile(r"broker pid (\d+), storage (\S+)")


def _start(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with open(log, "wb") as out:
        # A session of its own, as a terminal's foreground job, for Ctrl-C below.
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300  # the first run fetches the jars
    while f"ready 127.0.0.1:{port}" not in log.read_text():
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not ready within 300 s:\n{log.read_text()}"
        time.sleep(0.2)  # polling interval of the condition, not synchronisation
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """After a failure: stop the script as the fixture does (no JVM, no storage left)."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _round_trip(bootstrap: str) -> None:
    """A topic created, a record written and read back."""
    topic = f"script-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        while (msg := consumer.poll(1.0)) is None or msg.error():
            assert time.monotonic() < deadline, "the record was not read back within 60 s"
        assert msg.value() == b"hello"
    finally:
        consumer.close()


def _stopped_clean(proc: subprocess.Popen[bytes], send: object, log: Path) -> None:
    pid, storage = STARTED.search(log.read_text()).groups()  # type: ignore[union-attr]
    assert Path(storage).is_dir()
    began = time.monotonic()
    send()  # type: ignore[operator]
    code = proc.wait(timeout=30)
    took = time.monotonic() - began
    assert code == 0, f"exit code {code}:\n{log.read_text()}"
    assert took < 10, f"stopped after {took:.1f} s"
    assert not Path(storage).exists(), f"{storage} left behind"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the broker's JVM (pid {pid}) outlived the script")


def test_the_script_runs_a_broker_and_stops_on_sigterm_and_on_ctrl_c(tmp_path: Path) -> None:
    first = tmp_path / "first.log"
    proc, port = _start(first)
    try:
        _round_trip(f"127.0.0.1:{port}")
        _stopped_clean(proc, lambda: proc.send_signal(signal.SIGTERM), first)
    finally:
        _stop(proc)

    # Ctrl-C in a terminal signals the whole foreground group, JVM included.
    second = tmp_path / "second.log"
    proc, port = _start(second)
    try:
        assert "fetching" not in second.read_text(), "the second run fetched the jars again"
        _stopped_clean(proc, lambda: os.killpg(proc.pid, signal.SIGINT), second)
    finally:
        _stop(proc)
