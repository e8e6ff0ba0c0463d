"""End to end: `driftline bench --json` runs the drift agent's worker and its floor on
the broker and writes every figure. What the figures are is the bench's business
(see README, Performance); this checks that each was measured, not its value."""

from __future__ import annotations

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
    out = subprocess.run(
        [sys.executable, "-m", "agents", "bench", "--events", "20000", "--repeat", "1",
         "--broker", broker.bootstrap, "--json", str(tmp_path / "bench.json")],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
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
