"""The Faust (and aiokafka) internals driftline relies on, behind one module, checked
at start.

faust-streaming has no public way to do these things the runner needs
(agents.runtime.runner):

* ``in_partition(tp)``: make table reads and writes outside the agent's stream go to
  ``tp``'s table partition. Faust takes the partition from the event being processed,
  a context variable of its stream (``faust.streams._current_event``), and refuses
  writes with none ("Cannot modify table key from outside of stream iteration"). The
  runner's timers (catching up, KPI revisions) write outside the stream.
* ``acknowledge(consumer, tp, end, start)``: count every offset of ``tp`` from
  ``start`` (or where the group's commit stands, if later) up to ``end`` (inclusive)
  as acknowledged, as Faust's ``Consumer.ack`` does a message at a time (``_acked``,
  ``_acked_index``; ``_committed_offset`` is where the commit stands), so that the
  offset commit passes over messages the runner skipped or read itself
  (agents.runtime.backfill). Not Faust's own way of passing over missing offsets
  (``Consumer._add_gap``), for two reasons: its commit (``Consumer._new_offset``)
  merges a gap's offsets with the acknowledged ones as they are, and an offset in
  both (a redelivered message skipped, then acknowledged by its stream) ends the run
  of consecutive offsets, so after a restart the commit advanced by one offset per
  commit interval (23 redelivered messages: 23 s with the 1-s interval); and gaps are
  merged only up to the largest acknowledged offset, so offsets the watch read
  directly at the end of a partition stayed uncommitted until a later message came.
* ``read_offset(consumer, tp)``: how far the consumer has read a partition
  (``Consumer._read_offset``), so that the runner's watch moves it past messages it
  read directly.
* ``let_go(consumer)``: stop waiting for the messages the consumer counts as taken and
  not acknowledged (``Consumer._unacked_messages``), without acknowledging them, once
  no agent is handling any (agents.runtime.inflight: Faust's stop drops some that
  are never acknowledged); ``remove_processor(stream, fn)``: take a processor off a
  stream (``Stream._processors``), as Faust does its own.
* ``send_now(producer)``: make the app's producer send the records it holds now
  instead of when its linger ends. Faust's producer for aiokafka keeps aiokafka's in
  ``Producer._producer``; aiokafka has no public way (its ``flush()`` waits for the
  linger to end), so this does what aiokafka's own ``flush_for_commit`` does for a
  transaction without waiting: close the batches being filled
  (``MessageAccumulator._batches``, each batch's ``_builder``) and wake the sender
  (``_waiter_future``). Records sent after it go into new batches.

A Faust release may rename or change them. ``check()`` runs when the worker's app is
created (agents.app) and raises ``FaustChanged`` naming what changed and the Faust
version, instead of a watch that fails quietly every 5 s;
``tests/agents/runtime/test_faust_internals.py`` checks the installed Faust the same
way and exercises each one.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import weakref
from collections.abc import Iterator, MutableSet
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import faust.streams
import faust.types.tuples
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder, MessageAccumulator, MessageBatch
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from schemas.errors import DriftlineError

#: The lock ``Consumer.ack`` takes (faust.types.tuples.ack_lock, reentrant), where
#: this Faust has one: acknowledgements may come from other threads.
_ACK_LOCK = getattr(faust.types.tuples, "ack_lock", None) or threading.RLock()


class FaustChanged(DriftlineError):
    """An internal of Faust that driftline uses is missing or has another shape."""


@dataclass
class _StandIn:
    """What Faust's tables and stores read of the event being processed: its
    message's topic and partition."""

    message: TP


