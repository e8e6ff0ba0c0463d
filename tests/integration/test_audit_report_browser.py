"""The audit report in a real browser: headless Chromium opens what the CLI wrote.

A real worker (drift, KPI, policy, controller) on the broker sees a champion whose
features shift and a bad canary that the policy rolls back; `driftline audit
report` renders the topics it wrote. Chromium (Debian's, driven by Playwright)
must show it with no console error, fetch nothing but the file itself, and lay
out every chart with a non-zero size. The screenshot is kept under pytest's
tmp path and copied to build/integration/ (ignored by git).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.controller.registry import open_registry
from agents.dev import simulate
from agents.operator import commands as operator
from agents.operator import tail
from agents.operator.audit_report import render
from streams.policy.chain import verify_chain
from tests.agents.controller.cards import CARD
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Root needs --no-sandbox; the rest keeps a closed machine's Chromium from calling out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "build" / "integration"
#: The width A4 leaves at the report's @page margins (210 - 2 x 14 mm), in CSS pixels.
A4_CONTENT_PX = int((210 - 2 * 14) / 25.4 * 96)
POLICY = """
drift:
  window: 60s
  allowed_lateness: 0s
  min_reference_events: 500
  min_window_events: 200
kpi:
  window: 60s
  allowed_lateness: 0s
  label_ttl: 5m
  min_labeled: 100
decisions:
  rollback: {min_labeled: 100}
"""
MODEL = "fraud-detector"
# Text from a topic that a browser would act on were it not escaped: a fetch, a script.
HOSTILE = (
    'promote <img src="http://127.0.0.1:9/pixel.png"> <script>console.error("injected")</script>'
)
T0 = 1_800_000_000 - 1_800_000_000 % 60


def _playwright() -> Any:
    """Playwright's sync API, or a failure that says how to install it and Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not in .venv: run scripts/integration-deps")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/integration-deps"
    return sync_playwright


def _run_the_loop(worker: Any, tmp_path: Path) -> None:
    """Champion v1 (features shift from window 2) and a bad canary v2, rolled back."""
    registry = open_registry(worker.settings.registry)
    for version in ("v1", "v2"):
        artifact = tmp_path / f"{version}.bin"
        artifact.write_bytes(f"model {version}".encode())
        registry.register(MODEL, version, artifact, model_card=CARD)
    s = worker.settings
    operator.send(
        s, operator.operator_command(s, "promote", MODEL, to_version="v1", reason=HOSTILE)
    )
    operator.send(s, operator.operator_command(s, "canary", MODEL, to_version="v2", weight=0.5))
    champion = simulate.FraudTraffic(seed=21, model=MODEL, version="v1")
    canary = simulate.FraudTraffic(seed=22, model=MODEL, version="v2", variant="canary", bad=True)
    producer = simulate.make_producer(s.bootstrap)
    for w in range(5):
        for traffic in (champion, canary):
            preds, labels = traffic.events_with_labels(
                800,
                start_s=T0 + 60 * w,
                span_s=60,
                label_delay_s=0.0,
                shifted=traffic is champion and w >= 2,
            )
            simulate.publish(
                producer, worker.topic("predictions"), MODEL, list(simulate.batches(preds, 400))
            )
            simulate.publish(
                producer, worker.topic("labels"), MODEL, list(simulate.batches(labels, 400))
            )

    def rolled_back(seen: list[dict[str, Any]]) -> bool:
        return any(e["action"] == "rollback" and e["status"] == "applied" for e in seen)

    seen = tail.collect(s.bootstrap, worker.topic("deployments"), rolled_back, timeout_s=120)
    assert rolled_back(seen), (
        f"{[(e['action'], e['status']) for e in seen]}\n{worker.log()[-4000:]}"
    )

    def drifted(seen: list[dict[str, Any]]) -> bool:
        return sum(r["model_version"] == "v1" and r["status"] == "drift" for r in seen) >= 1

    reports = tail.collect(s.bootstrap, worker.topic("drift"), drifted, timeout_s=60)
    assert drifted(reports), f"{[(r['window_start'], r['status']) for r in reports]}"


