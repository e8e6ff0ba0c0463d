"""End to end: a bad canary is rolled back by the policy agent and the controller.

The real worker (KPI, policy and controller agents) on the embedded broker and
a real file registry: an operator deploys v1 as champion and v2 as a canary;
the canary's predictions are noisy (accuracy ~0.74 vs ~0.94); its KPI windows
are compared with the champion's, the policy agent issues a signed rollback and
the controller applies it. Then a forged command is refused and a redelivered
one is applied once. From the command line, v2 shadows v1 and stops, v3 is
refused a switch by its gate, and v2 gets all traffic at once (v1 on standby);
serving worse than v1 did, it is switched straight back by the policy agent.
The audit chain verifies.

The policy gates the card's tier (minimal) on the held-out evaluation: v3
(roc_auc 0.81 < 0.85) is refused a canary with the gate and the numbers in its
DeploymentEvent, before v2 (0.90) gets its canary.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import tail
from streams.policy.commands import sign
from tests.agents.controller.cards import CARD

pytestmark = pytest.mark.e2e

POLICY = """
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 5m
  min_labeled: 100
decisions:
  rollback: {min_labeled: 100}
gates:
  minimal:
    min_metrics: {roc_auc: 0.85}
    max_loss: {roc_auc: 0.05}
    min_held_out_size: 1000
"""
ROC_AUC = {"v1": 0.88, "v2": 0.90, "v3": 0.81}
MODEL = "fraud-detector"
T0 = 1_800_000_000 - 1_800_000_000 % 60


def _deployments(worker: Any, done: Any, timeout_s: float = 90) -> list[dict[str, Any]]:
    seen = tail.collect(worker.settings.bootstrap, worker.topic("deployments"), done,
                        timeout_s=timeout_s)
    assert done(seen), f"{[(e['action'], e['status'], e['reason']) for e in seen]}\n" \
                       f"{worker.log()[-4000:]}"
    return seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrics(port: int, ready: Any, timeout_s: float = 30) -> str:
    """The worker's /metrics once ``ready(text)`` holds (the lag is sampled every 5 s)."""
    deadline, text = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            text = ""
        if ready(text):
            return text
        time.sleep(0.5)  # polling interval of the condition
    raise AssertionError(f"metrics not ready within {timeout_s} s:\n{text[-3000:]}")


