"""Fail fast and stop in time: the broker probe and the worker's shutdown watchdog."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from agents.config import Settings
from agents.dev.broker import free_port
from agents.kafka import BrokerUnreachable, probe, quiet
from agents.runtime.watchdog import FORCED_EXIT_CODE, ShutdownWatchdog
from schemas.errors import DriftlineError


def test_probe_of_a_closed_port_fails_in_its_timeout_naming_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as caught:
        probe(address, timeout_s=1.5)
    took = time.monotonic() - started
    assert 1.0 <= took < 5.0, took
    message = str(caught.value)
    assert message.count("\n") == 0
    assert address in message and "within 1.5 s" in message
    assert "DRIFTLINE_BROKER" in message
    assert isinstance(caught.value, DriftlineError)  # the CLI prints it in one line


def test_probe_of_the_broker_returns(broker: object) -> None:
    probe(broker.bootstrap, timeout_s=10)  # type: ignore[attr-defined]


def test_librdkafka_is_quiet_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_LOG_LEVEL", raising=False)
    assert quiet() == {"log_level": 0}
    monkeypatch.setenv("DRIFTLINE_LOG_LEVEL", "debug")
    assert isinstance(quiet()["logger"], logging.Logger)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_connect_timeout_must_be_positive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DRIFTLINE_CONNECT_TIMEOUT_S", value)
    with pytest.raises(DriftlineError, match="DRIFTLINE_CONNECT_TIMEOUT_S"):
        Settings.from_env()


def test_connect_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_CONNECT_TIMEOUT_S", "2.5")
    assert Settings.from_env().connect_timeout_s == 2.5
    assert Settings().connect_timeout_s == 15.0


def test_watchdog_exits_after_the_grace_naming_what_had_not_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exited: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        done.set()

    dog = ShutdownWatchdog(
        grace_s=0.3, broker="127.0.0.1:9", exit=fake_exit, pending=lambda: ["Consumer (stopping)"]
    )
    assert not dog.armed
    with caplog.at_level(logging.ERROR, logger="agents.runtime.watchdog"):
        started = time.monotonic()
        dog.arm("SIGTERM")
        dog.arm("SIGINT")  # a second signal does not start a second timer
        assert done.wait(10)
        took = time.monotonic() - started
    assert exited == [FORCED_EXIT_CODE]
    assert 0.3 <= took < 5
    (record,) = caplog.records
    text = record.getMessage()
    assert "within 0.3 s of SIGTERM" in text and "127.0.0.1:9" in text
    assert "Consumer (stopping)" in text and "Nothing is lost" in text


def test_watchdog_refuses_a_grace_of_zero() -> None:
    with pytest.raises(ValueError, match="grace_s"):
        ShutdownWatchdog(grace_s=0)
