"""The redo record: a crash at any point of the changelog, then a restart from any
committed offset the crash allows, ends in the uninterrupted run's table and
reports (agents.runtime.redo).

The changelog is simulated (a list of records, cut at a random length, as a
killed producer leaves it); the handlers are the real drift and KPI handlers.
The worker-level version of this, with SIGKILL and the embedded broker, is
tests/e2e/test_crash.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from agents.dev import simulate
from agents.drift.handler import DriftHandler
from agents.inputs.codec import Origin
from agents.kpi.handler import KpiHandler
from agents.runtime.overlay import Overlay
from agents.runtime.redo import Redo, RedoLog, redo_key
from schemas.policy import parse_policy

T0 = 1_800_000_000 - 1_800_000_000 % 60
MODEL = "fraud-detector"
POLICY = parse_policy("""
drift: {window: 60s, allowed_lateness: 0s, min_reference_events: 300}
kpi: {window: 60s, allowed_lateness: 0s, label_ttl: 2m, min_labeled: 20}
""")


class Changelog(MutableMapping[bytes, bytes]):
    """A table whose every write is a changelog record, as a Faust table's is."""

    def __init__(self, records: list[tuple[bytes, bytes | None]] | None = None) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.data: dict[bytes, bytes] = {}
        for key, value in records or []:  # recovery: replay the changelog
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.records = list(records or [])

    def __getitem__(self, key: bytes) -> bytes:
        return self.data[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self.records.append((key, value))

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]
        self.records.append((key, None))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _messages() -> list[tuple[str, int, bytes]]:
    """Predictions and labels of 5 windows, interleaved, as (topic, offset, value)."""
    traffic = simulate.FraudTraffic(seed=3)
    out: list[tuple[str, int, bytes]] = []
    offsets = {"predictions": 0, "labels": 0}
    for w in range(5):
        preds, labels = traffic.events_with_labels(400, start_s=T0 + 60 * w, span_s=60,
                                                   label_delay_s=30.0, label_share=0.8)
        for topic, batch in [("predictions", b) for b in simulate.batches(preds, 100)] + \
                            [("labels", b) for b in simulate.batches(labels, 100)]:
            out.append((topic, offsets[topic], batch))
            offsets[topic] += 1
    return out


def _handlers() -> dict[str, Any]:
    return {
        "drift": DriftHandler(policy=POLICY, predictions_topic="predictions",
                              features_topic="features", max_message_bytes=1 << 26),
        "kpi": KpiHandler(policy=POLICY, predictions_topic="predictions",
                          labels_topic="labels", max_message_bytes=1 << 26),
    }


def _run(messages: list[tuple[str, int, bytes]], table: Changelog, *, start: int = 0,
         ends: list[int] | None = None) -> list[str]:
    """Handle ``messages[start:]`` as the runner does (one RedoLog per table); the
    reports as JSON. ``ends`` gets the changelog length after each message."""
    handlers = _handlers()
    log = RedoLog(table)
    reports: list[str] = []
    for topic, offset, value in messages[start:]:
        redo = log.begin(0, topic, offset)
        if redo is not None:
            view = Overlay(table)
            for name, handler in handlers.items():
                if name == "drift" and topic != "predictions":
                    continue
                out = handler.handle(value, Origin(topic, 0, offset, MODEL.encode()), view)
                reports += [r.model_dump_json() for r in out.reports]
            if view.changes():
                log.commit(0, redo, topic, offset, view.changes())
        if ends is not None:
            ends.append(len(table.records))
    return reports


def test_a_redo_record_round_trips_binary_values_and_deletes() -> None:
    writes = {b"k\x00\xff": bytes(range(256)), b"gone": None, b"": b""}
    back = Redo.loads(Redo({"a": 3}).next("b", 9, writes).dumps())
    assert (back.applied, back.last, back.writes) == ({"a": 3, "b": 9}, ("b", 9), writes)
    assert back.seen("a", 3) and not back.seen("a", 4) and back.seen("b", 0)
    with pytest.raises(ValueError, match="not a driftline redo record"):
        Redo.loads(b"{}")


def test_begin_completes_the_newest_message_cut_short() -> None:
    table = Changelog()
    log = RedoLog(table)
    redo = log.begin(0, "t", 0)
    assert redo is not None
    log.commit(0, redo, "t", 0, {b"a": b"1", b"b": b"2", b"c": None})
    # The killed producer got the redo record and the first write out, not the second.
    cut = Changelog(table.records[:2])
    assert b"b" not in cut
    again = RedoLog(cut)
    assert again.begin(0, "t", 0) is None, "the message was applied: skip it"
    assert cut.data == {b"a": b"1", b"b": b"2", redo_key(0): table.data[redo_key(0)]}
    assert again.begin(0, "t", 1) is not None


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_anywhere_then_a_restart_from_any_allowed_commit_changes_nothing(
        seed: int) -> None:
    messages = _messages()
    whole = Changelog()
    ends: list[int] = []
    expected = _run(messages, whole, ends=ends)
    assert any('"reference":' in r for r in expected), "drift reports"
    assert any('"n_labeled":' in r and '"n_labeled":0,' not in r for r in expected), "KPIs"

    rng = random.Random(seed)
    cut = rng.randrange(1, len(whole.records))
    done = sum(end <= cut for end in ends)  # messages whose records all made it
    committed = rng.randint(max(0, done - 6), done)  # the consumer's last commit
    before = Changelog()
    emitted = _run(messages[:done + 1], before)  # out before the crash (acked first)
    recovered = Changelog(whole.records[:cut])
    after = _run(messages, recovered, start=committed)

    assert recovered.data == whole.data, "the recovered state is the uninterrupted one"
    # Every report is out, in order, each at least once; a report is repeated only
    # when its message's redo record did not make it before the crash.
    assert set(emitted) | set(after) >= set(expected)
    assert sorted(set(emitted) | set(after)) == sorted(set(expected))
    assert after == expected[len(expected) - len(after):], "the restart continues the run"
