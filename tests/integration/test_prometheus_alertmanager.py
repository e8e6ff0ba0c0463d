"""Integration: a real Prometheus scrapes a real worker and alerts a real Alertmanager.

Prometheus (Debian's ``prometheus``) loads deploy/prometheus/alerts.yml, scrapes the
worker every second and sends to Alertmanager (``prometheus-alertmanager``; both
installed by scripts/integration-deps). The worker (drift, KPI, poisoning, policy and
controller agents) sees a drifting model, a bad canary that is rolled back and a
flood of training records that is quarantined: ``FeatureDrift`` and ``CanaryFailing``
must arrive at Alertmanager's API naming their model, and every panel expression of
the Grafana dashboard must return data from that Prometheus (Grafana itself is not
installed here: its expressions are evaluated as Grafana would send them).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import reference_build
from schemas.policy import parse_policy
from tests.agents.controller.cards import CARD
from tests.agents.poisoning.test_handler import records
from tests.conftest import ROOT
from tests.e2e.test_deployment_loop import T0, _deployments, _free_port
from tests.e2e.test_drift_pipeline import _window

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftline.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"

CANARY_MODEL = "fraud-detector"  # also the model of the poisoning scenario
DRIFT_MODEL = "fraud-drift"
POLICY = """
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 1000}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 5m, min_labeled: 100}
poisoning: {window: 60s, allowed_lateness: 0s}
decisions:
  rollback: {min_labeled: 100}
"""
# What Grafana puts for the dashboard's variables and its interval macros (a 1 s
# scrape interval here; 1m is what Grafana's $__rate_interval is for a 15 s one).
RATE_INTERVAL = "1m"


def _get(url: str, timeout_s: float = 5) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{url}: {e.code} {e.read().decode(errors='replace')}") from e


def _until(
    what: str,
    probe: Callable[[], Any],
    timeout_s: float,
    log: Callable[[], str],
    done: Callable[[Any], bool] = bool,
) -> Any:
    """Poll ``probe`` until ``done`` holds for what it returns; fail with ``what``, the
    last thing it returned and a log tail."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as e:
            last = e
        if not isinstance(last, OSError) and done(last):
            return last
        time.sleep(0.5)  # polling interval of the condition, not synchronisation
    raise AssertionError(f"{what} within {timeout_s:.0f} s (last: {last!r})\n{log()[-4000:]}")


