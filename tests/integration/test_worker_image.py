"""The worker image's steps without a Docker engine: the Dockerfile's install, replayed.

The Dockerfile's COPY lines are replayed into a fresh directory (the image's
/app), its `pip install` line runs there, non-editable, into a fresh venv with no
C compiler (python:3.11-slim has none). From that venv only:
- the entry point (`driftline`) runs;
- the retrain hook (scripts/retrain_example.py, which the README points at) trains
  on a real `training-data.clean` topic with scikit-learn, registers the new
  version and sends its signed canary command;
- the worker starts with the compose file's environment (rocksdb store, verdict
  token, metrics port) and the compose healthcheck's command fails before it serves
  and passes once it does; the verdict endpoint refuses a request without the token;
- the simulator's entrypoint, as compose runs it: its setup registers, profiles and
  promotes v1 (the worker applies the promote: the verdict turns "pass"), does nothing
  when run again, and its `driftline simulate` flags run.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.config import Settings
from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.dev.broker import EmbeddedBroker
from agents.operator import tail
from agents.topics import ensure_topics
from tests.conftest import ROOT

# The install (module fixture) counts towards the first test: 47-114 s here, more on a cold
# pip cache.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MODEL = "fraud-detector"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dockerfile() -> tuple[list[tuple[list[str], str]], list[str], dict[str, str]]:
    """The Dockerfile's COPY (sources, destination) pairs, the arguments of its
    `pip install` and its ENV settings."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    copies: list[tuple[list[str], str]] = []
    pip: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "COPY":
            *sources, dest = shlex.split(rest)
            copies.append((sources, dest))
        elif word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
        elif word == "RUN" and "pip install" in rest:
            command = shlex.split(rest.split("&&")[0])
            pip = [a for a in command[command.index("install") + 1 :] if a != "--no-cache-dir"]
    assert copies and pip, "the Dockerfile copies the project and pip-installs it"
    return copies, pip, env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """/app and the venv of the image, built as the Dockerfile says."""
    tmp = tmp_path_factory.mktemp("image")
    app, venv = tmp / "app", tmp / "venv"
    app.mkdir()
    copies, pip, env = _dockerfile()
    for sources, dest in copies:
        target = app / dest.removeprefix("/app/").removeprefix("./")
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target / src.name if dest.endswith("/") else target)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # No compiler, as in python:3.11-slim: a dependency without a wheel fails here.
    build_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "CC": "false",
        "CXX": "false",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    started = time.monotonic()
    out = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", *pip],
        cwd=app,
        env=build_env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"\nimage install ({' '.join(pip)}): {time.monotonic() - started:.0f} s")
    return {"app": app, "venv": venv, "env": env}


