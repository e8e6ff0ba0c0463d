"""What a stop waits for (agents.runtime.inflight): the messages agents took from their
streams and have not finished, counted as they enter and as batches are done; then
the messages no agent will acknowledge are let go, unacknowledged.

The end-to-end case (a SIGTERM in a backlog read by two agents, with either fetch
client) is tests/e2e/test_stop.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import TP

from agents.runtime import inflight
from agents.runtime.batches import Bounds, taken
from tests.agents.runtime.test_runner import Message, Stream


class _Message:
    """What the consumer's stop reads of a message it waits for."""

    tp = TP("in", 0)
    offset = 7
    acked = False


def _stream(n: int) -> Stream:
    return Stream([Message("in", 0, o, None, b"x") for o in range(n)])


def test_taking_counts_what_entered_the_stream_until_the_agent_finished_it() -> None:
    stream = _stream(0)
    counts = inflight.of(stream.app)

    async def scenario() -> list[int]:
        seen = []
        async with inflight.taking(stream) as share:
            for processor in stream._processors:  # three messages enter the stream
                for _ in range(3):
                    processor(b"x")
            seen.append(counts.count)
            share.finished(2)
            seen.append(counts.count)
        seen.append(counts.count)  # the agent stopped: its third is no longer counted
        seen.append(len(stream._processors))
        return seen

    assert asyncio.run(scenario()) == [3, 1, 0, 0]


def test_a_batch_counts_from_the_stream_until_the_agent_asks_for_the_next() -> None:
    stream = _stream(5)
    counts = inflight.of(stream.app)

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        batches: AsyncIterator[list[Any]] = taken(stream, Bounds(max_messages=2))
        async for batch in batches:
            seen.append((len(batch), counts.count))  # held while the agent handles it
        seen.append((0, counts.count))
        return seen

    assert asyncio.run(scenario()) == [(2, 2), (2, 2), (1, 1), (0, 0)]


def test_one_at_a_time_each_message_counts_until_the_next_is_asked_for() -> None:
    stream = _stream(3)
    counts = inflight.of(stream.app)

    async def scenario() -> list[int]:
        seen = []
        async for _ in taken(stream, Bounds(max_messages=1)):
            seen.append(counts.count)
        seen.append(counts.count)
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 0]


def test_a_stop_waits_for_what_agents_hold_then_lets_the_rest_go_unacknowledged() -> None:
    # Never started: creating its consumer opens no connection.
    app = faust.App("inflight-test", broker="kafka://127.0.0.1:9", store="memory://",
                    web_enabled=False)
    inflight.install(app)
    consumer = app.consumer
    assert isinstance(consumer, inflight.Consumer)
    dropped = _Message()  # taken by one agent, dropped from another's queue
    counts = inflight.of(app)

    async def scenario() -> tuple[bool, bool, int]:
        consumer._unacked_messages.add(dropped)
        counts.took(2)  # a batch of two being handled
        stop = asyncio.ensure_future(consumer.wait_empty())
        for _ in range(20):  # the loop runs; the stop still waits for the batch
            await asyncio.sleep(0)
        waiting = not stop.done()
        counts.finished(2)
        await asyncio.wait_for(stop, timeout=10)
        return waiting, dropped.acked, len(consumer._unacked_messages)

    waiting, acked, left = asyncio.run(scenario())
    assert waiting, "the stop did not wait for the batch being handled"
    assert left == 0 and not acked  # let go, never acknowledged: read again next time
    assert 7 not in consumer._acked_index[TP("in", 0)]
