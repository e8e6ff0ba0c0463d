"""Exactly-once state effects on an at-least-once consumer: the redo record.

Faust commits input offsets at most once per commit interval, after flushing
what was produced. A worker killed between two commits is handed the messages
since the last commit again, although their table writes may already sit in the
changelog: each of them would be counted twice, and a window already reported
would not be reported again (its report may have been lost with the process).

So every message's table writes go out as one unit. Before the writes of a
message at (topic, offset) on partition p, the runner writes a *redo record*
under ``redo_key(p)`` holding all of them and, per source topic, the offset of
the last message applied on that partition. A Kafka producer keeps the order of
records of one partition, and every write of a message goes to the changelog
partition of the message's own partition, so after a crash the changelog holds
some prefix of [redo(m1), writes(m1), redo(m2), writes(m2), ...]:

* the newest message's writes may be cut short: they are written again from
  the record (idempotent) before any message of the partition is handled
  (``RedoLog.begin``), so no message ever sees half of another's writes;
* a message at or below the record's offset for its topic was applied, and is
  skipped; any later message left no trace, and is handled as new.

The unit may be a batch of consecutive messages of one partition (agents.runtime.batches):
one record holds the writes of them all and, per topic, the highest offset among
them (``Redo.after``, ``RedoLog.commit_many``); the batch is then applied wholly
or not at all. The record's format is the same either way.

Reports, dead letters and routed records of a message are acknowledged by the
broker before its redo record is written: a message is marked applied only
once everything it emitted is out. What it costs: one more changelog record per
message that writes state, as large as its writes together.

Bound: one record per partition of the table, the size of one message's (or one
batch's) writes.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import orjson

from agents.runtime.overlay import apply_changes

logger = logging.getLogger(__name__)

MAGIC = b"DLR1"
_LEN = struct.Struct(">i")
_DELETED = -1


def redo_key(partition: int) -> bytes:
    """The table key of partition ``partition``'s redo record (no handler uses ``\\x00``)."""
    return b"\x00driftline|redo|%d" % partition


@dataclass
class Redo:
    #: per source topic, the offset of the last message applied on this partition
    applied: dict[str, int] = field(default_factory=dict)
    #: the newest applied message's (topic, offset) and its writes (None: deleted)
    last: tuple[str, int] | None = None
    writes: dict[bytes, bytes | None] = field(default_factory=dict)

    def seen(self, topic: str, offset: int) -> bool:
        """True when the message at ``offset`` of ``topic`` was applied already."""
        return offset <= self.applied.get(topic, -1)

    def next(self, topic: str, offset: int, writes: Mapping[bytes, bytes | None]) -> Redo:
        """The record to write before applying the message's ``writes``."""
        return self.after([(topic, offset)], writes)

    def after(self, done: Sequence[tuple[str, int]],
              writes: Mapping[bytes, bytes | None]) -> Redo:
        """The record to write before applying ``writes``, those of the messages ``done``
        ((topic, offset) each, in the order handled; at least one) together: per topic,
        the highest of their offsets is applied.

        >>> Redo({"a": 3}).after([("b", 5), ("a", 4), ("b", 6)], {}).applied
        {'a': 4, 'b': 6}
        """
        if not done:
            raise ValueError("a redo record is written for at least one message")
        highest: dict[str, int] = {}
        for topic, offset in done:
            highest[topic] = max(offset, highest.get(topic, offset))
        return Redo({**self.applied, **highest}, done[-1], dict(writes))

    def complete(self, table: MutableMapping[bytes, bytes]) -> int:
        """Write the newest message's writes again where the table lacks them; returns how
        many keys were rewritten."""
        rewritten = 0
        for key, value in self.writes.items():
            if value is None:
                if key in table:
                    del table[key]
                    rewritten += 1
            elif table.get(key) != value:
                table[key] = value
                rewritten += 1
        return rewritten

    def dumps(self) -> bytes:
        head = orjson.dumps({"applied": self.applied, "last": self.last})
        parts = [MAGIC, _LEN.pack(len(head)), head]
        for key, value in self.writes.items():
            parts += [_LEN.pack(len(key)), key]
            if value is None:
                parts.append(_LEN.pack(_DELETED))
            else:
                parts += [_LEN.pack(len(value)), value]
        return b"".join(parts)

    @classmethod
    def loads(cls, raw: bytes | None) -> Redo:
        """The record's content; an empty Redo for None.

        >>> r = Redo().next("t", 7, {b"a": b"1", b"b": None})
        >>> back = Redo.loads(r.dumps())
        >>> back.applied, back.last, back.writes, back.seen("t", 7), back.seen("t", 8)
        ({'t': 7}, ('t', 7), {b'a': b'1', b'b': None}, True, False)
        """
        if raw is None:
            return cls()
        if not raw.startswith(MAGIC):
            raise ValueError("not a driftline redo record")
        view = memoryview(raw)
        pos = len(MAGIC)

        def take() -> bytes | None:
            nonlocal pos
            (n,) = _LEN.unpack_from(view, pos)
            pos += _LEN.size
            if n == _DELETED:
                return None
            chunk = bytes(view[pos:pos + n])
            pos += n
            return chunk

        head = orjson.loads(take() or b"{}")
        writes: dict[bytes, bytes | None] = {}
        while pos < len(view):
            key = take()
            assert key is not None
            writes[key] = take()
        last = head.get("last")
        return cls(dict(head.get("applied") or {}),
                   (last[0], int(last[1])) if last else None, writes)


