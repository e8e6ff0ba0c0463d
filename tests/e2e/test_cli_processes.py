"""`driftline broker` and `driftline demo` as a user runs them; nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from agents.dev.broker import free_port, wait_for_kafka
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port_closed(port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _port_open(port):
            return True
        time.sleep(0.1)
    return False


def test_broker_command_prints_address_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        first = proc.stdout.readline()  # printed only once Kafka requests are answered
        assert f"127.0.0.1:{port}" in first
        wait_for_kafka(f"127.0.0.1:{port}", timeout_s=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert _wait_port_closed(port), "the Tansu process outlived the broker command"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_flags_the_shift_and_leaves_no_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agents", "demo", "--duration", "20", "--time-scale", "30"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any("REFERENCE" in line for line in lines), out.stdout
    # drift report lines (KPI lines can say "CONCEPT DRIFT": the bad canary errs more)
    drift = [line for line in lines if " DRIFT " in line and "CONCEPT DRIFT" not in line]
    assert drift, out.stdout
    # Only the two shifted features (and the score they feed) are ever named;
    # once the shift covers a whole window, both are.
    allowed = {"amount", "distance_from_home_km", "prediction.score"}
    for line in drift:
        named = set(re.findall(r"([\w.]+) psi=", line))
        assert named and named <= allowed, line
    assert "amount psi" in drift[-1] and "distance_from_home_km psi" in drift[-1]
    assert any(" OK " in line for line in lines), "windows before the shift are ok"

    port = int(re.search(r"broker at 127\.0\.0\.1:(\d+)", out.stdout).group(1))
    assert _wait_port_closed(port)
    app_id = f"driftline-demo-{_demo_pid(out.stdout)}"
    assert _processes_with(app_id) == [], "the worker outlived the demo"


def _demo_pid(stdout: str) -> str:
    match = re.search(r"app id (driftline-demo-(\d+))", stdout)
    assert match, stdout
    return match.group(2)


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


def test_demo_stops_on_ctrl_c_and_leaves_no_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "demo", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    try:
        seen = []
        for line in proc.stdout:  # the demo prints "serving" once everything runs
            seen.append(line)
            if line.strip().startswith("serving"):
                break
        text = "".join(seen)
        app_id = f"driftline-demo-{_demo_pid(text)}"
        port = int(re.search(r"broker at 127\.0\.0\.1:(\d+)", text).group(1))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        assert code == 130, text + proc.stdout.read()
        assert _wait_port_closed(port)
        assert _processes_with(app_id) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tail_of_a_missing_topic_says_so(broker: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.operator import tail

    monkeypatch.setattr(tail, "METADATA_WAIT_S", 0.5)
    with pytest.raises(tail.TopicMissing, match="'no-such-topic' does not exist"):
        next(tail.messages(broker.bootstrap, "no-such-topic"))  # type: ignore[attr-defined]
