"""The loop every handler-based agent runs: handle off the event loop, then write.

A handler (``DriftHandler``, ``KpiHandler``) is Faust-free: ``handle(raw,
origin, table)`` returns an ``Outcome``, and ``handle_batch(messages, table)``
one per message (``handle_each`` when it has none). The agent takes the
messages available on its stream in batches and walks them per partition
(agents.runtime.batches); it runs each sub-batch's ``handle_batch`` in a worker thread
against one ``Overlay`` of its table (a CPU-bound body on the event loop
starves Faust's fetcher: 12 ms of work per message cost 45 ms of wall time),
applies the table writes on the loop, where Faust tables must be written, and
sends the reports and dead letters. A handler that raises never stops the
worker: the batch is handled again one message at a time, and the message the
handler raises on goes to ``deadletter`` with the exception, as a bug report.
Anything else that fails in a batch (the table's store, the broker) makes the
runner try the batch again after a backoff, its messages unacknowledged
meanwhile (one message at a time, Faust restarts the agent instead, as before).

Every handled sub-batch leaves one redo record (agents.runtime.redo) before its table
writes, so that a message handed again after a crash is recognised and
skipped: state is changed once per message, and what a message emitted is
never lost. The same record tells the last offset applied per partition and
topic, so a hole in what Faust hands over is noticed and read directly
(agents.runtime.backfill): when a later message arrives, or, for a hole at the end of
what was sent, when a periodic check (``watch``) finds the agent idle behind
the end of the partition.

What a message emits never stops the agent either. Its reports, routed
messages and dead letters are sent together; those refused for a transient
reason (the broker unreachable, a leader moving) are sent again with backoff
(SEND_ATTEMPTS, SEND_BACKOFF_S). One that cannot be sent (too large, or still
refused after the retries) is logged and counted (driftline_send_failures_total),
and the message is recorded as handled all the same, so its partition goes on:
a message whose dead letter or report failed to send used to make the agent crash
on it again and again, its offset never committed. A report or routed message
lost so is named in a small dead letter of its own (the input message, bounded as
every dead letter is: agents.inputs.codec.dead_letter), so that it is not lost silently;
``driftline replay`` over that input recomputes reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import faust
from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from faust.exceptions import ConsumerNotStarted, ProducerSendError
from faust.types import TP
from pydantic import BaseModel

from agents import metrics
from agents.config import Settings
from agents.inputs.codec import Origin, dead_letter
from agents.runtime import faust_internals
from agents.runtime.backfill import Backfill, Input
from agents.runtime.batches import Bounds, by_partition, taken, walk
from agents.runtime.overlay import Overlay
from agents.runtime.redo import Redo, RedoLog, redo_key
from schemas.reports import DeadLetter

logger = logging.getLogger(__name__)

#: how often each agent checks that it is not idle behind the end of its partitions
WATCH_INTERVAL_S = 5.0
#: how often a handler with a ``tick`` (processing-time work) is run on each partition
TICK_INTERVAL_S = 1.0
#: the redo record's source name for timer writes: not a topic, never marked applied
TICK = "\x00tick"
#: how many times a message's output is sent when the broker refuses it for a
#: transient reason; with SEND_BACKOFF_S doubled between tries (0.5 + 1 + 2 + 4 s),
#: on top of each try's own timeout, before the output counts as lost
SEND_ATTEMPTS = 5
SEND_BACKOFF_S = 0.5
#: a batch that fails (an exception out of the runner, not the handler's) is tried
#: again after RETRY_S, doubled each time up to RETRY_MAX_S (as Faust's supervisor
#: restarts an agent within 5 s)
RETRY_S = 0.5
RETRY_MAX_S = 5.0

#: Per app (one consumer group), per input topic: the redo logs of the agents that
#: read it, so that a watch can tell when every one of them applied a partition's
#: end. Bound: one entry per agent and input topic.
_READERS: weakref.WeakKeyDictionary[faust.App, dict[str, list[RedoLog]]] = \
    weakref.WeakKeyDictionary()


@dataclass
class Outcome:
    reports: list[BaseModel] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    counted: int = 0
    #: messages for the agent's other outputs: (output name, key, value)
    routed: list[tuple[str, bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class HandlerAgent:
    #: the agent body, ``async def (stream)``
    body: Callable[[Any], Awaitable[None]]
    #: ``catch_up(topic, partition, upto)``: see ``handler_agent``
    catch_up: Callable[[str, int, int], Awaitable[int]]
    #: ``tick(partition, now_ms)``: the handler's timer work, see ``handler_agent``
    tick: Callable[[int, int], Awaitable[int]] | None = None


@dataclass(frozen=True)
class _Send:
    """One output of a message: ``await topic.send(key=, value=)`` queues it and gives
    the future of its acknowledgement (a Faust topic)."""

    topic: Any
    key: bytes | None
    value: bytes
    #: what it is, for the log and for the dead letter that names it if it is lost
    what: str
    #: a dead letter: when it is lost there is nothing more to write
    letter: bool = False
    #: which message of the sub-batch emitted it
    index: int = 0

    @property
    def topic_name(self) -> str:
        name = getattr(self.topic, "get_topic_name", None)
        return str(name()) if name is not None else str(self.topic)


def _transient(exc: BaseException) -> bool:
    """Worth sending again: the broker may take it later (not: too large, invalid)."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__  # Faust wraps aiokafka's error
    return bool(getattr(exc, "retriable", False)) or isinstance(
        exc, KafkaTimeoutError | TimeoutError | ConnectionError)