class Daemon:
    """A child process with an HTTP /-/ready endpoint, logging to a file."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name, self.port, self.log_path = name, port, log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60) -> Daemon:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode})\n{self.log()}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200

        _until(f"{self.name} was not ready", ready, timeout_s, self.log)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Daemon]:
    assert ALERTMANAGER, "prometheus-alertmanager is not installed: run scripts/integration-deps"
    conf = tmp_path / "alertmanager.yml"
    conf.write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    port = _free_port()
    am = Daemon(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        port,
        tmp_path / "alertmanager.log",
    )
    try:
        yield am.wait_ready()
    finally:
        am.stop()


def _prometheus(tmp_path: Path, metrics_port: int, alertmanager: Daemon) -> Daemon:
    assert PROMETHEUS, "prometheus is not installed: run scripts/integration-deps"
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": "driftline",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    port = _free_port()
    return Daemon(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        tmp_path / "prometheus.log",
    )


def _panel_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel, nested ones included."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            out.extend(
                (panel["title"], t["expr"]) for t in panel.get("targets", ()) if t.get("expr")
            )
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def _substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"the dashboard uses variables the test does not know: {left} in {expr}"
    return expr


def _send_scenarios(worker: Any, tmp_path: Path) -> None:
    s = worker.settings
    producer = simulate.make_producer(s.bootstrap)

    # Drift: a warm-up window, a clean one, two shifted ones, one event to close them.
    traffic = simulate.FraudTraffic(seed=3, model=DRIFT_MODEL)
    messages = [m for i in range(4) for m in _window(traffic, i, shifted=i >= 2)]
    messages += list(simulate.batches(traffic.events(1, start_s=T0 + 241, span_s=1), 500))
    simulate.publish(producer, worker.topic("predictions"), DRIFT_MODEL, messages)

    # Poisoning: a reference with a trusted set, then honest records and a bot's flood.
    data = tmp_path / "train.jsonl"
    data.write_bytes(
        b"\n".join(
            orjson.dumps({**r["features"], "label": r["label"]})
            for r in records(1, 3000, T0 - 3600, "history")
        )
    )
    profile = reference_build.build(
        data,
        model=CANARY_MODEL,
        version="v1",
        policy=parse_policy(POLICY).drift_for(CANARY_MODEL),
        trusted_rows=2000,
    )
    reference_build.publish(profile, s)
    flood = [dict(records(5, 1, T0, "bot")[0], record_id=f"bot-{i}") for i in range(200)]
    for batch in (records(3, 800, T0, "crm") + flood, records(6, 10, T0 + 60, "crm")):
        simulate.publish(
            producer, worker.topic("training-data"), CANARY_MODEL, [orjson.dumps({"events": batch})]
        )

    # A bad canary (as tests/e2e/test_deployment_loop.py), after the drift windows.
    registry = open_registry(s.registry)
    for version in ("v1", "v2"):
        artifact = tmp_path / f"{version}.bin"
        artifact.write_bytes(f"model {version}".encode())
        registry.register(CANARY_MODEL, version, artifact, model_card=CARD)
    operator.send(s, operator.operator_command(s, "promote", CANARY_MODEL, to_version="v1"))
    operator.send(
        s, operator.operator_command(s, "canary", CANARY_MODEL, to_version="v2", weight=0.5)
    )
    _deployments(worker, lambda seen: sum(e["status"] == "applied" for e in seen) >= 2)
    champion = simulate.FraudTraffic(seed=11, model=CANARY_MODEL, version="v1")
    canary = simulate.FraudTraffic(
        seed=12, model=CANARY_MODEL, version="v2", variant="canary", bad=True
    )
    start = T0 + 600
    for w in range(4):
        for t in (champion, canary):
            preds, labels = t.events_with_labels(
                800, start_s=start + 60 * w, span_s=60, label_delay_s=0.0
            )
            simulate.publish(
                producer,
                worker.topic("predictions"),
                CANARY_MODEL,
                list(simulate.batches(preds, 400)),
            )
            simulate.publish(
                producer, worker.topic("labels"), CANARY_MODEL, list(simulate.batches(labels, 400))
            )


def test_alerts_reach_alertmanager_and_every_dashboard_panel_has_data(
    worker_factory: Any, alertmanager: Daemon, tmp_path: Path
) -> None:
    metrics_port = _free_port()
    worker = worker_factory(
        POLICY,
        agents="drift,kpi,poisoning,policy,controller",
        env={"DRIFTLINE_METRICS_PORT": str(metrics_port)},
    )
    prometheus = _prometheus(tmp_path, metrics_port, alertmanager)
    try:
        prometheus.wait_ready()
        started = time.time()
        _until(
            "Prometheus did not scrape the worker",
            lambda: [
                t
                for t in _get(f"{prometheus.url}/api/v1/targets")["data"]["activeTargets"]
                if t["health"] == "up"
            ],
            60,
            prometheus.log,
        )
        _send_scenarios(worker, tmp_path)

        def alerts() -> dict[str, set[str]]:
            """Alert name -> the models it names, of the alerts Alertmanager holds."""
            got: dict[str, set[str]] = {}
            for a in _get(f"{alertmanager.url}/api/v2/alerts"):
                got.setdefault(a["labels"]["alertname"], set()).add(a["labels"].get("model", ""))
            return got

        got = _until(
            "FeatureDrift and CanaryFailing did not reach Alertmanager",
            alerts,
            180,
            lambda: worker.log() + prometheus.log(),
            done=lambda got: {"FeatureDrift", "CanaryFailing"} <= got.keys(),
        )
        # (The noisy canary's own windows may drift as well: membership, not equality.)
        assert DRIFT_MODEL in got["FeatureDrift"], got
        assert got["CanaryFailing"] == {CANARY_MODEL}, got

        # The dashboard, with its variables at "All" (as Grafana expands them).
        models = _get(
            f"{prometheus.url}/api/v1/label/model/values?match[]=driftline_window_status"
        )["data"]
        assert {DRIFT_MODEL, CANARY_MODEL} <= set(models), models
        assert all(re.fullmatch(r"[\w-]+", m) for m in models), models
        dashboard = json.loads(DASHBOARD.read_text())
        kpi = next(v for v in dashboard["templating"]["list"] if v["name"] == "kpi")
        variables = {
            "model": "(" + "|".join(models) + ")",  # plain names: nothing to escape
            "kpi": "(" + "|".join(kpi["query"].split(",")) + ")",
            "__rate_interval": RATE_INTERVAL,
            "__interval": "2s",
            "__range": "5m",
        }
        panels = _panel_expressions()
        assert len(panels) >= 10, panels

        def data_of(expr: str) -> list[dict[str, Any]]:
            query = urllib.parse.urlencode(
                {"query": expr, "start": started, "end": time.time(), "step": "2"}
            )
            body = _get(f"{prometheus.url}/api/v1/query_range?{query}", timeout_s=30)
            assert body["status"] == "success", body
            return [
                s
                for s in body["data"]["result"]
                if any(math.isfinite(float(v)) for _, v in s["values"])
            ]

        # Some series come later than the alerts (the lag is sampled every 5 s, the
        # poisoning window closes on its own records): poll until every panel has data.
        empty = panels
        deadline = time.monotonic() + 90
        while empty and time.monotonic() < deadline:
            empty = [
                (title, expr) for title, expr in empty if not data_of(_substitute(expr, variables))
            ]
            if empty:
                time.sleep(1)  # polling interval of the condition, not synchronisation
        assert not empty, f"dashboard panels without data: {empty}\n{worker.log()[-3000:]}"
    finally:
        prometheus.stop()
