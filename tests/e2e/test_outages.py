"""Broker outages and wrong addresses: every verb fails fast in a line or two, the worker
stops in time without its broker, and Ctrl-C stops the demo's parts in order."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.config import Settings
from agents.dev.broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.e2e

#: the probe's timeout where the point is the message, not the default
SHORT_TIMEOUT_S = 2.0
#: time to start Python and import the CLI on a loaded 2-core machine
STARTUP_S = 15.0


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment without the runner's DRIFTLINE_* settings; a private datadir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return {**env, "DRIFTLINE_DATADIR": str(tmp / "data"), **extra}


#: every verb that talks to Kafka ({tmp}: the test's directory)
VERBS: dict[str, list[str]] = {
    "worker": ["worker"],
    "simulate": ["simulate", "--duration", "1"],
    "tail": ["tail", "drift"],
    "reference build": [
        "reference",
        "build",
        "--model",
        "m",
        "--version",
        "v1",
        "--data",
        "{tmp}/training.csv",
    ],
    "replay": ["replay"],
    "audit verify": ["audit", "verify"],
    "audit report": ["audit", "report", "--model", "m", "--out", "{tmp}/r.html"],
    "command rollback": ["command", "rollback", "--model", "m"],
    "command approve": ["command", "approve", "abc", "--model", "m"],
    "quarantine list": ["quarantine", "list"],
    "quarantine release": ["quarantine", "release", "r1", "--model", "m", "--reason", "ok"],
    "bench": ["bench", "--events", "1000", "--repeat", "1"],
    "deadletter fetch": ["deadletter", "fetch", "--letter", "0", "--output", "{tmp}/original"],
}


def _run(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str, float]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "agents", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout_s,
    )
    return out.returncode, out.stdout, out.stderr, time.monotonic() - started


#: verbs run at once: each is mostly waiting for its probe to time out
PARALLEL = 4


def _fails_fast(verb: str, tmp: Path) -> list[str]:
    """Run ``verb`` against a closed port; what is wrong with how it failed (nothing: [])."""
    tmp.mkdir()
    (tmp / "training.csv").write_text("amount,label\n1.0,0\n2.0,1\n")
    address = f"127.0.0.1:{free_port()}"
    argv = [*(a.format(tmp=tmp) for a in VERBS[verb]), "--broker", address]
    env = _env(tmp, DRIFTLINE_CONNECT_TIMEOUT_S=str(SHORT_TIMEOUT_S))
    code, stdout, stderr, took = _run(argv, env, timeout_s=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    checks = {
        "exit status 0": code != 0,
        f"took {took:.1f} s": took < SHORT_TIMEOUT_S + STARTUP_S,
        f"{len(lines)} lines on stderr": 1 <= len(lines) <= 2,
        "address or DRIFTLINE_BROKER not named": address in stderr and "DRIFTLINE_BROKER" in stderr,
        "a traceback or librdkafka's noise": "Traceback" not in stderr
        and "rdkafka" not in stderr + stdout,
        "does not say the command was NOT sent": not verb.startswith("command")
        or "the command was NOT sent" in stderr,
    }
    return [f"{verb}: {what}\n{stdout}{stderr}" for what, ok in checks.items() if not ok]


def test_every_verb_fails_fast_against_a_closed_port(tmp_path: Path) -> None:
    # Several at a time (the time limit allows for a loaded machine): one by one the
    # 13 verbs took 75 s of the suite, mostly waiting.
    with ThreadPoolExecutor(PARALLEL) as pool:
        problems = pool.map(lambda v: _fails_fast(v, tmp_path / v.replace(" ", "-")), VERBS)
        found = [p for verb_problems in problems for p in verb_problems]
    assert not found, "\n\n".join(found)


def test_a_port_that_is_not_kafka_fails_the_same_way(tmp_path: Path) -> None:
    # Something listens (the handshake completes) but never speaks Kafka.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = _env(tmp_path, DRIFTLINE_CONNECT_TIMEOUT_S=str(SHORT_TIMEOUT_S))
        code, stdout, stderr, took = _run(
            ["command", "rollback", "--model", "m", "--broker", address], env, timeout_s=120
        )
    assert code == 2, stdout + stderr
    assert took < SHORT_TIMEOUT_S + STARTUP_S, took
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert address in stderr and "the command was NOT sent" in stderr, stderr


def test_the_default_timeout_bounds_a_command_to_a_wrong_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, stdout, stderr, took = _run(
        ["command", "rollback", "--model", "m", "--broker", address], _env(tmp_path), timeout_s=120
    )
    assert code == 2, stdout + stderr
    assert 14.0 <= took < 15.0 + STARTUP_S, took  # the default, DRIFTLINE_CONNECT_TIMEOUT_S=15
    assert stderr.strip() == (
        f"driftline: cannot reach the Kafka broker at {address} within 15 s: check --broker / "
        "DRIFTLINE_BROKER and that the broker is running; the command was NOT sent"
    )


def test_the_worker_exits_within_its_grace_of_sigterm_after_its_broker_is_gone(
    tmp_path: Path,
) -> None:
    # The default grace (25 s) is below Kubernetes' 30; the mechanism is the same at
    # any grace, and 8 s here spares the suite 17 s of waiting.
    assert Settings().shutdown_grace_s < 30
    grace_s = 8.0
    # Its own broker: the session's one must outlive this test.
    own = EmbeddedBroker(log_path=str(tmp_path / "broker.log")).start()
    worker = WorkerProcess(
        own,
        tmp_path,
        "drift:\n  window: 60s\n",
        agents="drift,kpi,poisoning,policy,controller",
        log_level="info",
        env={"DRIFTLINE_SHUTDOWN_GRACE_S": str(grace_s)},
    )
    try:
        worker.start().wait_ready(timeout_s=120)
        own.stop()
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = worker.proc.wait(timeout=grace_s + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM for {grace_s + 5:.0f} s\n"
                        f"{worker.log()[-3000:]}")
        took = time.monotonic() - started
        if code != 0:  # a forced exit says what it abandoned and why nothing is lost
            assert "did not stop within" in worker.log() and "Nothing is lost" in worker.log()
        assert took < grace_s + 5
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
        own.stop()


def _children(pid: int) -> dict[int, str]:
    """Live (not zombie) child processes of ``pid``: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry)] = cmdline.decode(errors="replace")
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_the_demo_in_order_and_prints_the_audit_check() -> None:
    # A session of its own, as a shell gives a foreground job: Ctrl-C signals the group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents", "demo", "--duration", "120", "--time-scale", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    parts: dict[int, str] = {}
    try:
        seen = []
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # until v1's first drift window is shown
            seen.append(line)
            if re.search(r"fraud-detector v1  n=", line) or time.monotonic() > deadline:
                break
        text = "".join(seen)
        first_v1 = seen[-1]
        # The demo waited for the worker to read v1's reference before any traffic:
        # v1 is judged against its profile from the first window on.
        assert "ready    the worker has read v1's reference" in text, text
        assert "REFERENCE" not in first_v1 and "warm-up" not in first_v1, text
        assert "NOT JUDGED" not in first_v1, text

        parts = _children(proc.pid)
        broker = [pid for pid, cmd in parts.items() if "tansu" in cmd]
        worker = [pid for pid, cmd in parts.items() if "agents worker " in cmd]
        assert len(broker) == 1 and len(worker) == 1, parts
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        gone: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while len(gone) < 2 and time.monotonic() < deadline:
            for name, pid in (("broker", broker[0]), ("worker", worker[0])):
                if name not in gone and not _alive(pid):
                    gone[name] = time.monotonic()
            time.sleep(0.05)  # polling interval of the condition
        rest = proc.stdout.read()
        code = proc.wait(timeout=60)
        assert set(gone) == {"broker", "worker"}, rest
        assert gone["worker"] < gone["broker"], "the broker stopped before the worker"
        assert code == 130, rest
        assert "interrupted; stopping" in rest, rest
        assert re.search(r"audit chain of \d+ deployment events: intact", rest), rest
        assert len(rest.splitlines()) < 15, rest  # no flood of connection errors
        assert "rdkafka" not in rest and "Connection refused" not in rest, rest
    finally:
        if proc.poll() is None:  # the test failed early: let the demo stop its parts
            parts.update(_children(proc.pid))
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        for pid in parts:  # in sessions of their own: the group's kill missed them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
