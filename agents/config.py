"""Worker settings from flags and the environment.

Every setting has an environment variable (``DRIFTLINE_<NAME>``) and most a
CLI flag; flags win. Thresholds and windows live in the policy file instead
(``--policy`` / ``DRIFTLINE_POLICY``), see ``schemas.policy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

EMBEDDED_BROKER = "127.0.0.1:9092"


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
    # rocksdb:// persists them locally (see README, production).
    store: str = "memory://"
    partitions: int = 1
    # Where table stores (rocksdb://) and Faust keep their files.
    datadir: str = "~/.driftline"
    policy: str = ""
    # Kafka group session timeout. Kafka's default (45 s) makes a restarted
    # worker wait that long to rejoin; 10 s is a sane default for a monitor.
    session_timeout_s: float = 10.0
    # Larger messages are dead-lettered instead of decoded.
    max_message_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"
    # The deployment controller's model registry: a directory (the file
    # registry) or mlflow+<tracking URI>, see agents.registry.
    registry: str = "~/.driftline/registry"
    # The command signing key (HMAC-SHA256): DRIFTLINE_COMMAND_KEY holds it, or
    # DRIFTLINE_COMMAND_KEY_FILE names a file holding it. With neither, a random
    # key is created once in <datadir>/command.key (mode 0600), see agents.keys.
    command_key: str = ""
    command_key_file: str = ""
    # The issuers file (YAML): each issuer's own key and the models and command
    # types it may touch (agents.issuers). Empty: off, one command key for all.
    issuers: str = ""
    # The controller's verdict endpoint for Argo Rollouts / Flagger (0: off).
    controller_port: int = 0
    controller_token: str = ""
    # Prometheus metrics of the worker on this port's /metrics (0: off).
    metrics_port: int = 0

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
    def bootstrap(self) -> str:
        """host:port list without a ``kafka://`` scheme, for confluent-kafka."""
        return ",".join(b.removeprefix("kafka://") for b in self.broker.split(","))

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{b}" for b in self.bootstrap.split(","))