def test_bad_canary_rolled_back_forged_refused_redelivered_once(
        worker_factory: Any, tmp_path: Path) -> None:
    port = _free_port()
    worker = worker_factory(POLICY, agents="kpi,policy,controller",
                            env={"DRIFTLINE_METRICS_PORT": str(port)})
    registry = open_registry(worker.settings.registry)
    for version, roc_auc in ROC_AUC.items():
        artifact = tmp_path / f"{version}.bin"
        artifact.write_bytes(f"model {version}".encode())
        evaluation = {"metrics": {"roc_auc": roc_auc},
                      "held_out": {"sha256": "3f" * 32, "size": 4000}}
        registry.register(MODEL, version, artifact,
                          model_card={**CARD, "evaluation": evaluation})
    s = worker.settings
    operator.send(s, operator.operator_command(s, "promote", MODEL, to_version="v1"))
    gated = operator.operator_command(s, "canary", MODEL, to_version="v3", weight=0.5)
    operator.send(s, gated)
    operator.send(s, operator.operator_command(s, "canary", MODEL, to_version="v2",
                                               weight=0.5))
    seen = _deployments(worker, lambda seen: sum(e["status"] == "applied" for e in seen) >= 2)
    refused = next(e for e in seen if e["command_id"] == gated.command_id)
    assert refused["status"] == "rejected" and refused["state"]["canary"] is None
    assert refused["reason"] == ("refused: gate minimal.min_metrics roc_auc 0.81 < 0.85; gate "
                                 "minimal.max_loss roc_auc 0.81 is 0.07 below the champion v1's "
                                 "0.88 (> 0.05 allowed)")
    accepted = next(e for e in seen if e["action"] == "canary" and e["status"] == "applied")
    assert accepted["state"]["canary"] == "v2" and "gate minimal passed: " in accepted["reason"]
    assert "min_metrics roc_auc 0.9 >= 0.85" in accepted["reason"]

    champion = simulate.FraudTraffic(seed=11, model=MODEL, version="v1")
    canary = simulate.FraudTraffic(seed=12, model=MODEL, version="v2", variant="canary",
                                   bad=True)
    producer = simulate.make_producer(s.bootstrap)
    for w in range(4):
        for traffic in (champion, canary):
            preds, labels = traffic.events_with_labels(
                800, start_s=T0 + 60 * w, span_s=60, label_delay_s=0.0)
            simulate.publish(producer, worker.topic("predictions"), MODEL,
                             list(simulate.batches(preds, 400)))
            simulate.publish(producer, worker.topic("labels"), MODEL,
                             list(simulate.batches(labels, 400)))

    def rolled_back(seen: list[dict[str, Any]]) -> bool:
        return any(e["action"] == "rollback" and e["status"] == "applied" for e in seen)

    seen = _deployments(worker, rolled_back)
    rollback = next(e for e in seen if e["action"] == "rollback")
    assert rollback["state"]["canary"] is None and rollback["state"]["champion"] == "v1"
    assert "canary worse than the champion" in rollback["reason"]
    commands = tail.collect(s.bootstrap, worker.topic("commands"),
                            lambda seen: any(c["type"] == "rollback" for c in seen),
                            timeout_s=10)
    issued = next(c for c in commands if c["type"] == "rollback")
    assert issued["issued_by"] == "policy" and issued["command_id"] == rollback["command_id"]
    # decided under the worker's policy file: its hash signed into the command, carried on
    policy_hash = hashlib.sha256(worker.policy_path.read_bytes()).hexdigest()
    assert issued["policy_sha256"] == rollback["policy_sha256"] == policy_hash
    assert {e["variant"] for e in issued["evidence"]} == {"canary", "champion"}
    state, _ = registry.load(MODEL)
    assert (state.champion, state.canary) == ("v1", None)
    scraped = _metrics(port, lambda text: 'status="applied",type="rollback"' in text
                       and "driftline_consumer_lag{" in text)
    assert f'driftline_events_total{{agent="kpi",topic="{worker.topic("predictions")}"}} 6400.0' \
        in scraped
    assert 'driftline_kpi{metric="accuracy",model="fraud-detector",variant="canary"' in scraped

    # A forged command: signed with another key. Then one command delivered twice.
    forged = sign(operator.operator_command(s, "promote", MODEL, to_version="v2"),
                  b"an-attackers-key-0123456789abcdef")
    again = operator.operator_command(s, "canary", MODEL, to_version="v2", weight=0.1)
    operator.publish(s, "commands", MODEL, [forged.model_dump_json().encode()] +
                     [again.model_dump_json().encode()] * 2)
    seen = _deployments(worker, lambda seen: sum(e["command_id"] == again.command_id
                                                 for e in seen) >= 2)
    refused = next(e for e in seen if e["command_id"] == forged.command_id)
    assert refused["status"] == "rejected" and "does not verify" in refused["reason"]
    twice = [e for e in seen if e["command_id"] == again.command_id]
    assert twice[0] == twice[1] and twice[0]["status"] == "applied"
    assert registry.load(MODEL)[0].canary == "v2"

    check, events = operator.audit(s)
    assert check.intact, check.reason
    assert check.duplicates == 1 and check.events == len(events) >= 6
    assert orjson.loads(orjson.dumps(events[-1]))["state"]["canary_weight"] == 0.1

    # An operator at the command line: roll the canary back, then verify the chain.
    env = {**os.environ, "DRIFTLINE_DATADIR": s.datadir, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
           "DRIFTLINE_BROKER": s.bootstrap}
    cli = [sys.executable, "-m", "agents"]
    out = subprocess.run([*cli, "command", "rollback", "--model", MODEL, "--reason",
                          "paged by payments"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "sent rollback" in out.stdout, out.stderr
    seen = _deployments(worker, lambda seen: any("paged by payments" in e["reason"]
                                                 for e in seen))
    manual = next(e for e in seen if "paged by payments" in e["reason"])
    assert manual["status"] == "applied" and manual["state"]["canary"] is None
    assert "policy_sha256" not in manual  # an operator's command: no policy decided it

    # Shadow and blue-green from the command line: v2 shadows v1 and stops; v3, failing
    # its gate, gets no switch; v2 gets all traffic at once with v1 on standby.
    def command(*args: str) -> None:
        done = subprocess.run([*cli, "command", *args, "--model", MODEL], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and f"sent {args[0]}" in done.stdout, done.stderr

    command("shadow", "--version", "v2")
    command("shadow", "--off")
    gated = operator.operator_command(s, "switch", MODEL, to_version="v3")
    operator.send(s, gated)
    command("switch", "--version", "v2")
    seen = _deployments(worker, lambda seen: any(e["action"] == "switch" and e["status"] ==
                                                 "applied" for e in seen))
    on, off = (e for e in seen if e["action"] == "shadow")
    assert on["status"] == off["status"] == "applied"
    assert (on["state"]["champion"], on["state"]["shadow"]) == ("v1", "v2")
    assert "shadow" not in off["state"]
    refused = next(e for e in seen if e["command_id"] == gated.command_id)
    assert refused["status"] == "rejected" and refused["reason"].startswith(
        "refused: gate minimal.min_metrics roc_auc 0.81 < 0.85")
    switch = next(e for e in seen if e["action"] == "switch" and e["status"] == "applied")
    assert "gate minimal passed: " in switch["reason"]
    assert {k: switch["state"][k] for k in ("champion", "canary", "standby")} == {
        "champion": "v2", "canary": None, "standby": "v1"}
    # v2 serves every request now, and worse than v1 did: the policy switches straight back
    blue = simulate.FraudTraffic(seed=13, model=MODEL, version="v2", bad=True)
    for w in range(5, 9):
        preds, labels = blue.events_with_labels(800, start_s=T0 + 60 * w, span_s=60,
                                                label_delay_s=0.0)
        simulate.publish(producer, worker.topic("predictions"), MODEL,
                         list(simulate.batches(preds, 400)))
        simulate.publish(producer, worker.topic("labels"), MODEL,
                         list(simulate.batches(labels, 400)))
    seen = _deployments(worker, lambda seen: any(
        e["action"] == "rollback" and e["status"] == "applied" and e["state"]["champion"] ==
        "v1" and e["at"] > switch["at"] for e in seen))
    back = next(e for e in seen if e["action"] == "rollback" and e["at"] > switch["at"])
    assert back["reason"].startswith("switched champion v2 worse than the standby v1 before "
                                     "the switch: "), back["reason"]
    assert "standby" not in back["state"] and registry.load(MODEL)[0].champion == "v1"
    out = subprocess.run([*cli, "audit", "verify"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "audit chain intact" in out.stdout, out.stdout + out.stderr

    page = tmp_path / "audit.html"
    out = subprocess.run([*cli, "audit", "report", "--model", MODEL, "--out", str(page),
                          "--registry", s.registry, "--policy", str(worker.policy_path)],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    text = page.read_text()
    assert "Audit chain intact" in text and text.count("<svg") >= 2
    assert rollback["command_id"] in text and "canary worse than the champion" in text
    assert "paged by payments" in text and "src=" not in text and "<script" not in text
    assert back["command_id"] in text and "switch back from a switched champion" in text
    # What a reviewer signs: the policy's hash, each version's checksum, each event's hash,
    # the rule the rollback applied, and no epoch milliseconds anywhere.
    assert policy_hash in text
    assert f"{policy_hash}, the policy given" in text and "decided under another policy" not in text
    assert all(v.sha256 in text for v in registry.versions(MODEL))
    assert rollback["hash"] in text and rollback["prev_hash"] in text
    assert "decisions.rollback.margin = 0.02" in text
    assert re.findall(r"\b\d{13}\b", text) == []
