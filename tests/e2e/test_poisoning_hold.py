"""End to end: training records published before their model's trusted set wait for it.

``references`` and ``training-data`` are read in one stream with no order between
them: records published right after ``driftline reference build`` returns can be
read first. The real worker reads 1,000 records of a model with no trusted set
(its group commits them), then the reference arrives: every record is screened,
none is quarantined as ``no_trusted_set``, and the window's PoisoningReport
counts them as held and released.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.operator import reference_build, tail
from tests.agents.poisoning.test_handler import T0, records
from tests.conftest import WorkerProcess
from tests.e2e.helpers import collect, iso, publish, trusted_profile

pytestmark = pytest.mark.e2e

POLICY = "poisoning: {window: 60s, allowed_lateness: 0s}"


def _events(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for v in values for e in v.get("events", [v])]


def test_records_read_before_the_trusted_set_are_screened_when_it_arrives(
    worker_factory: Any, tmp_path: Path
) -> None:
    worker: WorkerProcess = worker_factory(POLICY, agents="poisoning", log_level="info")
    s = worker.settings
    worker.wait_ready(timeout_s=60)
    early = records(3, 500, T0, "crm") + records(4, 500, T0, "shop")
    publish(
        worker,
        "training-data",
        [orjson.dumps({"events": early[:500]}), orjson.dumps({"events": early[500:]})],
    )
    worker.wait_committed("training-data", 2, timeout_s=60)  # read, with no trusted set yet

    history = records(1, 5000, T0 - 3600, "history")
    profile = trusted_profile(tmp_path, history, policy=POLICY, trusted_rows=3000)
    reference_build.publish(profile, s)
    closer = records(6, 5, T0 + 120, "crm")  # closes the window of the early records
    publish(worker, "training-data", [orjson.dumps({"events": closer})])

    def reported(seen: list[dict[str, Any]]) -> bool:
        return any(r["window_start"].startswith(iso(T0)) for r in seen)

    reports = collect(worker, "poisoning", reported, timeout_s=90)
    assert reported(reports), f"no report of the window\n{worker.log()[-4000:]}"
    report = next(r for r in reports if r["window_start"].startswith(iso(T0)))
    assert report["held"] == report["released"] == 1000, report
    assert report["unscreened"] == 0, report
    assert sum(c["seen"] for c in report["sources"].values()) == 1000, report

    ids = {r["record_id"] for r in early}

    def screened(seen: list[dict[str, Any]]) -> bool:
        return ids <= {e.get("record", e)["record_id"] for e in _events(seen)}

    # The report came after the reference's message, whose outputs were sent first.
    clean, quarantined = (
        [orjson.loads(v) for v in tail.read_to_end(s.bootstrap, worker.topic(t))]
        for t in ("training-data.clean", "training-data.quarantine")
    )
    assert screened(clean + quarantined), "every early record was screened"
    assert not [q for q in quarantined if "no_trusted_set" in q["reasons"]]
    assert len([e for e in _events(clean) if e["record_id"] in ids]) >= 950
