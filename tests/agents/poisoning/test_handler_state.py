"""The poisoning guard's state in the handler's table (agents/poisoning/handler.py): a new
handler on the same table (a restarted worker), or one after ``forget()`` (a rebalance),
goes on with the open windows and source histories, and routes and reports exactly what
one handler would have; batches write the state once; an unreadable state starts afresh
with one warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dev import simulate
from agents.inputs.codec import Origin
from agents.operator import reference_build
from agents.poisoning.handler import PoisoningHandler, guard_key
from agents.runtime import state_codec
from agents.runtime.runner import Outcome
from schemas.policy import parse_policy

MODEL = "fraud-detector"
POLICY = parse_policy("poisoning: {window: 60s, allowed_lateness: 0s}")
T0 = 1_800_000_000 - 1_800_000_000 % 60
SOURCES = ["crm", "shop", "app", "partner", "branch"]


def records(seed: int, n: int, start_s: float, span_s: float, source: str) -> list[dict[str, Any]]:
    traffic = simulate.FraudTraffic(seed=seed, model=MODEL)
    preds, labels = traffic.events_with_labels(n, start_s=start_s, span_s=span_s, label_delay_s=0)
    out = simulate.training_records(labels, preds, source=source)
    for r in out:
        r["record_id"] = f"{source}-{seed}-{r['record_id']}"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path: Path = tmp_path_factory.mktemp("ref") / "train.jsonl"
    path.write_bytes(
        b"\n".join(
            orjson.dumps({**r["features"], "label": r["label"]})
            for r in records(1, 4000, T0 - 3600, 3600, "history")
        )
    )
    profile = reference_build.build(
        path, model=MODEL, version="v1", policy=POLICY.drift_for(MODEL), trusted_rows=1000
    )
    return profile.model_dump_json().encode()


@pytest.fixture(scope="module")
def messages(reference: bytes) -> list[tuple[str, bytes]]:
    """The trusted set, then three 60 s windows in 20 s messages from five sources: in the
    second window ``bot`` sends two copies of two records per message (a flood only over
    the messages together), in the third a new source sends 60 records per message (a
    burst over the 100 a new source may send in its first window); a last message closes
    the third window."""
    rng_copy = records(99, 2, T0 + 60, 1, "bot")
    out: list[tuple[str, bytes]] = [("references", reference)]
    seed = 10
    for w in range(3):
        for part in range(3):
            start = T0 + 60 * w + 20 * part
            events: list[dict[str, Any]] = []
            for name in SOURCES:
                seed += 1
                events += records(seed, 40, start, 20, name)
            if w == 1:
                events += [
                    dict(r, record_id=f"bot-{part}-{i}-{r['record_id']}", ts=start + i)
                    for r in rng_copy
                    for i in range(2)
                ]
            if w == 2:
                seed += 1
                events += records(seed, 60, start, 20, "newbie")
            out.append(("training-data", orjson.dumps({"events": events})))
    out.append(("training-data", orjson.dumps({"events": records(7, 20, T0 + 181, 5, "crm")})))
    return out


def new_handler() -> PoisoningHandler:
    return PoisoningHandler(
        POLICY,
        training_topic="training-data",
        references_topic="references",
        max_message_bytes=1 << 24,
    )


def run(
    handler: PoisoningHandler,
    table: dict[bytes, bytes],
    msgs: list[tuple[str, bytes]],
    first: int = 0,
) -> list[Outcome]:
    return [
        handler.handle(value, Origin(topic, 0, first + i, MODEL.encode()), table)
        for i, (topic, value) in enumerate(msgs)
    ]


def emitted(outcomes: list[Outcome]) -> list[Any]:
    """What the messages sent: routed records (clean / quarantined) and reports."""
    return [(o.routed, [r.model_dump() for r in o.reports], o.dead) for o in outcomes]


@pytest.fixture(scope="module")
def one_handler(messages: list[tuple[str, bytes]]) -> list[Any]:
    out = emitted(run(new_handler(), {}, messages))
    quarantined = [
        orjson.loads(v) for o in out for n, _, v in o[0] if n == "training-data.quarantine"
    ]
    reasons = {r for q in quarantined for r in q["reasons"]}
    assert {"duplicate_flood", "new_source_burst"} <= reasons  # the stream shows both
    reports = [r for o in out for r in o[1]]
    assert [r["status"] for r in reports] == ["ok", "suspect", "campaign"]
    return out


# Splits: inside the flood's window (after its first message), inside the new source's
# burst (after its first message), and at a window's end.
@pytest.mark.parametrize("split", [5, 8, 4])
def test_a_new_handler_on_the_same_table_goes_on_as_one_handler(
    messages: list[tuple[str, bytes]], one_handler: list[Any], split: int
) -> None:
    table: dict[bytes, bytes] = {}
    before = run(new_handler(), table, messages[:split])
    assert guard_key(MODEL) in table
    after = run(new_handler(), table, messages[split:], first=split)  # a restarted worker
    assert emitted(before + after) == one_handler


@pytest.mark.parametrize("split", [5, 8])
def test_after_forget_the_handler_goes_on_as_before(
    messages: list[tuple[str, bytes]], one_handler: list[Any], split: int
) -> None:
    table: dict[bytes, bytes] = {}
    handler = new_handler()
    before = run(handler, table, messages[:split])
    handler.forget()  # a rebalance that kept the partition
    after = run(handler, table, messages[split:], first=split)
    assert emitted(before + after) == one_handler


def test_a_batch_gives_what_single_messages_give_and_writes_the_state_once(
    messages: list[tuple[str, bytes]], one_handler: list[Any]
) -> None:
    class Counting(dict[bytes, bytes]):
        writes = 0

        def __setitem__(self, key: bytes, value: bytes) -> None:
            if key == guard_key(MODEL):
                Counting.writes += 1
            super().__setitem__(key, value)

    table = Counting()
    handler = new_handler()
    first = run(handler, table, messages[:4])
    assert Counting.writes == 3  # one per message that screened records
    batch = [
        (value, Origin(topic, 0, 4 + i, MODEL.encode()))
        for i, (topic, value) in enumerate(messages[4:])
    ]
    rest = handler.handle_batch(batch, table)
    assert Counting.writes == 4
    assert emitted(first + rest) == one_handler
    again = dict(table)
    extra = ("training-data", orjson.dumps({"events": records(8, 10, T0 + 190, 5, "crm")}))
    got = run(new_handler(), again, [extra], first=100)
    want = run(handler, dict(table), [extra], first=100)
    assert emitted(got) == emitted(want)


@pytest.fixture(scope="module")
def at_5(messages: list[tuple[str, bytes]]) -> dict[bytes, bytes]:
    """The table after the first five messages (inside the flood's window)."""
    table: dict[bytes, bytes] = {}
    run(new_handler(), table, messages[:5])
    return table


@pytest.fixture(scope="module")
def afresh_from_5(messages: list[tuple[str, bytes]]) -> list[Any]:
    """What the rest gives from a table with only the trusted set."""
    fresh: dict[bytes, bytes] = {}
    run(new_handler(), fresh, messages[:1])
    return emitted(run(new_handler(), fresh, messages[5:], first=5))


def test_a_table_without_guard_state_starts_afresh(
    messages: list[tuple[str, bytes]],
    at_5: dict[bytes, bytes],
    afresh_from_5: list[Any],
    one_handler: list[Any],
) -> None:
    """A table of an earlier driftline has the trusted set but no guard state."""
    table = dict(at_5)
    del table[guard_key(MODEL)]
    got = emitted(run(new_handler(), table, messages[5:], first=5))
    assert got == afresh_from_5
    assert got != one_handler[5:]  # (what the state is for)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xc1\x00garbage",
        state_codec.dumps({"profile": "another trusted set's", "guard": {}}),
        state_codec.dumps({"version": 1}),
    ],
)
def test_an_unreadable_state_is_logged_once_and_starts_afresh(
    messages: list[tuple[str, bytes]],
    at_5: dict[bytes, bytes],
    afresh_from_5: list[Any],
    caplog: pytest.LogCaptureFixture,
    bad: bytes,
) -> None:
    table = dict(at_5)
    table[guard_key(MODEL)] = bad
    with caplog.at_level(logging.WARNING, logger="agents.poisoning.handler"):
        got = emitted(run(new_handler(), table, messages[5:], first=5))
    assert got == afresh_from_5
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and repr(MODEL) in warned[0], warned
    assert "start afresh" in warned[0]
    assert state_codec.loads(table[guard_key(MODEL)])["guard"]["version"] == 1


def test_a_new_trusted_set_starts_the_guard_afresh(
    messages: list[tuple[str, bytes]], at_5: dict[bytes, bytes], afresh_from_5: list[Any]
) -> None:
    table = dict(at_5)
    handler = new_handler()
    run(handler, table, messages[:1], first=5)  # the trusted set published again
    assert guard_key(MODEL) not in table
    assert emitted(run(handler, table, messages[5:], first=5)) == afresh_from_5


def test_a_state_too_large_to_keep_is_not_written_and_logged_once(
    messages: list[tuple[str, bytes]], one_handler: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    handler = PoisoningHandler(
        POLICY,
        training_topic="training-data",
        references_topic="references",
        max_message_bytes=1 << 24,
        max_state_bytes=8_000,
    )
    table: dict[bytes, bytes] = {}
    with caplog.at_level(logging.WARNING, logger="agents.poisoning.handler"):
        got = emitted(run(handler, table, messages))
    assert got == one_handler  # screening goes on as before
    assert guard_key(MODEL) not in table
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and repr(MODEL) in warned[0] and "more than 8000" in warned[0]
