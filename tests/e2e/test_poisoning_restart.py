"""End to end: the poisoning guard's open window and source histories survive a restart.

The real worker reads a model's trusted set, a first window from five sources
and the first part of a second window, in which ``bot`` sends two copies of two
records (under the flood limit of 3 copies) and a source never seen before sends
60 records (under the 100 a new source may send in its first window). The
worker is stopped (SIGTERM, or SIGKILL) and a new process goes on with the rest: two more
copies of each (a flood only counted together) and 60 more records of the new
source (a burst only counted together), then a record that closes the window.
The second window's PoisoningReport is exactly the one a single in-process
handler gives for the same messages: every record counted once, the flood and
the burst quarantined across the restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.inputs.codec import Origin
from agents.operator import reference_build
from agents.poisoning.handler import PoisoningHandler
from schemas.policy import parse_policy
from tests.agents.poisoning.test_handler_state import MODEL, SOURCES, T0, records
from tests.conftest import WorkerProcess
from tests.e2e.helpers import collect, iso, publish, trusted_profile

pytestmark = pytest.mark.e2e

POLICY = "poisoning: {window: 60s, allowed_lateness: 0s}"


def _window(w: int, part: int, seed: int) -> bytes:
    start = T0 + 60 * w + 20 * part
    events: list[dict[str, Any]] = []
    for i, name in enumerate(SOURCES):
        events += records(seed + i, 40, start, 20, name)
    if w == 1:
        copies = records(99, 2, T0 + 60, 1, "bot")
        events += [
            dict(r, record_id=f"bot-{part}-{i}-{r['record_id']}", ts=start + i)
            for r in copies
            for i in range(2)
        ]
        events += records(seed + 10, 60, start, 20, "newbie")
    return orjson.dumps({"events": events})


@pytest.mark.parametrize("how", ["restart", "crash_restart"])  # SIGTERM, SIGKILL
def test_an_open_window_and_source_histories_survive_a_restart(
    worker_factory: Any, tmp_path: Path, how: str
) -> None:
    worker: WorkerProcess = worker_factory(POLICY, agents="poisoning", log_level="info")
    s = worker.settings
    history = records(1, 4000, T0 - 3600, 3600, "history")
    profile = trusted_profile(tmp_path, history, policy=POLICY, trusted_rows=1000)
    before = [_window(0, p, 100 + 20 * p) for p in range(3)] + [_window(1, 0, 200)]
    after = [_window(1, 1, 300), orjson.dumps({"events": records(7, 10, T0 + 121, 5, "crm")})]

    # What one handler gives for the same messages, in process.
    handler = PoisoningHandler(
        parse_policy(POLICY),
        training_topic="training-data",
        references_topic="references",
        max_message_bytes=1 << 24,
    )
    table: dict[bytes, bytes] = {}
    ref = profile.model_dump_json().encode()
    expected = [
        r.model_dump(mode="json")
        for i, (topic, value) in enumerate(
            [("references", ref)] + [("training-data", v) for v in before + after]
        )
        for r in handler.handle(value, Origin(topic, 0, i, MODEL.encode()), table).reports
    ]
    assert len(expected) == 2 and expected[1]["status"] == "campaign", expected
    second = expected[1]["sources"]
    assert second["bot"]["quarantined"].get("duplicate_flood", 0) >= 4
    assert second["newbie"]["quarantined"].get("new_source_burst", 0) == 20

    worker.wait_ready(timeout_s=60)
    reference_build.publish(profile, s)
    worker.wait_committed("references", 1, timeout_s=60)  # read before any record
    publish(worker, "training-data", before)
    worker.wait_committed("training-data", len(before), timeout_s=90)
    getattr(worker, how)()
    worker.wait_ready(timeout_s=90)
    publish(worker, "training-data", after)

    def both(seen: list[dict[str, Any]]) -> bool:
        return {r["window_start"][:19] for r in seen} >= {iso(T0), iso(T0 + 60)}

    reports = collect(worker, "poisoning", both, timeout_s=120)
    assert both(reports), f"no report of both windows\n{worker.log()[-4000:]}"
    got = {r["window_start"][:19]: r for r in reports}
    for want in expected:
        report = got[want["window_start"][:19]]
        assert (report["status"], report["sources"], report["reason"]) == (
            want["status"],
            want["sources"],
            want["reason"],
        )
