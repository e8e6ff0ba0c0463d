"""End to end: `driftline bench --json` runs the drift agent's worker and its floor on
the broker and writes every figure. What the figures are is the bench's business
(see README, Performance); this checks that each was measured, not its value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agents.broker import EmbeddedBroker
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_bench_measures_every_figure_and_writes_them(broker: EmbeddedBroker,
                                                      tmp_path: Path) -> None:
    # A session of its own: if the bench hangs, its worker processes go with it.
    bench = subprocess.Popen(
        [sys.executable, "-m", "agents", "bench", "--events", "20000", "--repeat", "1",
         "--broker", broker.bootstrap, "--json", str(tmp_path / "bench.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        stdout, stderr = bench.communicate()
        raise AssertionError(
            f"driftline bench did not finish within 240 s\n{stdout}{stderr}"
        ) from None
    out = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = orjson.loads((tmp_path / "bench.json").read_bytes())
    assert figures["events"] == 20_000 and figures["batch_size"] == 500
    for name in ("decode_events_per_s", "handler_events_per_s", "worker_events_per_s",
                 "floor_events_per_s", "report_ms_25_features", "worker_peak_rss_mb"):
        assert figures[name] > 0, (name, figures)
    assert figures["worker_to_decode_ratio"] == pytest.approx(
        figures["worker_events_per_s"] / figures["decode_events_per_s"], abs=0.001)
    for label in ("decode only", "drift handler, no Kafka", "worker on broker",
                  "worker's floor", "worker / decode ratio", "one window's report"):
        assert label in out.stdout, out.stdout
