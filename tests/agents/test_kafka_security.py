"""SASL/SSL settings reach every Kafka client; secrets stay out of logs and reprs."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from agents.config import Settings
from agents.kafka import KafkaSecurityError, Security, client_config, faust_credentials, quiet


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    sec = Security.from_env({})
    assert client_config("k:9092", sec) == {"bootstrap.servers": "k:9092", **quiet()}
    assert faust_credentials(sec) is None


def test_sasl_ssl_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-value\n")
    sec = Security.from_env({
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
        "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(secret),
    })
    config = client_config("k:9093", sec)
    assert config == {"bootstrap.servers": "k:9093", **quiet(), "security.protocol": "SASL_SSL",
                      "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "driftline",
                      "sasl.password": "s3cr3t-value"}
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "driftline" and creds.ssl_context is not None
    assert "s3cr3t" not in repr(sec) and "s3cr3t" not in sec.describe()
    assert sec.describe() == "SASL_SSL, SCRAM-SHA-512 as driftline, CA system"


def test_mutual_tls_without_sasl() -> None:
    sec = Security.from_env({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                             "DRIFTLINE_KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"})
    assert client_config("k:9093", sec) == {"bootstrap.servers": "k:9093", **quiet(),
                                            "security.protocol": "SSL",
                                            "ssl.ca.location": "/etc/kafka/ca.pem"}


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "not one of PLAINTEXT"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs DRIFTLINE_KAFKA_SASL_USERNAME"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
          "DRIFTLINE_KAFKA_SASL_USERNAME": "u"}, "SASL_PASSWORD_FILE"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DRIFTLINE_KAFKA_SASL_USERNAME": "u",
          "DRIFTLINE_KAFKA_SASL_PASSWORD": "p", "DRIFTLINE_KAFKA_SASL_MECHANISM": "GSSAPI"},
         "not one of PLAIN"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL", "DRIFTLINE_KAFKA_SSL_CERTFILE": "c.pem"},
         "SSL_KEYFILE"),
    ],
)
def test_incomplete_settings_are_refused_naming_the_variable(env: dict[str, str],
                                                             words: str) -> None:
    with pytest.raises(KafkaSecurityError, match=words):
        Security.from_env(env)


def test_an_unreadable_password_file_says_which(tmp_path: Path) -> None:
    sec = Security.from_env({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                             "DRIFTLINE_KAFKA_SASL_USERNAME": "u",
                             "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})
    with pytest.raises(KafkaSecurityError, match="cannot read DRIFTLINE_KAFKA_SASL_PASSWORD_FILE"):
        client_config("k:9092", sec)


def test_settings_never_show_the_signing_key_or_the_token() -> None:
    settings = Settings(command_key="k" * 40, controller_token="t0ken-value")
    assert "kkkk" not in repr(settings) and "t0ken" not in repr(settings)
    assert "command_key=***" in repr(settings)