def _open_in_chromium(page_path: Path, shot: Path) -> dict[str, Any]:
    sync_playwright = _playwright()
    url = page_path.as_uri()
    console: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.url}"))
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            charts = [
                page.locator("svg").nth(i).bounding_box()
                for i in range(page.locator("svg").count())
            ]
            headings = page.locator("h2").all_inner_texts()
            text = page.locator("body").inner_text()
            page.screenshot(path=str(shot), full_page=True)
            # Printed on A4 (the page's @page margins, 14 mm a side): nothing wider than the
            # paper, no chart clipped, and Chromium writes the PDF.
            page.set_viewport_size({"width": A4_CONTENT_PX, "height": 1000})
            page.emulate_media(media="print")
            printed = page.evaluate("""() => ({
                width: document.documentElement.clientWidth,
                scroll: document.documentElement.scrollWidth,
                charts: [...document.querySelectorAll('svg')].map(
                    s => s.getBoundingClientRect().right),
            })""")
            pdf = page.pdf(format="A4")
        finally:
            browser.close()
    return {
        "url": url,
        "console": console,
        "requests": requests,
        "charts": charts,
        "headings": headings,
        "text": text,
        "printed": printed,
        "pdf": pdf[:5],
    }


def test_audit_report_opens_in_chromium_offline_with_every_chart_laid_out(
    worker_factory: Any, tmp_path: Path
) -> None:
    worker = worker_factory(POLICY, agents="drift,kpi,policy,controller", log_level="info")
    worker.wait_ready(timeout_s=120)
    _run_the_loop(worker, tmp_path)

    s = worker.settings
    page_path = tmp_path / "audit.html"
    env = {
        **os.environ,
        "DRIFTLINE_DATADIR": s.datadir,
        "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
        "DRIFTLINE_BROKER": s.bootstrap,
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents",
            "audit",
            "report",
            "--model",
            MODEL,
            "--out",
            str(page_path),
            "--registry",
            s.registry,
            "--policy",
            str(worker.policy_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    html = page_path.read_text()
    assert "Audit chain intact" in html and "canary worse than the champion" in html
    assert "<img" not in html and "<script" not in html
    assert hashlib.sha256(worker.policy_path.read_bytes()).hexdigest() in html
    assert re.findall(r"\b\d{13}\b", html) == [], "every time is shown in UTC words"

    shot = tmp_path / "audit-report.png"
    seen = _open_in_chromium(page_path, shot)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    kept = shutil.copy(shot, SCREENSHOTS / shot.name)
    print(f"\naudit report screenshot: {shot} (copy: {kept})")

    assert seen["console"] == [], seen["console"]
    assert seen["requests"] == [seen["url"]], seen["requests"]
    # The PSI chart and one per KPI of the report: each drawn, none collapsed to nothing.
    assert len(seen["charts"]) == html.count("<svg") >= 3, seen["charts"]
    for box in seen["charts"]:
        assert box is not None and box["width"] > 0 and box["height"] > 0, seen["charts"]
    assert "Drift per feature (PSI)" in seen["headings"]
    assert "Deployment events and their hash chain" in seen["headings"]
    assert HOSTILE in seen["text"], "the hostile reason is shown as text"
    assert shot.stat().st_size > 10_000
    printed = seen["printed"]
    assert printed["scroll"] <= printed["width"] == A4_CONTENT_PX, printed
    assert len(printed["charts"]) == len(seen["charts"]), printed
    assert all(right <= printed["width"] for right in printed["charts"]), printed
    assert seen["pdf"] == b"%PDF-"


def test_the_page_itself_forbids_any_fetch_or_script(tmp_path: Path) -> None:
    """Beyond escaping: the report's Content-Security-Policy keeps a browser from
    fetching or running anything, should a value ever reach the page unescaped."""
    sync_playwright = _playwright()
    page_path = tmp_path / "empty.html"
    page_path.write_text(
        render(
            MODEL,
            start_ms=0,
            end_ms=1,
            drift=[],
            kpi=[],
            commands=[],
            deployments=[],
            poisoning=[],
            check=verify_chain([]),
        )
    )
    requests: list[str] = []
    blocked: list[tuple[str, str | None]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: blocked.append((r.url, r.failure)))
            page.goto(page_path.as_uri(), wait_until="load")
            # What an injected tag would do: load an image, fetch, run an inline script.
            ran = page.evaluate("""async () => {
                const img = document.createElement('img');
                img.src = 'http://127.0.0.1:9/pixel.png';
                document.body.appendChild(img);
                try { await fetch('http://127.0.0.1:9/data'); } catch (e) {}
                const s = document.createElement('script');
                s.textContent = 'window.injectedRan = true';
                document.body.appendChild(s);
                return window.injectedRan === true;
            }""")
        finally:
            browser.close()
    # Chromium reports a blocked image as a request that failed with "csp", before any
    # connection; the fetch it refuses outright.
    left = [url for url in requests[1:] if (url, "csp") not in blocked]
    assert requests[0] == page_path.as_uri() and left == [], (requests, blocked)
    assert "http://127.0.0.1:9/data" not in requests
    assert ran is False
