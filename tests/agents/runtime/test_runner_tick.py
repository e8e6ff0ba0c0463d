"""The runner's timer path (``tick``): a handler's processing-time work is written with
the same redo discipline as a message, and never marks an input offset applied."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping

import orjson
from pydantic import BaseModel

from agents.inputs.codec import Origin
from agents.runtime.redo import Redo, RedoLog, redo_key
from agents.runtime.runner import Outcome, handler_agent
from tests.agents.runtime.test_runner import Message, Sink, Stream


class Note(BaseModel):
    model: str
    text: str


class Ticking:
    """Counts messages; its tick reports and resets the count, if there is one."""

    AGENT = "test"

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome:
        table[b"n"] = orjson.dumps(orjson.loads(table.get(b"n", b"0")) + 1)
        return Outcome(counted=1)

    def tick(self, now_ms: int, partition: int, table: MutableMapping[bytes, bytes]) -> Outcome:
        n = orjson.loads(table.get(b"n", b"0"))
        if not n:
            return Outcome()
        table[b"n"] = b"0"
        table[b"at"] = orjson.dumps(now_ms)
        return Outcome(reports=[Note(model="m", text=f"{n} at {now_ms}")])


def stream(offsets: list[int]) -> Stream:
    """Messages of topic "in", partition 0, at ``offsets``."""
    return Stream([Message("in", 0, o, b"m", b"{}") for o in offsets])


def test_tick_writes_through_a_redo_record_and_leaves_offsets_alone() -> None:
    table: dict[bytes, bytes] = {}
    sink = Sink()
    runner = handler_agent(
        Ticking(), table=table, reports=sink, deadletter=Sink(), log=RedoLog(table)
    )
    assert runner.tick is not None

    async def scenario() -> list[int]:
        await runner.body(stream([0, 1, 2]))
        before = Redo.loads(table[redo_key(0)])
        assert before.applied == {"in": 2}
        sent = [await runner.tick(0, 1_000)]
        record = Redo.loads(table[redo_key(0)])
        # the tick's writes are in the record, which keeps the input's progress
        assert record.writes == {b"n": b"0", b"at": b"1000"}
        assert record.applied["in"] == 2
        quiet = table[redo_key(0)]
        sent.append(await runner.tick(0, 2_000))  # nothing to do: nothing written
        assert table[redo_key(0)] == quiet
        # messages after a tick are handled (not taken as applied), redelivered ones skipped
        await runner.body(stream([2, 3]))
        assert Redo.loads(table[redo_key(0)]).applied["in"] == 3
        sent.append(await runner.tick(0, 3_000))
        return sent

    assert asyncio.run(scenario()) == [1, 0, 1]
    assert [orjson.loads(v)["text"] for v in sink.sent] == ["3 at 1000", "1 at 3000"]
