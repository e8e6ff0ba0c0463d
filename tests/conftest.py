"""Fixtures shared by the suite: the broker (the embedded Tansu broker, or Apache
Kafka with DRIFTLINE_TEST_BROKER=apache-kafka) and a real worker process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.config import Settings
from agents.dev.broker import BrokerError, EmbeddedBroker, free_port
from agents.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
#: A table key no agent uses: its tombstones close changelogs (WorkerProcess.restart).
SEAL_KEY = b"\x00driftline-tests|seal"
#: aiokafka's line (at info) when a worker's consumer has joined its group.
JOINED = re.compile(r"Joined group '([^']+)' \(generation (-?\d+)\) with member_id (\S+)")


#: Which broker the ``broker`` fixture starts: "embedded" (Tansu, the default) or
#: "apache-kafka" (scripts/apache-kafka: Apache Kafka, KRaft, one node; needs Java
#: and Maven). ``make test-kafka`` sets it.
BROKER_ENV = "DRIFTLINE_TEST_BROKER"
BROKERS = ("embedded", "apache-kafka")


class ApacheKafka:
    """scripts/apache-kafka on a free port, with the interface of EmbeddedBroker
    that the tests use (``bootstrap``, ``port``, ``start``/``stop``, a context
    manager). Its output (the script's lines and the broker's warnings) goes to
    ``log_path``."""

    SCRIPT = ROOT / "scripts" / "apache-kafka"

    def __init__(self, *, log_path: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 300.0) -> ApacheKafka:
        """Start the script and wait for its ready line. The deadline covers the
        first run's Maven fetch of the broker's jars (later runs: about 5 s)."""
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(self.SCRIPT), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_terminate_with_parent,
            )
        try:
            self._wait_ready(self._proc, timeout_s)
        except BaseException:  # a timeout, or Ctrl-C while waiting: no broker left
            self.stop()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        ready = f"ready {self.bootstrap}"
        deadline = time.monotonic() + timeout_s
        while ready not in self.log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise BrokerError(
                    f"scripts/apache-kafka exited (code {proc.returncode})"
                    f" before it was ready:\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"scripts/apache-kafka was not ready within {timeout_s:.0f} s:\n{self._tail()}"
                )
            time.sleep(0.2)  # polling interval of the condition, not synchronisation

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # the script stops the broker and removes its storage
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate_with_parent() -> None:
    """In the broker script's process: SIGTERM it when the test process dies, so
    that a killed pytest leaves no broker behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


Broker = EmbeddedBroker | ApacheKafka


def broker_kind() -> str:
    kind = os.environ.get(BROKER_ENV, "embedded")
    if kind not in BROKERS:
        raise pytest.UsageError(f"{BROKER_ENV}={kind!r}: expected one of {', '.join(BROKERS)}")
    return kind


#: The group session timeout of every worker the suite starts (WorkerProcess, and the
#: demo, bench and soak script, which inherit the environment), unless the environment
#: sets one. The embedded broker (Tansu 0.6.0) holds a new group's first join for about
#: half the session timeout (measured: 5 s of every worker start at the default 10 s,
#: 2 s at 3 s); a killed worker's partitions also move only after it. Apache Kafka
#: refuses anything under its group.min.session.timeout.ms, 6 s by default. Heartbeats
#: go every 0.5 s from the consumer's own thread (agents.app): 3 s is six of them.
TEST_SESSION_TIMEOUT_S = {"embedded": "3", "apache-kafka": "6"}
os.environ.setdefault("DRIFTLINE_SESSION_TIMEOUT_S", TEST_SESSION_TIMEOUT_S[broker_kind()])