def _stopping(exc: BaseException) -> bool:
    """The worker is stopping: the message must not be recorded as handled."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, asyncio.CancelledError | ProducerClosed)


async def _deliver(sends: list[_Send], *, attempts: int = SEND_ATTEMPTS,
                   backoff_s: float = SEND_BACKOFF_S,
                   push: Callable[[], None] | None = None) -> list[tuple[_Send, BaseException]]:
    """Send them all, each queued before any is waited for (they share requests), then
    (``push()``: the producer sends what it holds now instead of lingering) wait for
    their acknowledgements; send again those refused for a transient reason,
    after ``backoff_s``, doubled each time, up to ``attempts`` tries in all. Returns
    those that could not be sent, with why. Raises when the worker is stopping (the
    message is handled again after the restart)."""
    failed: list[tuple[_Send, BaseException]] = []
    todo = sends
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        errors: list[tuple[_Send, BaseException]] = []
        queued: list[tuple[_Send, Awaitable[Any]]] = []
        for send in todo:
            try:
                queued.append((send, await send.topic.send(key=send.key, value=send.value)))
            except Exception as exc:  # refused before it left: too large, say
                errors.append((send, exc))
        if queued and push is not None:
            push()
        results = await asyncio.gather(*(f for _, f in queued), return_exceptions=True)
        errors += [(send, r) for (send, _), r in zip(queued, results, strict=True)
                   if isinstance(r, BaseException)]
        for _, exc in errors:
            if _stopping(exc):
                raise exc
        retry = [(send, exc) for send, exc in errors if _transient(exc)]
        failed += [(send, exc) for send, exc in errors if not _transient(exc)]
        if not retry:
            return failed
        if attempt + 1 == attempts:
            return failed + retry
        todo = [send for send, _ in retry]
        logger.warning("%d of a message's outputs not sent (%s); trying again in %.1f s",
                       len(todo), retry[0][1], backoff_s * 2 ** attempt)
    return failed


class Handler(Protocol):
    AGENT: str

    def handle(
        self, raw: bytes | None, origin: Origin, table: MutableMapping[bytes, bytes]
    ) -> Outcome: ...


#: what ``handle_batch`` takes: each message's value and origin, in order
Messages = list[tuple[bytes | None, Origin]]


def handle_each(handler: Handler, messages: Messages,
                table: MutableMapping[bytes, bytes]) -> list[Outcome]:
    """``handle_batch`` for a handler that has none: ``handle`` on each message in turn,
    on the same table."""
    return [handler.handle(raw, origin, table) for raw, origin in messages]


def _bug(handler: Handler, msg: Input, origin: Origin, exc: Exception) -> Outcome:
    """The outcome of a message the handler raised on: its dead letter, as a bug report."""
    logger.error("%s agent failed on %s[%d]@%d", handler.AGENT, origin.topic,
                 origin.partition, origin.offset, exc_info=exc)
    return Outcome(dead=[dead_letter(
        origin,
        f"driftline failed while processing this message ({type(exc).__name__}: "
        f"{exc}); this is a driftline bug, please report it with this dead letter",
        msg.value or b"", agent=handler.AGENT,
    )])


def handler_agent(
    handler: Handler, *, table: Any, reports: faust.types.TopicT, deadletter: faust.types.TopicT,
    outputs: dict[str, faust.types.TopicT] | None = None, log: RedoLog | None = None,
    backfill: Backfill | None = None,
    settle: Callable[[str, int, int, int], Awaitable[None]] | None = None,
    send_attempts: int = SEND_ATTEMPTS, send_backoff_s: float = SEND_BACKOFF_S,
    bounds: Bounds | None = None, active: Callable[[], bool] | None = None,
    push: Callable[[], None] | None = None,
) -> HandlerAgent:
    """An agent body (``async def (stream)``) that runs ``handler`` on every message,
    in batches within ``bounds`` (agents.runtime.batches; None: the defaults), and its
    ``catch_up``. ``active()`` says whether the worker is not rebalancing.

    ``push()`` makes the producer send what it holds without waiting for its linger; it
    is called once a batch's outputs are queued, as the agent then waits for their
    acknowledgements and adds nothing to share their requests. The worker's producer
    lingers 10 ms to batch changelog records (agents.app): every batch that closed a
    window waited that long for its report's acknowledgement before the next batch,
    measured as 930,000-1,016,000 against 1,090,000-1,271,000 events/s with a push
    (``driftline bench --forms arrow5k``, three runs each, alternating).

    ``log`` holds the table's redo records (agents.runtime.redo); None without a table.
    ``backfill`` reads the messages Faust's consumer skipped (agents.runtime.backfill);
    ``settle(topic, partition, start, end)`` then tells the consumer that offsets
    ``start..end-1`` are done, or its offset commit would stop at the hole (the
    agent passes 0 for "every offset before ``end``": they are all applied; the
    consumer ignores what it committed already)."""
    lock = asyncio.Lock()  # one partition's batch at a time: the stream's, or catch_up's
    bounds = bounds or Bounds()
    handle_batch = getattr(handler, "handle_batch", None) or partial(handle_each, handler)
    forget = getattr(handler, "forget", None)
    base = table if table is not None else {}

    def emitted(i: int, msg: Input, outcome: Outcome) -> list[_Send]:
        """What message ``i`` of a sub-batch emitted, to send."""
        sends = []
        for report in outcome.reports:
            model = getattr(report, "model", "")
            window = getattr(report, "window_start", None)
            sends.append(_Send(reports, model.encode(), report.model_dump_json().encode(),
                               f"{type(report).__name__} of model {model!r}"
                               + (f" for the window from {window}" if window else ""),
                               index=i))
        for name, key, value in outcome.routed:
            sends.append(_Send((outputs or {})[name], key, value, f"message for {name!r}",
                               index=i))
        sends += [_Send(deadletter, msg.key, letter.model_dump_json().encode(), "dead letter",
                        letter=True, index=i) for letter in outcome.dead]
        return sends

    async def send(done: list[tuple[Input, Origin, Outcome]]) -> None:
        """Send what the messages of a sub-batch emitted, together; what cannot be sent is
        logged, counted and, for a report or routed message, named in a dead letter of
        the message that emitted it; it never raises for that."""
        sends = [s for i, (msg, _, outcome) in enumerate(done) for s in emitted(i, msg, outcome)]
        if not sends:
            return
        failed = await _deliver(sends, attempts=send_attempts, backoff_s=send_backoff_s,
                                push=push)
        lost: dict[int, list[tuple[_Send, BaseException]]] = {}
        for out, exc in failed:
            _, origin, _ = done[out.index]
            metrics.SEND_FAILURES.labels(out.topic_name, handler.AGENT).inc()
            logger.error("%s: could not send the %s (%d bytes) to %s for %s[%d]@%d: %s; "
                         "the message is recorded as handled without it", handler.AGENT,
                         out.what, len(out.value), out.topic_name, origin.topic,
                         origin.partition, origin.offset, exc)
            if not out.letter:
                lost.setdefault(out.index, []).append((out, exc))
        notes = []
        for i, outs in lost.items():
            msg, origin, _ = done[i]
            (first, why), more = outs[0], len(outs) - 1
            note = dead_letter(
                origin,
                f"driftline could not send the {first.what} that this message produced to "
                f"{first.topic_name!r} ({type(why).__name__}: {why})"
                + (f", nor {more} more of its outputs" if more else "")
                + "; lost: `driftline replay` over this message's time recomputes reports",
                msg.value or b"", agent=handler.AGENT)
            notes.append(_Send(deadletter, msg.key, note.model_dump_json().encode(),
                               "dead letter naming the outputs lost", letter=True, index=i))
        if not notes:
            return
        for out, exc in await _deliver(notes, attempts=send_attempts,
                                       backoff_s=send_backoff_s, push=push):
            _, origin, _ = done[out.index]
            metrics.SEND_FAILURES.labels(out.topic_name, handler.AGENT).inc()
            logger.error("%s: could not send the %s to %s for %s[%d]@%d either: %s",
                         handler.AGENT, out.what, out.topic_name, origin.topic,
                         origin.partition, origin.offset, exc)

    async def outcomes(msgs: list[Input], origins: list[Origin]) -> tuple[list[Outcome], Overlay]:
        """The handler's outcome of each message, and the overlay holding their writes.
        When ``handle_batch`` raises, the messages are handled again one at a time, each
        on an overlay of the table and the writes of those before it: the message the
        handler raises on gets a dead letter (nothing it wrote counts), the others go on.
        In-memory working sets the failed call may have changed are dropped first
        (``forget``): they are rebuilt from the table."""
        view = Overlay(base)
        try:
            done = await asyncio.to_thread(
                handle_batch, [(m.value, o) for m, o in zip(msgs, origins, strict=True)], view)
            if len(done) != len(msgs):
                raise RuntimeError(f"handle_batch gave {len(done)} outcomes for "
                                   f"{len(msgs)} messages")
            return done, view
        except Exception as exc:  # keep the worker alive; keep the messages
            if len(msgs) == 1:
                if forget is not None:
                    forget()
                return [_bug(handler, msgs[0], origins[0], exc)], Overlay(base)
            logger.warning("%s agent failed on a batch of %d messages of %s[%d]@%d-%d (%s: "
                           "%s); handling them one at a time", handler.AGENT, len(msgs),
                           origins[0].topic, origins[0].partition, origins[0].offset,
                           origins[-1].offset, type(exc).__name__, exc)
        view, done = Overlay(base), []
        for msg, origin in zip(msgs, origins, strict=True):
            if forget is not None:
                forget()
            one = Overlay(view)
            try:
                outcome = await asyncio.to_thread(handler.handle, msg.value, origin, one)
            except Exception as exc:
                done.append(_bug(handler, msg, origin, exc))
                continue
            one.apply(view)
            done.append(outcome)
        return done, view

    async def run(msgs: list[Input], redo: Redo | None) -> Redo | None:
        """Handle a sub-batch (consecutive messages of one partition), send what it
        emitted, then record it as handled (one redo record): the one place messages'
        effects happen. Neither a handler that raises nor an output that cannot be sent
        stops the agent: the first becomes a dead letter, the second is logged, counted
        and named in a dead letter (``send``); the messages are recorded as handled
        either way, so their partition goes on and their offsets are committed. Returns
        the partition's record after them."""
        origins = [Origin(m.topic, m.partition, m.offset, m.key) for m in msgs]
        done, view = await outcomes(msgs, origins)
        changes = view.changes()
        size = sum(len(k) + len(v or b"") for k, v in changes.items())
        if len(msgs) > 1 and size > bounds.max_bytes:
            # Its redo record would hold them all: a broker takes records up to a limit.
            # Handled again in halves (working sets the first try changed dropped first).
            logger.info("%s: %d messages wrote %d bytes, over %d; handled again in halves",
                        handler.AGENT, len(msgs), size, bounds.max_bytes)
            if forget is not None:
                forget()
            half = len(msgs) // 2
            return await run(msgs[half:], await run(msgs[:half], redo))
        for origin, outcome in zip(origins, done, strict=True):
            metrics.observe(handler.AGENT, origin.topic, counted=outcome.counted,
                            dead=len(outcome.dead), reports=outcome.reports,
                            partition=origin.partition, offset=origin.offset)
        # What the messages emitted is acknowledged before the state that says they
        # were handled (agents.runtime.redo): a crash in between sends it again, never loses it.
        await send(list(zip(msgs, origins, done, strict=True)))
        if log is None or redo is None:
            return redo
        return log.commit_many(msgs[0].partition, redo, [(m.topic, m.offset) for m in msgs],
                               changes)

    async def fill(topic: str, partition: int, offset: int, redo: Redo) -> Redo:
        """Handle the messages of ``topic[partition]`` before ``offset`` that Faust never
        handed over (one at a time); the partition's redo record after them."""
        last = redo.applied.get(topic)
        if backfill is None or last is None or offset <= last + 1:
            return redo
        missed = await asyncio.to_thread(backfill.read, topic, partition, last + 1, offset)
        logger.warning("%s: the consumer never handed over %s[%d] offsets %d-%d (faust-streaming "
                       "drops messages fetched during a rebalance or a recovery); read %d of "
                       "them directly",
                       handler.AGENT, topic, partition, last + 1, offset - 1, len(missed))
        metrics.BACKFILLED.labels(topic, handler.AGENT).inc(len(missed))
        assert log is not None
        for m in missed:
            before = log.begin(m.partition, m.topic, m.offset)
            if before is not None:
                await run([m], before)
        if settle is not None:
            # Every offset before ``offset`` is applied now, those Faust dropped before
            # ``last + 1`` too (applied before a restart, then dropped with the hole):
            # unmarked, its offset commit would stop there for good.
            await settle(topic, partition, 0, offset)
        return log.record(partition)

    async def skip(msg: Input) -> None:
        if settle is not None:
            # Applied already, and so is every offset before it: Faust may have dropped
            # some of them after a restart (applied before it) without a hole for this
            # agent to read; its offset commit would stop at the first (seen on Apache
            # Kafka, test_crash).
            await settle(msg.topic, msg.partition, 0, msg.offset)
        metrics.REDELIVERED.labels(msg.topic, handler.AGENT).inc()
        logger.info("%s: %s[%d]@%d was applied already (before a restart, or read "
                    "directly); skipped", handler.AGENT, msg.topic, msg.partition, msg.offset)

    async def walk_batch(batch: list[Input]) -> None:
        for partition, group in by_partition(batch).items():
            # Faust takes a table write's changelog partition from the event being
            # processed; in a batch, that is not the message being handled.
            with faust_internals.in_partition(TP(group[0].topic, partition)):
                async with lock:
                    redo = None if log is None else log.record(partition)
                    await walk(group, redo, bounds=bounds, run=run, skip=skip,
                               fill=fill if backfill is not None else None)

    async def agent(stream: Any) -> None:
        async with aclosing(taken(stream, bounds)) as batches:
            async for batch in batches:
                failures = 0
                while True:
                    try:
                        await walk_batch(batch)
                        break
                    except Exception as exc:
                        # One at a time, Faust restarts the agent (and acknowledges the
                        # message), as before batches. A batch is tried again instead,
                        # its messages unacknowledged meanwhile, so the group's offset
                        # commit stays behind while it fails (the applied ones are
                        # skipped then); a restarted agent would find Faust's stream
                        # draining the messages that came meanwhile, and acknowledging
                        # them. A rebalance lets it go: what was not applied is read
                        # again from the partition (``fill``, ``catch_up``).
                        if bounds.max_messages == 1:
                            raise
                        if active is not None and not active():
                            logger.warning("%s: a rebalance: the rest of a failed batch is "
                                           "read again later", handler.AGENT)
                            break
                        failures += 1
                        delay = min(RETRY_MAX_S, RETRY_S * 2 ** (failures - 1))
                        logger.error("%s agent failed on a batch of %d messages (%s: %s); "
                                     "trying it again in %.1f s", handler.AGENT, len(batch),
                                     type(exc).__name__, exc, delay, exc_info=exc)
                        # Counted after the log line is written: whoever sees the count
                        # (a scrape runs in another thread) finds the reason logged.
                        metrics.CRASHES.labels(handler.AGENT).inc()
                        await asyncio.sleep(delay)

    async def catch_up(topic: str, partition: int, upto: int) -> int:
        """Handle the messages of ``topic[partition]`` up to offset ``upto`` that Faust
        never handed over (a hole with no later message to reveal it); returns how
        many offsets that was. Needs the partition's redo record to start from."""
        if log is None or backfill is None or lock.locked():  # locked: the agent is busy
            return 0
        async with lock:
            redo = log.begin(partition, topic, upto)
            last = None if redo is None else redo.applied.get(topic)
            if redo is None or last is None:  # all applied; or no record to start from
                return 0
            await fill(topic, partition, upto + 1, redo)
            return upto - last

    async def tick(partition: int, now_ms: int) -> int:
        """Run the handler's ``tick(now_ms, partition, table)`` (work that processing
        time makes due, e.g. the KPI revisions of a quiet stream) as a message is run:
        under the lock, its reports acknowledged before its redo record and writes.
        Returns how many reports it sent."""
        handler_tick = getattr(handler, "tick", None)
        if handler_tick is None or log is None:
            return 0
        async with lock:
            # begin: writes a kill cut short are completed first; TICK is never applied
            redo = log.begin(partition, TICK, 0)
            assert redo is not None
            view = Overlay(table if table is not None else {})
            try:
                outcome = await asyncio.to_thread(handler_tick, now_ms, partition, view)
            except Exception:  # keep the worker alive; the next tick tries again
                logger.exception("%s agent failed on its timer (partition %d); this is a "
                                 "driftline bug", handler.AGENT, partition)
                return 0
            if outcome.reports:  # the gauges of what it reported (counted as topic "timer")
                metrics.observe(handler.AGENT, "timer", counted=0, dead=0,
                                reports=outcome.reports)
            # Sent as a message's outputs are (``_deliver``: transient refusals tried again
            # with backoff). One that still cannot be sent is logged and counted and the
            # writes are recorded all the same: the window's next revision, or its final
            # report, carries the same numbers; a report the broker can never take must
            # not be tried again every second for ever.
            sends = [_Send(reports, getattr(r, "model", "").encode(),
                           r.model_dump_json().encode(), f"timer {type(r).__name__}")
                     for r in outcome.reports]
            for out, exc in await _deliver(sends, attempts=send_attempts,
                                           backoff_s=send_backoff_s, push=push):
                metrics.SEND_FAILURES.labels(out.topic_name, handler.AGENT).inc()
                logger.error("%s: could not send the %s (%d bytes) to %s on partition %d: %s",
                             handler.AGENT, out.what, len(out.value), out.topic_name,
                             partition, exc)
            changes = view.changes()
            if changes:
                log.commit(partition, redo, TICK, -1, changes)
            return len(sends)

    return HandlerAgent(agent, catch_up, tick)


