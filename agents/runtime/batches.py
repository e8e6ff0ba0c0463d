"""Batches of input messages: how an agent walks what its stream hands over.

An agent takes every message available on its stream, up to
``DRIFTLINE_BATCH_MAX_MESSAGES``, waiting up to ``DRIFTLINE_BATCH_MAX_WAIT_MS`` for
more before it handles fewer (``taken``: Faust's ``stream.take_events``; with a
bound of 1, its ``stream.events()``, one message at a time). A batch can hold
messages of several partitions and topics. The runner (agents.runtime.runner):

1. groups it by partition (``by_partition``), each group in the order the messages
   came: a partition's table writes and redo record go to its own changelog
   partition;
2. walks each group in order (``walk``), knowing from the partition's redo record
   (agents.runtime.redo), per topic, the last offset applied, and counting the messages it
   takes as applied:

   - a message at or below that offset was applied already (before a restart, or
     read directly): it is skipped and settled with the consumer (``skip``);
   - a message more than one past it reveals a hole (messages Faust never handed
     over): the messages taken so far are run first, then the hole is read and
     handled (``fill``), then the walk goes on with this message;
   - any other message is taken;

3. runs what it took (``run``) in sub-batches (``split``) of at most
   ``DRIFTLINE_BATCH_MAX_BYTES`` value bytes (a larger message alone): per
   sub-batch one handler call, one send of everything its messages emitted, one
   redo record (their writes together and, per topic, the highest offset). A
   sub-batch's effects are one unit: applied wholly or not at all.

Bounds: a batch holds at most ``max_messages`` messages (Faust's buffer holds them
until the batch is handled and acknowledged); a handler call sees at most
``max_bytes`` of message values, or one message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from agents.config import Settings
from agents.runtime import inflight
from agents.runtime.backfill import Input
from agents.runtime.redo import Redo

logger = logging.getLogger(__name__)

#: ``run(messages, redo)``: handle a sub-batch, write its redo record; the new record
Run = Callable[[list[Input], Redo | None], Awaitable[Redo | None]]
#: ``fill(topic, partition, offset, redo)``: handle the hole before ``offset``; the
#: partition's record after it
Fill = Callable[[str, int, int, Redo], Awaitable[Redo]]
#: ``skip(message)``: a message applied already
Skip = Callable[[Input], Awaitable[None]]


@dataclass(frozen=True)
class Bounds:
    """How much an agent handles at once (Settings.batch_*)."""

    max_messages: int = 64
    max_bytes: int = 16 * 1024 * 1024
    max_wait_s: float = 0.010

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(
            settings.batch_max_messages, settings.batch_max_bytes, settings.batch_max_wait_ms / 1000
        )


async def taken(stream: Any, bounds: Bounds) -> AsyncIterator[list[Input]]:
    """The stream's messages, a batch at a time. Faust acknowledges a batch's messages
    when the next one is asked for, i.e. once the batch is handled, or when this
    generator is closed (use ``contextlib.aclosing``: Faust's buffer stays attached to
    the stream until then). What the stream took and the agent has not finished is
    counted (agents.runtime.inflight): a stop waits for it."""
    async with inflight.taking(stream) as share:
        if bounds.max_messages == 1:
            async for event in stream.events():
                yield [_input(event)]
                share.finished(1)
            return
        async with aclosing(stream.take_events(bounds.max_messages,
                                               bounds.max_wait_s)) as batches:
            async for events in batches:
                batch = [_input(event) for event in events]
                yield batch
                share.finished(len(batch))


def _input(event: Any) -> Input:
    m = event.message
    return Input(m.topic, m.partition, m.offset, m.key, m.value)


def by_partition(messages: Iterable[Input]) -> dict[int, list[Input]]:
    """The messages per partition, each partition's in the order given.

    >>> ms = [Input("a", 1, 5, None, b""), Input("b", 0, 2, None, b""),
    ...       Input("b", 1, 7, None, b"")]
    >>> {p: [(m.topic, m.offset) for m in g] for p, g in by_partition(ms).items()}
    {1: [('a', 5), ('b', 7)], 0: [('b', 2)]}
    """
    groups: dict[int, list[Input]] = {}
    for m in messages:
        groups.setdefault(m.partition, []).append(m)
    return groups


def split(messages: list[Input], bounds: Bounds) -> Iterator[list[Input]]:
    """``messages`` in runs of at most ``bounds.max_messages`` messages and
    ``bounds.max_bytes`` value bytes; a larger message alone.

    >>> ms = [Input("t", 0, o, None, b"x" * n) for o, n in enumerate([3, 3, 9, 1, 1])]
    >>> [[m.offset for m in part] for part in split(ms, Bounds(4, 6))]
    [[0, 1], [2], [3, 4]]
    """
    part: list[Input] = []
    size = 0
    for m in messages:
        n = len(m.value or b"")
        if part and (len(part) >= bounds.max_messages or size + n > bounds.max_bytes):
            yield part
            part, size = [], 0
        part.append(m)
        size += n
    if part:
        yield part


async def walk(
    messages: list[Input],
    redo: Redo | None,
    *,
    bounds: Bounds,
    run: Run,
    skip: Skip,
    fill: Fill | None,
) -> None:
    """Handle one partition's ``messages`` in order, as the module docstring says.
    ``redo``: the partition's record (None: no redo log, every message is new);
    ``fill``: None when holes cannot be read (they stay holes, as one at a time)."""
    if redo is None:
        for part in split(messages, bounds):
            await run(part, None)
        return
    record: Redo | None = redo
    applied = dict(redo.applied)  # the record's, and the messages taken since
    pending: list[Input] = []

    async def flush() -> None:
        nonlocal record
        for part in split(pending, bounds):
            record = await run(part, record)
        pending.clear()

    for m in messages:
        last = applied.get(m.topic)
        if last is not None and m.offset <= last:
            await skip(m)
            continue
        if fill is not None and last is not None and m.offset > last + 1:
            await flush()
            assert record is not None
            record = await fill(m.topic, m.partition, m.offset, record)
            applied = dict(record.applied)
            if record.seen(m.topic, m.offset):  # read directly with the hole
                await skip(m)
                continue
        pending.append(m)
        applied[m.topic] = m.offset
    await flush()