#: Test files that take longest (tens of seconds each; measured with --durations), run
#: first: with ``make test`` (--dist loadfile --no-loadscope-reorder) the processes
#: then end together instead of one waiting while another runs a long file last.
SLOW_FIRST = (
    "tests/e2e/test_outages.py",
    "tests/e2e/test_bench.py",
    "tests/test_static.py",
    "tests/e2e/test_crash.py",
    "tests/e2e/test_replay.py",
    "tests/test_soak_script.py",
    "tests/e2e/test_cli_processes.py",
    "tests/agents/poisoning/test_handler_state.py",
    "tests/e2e/test_health_signals.py",
    "tests/e2e/test_poisoning_restart.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of SLOW_FIRST first, in that order; the rest as collected."""
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}

    def key(item: pytest.Item) -> int:
        path = Path(str(item.path)).resolve()
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else ""
        return rank.get(relative, len(SLOW_FIRST))

    items.sort(key=key)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The broker on a free port, for the whole session: the embedded Tansu broker,
    or Apache Kafka with DRIFTLINE_TEST_BROKER=apache-kafka."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    running: Broker
    if broker_kind() == "apache-kafka":
        running = ApacheKafka(log_path=str(log))
    else:
        running = EmbeddedBroker(log_path=str(log))
    with running:
        yield running