def acknowledge_applied(consumer: Any, logs: list[RedoLog], tp: TP, end: int,
                        start: int = 0) -> int:
    """Count the offsets of ``tp`` from ``start`` (or where the group's commit stands)
    up to ``end`` (exclusive) that every agent of the app reading it (``logs``: their
    redo logs) has applied as acknowledged for Faust's next offset commit; returns how
    many were added. What the runner skipped (applied before a restart) or read itself
    (holes Faust's stream dropped) is never acknowledged by the stream, and Faust's
    commit stops at the first offset nobody acknowledged. Up to the agent furthest
    behind, as the stream acknowledges a message only once every agent handled it: an
    agent's redo record then always covers what the commit passed, even when another
    agent read a hole first."""
    marks = [log.applied(tp.partition, tp.topic) for log in logs]
    if not marks or any(mark is None for mark in marks):
        return 0
    last = min(end - 1, *(mark for mark in marks if mark is not None))
    return faust_internals.acknowledge(consumer, tp, last, start) if last >= start else 0


def commit_end(consumer: Any, logs: list[RedoLog], tp: TP, end: int) -> int:
    """Take the group's commit of ``tp`` to ``end`` (one past its last message) as far
    as every agent of the app that reads it (``logs``: their redo logs) has applied;
    returns how many offsets were acknowledged for it. Messages the watch read
    directly at the end of a partition are never acknowledged by Faust's stream: without
    this the group's offset, and the lag metric with it, stay behind until the next
    message comes (seen in tests/e2e/test_crash.py under load: 106 of 120 committed,
    all 120 applied)."""
    committed = faust_internals.committed_offset(consumer, tp)
    if committed is None or committed >= end:  # None: Faust has not read the group's yet
        return 0
    return acknowledge_applied(consumer, logs, tp, end)