def _run(
    image: dict[str, Any], args: list[str], env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=image["app"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={"PATH": f"{image['venv'] / 'bin'}:/usr/bin:/bin", **image["env"], **env},
    )


def _verdict(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


def test_the_install_is_not_editable_and_the_entry_point_runs(image: dict[str, Any]) -> None:
    py = str(image["venv"] / "bin/python")
    out = _run(
        image, [py, "-P", "-c", "import agents, sklearn, rocksdict; print(agents.__file__)"], {}
    )
    assert out.returncode == 0, out.stderr
    # -P: not /app's sources (python -c in /app would import those), the installed copy.
    assert "site-packages" in out.stdout, out.stdout
    out = _run(image, [str(image["venv"] / "bin/driftline"), "--help"], {})
    assert out.returncode == 0 and "worker" in out.stdout, out.stderr


def test_the_retrain_hook_trains_registers_and_deploys_a_canary(
    image: dict[str, Any], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"img{uuid.uuid4().hex[:8]}."
    settings = Settings(broker=broker.bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    traffic = simulate.FraudTraffic(seed=5, model=MODEL)
    preds, labels = traffic.events_with_labels(600, start_s=0.0, span_s=600.0, label_delay_s=0.0)
    records = simulate.training_records(labels, preds)
    producer = simulate.make_producer(broker.bootstrap)
    simulate.publish(
        producer, settings.topic("training-data.clean"), MODEL, list(simulate.batches(records, 200))
    )
    key = tmp_path / "command.key"
    key.write_text(secrets.token_hex(32))
    registry = tmp_path / "registry"
    env = {
        "DRIFTLINE_BROKER": broker.bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": prefix,
        "DRIFTLINE_REGISTRY": str(registry),
        "DRIFTLINE_DATADIR": str(tmp_path / "data"),
        "DRIFTLINE_COMMAND_KEY_FILE": str(key),
        "DRIFTLINE_MODEL": MODEL,
    }
    out = _run(
        image,
        [
            str(image["venv"] / "bin/python"),
            "scripts/retrain_example.py",
            "--min-records",
            "300",
            "--owner",
            "risk-ml",
            "--risk-tier",
            "minimal",
        ],
        env,
        timeout_s=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (version,) = open_registry(str(registry)).versions(MODEL)
    assert version.metadata["records"] == len(records)
    commands = tail.collect(
        broker.bootstrap, settings.topic("commands"), lambda seen: len(seen) >= 1, timeout_s=30
    )
    assert [(c["type"], c["to_version"], c["issued_by"]) for c in commands] == [
        ("canary", version.version, "retrain-hook")
    ]


def test_worker_with_the_compose_environment_and_its_healthcheck(
    image: dict[str, Any], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["worker"]
    metrics_port, verdict_port = _free_port(), _free_port()
    key = tmp_path / "command.key"
    key.write_text(secrets.token_hex(32))
    token = secrets.token_hex(16)
    prefix = f"img{uuid.uuid4().hex[:8]}."
    env = {
        **{k: str(v) for k, v in service["environment"].items()},
        # What differs on this machine: the broker, paths, free ports, the secret.
        "DRIFTLINE_BROKER": broker.bootstrap,
        "DRIFTLINE_PARTITIONS": "1",
        "DRIFTLINE_TOPIC_PREFIX": prefix,
        "DRIFTLINE_APP_ID": f"driftline-{prefix[:-1]}",
        "DRIFTLINE_DATADIR": str(tmp_path / "data"),
        "DRIFTLINE_REGISTRY": str(tmp_path / "data/registry"),
        "DRIFTLINE_COMMAND_KEY_FILE": str(key),
        "DRIFTLINE_CONTROLLER_TOKEN": token,
        "DRIFTLINE_METRICS_PORT": str(metrics_port),
        "DRIFTLINE_CONTROLLER_PORT": str(verdict_port),
    }
    assert env["DRIFTLINE_STORE"] == "rocksdb://"
    command = [
        str(image["venv"] / "bin/python") if a == "python" else a
        for a in service["healthcheck"]["test"][1:]
    ]
    args = [
        str(ROOT / "deploy/policy.yaml") if a == "/etc/driftline/policy.yaml" else a
        for a in service["command"]
    ]

    assert _run(image, command, env).returncode != 0, "no worker yet: unhealthy"
    log = tmp_path / "worker.log"
    with open(log, "wb") as sink:
        worker = subprocess.Popen(
            [str(image["venv"] / "bin/driftline"), *args],
            cwd=image["app"],
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env={"PATH": f"{image['venv'] / 'bin'}:/usr/bin:/bin", **image["env"], **env},
        )
    try:
        deadline = time.monotonic() + 120
        while (check := _run(image, command, env, timeout_s=30)).returncode != 0:
            assert worker.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, check.stderr + log.read_text()[-4000:]
            time.sleep(1)  # the healthcheck's polling interval, not synchronisation
        url = f"http://127.0.0.1:{verdict_port}/verdict/{MODEL}/v1"
        assert _verdict(url, None)[0] == 401, "the token is required"
        assert _verdict(url, token)[0] == 404, "nothing registered yet"

        # The simulator's entrypoint: its setup registers, profiles and promotes v1 ...
        sim = compose["services"]["simulator"]
        setup, simulate_cmd = (shlex.split(part) for part in sim["entrypoint"][2].split("&&"))
        sim_env = {
            **{k: str(v) for k, v in sim["environment"].items()},
            **{
                k: env[k]
                for k in (
                    "DRIFTLINE_BROKER",
                    "DRIFTLINE_TOPIC_PREFIX",
                    "DRIFTLINE_REGISTRY",
                    "DRIFTLINE_COMMAND_KEY_FILE",
                )
            },
            "DRIFTLINE_POLICY": str(ROOT / "deploy/policy.yaml"),
        }
        setup[0] = str(image["venv"] / "bin/python")
        out = _run(image, setup, sim_env, timeout_s=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.count("\n") == 3, out.stdout  # registered, published, promoted
        deadline = time.monotonic() + 60
        while (answer := _verdict(url, token))[0] != 200 or answer[1]["verdict"] != "pass":
            assert time.monotonic() < deadline, (answer, log.read_text()[-4000:])
            time.sleep(0.5)  # polling interval of the condition
        # ... once: run again (a restarted container), it does nothing.
        again = _run(image, setup, sim_env, timeout_s=180)
        assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
        # Then the traffic, for 3 s instead of an hour: the flags are the simulator's.
        assert simulate_cmd[:2] == ["exec", "driftline"]
        duration = simulate_cmd.index("--duration") + 1
        simulate_cmd[duration] = "3"
        out = _run(image, simulate_cmd[1:], sim_env, timeout_s=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (tmp_path / "data").is_dir() and any((tmp_path / "data").iterdir())
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
