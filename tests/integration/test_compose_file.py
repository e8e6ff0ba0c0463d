"""docker-compose.yml as an operator would run it, checked without a Docker engine.

A compose implementation (docker-compose, installed by scripts/integration-deps)
parses and validates the file with its `config` command and refuses broken
copies; then what its resolved form says is checked against what the stack needs:
Kafka 4 keeping its log on its volume, the worker's state volume writable by the
image's user, a worker healthcheck, no unauthenticated port open to other hosts.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
TOKEN = "integration-test-token"


def _config(
    compose: Path, tmp_path: Path, *, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` on ``compose`` with the repository as project directory,
    an empty env file (no .env of the checkout leaks in) and ``token`` set or not."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: run scripts/integration-deps"
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    if token is not None:
        env["DRIFTLINE_CONTROLLER_TOKEN"] = token
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(compose),
            "config",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _named_volumes(resolved: dict[str, Any], service: str) -> dict[str, str]:
    """The service's mounts of the file's named volumes: target -> volume."""
    mounts = {}
    for volume in resolved["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]  # docker-compose 1.x prints the short form
        if source in resolved.get("volumes", {}):
            mounts[target] = source
    return mounts


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = _config(COMPOSE, tmp_path_factory.mktemp("compose"))
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = yaml.safe_load(out.stdout)
    return doc


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("    healthcheck:\n", "    helthcheck:\n", "Unsupported config option"),
        (
            "      kafka:\n        condition: service_healthy\n",
            "      kafka:\n        condition: when_ready\n",
            "condition",
        ),
        ("    restart: unless-stopped\n", "    restart: [unless-stopped]\n", "restart"),
    ],
    ids=["misspelled-key", "bad-depends-on-condition", "wrong-type"],
)
def test_a_broken_copy_is_refused(tmp_path: Path, old: str, new: str, why: str) -> None:
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    out = _config(broken, tmp_path)
    assert out.returncode != 0 and why in out.stderr, out.stdout + out.stderr


def test_the_verdict_token_is_required(tmp_path: Path) -> None:
    out = _config(COMPOSE, tmp_path, token=None)
    assert out.returncode != 0 and "DRIFTLINE_CONTROLLER_TOKEN" in out.stderr, out.stderr
    assert "put DRIFTLINE_CONTROLLER_TOKEN=" in out.stderr


def test_kafka_4_keeps_its_log_on_the_volume(resolved: dict[str, Any]) -> None:
    kafka = resolved["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = kafka["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    mounts = _named_volumes(resolved, "kafka")
    for log_dir in env["KAFKA_LOG_DIRS"].split(","):
        assert log_dir in mounts, (log_dir, mounts)
    # kafka-storage format takes a cluster id of 16 bytes in base64url.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16


def test_worker_state_volume_healthcheck_and_token(resolved: dict[str, Any]) -> None:
    worker = resolved["services"]["worker"]
    env = worker["environment"]
    datadir = env["DRIFTLINE_DATADIR"]
    assert datadir in _named_volumes(resolved, "worker")
    assert env["DRIFTLINE_REGISTRY"].startswith(datadir + "/")
    assert env["DRIFTLINE_CONTROLLER_TOKEN"] == TOKEN
    check = worker["healthcheck"]
    assert check["test"][0] == "CMD" and "DRIFTLINE_METRICS_PORT" in " ".join(check["test"])
    assert env["DRIFTLINE_METRICS_PORT"]
    # A named volume starts as a copy of the image's directory, owner included: the
    # Dockerfile must create it owned by the user the worker runs as.
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", dockerfile, re.M)
    assert user, "the image runs as a non-root user"
    before_user = dockerfile[: user.start()]
    assert re.search(rf"mkdir -p {re.escape(datadir)}\b", before_user)
    assert re.search(rf"chown {user.group(1)}:{user.group(1)} {re.escape(datadir)}\b", before_user)


def test_simulator_prepares_the_model_it_simulates(resolved: dict[str, Any]) -> None:
    sim = resolved["services"]["simulator"]
    worker = resolved["services"]["worker"]
    command = " ".join(sim["entrypoint"])
    script = re.search(r"python (scripts/\S+\.py)", command)
    assert script and (ROOT / script.group(1)).exists(), command
    assert script.group(1) in (ROOT / "Dockerfile").read_text(), "the image has the script"
    # The registry it registers in is the worker's: same path, same volume.
    assert sim["environment"]["DRIFTLINE_REGISTRY"] == worker["environment"]["DRIFTLINE_REGISTRY"]
    datadir = worker["environment"]["DRIFTLINE_DATADIR"]
    assert (
        _named_volumes(resolved, "simulator")[datadir]
        == _named_volumes(resolved, "worker")[datadir]
    )
    assert (
        sim["environment"]["DRIFTLINE_COMMAND_KEY_FILE"]
        == worker["environment"]["DRIFTLINE_COMMAND_KEY_FILE"]
    )
    assert sim["depends_on"]["worker"]["condition"] == "service_healthy"


def test_no_port_is_published_beyond_this_host(resolved: dict[str, Any]) -> None:
    published = [(name, p) for name, s in resolved["services"].items() for p in s.get("ports", [])]
    assert published
    for name, port in published:
        host = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host == "127.0.0.1", (name, port)