def register(
    app: faust.App, settings: Settings, handler: Handler, *, name: str, sources: list[str],
    output: str, table: str, extra_outputs: tuple[str, ...] = (), batched: bool = True,
) -> tuple[faust.types.AgentT, Any]:
    """The agent ``name``: ``handler`` over the ``sources`` topics (in one stream, so
    a model's messages are handled in order), reports to ``output``, its state in
    the Faust table ``table`` (bytes keys and values, one changelog partition per
    input partition). A handler with a ``forget()`` (in-memory working sets that
    mirror the table) has it called when partitions are revoked. The table also
    holds each partition's redo record, so even
    an agent that keeps its state elsewhere (the controller: the registry) gets
    one, for its progress. Messages are handled in batches within the settings'
    bounds (agents.runtime.batches), or one at a time when not ``batched`` (a handler whose
    effects leave the table and must each be sent before the next message is
    handled: the controller). Returns the agent and its table."""
    # Its changelog takes records as large as the producer sends (a batch's redo
    # record holds the batch's writes; Apache Kafka's default limit is 1 MB).
    state = app.Table(table, default=None, key_type=bytes, value_type=bytes,
                      partitions=settings.partitions, extra_topic_configs={
                          "max.message.bytes": str(settings.max_request_bytes)})
    log = RedoLog(state)

    @app.on_partitions_revoked.connect
    async def recheck(sender: object, revoked: object, **kwargs: object) -> None:
        # The table is recovered again for the partitions assigned next: what was
        # read from it (redo records; a handler's working sets) is read again.
        log.forget()
        forget = getattr(handler, "forget", None)
        if forget is not None:
            forget()

    async def settle(topic: str, partition: int, start: int, end: int) -> None:
        acknowledge_applied(app.consumer, readers[topic], TP(topic, partition), end, start)

    runner = handler_agent(
        handler,
        table=state,
        log=log,
        backfill=Backfill(settings.bootstrap, group=f"{settings.app_id}-backfill"),
        settle=settle,
        reports=app.topic(settings.topic(output), key_type=bytes, value_type=bytes),
        deadletter=app.topic(settings.topic("deadletter"), key_type=bytes, value_type=bytes),
        outputs={name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
                 for name in extra_outputs},
        bounds=Bounds.of(settings) if batched else Bounds(max_messages=1),
        active=lambda: not app.rebalancing and app.flow_control.is_active(),
        push=lambda: faust_internals.send_now(app.producer),
    )
    inputs = {settings.topic(s) for s in sources}
    readers = _READERS.setdefault(app, {})
    for topic in inputs:
        readers.setdefault(topic, []).append(log)
    last_check: dict[TP, tuple[int, bytes | None]] = {}

    @app.timer(WATCH_INTERVAL_S)
    async def watch() -> None:
        # After a rebalance or a recovery, Faust can leave an agent behind the end of
        # a partition for good: it drops messages it fetched while its flow was
        # stopped (agents.runtime.backfill), and a hole with no later message is never
        # noticed; tests/e2e/test_scale_out.py stalled so in 2 of 80 runs under load (the
        # worker that kept its partition handled one message and never saw the rest
        # of the second half). So: a partition that has messages past what the agent
        # applied, with no progress for a whole interval while the agent is idle, is
        # read directly up to its end; if Faust's consumer had not read that far
        # either, it is moved past what was read, so that it goes on from there.
        # Once every agent reading it has applied its end, the group's commit is
        # taken there too (``commit_end``).
        if app.rebalancing or not app.flow_control.is_active():
            last_check.clear()
            return
        try:
            assigned = app.consumer.assignment()
        except ConsumerNotStarted:
            return
        now: dict[TP, tuple[int, bytes | None]] = {}
        for tp in assigned:
            end = app.consumer.highwater(tp)  # one past the last message; None: not known
            if tp.topic not in inputs or end is None:
                continue
            now[tp] = (end, state.get(redo_key(tp.partition)))
            if last_check.get(tp) != now[tp]:
                continue
            try:
                with faust_internals.in_partition(tp):
                    caught = await runner.catch_up(tp.topic, tp.partition, end - 1)
                if caught:
                    read = faust_internals.read_offset(app.consumer, tp)
                    if read is None or read < end - 1:
                        await app.consumer.seek(tp, end)
                added = commit_end(app.consumer, readers[tp.topic], tp, end)
                if added:
                    logger.info("%s: %s[%d] applied up to its end (offset %d) by every "
                                "agent reading it; %d offsets Faust's stream never "
                                "acknowledged are acknowledged for the group's commit",
                                name, tp.topic, tp.partition, end - 1, added)
            except Exception:  # the broker unreachable, say: try again next time
                logger.exception("%s: could not catch up on %s[%d]", name, tp.topic,
                                 tp.partition)
        last_check.clear()
        last_check.update(now)

    if getattr(handler, "tick", None) is not None:
        assert runner.tick is not None
        tick = runner.tick

        @app.timer(TICK_INTERVAL_S)
        async def on_tick() -> None:
            # On each partition this worker owns (not standbys): processing-time work,
            # e.g. the revisions of KPI windows of a quiet stream (agents.kpi.handler).
            if app.rebalancing or not app.flow_control.is_active():
                return
            try:
                assigned = app.consumer.assignment()
            except ConsumerNotStarted:
                return
            for partition in sorted({tp.partition for tp in assigned if tp.topic in inputs}):
                tp = TP(sorted(inputs)[0], partition)
                try:
                    with faust_internals.in_partition(tp):
                        await tick(partition, time.time_ns() // 1_000_000)
                except Exception:  # the broker unreachable, say: try again next time
                    logger.exception("%s: timer failed on partition %d", name, partition)

    source = app.topic(*inputs, key_type=bytes, value_type=bytes)
    return app.agent(source, name=name)(runner.body), state
