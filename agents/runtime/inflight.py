"""What a stop (or a rebalance) waits for: the messages the agents are handling.

When Faust stops a worker, or revokes its partitions, it suspends its flow, clears
every agent stream's queue of messages not yet taken (``flow_control.clear()``),
and waits (``Consumer.wait_empty``) until every message a stream took is
acknowledged. A message read by two agents (drift and KPI both read
``predictions``) is one event in both queues, acknowledged once both have handled
it. When one agent has handled it and it still waits in the other's queue, the
clear drops it there: it is never acknowledged. Faust counts on the garbage
collector to forget such a message (its set of unacknowledged messages is weak),
but its own generators keep the last event each stream handled, so the message
that agent handled last stays, and the worker waited for it until it was killed:
the whole shutdown grace, then exit 70: with either fetch client, whenever one agent
was ahead of the other on a topic they share (tests/e2e/test_stop.py, a SIGTERM in a
backlog: killed after 20 s before this; 4 of 6 runs of test_partitions.py's first
test, right after a burst).

Here each agent's stream counts what it took (a processor, run as a message enters
the stream: Faust's batch buffer or the one-at-a-time loop) and what its agent
finished (``taking``). A stop waits until no agent has a message taken and not
finished; every message still unacknowledged then is one no stream will
acknowledge, and is let go: not acknowledged, so its offset is not committed and
the next start (or the partition's next owner) reads it again; an agent that
applied it skips it by its redo record (agents.runtime.redo). Nothing is lost and a
stop takes as long as the batches being handled.

Bounded: one count per agent stream of the app.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.runtime import faust_internals

logger = logging.getLogger(__name__)


class InFlight:
    """Messages the app's agent streams took and their agents have not finished."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def took(self, n: int = 1) -> None:
        self.count += n
        self._idle.clear()

    def finished(self, n: int) -> None:
        self.count -= n
        if self.count <= 0:
            self.count = 0
            self._idle.set()

    async def idle(self) -> None:
        """Return once no agent holds a message it took and has not finished."""
        await self._idle.wait()


_APPS: weakref.WeakKeyDictionary[Any, InFlight] = weakref.WeakKeyDictionary()


def of(app: Any) -> InFlight:
    """The app's count (one per app, made on first use)."""
    found = _APPS.get(app)
    if found is None:
        found = _APPS[app] = InFlight()
    return found


class Taking:
    """One agent stream's share of its app's count: ``took`` is the stream's
    processor; ``finished(n)`` when the agent is done with ``n`` messages."""

    def __init__(self, counts: InFlight) -> None:
        self.counts = counts
        self.held = 0

    def took(self, value: Any) -> Any:
        self.held += 1
        self.counts.took()
        return value

    def finished(self, n: int) -> None:
        n = min(n, self.held)
        self.held -= n
        self.counts.finished(n)


@asynccontextmanager
async def taking(stream: Any) -> AsyncIterator[Taking]:
    """Count what ``stream`` hands its agent while the block runs. On leaving it
    (the agent stopped or crashed), what the stream took and never handed over
    (Faust's batch buffer, dropped with its generator) no longer counts: it was not
    acknowledged, and is read again."""
    share = Taking(of(stream.app))
    stream.add_processor(share.took)
    try:
        yield share
    finally:
        faust_internals.remove_processor(stream, share.took)
        share.finished(share.held)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose ``wait_empty`` waits for what the agents are
    handling, not for messages Faust itself dropped."""

    async def wait_empty(self) -> None:
        await of(self.app).idle()
        left = faust_internals.let_go(self)
        if left:
            logger.info(
                "%d message(s) no agent will acknowledge (Faust dropped them from an agent's "
                "queue when it stopped the flow) are left unacknowledged: read again at "
                "the next start, or by the partition's next owner; an agent that applied "
                "one skips it", left)
        await super().wait_empty()


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with ``Consumer``."""

    Consumer = Consumer


def install(app: Any) -> None:
    """Give the app's consumer this ``wait_empty`` (before the app starts)."""
    app.transport = Transport(app.conf.broker_consumer, app)