class WorkerProcess:
    """``driftline worker`` as a child process, with its own app id and topic prefix.

    ``store`` picks the table store (``--store``); left out, the worker's default
    (or ``DRIFTLINE_STORE``) applies. :meth:`restart` replaces the process with a
    new one of the same app id, topic prefix and datadir; :meth:`wait_ready`
    waits for Faust's "Ready" (with ``log_level="info"``).
    """

    def __init__(
        self,
        broker: Broker,
        tmp: Path,
        policy: str,
        *,
        agents: str = "drift",
        partitions: int = 1,
        store: str | None = None,
        log_level: str = "warn",
        env: dict[str, str] | None = None,
        prefix: str | None = None,
    ) -> None:
        self.broker = broker
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}."
        self.store = store
        self.settings = Settings(
            broker=broker.bootstrap,
            topic_prefix=self.prefix,
            app_id=f"driftline-{self.prefix.rstrip('.')}",
            store=store or os.environ.get("DRIFTLINE_STORE", "memory://"),
            partitions=partitions,
            datadir=str(tmp / "data"),
            registry=str(tmp / "registry"),
        )
        self.policy_path = tmp / "policy.yaml"
        self.policy_path.write_text(policy)
        self.log_path = tmp / "worker.log"
        self.agents = agents
        self.log_level = log_level
        self.starts = 0
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def peer(self, tmp: Path, *, env: dict[str, str] | None = None) -> WorkerProcess:
        """Another worker process of the same app (app id, topic prefix, policy,
        agents, partitions, store), with its own datadir, registry and log: they share the
        partitions. Not started."""
        tmp.mkdir(parents=True, exist_ok=True)
        return WorkerProcess(
            self.broker,
            tmp,
            self.policy_path.read_text(),
            agents=self.agents,
            partitions=self.settings.partitions,
            store=self.store,
            log_level=self.log_level,
            env={**self.extra_env, **(env or {})},
            prefix=self.prefix,
        )

    def start(self, *, create_topics: bool = True) -> WorkerProcess:
        """Start the process. The catalogue's topics are created first (so that a
        test can publish at once), unless ``create_topics`` is False: then the
        worker creates them itself, as it does in production."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the worker is running; stop() or restart() it first")
        if create_topics:
            ensure_topics(self.settings)
        env = {
            **os.environ,
            "DRIFTLINE_DATADIR": self.settings.datadir,
            "DRIFTLINE_REGISTRY": self.settings.registry,
            **self.extra_env,
            "DRIFTLINE_TOPIC_PREFIX": self.prefix,
            "DRIFTLINE_PARTITIONS": str(self.settings.partitions),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agents",
                    "worker",
                    "--broker",
                    self.settings.bootstrap,
                    "--app-id",
                    self.settings.app_id,
                    "--policy",
                    str(self.policy_path),
                    "--agents",
                    self.agents,
                    "--log-level",
                    self.log_level,
                    *(["--store", self.store] if self.store else []),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> WorkerProcess:
        """Wait until the running process has logged Faust's "Ready": its tables are
        recovered and its input partitions seeked to the committed offsets. Needs
        ``log_level`` info or debug."""
        if self.log_level not in ("info", "debug"):
            raise ValueError("wait_ready() reads the worker's log: start it with log_level='info'")
        deadline = time.monotonic() + timeout_s
        while self.log().count("[^Worker]: Ready") < self.starts:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited before it was ready\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the worker was not ready within {timeout_s:.0f} s\n{self.log()}"
                )
            time.sleep(0.2)  # polling interval of the condition, not synchronisation
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
        self._leave_first_generation()
        return self.proc.returncode

    def _leave_first_generation(self) -> None:
        """Send the LeaveGroup a stopped worker would have sent on Kafka.

        The embedded broker (Tansu 0.6.0) numbers a group's first generation 0,
        Kafka 1; aiokafka takes 0 for "not joined" and leaves nothing on stop,
        so the next member would wait out the stopped one's session timeout
        (TEST_SESSION_TIMEOUT_S) as if it had crashed. Only for a stop
        (SIGTERM), never for ``crash_restart``; needs the join in the log (info).
        A no-op on Apache Kafka, whose generations start at 1: the worker left.
        """
        joins = JOINED.findall(self.log())
        if not joins or joins[-1][1] != "0":
            return  # at generation >= 1 the worker left by itself
        group, _, member = joins[-1]

        async def leave() -> None:
            from aiokafka.client import AIOKafkaClient, CoordinationType
            from aiokafka.protocol.group import LeaveGroupRequest

            client = AIOKafkaClient(bootstrap_servers=self.settings.bootstrap)
            await client.bootstrap()
            try:
                node = await client.coordinator_lookup(CoordinationType.GROUP, group)
                await client.send(node, LeaveGroupRequest(group, member))
            finally:
                await client.close()

        asyncio.run(leave())

    def restart(self) -> int | None:
        """Stop the worker (SIGTERM) and start a new process with the same app id,
        topic prefix and datadir; returns the old process's exit code.

        In between, each of the app's changelog partitions gets a one-record batch
        (a tombstone for a key no table uses): the embedded broker (Tansu 0.6.0)
        reports a partition's end offset as its last record batch's *base* offset
        + 1, so after a multi-record batch the new worker would end changelog
        recovery early (memory://: the changelog's tail never applied) or refuse
        to start (rocksdb://: Faust's ConsistencyError, persisted offset above the
        end offset). Kafka reports end offsets right and needs no such thing: on
        Apache Kafka nothing is appended, and recovery is tested as it runs there.
        """
        code = self.stop()
        self.seal_changelogs()
        with open(self.log_path, "a") as log:
            log.write(f"--- worker stopped (exit code {code}); a new process starts ---\n")
        self.start()
        return code

    def crash_restart(self) -> int | None:
        """SIGKILL the worker, wherever it is, then start a new process as
        :meth:`restart` does; returns the killed process's exit code (-9)."""
        assert self.proc is not None and self.proc.poll() is None, "the worker is not running"
        self.proc.kill()
        code = self.proc.wait()
        self.seal_changelogs()
        with open(self.log_path, "a") as log:
            log.write(f"--- worker killed (exit code {code}); a new process starts ---\n")
        self.start()
        return code

    def committed(self, topic: str, partition: int = 0) -> int | None:
        """The offset the worker's group has committed on ``topic`` (None: none yet)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": self.settings.app_id,
                "enable.auto.commit": False,
            }
        )
        try:
            (tp,) = consumer.committed([TopicPartition(self.topic(topic), partition)], timeout=5)
            return tp.offset if tp.offset >= 0 else None
        finally:
            consumer.close()

    def applied(self, table: str, topic: str, partition: int = 0, *, tail: int = 2000
                ) -> int | None:
        """The last offset of ``topic`` that the agent keeping ``table`` has applied on
        ``partition``, by the newest redo record in the table's changelog (among its
        last ``tail`` records; None: none there). What a restarted worker will find."""
        from confluent_kafka import Consumer, TopicPartition

        from agents.runtime.redo import Redo, redo_key

        consumer = Consumer({"bootstrap.servers": self.settings.bootstrap,
                             "group.id": f"applied-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False})
        changelog = f"{self.settings.app_id}-{table}-changelog"
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(changelog, partition), timeout=5)
            consumer.assign([TopicPartition(changelog, partition, max(low, high - tail))])
            newest, read = None, max(low, high - tail)
            while read < high:
                msg = consumer.poll(5)
                if msg is None:
                    break  # the broker did not answer in time: what was read so far
                if msg.error():
                    continue
                read = msg.offset() + 1
                if msg.key() == redo_key(partition):
                    newest = msg.value()
            return None if newest is None else Redo.loads(newest).applied.get(self.topic(topic))
        finally:
            consumer.close()

    def publish_predictions_then_labels(self, model: str, predictions: list[bytes],
                                        labels: list[bytes]) -> float:
        """Publish the ``predictions`` messages, wait until the worker has committed
        them, then publish the ``labels`` messages; returns when the labels went out
        (time.monotonic). The worker reads both topics at once: published together,
        labels could come before their predictions."""
        from agents.dev import simulate

        producer = simulate.make_producer(self.settings.bootstrap)
        simulate.publish(producer, self.topic("predictions"), model, predictions)
        self.wait_committed("predictions", len(predictions), timeout_s=90)
        simulate.publish(producer, self.topic("labels"), model, labels)
        return time.monotonic()

    def wait_committed(
        self, topic: str, offset: int, timeout_s: float = 30.0, *, partition: int = 0
    ) -> None:
        """Wait until the worker's group has committed ``offset`` (or beyond) on ``topic``.
        A retriable error of the broker (its group coordinator moving or still loading,
        as on an Apache Kafka under load: NOT_COORDINATOR) is asked again."""
        from confluent_kafka import KafkaError, KafkaException

        passing = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                   KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT,
                   KafkaError.REQUEST_TIMED_OUT}
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got = self.committed(topic, partition)
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in passing):
                    raise
                got = None
            if got is not None and got >= offset:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the worker committed {got} of {offset} {topic} "
                    f"messages within {timeout_s:.0f} s\n{self.log()[-4000:]}"
                )
            time.sleep(0.2)  # polling interval of the condition, not synchronisation

    def seal_changelogs(self) -> list[str]:
        """Append a one-record batch to every partition of the app's changelog
        topics on the embedded broker (see :meth:`restart`); returns the topics.
        A no-op on Apache Kafka (returns [])."""
        if isinstance(self.broker, ApacheKafka):
            return []
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        bootstrap = self.settings.bootstrap
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        changelogs = sorted(
            t
            for t in topics
            if t.startswith(f"{self.settings.app_id}-") and t.endswith("-changelog")
        )
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for topic in changelogs:
            for partition in topics[topic].partitions:
                producer.produce(topic, key=SEAL_KEY, value=None, partition=partition)
                # One at a time, so that each is a batch of its own.
                if producer.flush(10):
                    raise RuntimeError(f"could not seal {topic}[{partition}]")
        return changelogs


@pytest.fixture
def worker_factory(broker: Broker, tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def make(policy: str, **kwargs: object) -> WorkerProcess:
        sub = tmp_path / f"w{len(started)}"
        sub.mkdir()
        w = WorkerProcess(broker, sub, policy, **kwargs).start()  # type: ignore[arg-type]
        started.append(w)
        return w

    yield make
    for w in started:  # SIGTERM to all first: they stop side by side
        if w.proc is not None and w.proc.poll() is None:
            w.proc.terminate()
    for w in started:
        w.stop()
