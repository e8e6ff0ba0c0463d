"""Calendar and count drift windows through the drift handler: runs of messages counted
as one batch give what one message at a time gives (agents.drift.handler._Run), a
reference profile switches at the next window, and the state survives the table."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.drift.handler import DriftHandler
from agents.operator.replay import identity
from agents.runtime import state_codec
from schemas.policy import Policy, parse_policy
from tests.agents.drift.test_runs import MODEL, traffic
from tests.agents.runtime.test_batch_equivalence import as_json, in_batches, one_at_a_time

# the traffic: 6 minutes of 200 events from T0 (2027-01-15T08:00Z), a profile mid-way
CALENDAR = parse_policy("""
drift: {window: {calendar: day, time_zone: Asia/Kolkata}, allowed_lateness: 20s,
        min_reference_events: 300, min_window_events: 50}
""")
COUNT = parse_policy("""
drift: {window: {events: 150}, min_reference_events: 300, min_window_events: 100}
""")


def _handler(policy: Policy) -> DriftHandler:
    return DriftHandler(policy=policy, predictions_topic="predictions",
                        features_topic="features", references_topic="references",
                        max_message_bytes=1 << 22)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 3),
       sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=10))
def test_count_window_runs_give_what_one_message_at_a_time_gives(
    seed: int, sizes: list[int]
) -> None:
    messages = traffic(seed)
    alone, alone_table = one_at_a_time(_handler(COUNT), messages)
    batched, batched_table = in_batches(_handler(COUNT), messages, sizes)
    assert as_json(batched) == as_json(alone)
    assert batched_table == alone_table
    reports = [r for o in alone for r in o.reports]
    assert [r.window_index for r in reports] == list(range(1200 // 150))
    assert all(r.n == 150 and r.late == 0 for r in reports)
    kinds = [r.reference.kind for r in reports]
    assert kinds[:2] == ["warmup", "warmup"] and kinds[-1] == "profile"
    state = state_codec.loads(alone_table[f"{MODEL}@v1".encode()])
    assert state["counted"] == 1200 and state["windows"] == {}


def test_calendar_window_runs_give_what_one_message_at_a_time_gives() -> None:
    messages = traffic(1)
    alone, alone_table = one_at_a_time(_handler(CALENDAR), messages)
    batched, batched_table = in_batches(_handler(CALENDAR), messages, [7, 30, 1, 55])
    assert as_json(batched) == as_json(alone)
    assert batched_table == alone_table
    # one Kolkata day, still open: no report, every event in its one window
    assert sum(len(o.reports) for o in alone) == 0
    state = state_codec.loads(alone_table[f"{MODEL}@v1".encode()])
    midnight = datetime(2027, 1, 15, tzinfo=ZoneInfo("Asia/Kolkata"))  # 2027-01-14T18:30Z
    assert [(int(k), w["n"]) for k, w in state["windows"].items()] == [
        (int(midnight.timestamp() * 1000), 1200)
    ]


def test_replay_tells_count_windows_apart_by_their_number() -> None:
    """Two count windows may start at the same event time (events out of order)."""
    report = {"model": MODEL, "model_version": "v1", "window_start": "2027-01-15T08:00:00Z"}
    first, second = ({**report, "window_index": k} for k in (0, 1))
    assert identity("drift", first) != identity("drift", second)
    assert identity("drift", {**report, "window_index": None}) == identity("drift", report)