@contextmanager
def in_partition(tp: TP) -> Iterator[None]:
    """Table reads and writes in this block go to ``tp``'s partition."""
    stand_in = _StandIn(tp)
    token = faust.streams._current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def read_offset(consumer: Any, tp: TP) -> int | None:
    """The last offset of ``tp`` the consumer has read, or None if it has read none."""
    offset: int | None = consumer._read_offset.get(tp)
    return offset


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """Where the group's commit of ``tp`` stands (the next offset to read), as far as
    this consumer knows; None before its first commit or seek to the committed offset."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def let_go(consumer: Any) -> int:
    """Forget every message ``consumer`` waits to see acknowledged, none acknowledged
    (their offsets are not committed); how many there were."""
    unacked = consumer._unacked_messages
    n = len(unacked)
    unacked.clear()
    return n


def send_now(producer: Any) -> None:
    """The records ``producer`` (the app's Faust producer) holds go out now, without
    waiting for the end of its linger. Nothing happens before it has started."""
    client = producer._producer
    if client is None:
        return
    accumulator = client._message_accumulator
    for batches in accumulator._batches.values():
        for batch in batches:
            batch._builder.close()
    waiter = accumulator._waiter_future
    if not waiter.done():
        waiter.set_result(None)


def remove_processor(stream: Any, processor: Any) -> None:
    """Take ``processor`` off ``stream`` (added with ``stream.add_processor``)."""
    stream._processors.remove(processor)


#: How far ``acknowledge`` reached, per consumer and partition: the acknowledged-offsets
#: set it added to (Faust's ``_acked_index[tp]``) and the offsets ``(first, last)`` it
#: holds (or the commit has passed) from that call and those before it. The next call
#: scans from after ``last`` instead of from the commit: after a restart the runner
#: acknowledges up to each skipped message, and scanning from the commit every time
#: took 0.58 s for 5,000 messages (quadratic). Faust replaces the set when it revokes
#: the partition, which voids the hint.
_REACHED: weakref.WeakKeyDictionary[Any, dict[TP, tuple[set[int], int, int]]] = (
    weakref.WeakKeyDictionary())


def acknowledge(consumer: Any, tp: TP, end: int, start: int = 0) -> int:
    """Offsets of ``tp`` from ``start``, or from where the commit stands if later, up to
    ``end`` (inclusive) count as acknowledged, each as ``Consumer.ack`` counts a
    message, and never twice; Faust's next commit (every ``broker_commit_interval``)
    passes over them. Returns how many were added."""
    committed = committed_offset(consumer, tp)
    if committed is not None:
        start = max(start, committed)
    if end < start:
        return 0
    with _ACK_LOCK:
        # Out of Faust's own gaps first: ``_new_offset`` adds a gap's offsets to the
        # acknowledged ones as they are, and a duplicate ends its run of consecutive
        # offsets (the commit would advance by one offset a time).
        consumer._gap[tp].chop(start, end + 1)
        index: set[int] = consumer._acked_index[tp]
        reached = _REACHED.setdefault(consumer, {})
        first, last, scan = start, end, start
        known = reached.get(tp)
        if known is not None and known[0] is index and known[1] <= start <= known[2] + 1:
            first, last, scan = known[1], max(end, known[2]), max(start, known[2] + 1)
        new = [offset for offset in range(scan, end + 1) if offset not in index]
        index.update(new)
        consumer._acked[tp].extend(new)
        reached[tp] = (index, first, last)
    return len(new)


def problems(consumer: Any = None) -> list[str]:
    """What is missing or changed, in words (empty: all as expected). With a
    ``consumer`` (the app's, created or started), its instance attributes too."""
    found: list[str] = []
    var = getattr(faust.streams, "_current_event", None)
    if not isinstance(var, contextvars.ContextVar):
        found.append("faust.streams._current_event is not a context variable")
    declared = inspect.get_annotations(Consumer)
    for name in ("_read_offset", "_gap", "_acked", "_acked_index", "_committed_offset",
                 "_unacked_messages"):
        if name not in declared:
            found.append(f"faust.transport.consumer.Consumer declares no {name}")
    if "_processors" not in inspect.get_annotations(faust.streams.Stream):
        found.append("faust.streams.Stream declares no _processors")
    if "_producer" not in inspect.get_annotations(faust_aiokafka.Producer):
        found.append("faust's aiokafka Producer declares no _producer")
    for cls, names in ((AIOKafkaProducer, {"_message_accumulator"}),
                       (MessageAccumulator, {"_batches", "_waiter_future"}),
                       (MessageBatch, {"_builder"})):
        missing = names - set(cls.__init__.__code__.co_names)
        if missing:
            found.append(f"aiokafka's {cls.__name__} sets no {', '.join(sorted(missing))}")
    if not callable(getattr(BatchBuilder, "close", None)):
        found.append("aiokafka's BatchBuilder has no close()")
    if consumer is not None:
        offsets = getattr(consumer, "_read_offset", None)
        if offsets is None or not callable(getattr(offsets, "get", None)):
            found.append("the consumer has no _read_offset mapping")
        if not isinstance(getattr(consumer, "_gap", None), dict):
            found.append("the consumer keeps no _gap per partition (Faust's skipped offsets)")
        for name in ("_acked", "_acked_index", "_committed_offset"):
            if not isinstance(getattr(consumer, name, None), dict):
                found.append(f"the consumer keeps no {name} per partition (Consumer.ack's state)")
        if not isinstance(getattr(consumer, "_unacked_messages", None), MutableSet):
            found.append("the consumer keeps no set _unacked_messages (what a stop waits for)")
    return found


def check(consumer: Any = None) -> None:
    """Raise ``FaustChanged`` if any internal driftline uses is missing or changed."""
    found = problems(consumer)
    if found:
        raise FaustChanged(
            f"faust-streaming {version('faust-streaming')} (with aiokafka "
            f"{version('aiokafka')}) changed internals driftline uses "
            f"(agents/runtime/faust_internals.py): {'; '.join(found)}. Install the "
            "versions that pyproject.toml allows, or adapt that module."
        )
