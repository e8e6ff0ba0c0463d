"""Fixtures shared by the suite: the embedded broker and a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.broker import EmbeddedBroker
from agents.config import Settings
from agents.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The Tansu broker on a free port, for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=str(log)) as running:
        yield running


class WorkerProcess:
    """``driftline worker`` as a child process, with its own app id and topic prefix."""

    def __init__(self, broker: EmbeddedBroker, tmp: Path, policy: str, *,
                 agents: str = "drift", partitions: int = 1) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.settings = Settings(broker=broker.bootstrap, topic_prefix=self.prefix,
                                 app_id=f"driftline-{self.prefix.rstrip('.')}",
                                 partitions=partitions, datadir=str(tmp / "data"))
        self.policy_path = tmp / "policy.yaml"
        self.policy_path.write_text(policy)
        self.log_path = tmp / "worker.log"
        self.agents = agents
        self.proc: subprocess.Popen[bytes] | None = None

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def start(self) -> WorkerProcess:
        ensure_topics(self.settings)
        env = {**os.environ, "DRIFTLINE_DATADIR": self.settings.datadir,
               "DRIFTLINE_TOPIC_PREFIX": self.prefix,
               "DRIFTLINE_PARTITIONS": str(self.settings.partitions)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agents", "worker", "--broker", self.settings.bootstrap,
                 "--app-id", self.settings.app_id, "--policy", str(self.policy_path),
                 "--agents", self.agents, "--log-level", "warn"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def worker_factory(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def make(policy: str, **kwargs: object) -> WorkerProcess:
        sub = tmp_path / f"w{len(started)}"
        sub.mkdir()
        w = WorkerProcess(broker, sub, policy, **kwargs).start()  # type: ignore[arg-type]
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()
