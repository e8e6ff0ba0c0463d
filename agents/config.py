"""Worker settings from flags and the environment.

Every setting has an environment variable (``DRIFTLINE_<NAME>``) and most a
CLI flag; flags win. Thresholds and windows live in the policy file instead
(``--policy`` / ``DRIFTLINE_POLICY``), see ``schemas.policy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from schemas.errors import DriftlineError

EMBEDDED_BROKER = "127.0.0.1:9092"
#: models tracked per agent and table partition (see Settings.max_models)
DEFAULT_MAX_MODELS = 100
#: the clients that can fetch the worker's messages (Settings.fetch)
FETCHERS = ("confluent", "aiokafka")


def _env(name: str, default: Any) -> Any:
    raw = os.environ.get(f"DRIFTLINE_{name.upper()}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@dataclass(frozen=True)
class Settings:
    broker: str = EMBEDDED_BROKER
    topic_prefix: str = ""
    app_id: str = "driftline"
    # memory:// keeps tables in RAM, rebuilt from their changelog at start;
    # rocksdb:// persists them locally (see docs/operations.md).
    store: str = "memory://"
    partitions: int = 1
    # Where table stores (rocksdb://) and Faust keep their files.
    datadir: str = "~/.driftline"
    policy: str = ""
    # Kafka group session timeout. Kafka's default (45 s) makes a restarted
    # worker wait that long to rejoin; 10 s is a sane default for a monitor.
    session_timeout_s: float = 10.0
    # Seconds between two offset commits of the worker's group: what a crash may leave
    # handled past the commit, which the restart recognises by the redo records and
    # skips (docs/guarantees.md). Longer: fewer commit requests, more to skip.
    commit_interval_s: float = 1.0
    # Seconds a command waits for the broker to answer before it fails with one
    # line naming the address (agents.kafka.probe); the worker too, at start.
    connect_timeout_s: float = 15.0
    # Seconds from SIGTERM/SIGINT until the worker exits even if its orderly stop
    # still waits on the broker (agents.runtime.watchdog): below Kubernetes' 30-s grace.
    shutdown_grace_s: float = 25.0
    # Larger messages are dead-lettered instead of decoded.
    max_message_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"
    # The deployment controller's model registry: a directory (the file
    # registry) or mlflow+<tracking URI>, see agents.controller.registry.
    registry: str = "~/.driftline/registry"
    # The command signing key (HMAC-SHA256): DRIFTLINE_COMMAND_KEY holds it, or
    # DRIFTLINE_COMMAND_KEY_FILE names a file holding it. With neither, a random
    # key is created once in <datadir>/command.key (mode 0600), see agents.controller.keys.
    command_key: str = ""
    command_key_file: str = ""
    # The issuers file (YAML): each issuer's own key and the models and command
    # types it may touch (agents.controller.issuers). Empty: off, one command key for all.
    issuers: str = ""
    # The controller's verdict endpoint for Argo Rollouts / Flagger (0: off).
    controller_port: int = 0
    controller_token: str = ""
    # Prometheus metrics of the worker on this port's /metrics (0: off).
    metrics_port: int = 0
    # Models each agent tracks per table partition, besides those the policy file
    # lists under models: (agents.inputs.admission); events of further ones are
    # dead-lettered. 0: only the listed ones. What a model costs at the policy's
    # defaults (docs/memory.md), as table state (in RAM with memory://,
    # replayed from the changelog at every start): drift up to 8 windows x 1 KB x
    # features per version (200 KB at 25 features) plus its reference (tens of KB);
    # KPI 169 windows x 11 KB = 1.9 MB per version and variant; the poisoning
    # guard's trusted set (5,000 rows) and checks in memory. About 2-4 MB for a
    # model with one version: 100 models are 200-400 MB, which fits a 1-2 GB worker
    # and is far above what one team deploys, while a producer inventing names hits
    # the limit long before memory runs out.
    max_models: int = DEFAULT_MAX_MODELS
    # How far an event's ts may run ahead of its stream's time (the largest ts
    # accepted so far for the model); events beyond are dead-lettered, so one bad
    # client clock cannot close every window or expire every pending prediction
    # (streams.windows.bound_future). An hour passes clock skew and batching
    # delays and catches the usual bad clocks (local time sent as UTC, a wrong day).
    max_future_s: float = 3600.0
    # The agents take every message available on their stream up to a bound and handle
    # them in one call: one state write per key and one redo record per batch
    # (agents.runtime.batches). At most this many messages per batch (1: one at a time) ...
    batch_max_messages: int = 64
    # ... split into handler calls of at most this many value bytes (a larger message
    # alone), which bounds the memory of a batch and the size of its redo record ...
    batch_max_bytes: int = 16 * 1024 * 1024
    # ... and a stream with fewer messages waits this long for more before handling
    # what it has: the latency a batch may add to a report.
    batch_max_wait_ms: int = 10
    # Messages an agent's stream holds before they are handled (Faust's
    # stream_buffer_maxsize): Faust stops fetching a partition whose agent has this
    # many waiting. With Faust's default, 4,096, a worker reading 1.4 MB messages at
    # 300,000 events/s grew to 2.9 GB; with 1,024 to 1.5 GB; with 256 to 0.8 GB
    # (scripts/soak, 3 minutes each, on Apache Kafka), but 256 halved the worker's
    # rate on 500-event Arrow messages (103,000 against 182,000-211,000 events/s,
    # bench pairs side by side); 1,024 was as fast as 4,096 in every form (bench
    # pairs). The memory they take is
    # at most this times DRIFTLINE_MAX_MESSAGE_BYTES per agent, and typically this
    # times the producers' message size.
    stream_buffer_messages: int = 1024
    # The garbage collector's youngest-generation threshold once the worker is ready,
    # after it froze what was alive then (agents.runtime.gc_tuning); 0: Python's own.
    gc_gen0: int = 50_000
    # Which client fetches the worker's messages: "confluent" (librdkafka, in its own
    # threads; agents.runtime.confluent_fetch) or "aiokafka" (Faust's own). Group
    # membership, commits and producing are aiokafka's either way.
    fetch: str = "confluent"

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0:
            raise DriftlineError(
                f"DRIFTLINE_CONNECT_TIMEOUT_S must be above 0, got {self.connect_timeout_s}")
        if self.commit_interval_s <= 0:
            raise DriftlineError(
                f"DRIFTLINE_COMMIT_INTERVAL_S must be above 0, got {self.commit_interval_s}")
        if self.max_future_s <= 0:
            raise DriftlineError(
                f"DRIFTLINE_MAX_FUTURE_S must be above 0, got {self.max_future_s}")
        if self.max_models < 0:
            raise DriftlineError(
                f"DRIFTLINE_MAX_MODELS must be 0 or more, got {self.max_models}")
        if self.batch_max_messages < 1:
            raise DriftlineError("DRIFTLINE_BATCH_MAX_MESSAGES must be 1 or more (1: one "
                                 f"message at a time), got {self.batch_max_messages}")
        if self.batch_max_bytes < 1:
            raise DriftlineError(
                f"DRIFTLINE_BATCH_MAX_BYTES must be 1 or more, got {self.batch_max_bytes}")
        if self.stream_buffer_messages < 1:
            raise DriftlineError("DRIFTLINE_STREAM_BUFFER_MESSAGES must be 1 or more, got "
                                 f"{self.stream_buffer_messages}")
        if self.gc_gen0 < 0:
            raise DriftlineError(
                f"DRIFTLINE_GC_GEN0 must be 0 (Python's own) or more, got {self.gc_gen0}")
        if self.fetch not in FETCHERS:
            raise DriftlineError(f"DRIFTLINE_FETCH must be one of {', '.join(FETCHERS)}, "
                                 f"got {self.fetch!r}")
        if self.batch_max_wait_ms <= 0:
            raise DriftlineError(
                f"DRIFTLINE_BATCH_MAX_WAIT_MS must be above 0, got {self.batch_max_wait_ms}")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        base = cls(**{f.name: _env(f.name, f.default) for f in fields(cls)})
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def __repr__(self) -> str:  # never print the signing key or the token
        hidden = {"command_key", "controller_token"}
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown.append(f"{f.name}={'***' if f.name in hidden and value else repr(value)}")
        return f"Settings({', '.join(shown)})"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def max_request_bytes(self) -> int:
        """The largest record the worker's producer sends (agents.app): a batch of
        DRIFTLINE_MAX_MESSAGE_BYTES, or 1 MiB, plus framing."""
        return max(self.max_message_bytes, 1_048_576) + 65_536

    @property
    def bootstrap(self) -> str:
        """host:port list without a ``kafka://`` scheme, for confluent-kafka."""
        return ",".join(b.removeprefix("kafka://") for b in self.broker.split(","))

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{b}" for b in self.bootstrap.split(","))
