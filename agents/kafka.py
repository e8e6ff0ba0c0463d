"""Connecting to a secured Kafka: SASL and SSL settings for every client driftline opens.

From the environment only (secrets never go on a command line, where ``ps``
shows them):

| variable | meaning |
|---|---|
| ``DRIFTLINE_KAFKA_SECURITY_PROTOCOL`` | PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL |
| ``DRIFTLINE_KAFKA_SASL_MECHANISM`` | PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512 |
| ``DRIFTLINE_KAFKA_SASL_USERNAME`` | the SASL user |
| ``DRIFTLINE_KAFKA_SASL_PASSWORD`` | its password, or: |
| ``DRIFTLINE_KAFKA_SASL_PASSWORD_FILE`` | a file holding it (e.g. a mounted secret) |
| ``DRIFTLINE_KAFKA_SSL_CAFILE`` | CA bundle that signed the brokers' certificates |
| ``DRIFTLINE_KAFKA_SSL_CERTFILE`` / ``_KEYFILE`` | client certificate and key (mutual TLS) |

``client_config`` gives them to confluent-kafka (CLI, simulator, tail, the
retrain hook), ``faust_credentials`` to the worker's Faust app (aiokafka).
``read_range`` reads a range of one partition (the runner's backfill, ``driftline
deadletter fetch``).
Passwords are read when a client is made and never logged: ``describe`` and
the errors name the settings, not their values.

Every client is made quiet (``quiet``): librdkafka's own log, hundreds of
"Connection refused" lines a minute while a broker is away, is off unless
``DRIFTLINE_LOG_LEVEL=debug``. ``probe`` is the one place that says whether the
broker can be reached; every command that talks to Kafka calls it first and
fails with ``BrokerUnreachable``, one line naming the address, instead of
retrying for ever.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import DriftlineError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


logger = logging.getLogger(__name__)
#: librdkafka's own log when DRIFTLINE_LOG_LEVEL=debug
librdkafka_logger = logging.getLogger("driftline.librdkafka")
#: seconds ``probe`` waits for the broker by default (DRIFTLINE_CONNECT_TIMEOUT_S)
DEFAULT_CONNECT_TIMEOUT_S = 15.0


class KafkaSecurityError(DriftlineError):
    """The Kafka security settings are incomplete or unreadable."""


class BrokerUnreachable(DriftlineError):
    """No Kafka broker answered at the bootstrap address in time."""


def quiet() -> dict[str, Any]:
    """librdkafka settings that keep its log off the terminal (on with DRIFTLINE_LOG_LEVEL=debug).

    Its log repeats every refused connection; what matters reaches the caller as an
    error (``probe``, a failed delivery) instead.
    """
    if os.environ.get("DRIFTLINE_LOG_LEVEL", "").strip().lower() == "debug":
        return {"logger": librdkafka_logger}
    return {"log_level": 0}


def probe(bootstrap: str, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
          security: Security | None = None) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request; raise
    ``BrokerUnreachable`` after ``timeout_s`` seconds."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    sec = security or Security.from_env()
    admin = AdminClient({**client_config(bootstrap, sec),
                         "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000))})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        logger.debug("probe of %s failed: %s", bootstrap, exc)
        settings = "" if sec.protocol == "PLAINTEXT" else \
            f", and the DRIFTLINE_KAFKA_* settings ({sec.describe()})"
        raise BrokerUnreachable(
            f"cannot reach the Kafka broker at {bootstrap} within {timeout_s:g} s: check "
            f"--broker / DRIFTLINE_BROKER and that the broker is running{settings}") from None


@dataclass(frozen=True)
class Security:
    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str = ""
    password_file: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    _password: str = ""

    def __repr__(self) -> str:
        return f"Security({self.describe()})"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Security:
        env = dict(os.environ if env is None else env)

        def get(name: str, default: str = "") -> str:
            return env.get(f"DRIFTLINE_KAFKA_{name}", default).strip()

        found = cls(
            protocol=get("SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            mechanism=get("SASL_MECHANISM", "PLAIN").upper(),
            username=get("SASL_USERNAME"), password_file=get("SASL_PASSWORD_FILE"),
            cafile=get("SSL_CAFILE"), certfile=get("SSL_CERTFILE"), keyfile=get("SSL_KEYFILE"),
            _password=env.get("DRIFTLINE_KAFKA_SASL_PASSWORD", ""),
        )
        found.check()
        return found

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(f"DRIFTLINE_KAFKA_SECURITY_PROTOCOL={self.protocol!r} is "
                                     f"not one of {', '.join(PROTOCOLS)}")
        if self.sasl and self.mechanism not in MECHANISMS:
            raise KafkaSecurityError(f"DRIFTLINE_KAFKA_SASL_MECHANISM={self.mechanism!r} is not "
                                     f"one of {', '.join(MECHANISMS)}")
        if self.sasl and not self.username:
            raise KafkaSecurityError(f"{self.protocol} needs DRIFTLINE_KAFKA_SASL_USERNAME")
        if self.sasl and not (self._password or self.password_file):
            raise KafkaSecurityError(f"{self.protocol} needs DRIFTLINE_KAFKA_SASL_PASSWORD or "
                                     "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE")
        if bool(self.certfile) != bool(self.keyfile):
            raise KafkaSecurityError("set both DRIFTLINE_KAFKA_SSL_CERTFILE and "
                                     "DRIFTLINE_KAFKA_SSL_KEYFILE, or neither")

    def password(self) -> str:
        if self._password:
            return self._password
        try:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KafkaSecurityError(f"cannot read DRIFTLINE_KAFKA_SASL_PASSWORD_FILE "
                                     f"{self.password_file}: {exc.strerror}") from exc

    def describe(self) -> str:
        """The settings without any secret, for logs."""
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.mechanism} as {self.username}")
        if self.tls:
            parts.append(f"CA {self.cafile or 'system'}" + (", client certificate"
                                                             if self.certfile else ""))
        return ", ".join(parts)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile or None)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


def client_config(bootstrap: str, security: Security | None = None) -> dict[str, Any]:
    """confluent-kafka settings: the bootstrap servers plus SASL/SSL from the environment."""
    sec = security or Security.from_env()
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, **quiet()}
    if sec.protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = sec.protocol
    if sec.sasl:
        config.update({"sasl.mechanisms": sec.mechanism, "sasl.username": sec.username,
                       "sasl.password": sec.password()})
    if sec.tls:
        if sec.cafile:
            config["ssl.ca.location"] = sec.cafile
        if sec.certfile:
            config.update({"ssl.certificate.location": sec.certfile,
                           "ssl.key.location": sec.keyfile})
    return config


def faust_credentials(security: Security | None = None) -> Any:
    """``broker_credentials`` for the Faust app, or None for PLAINTEXT."""
    import faust

    sec = security or Security.from_env()
    if sec.protocol == "PLAINTEXT":
        return None
    if sec.sasl:
        return faust.SASLCredentials(
            username=sec.username, password=sec.password(), mechanism=sec.mechanism,
            ssl_context=sec.ssl_context() if sec.tls else None)
    return faust.SSLCredentials(context=sec.ssl_context())


def read_range(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    end: int,
    *,
    group: str,
    timeout_s: float,
    config: dict[str, Any] | None = None,
) -> tuple[list[Any], bool]:
    """The messages of ``topic[partition]`` at offsets ``start <= offset < end``, in
    order (confluent-kafka Message objects), read by a consumer assigned to that one
    partition: ``group`` is never joined and nothing is committed. ``config``: more
    consumer settings.

    Returns them and whether the read is complete: it reached ``end - 1``, an offset
    beyond, or the partition's end (offsets that do not exist, compacted away or
    transaction markers, are simply not there); False when ``timeout_s`` passed first.
    An error of the partition (not its end) raises KafkaException."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    if end <= start:
        return [], True
    consumer = Consumer(
        {
            **client_config(bootstrap),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **(config or {}),
        }
    )
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return out, True
                raise KafkaException(error)
            if msg.offset() >= end:
                return out, True
            out.append(msg)
            if msg.offset() == end - 1:
                return out, True
        return out, False
    finally:
        consumer.close()


def poll_to_ends(
    consumer: Any, ends: dict[tuple[str, int], int], *, quiet_s: float, timeout_s: float
) -> Iterator[Any]:
    """The assigned ``consumer``'s messages until each partition reached its end offset
    in ``ends`` (as read at the start), and then ``quiet_s`` more (the embedded broker
    can report a watermark short of the last records of a multi-record batch), or
    until ``quiet_s`` passed without a message once every end is reached; at most
    ``timeout_s`` in all. A partition that keeps receiving does not keep it reading.
    A broker error is raised as ``KafkaException``."""
    from confluent_kafka import KafkaException  # as read_range: the library loads late

    pending = {where for where, end in ends.items() if end > 0}
    deadline = time.monotonic() + timeout_s
    reached = time.monotonic() if not pending else None
    last = time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if reached is not None and (now - reached > quiet_s or now - last > quiet_s):
            break
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        last = time.monotonic()
        where = (msg.topic(), msg.partition())
        if msg.offset() + 1 >= ends.get(where, 0):
            pending.discard(where)
            if not pending and reached is None:
                reached = time.monotonic()
        yield msg
