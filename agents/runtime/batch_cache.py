"""Decoded table values kept for one batch of messages (agents.runtime.batches).

A handler keeps its state encoded in its table (a model version's windows, say).
Handled one message at a time, a key is decoded and encoded again for every
message: for the drift agent's warm-up state (about 75 KB) that cost more than
the fold itself. Within ``batch(table)``, the first read of a key decodes it, a
write replaces the decoded value in memory, and the end of the batch encodes and
writes each written key once. Outside a batch, reads and writes go straight to
the table, decoded and encoded each time.

The value ``get`` returns is the batch's own: a caller that changes it in place
must ``put`` it back (as it would write it to the table).

Bounds: the decoded values of the keys one batch reads; dropped when the batch
ends, written (normal end) or not (an exception: the batch's writes do not count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Generic, TypeVar

S = TypeVar("S")


class BatchStates(Generic[S]):
    """Decoded values of a table's keys, read once and written once per batch.

    >>> states = BatchStates(loads=lambda raw: None if raw is None else int(raw),
    ...                      dumps=lambda n: b"%d" % n)
    >>> table = {b"k": b"1"}
    >>> with states.batch(table):
    ...     for _ in range(3):
    ...         states.put(table, b"k", states.get(table, b"k") + 1)
    ...     table[b"k"]  # not written yet
    b'1'
    >>> table[b"k"]
    b'4'
    """

    def __init__(
        self, *, loads: Callable[[bytes | None], S | None], dumps: Callable[[S], bytes]
    ) -> None:
        self.loads, self.dumps = loads, dumps
        self._table: MutableMapping[bytes, bytes] | None = None
        self._values: dict[bytes, S | None] = {}
        self._written: set[bytes] = set()

    @contextmanager
    def batch(self, table: MutableMapping[bytes, bytes]) -> Iterator[None]:
        """Keep decoded values until the block ends, then write those written to ``table``."""
        if self._table is not None:
            raise RuntimeError("a batch is open already")
        self._table = table
        try:
            yield
            for key in self._written:
                value = self._values[key]
                assert value is not None
                table[key] = self.dumps(value)
        finally:
            self._table = None
            self._values.clear()
            self._written.clear()

    def get(self, table: MutableMapping[bytes, bytes], key: bytes) -> S | None:
        """The decoded value of ``key`` (None: not in the table)."""
        if self._table is None:
            return self.loads(table.get(key))
        self._check(table)
        if key not in self._values:
            self._values[key] = self.loads(table.get(key))
        return self._values[key]

    def put(self, table: MutableMapping[bytes, bytes], key: bytes, value: S) -> None:
        """Write ``value`` under ``key``: at the end of the batch, or now outside one."""
        if self._table is None:
            table[key] = self.dumps(value)
            return
        self._check(table)
        self._values[key] = value
        self._written.add(key)

    def _check(self, table: MutableMapping[bytes, bytes]) -> None:
        if table is not self._table:
            raise RuntimeError("a batch's values are read and written on its own table")