class RedoLog:
    """The redo records of one table, per partition, with what was checked already.

    ``begin`` decodes a partition's record and completes its writes the first
    time it sees those bytes (after a start or a rebalance, i.e. after the
    table was recovered); records this process wrote itself are not decoded again.
    Bound: one decoded record per partition this worker holds.
    """

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self._known: dict[int, tuple[bytes, Redo]] = {}

    def begin(self, partition: int, topic: str, offset: int) -> Redo | None:
        """Partition ``partition``'s record before the message at ``offset`` of ``topic`` is
        handled, or None when that message was applied already (skip it)."""
        redo = self.record(partition)
        return None if redo.seen(topic, offset) else redo

    def record(self, partition: int) -> Redo:
        """Partition ``partition``'s record, its writes completed in the table if this is
        the first look at those bytes."""
        raw = self.table.get(redo_key(partition))
        known = self._known.get(partition)
        if known is not None and (known[0] is raw or known[0] == raw):
            redo = known[1]
        else:
            redo = Redo.loads(raw)
            rewritten = redo.complete(self.table)
            if rewritten:
                logger.warning("completed %d table writes of %s@%s on partition %d, cut short "
                               "when the worker stopped", rewritten, *(redo.last or ("?", "?")),
                               partition)
            if raw is not None:
                self._known[partition] = (raw, redo)
        return redo

    def applied(self, partition: int, topic: str) -> int | None:
        """The last offset of ``topic`` applied on ``partition`` (None: none yet), read
        without completing any writes: for a look from outside the agent's stream."""
        raw = self.table.get(redo_key(partition))
        known = self._known.get(partition)
        if known is not None and (known[0] is raw or known[0] == raw):
            return known[1].applied.get(topic)
        return Redo.loads(raw).applied.get(topic)

    def commit(self, partition: int, redo: Redo, topic: str, offset: int,
               changes: Mapping[bytes, bytes | None]) -> Redo:
        """Write the message's redo record, then its ``changes`` (None: delete). Written
        for every message, changes or not: it is also the partition's progress. Returns
        the record written."""
        return self.commit_many(partition, redo, [(topic, offset)], changes)

    def commit_many(self, partition: int, redo: Redo, done: Sequence[tuple[str, int]],
                    changes: Mapping[bytes, bytes | None]) -> Redo:
        """``commit`` for the messages ``done`` ((topic, offset) each, in order) at once:
        one record holding ``changes``, the writes of them all (``Redo.after``)."""
        after = redo.after(done, changes)
        raw = after.dumps()
        self.table[redo_key(partition)] = raw
        self._known[partition] = (raw, after)
        apply_changes(self.table, changes)
        return after

    def forget(self) -> None:
        """After a rebalance: the next read of each partition checks its record again."""
        self._known.clear()
