"""Duplicates and near-duplicates flooding in from one source.

A record's *key* is a hash of its standardised features rounded to a grid of
``duplicate_resolution`` trusted standard deviations (blake2b, 8 bytes, so a
replay or another worker gets the same keys; Python's ``hash`` is salted per
process). Exact copies share a key, and so do near-copies that a poisoner
jittered by less than the grid (a jitter across a grid line splits them into
two keys, each still counted). The label is not part of the key: copies with
different labels count together.

Counts are per window and source: an honest occasional duplicate passes; more
than ``duplicate_max_copies`` copies of one key from one source in one window
are a flood, and every copy in it is quarantined (copies in the same batch
included; those that passed in earlier batches of the window cannot be called
back). A source that floods one key in a window has shown what it does: from
then on in that window any of its records whose key it already sent is
quarantined too (a flood of many keys, each below the limit when its first
copies came, is caught from its second copy). Each open window keeps at most
``duplicate_cache_size`` keys, least recently seen forgotten first, so a flood
(seen again and again) stays counted, and the set of flooding sources (at most
the window's sources).

``state()`` is the counts as plain data (for the agent's table) and ``restore``
puts them back exactly, LRU order included. Per open window it holds at most
``duplicate_cache_size`` keys, each its 8-byte key, its count and the index of
its source in the window's list of source names (MessagePack, measured: 12.5
bytes a key, so at most 1.25 MB per window at the default 100,000 keys and
5 MB for the default 4 open windows; a window of 2,500 distinct records, 30 KB).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def near_duplicate_keys(z: Floats, resolution: float) -> list[bytes]:
    """One 8-byte key per row of ``z``; rows within one grid cell share it.

    >>> a, b, c = near_duplicate_keys(np.array([[0.50, 1.0], [0.51, 1.0], [0.9, 1.0]]), 0.1)
    >>> a == b, a == c
    (True, False)
    """
    grid = np.rint(z / resolution).astype(np.int64)
    return [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in grid]


class DuplicateCounter:
    """Copies per (source, key) in each open window, bounded per window.

    >>> dc = DuplicateCounter(cache_size=100, max_copies=2)
    >>> copies, flood = dc.add(0, ["s", "s", "t", "s"], [b"k", b"k", b"k", b"j"])
    >>> copies.tolist(), flood.tolist()
    ([2, 2, 1, 1], [False, False, False, False])
    >>> copies, flood = dc.add(0, ["s", "s", "s"], [b"k", b"j", b"i"])
    >>> copies.tolist(), flood.tolist(), dc.keys(0)
    ([3, 2, 1], [True, True, False], 4)
    """

    def __init__(self, *, cache_size: int, max_copies: int) -> None:
        self.cache_size = cache_size
        self.max_copies = max_copies
        self._windows: dict[int, OrderedDict[tuple[str, bytes], int]] = {}
        self._flooding: dict[int, set[str]] = {}

    def add(
        self, window: int, sources: Sequence[str], keys: Sequence[bytes]
    ) -> tuple[Ints, npt.NDArray[np.bool_]]:
        """Count the records in; return each record's copies in its window after the batch,
        and whether it is part of a flood."""
        counts = self._windows.setdefault(window, OrderedDict())
        pairs = list(zip(sources, keys, strict=True))
        for pair in pairs:
            seen = counts.get(pair)
            if seen is None:
                counts[pair] = 1
                if len(counts) > self.cache_size:
                    counts.popitem(last=False)
            else:
                counts[pair] = seen + 1
                counts.move_to_end(pair)
        copies = np.fromiter((counts.get(p, 1) for p in pairs), dtype=np.int64,
                             count=len(pairs))
        flooding = self._flooding.setdefault(window, set())
        flooding.update(s for s, c in zip(sources, copies.tolist(), strict=True)
                        if c > self.max_copies)
        repeat = np.fromiter((s in flooding for s in sources), dtype=np.bool_,
                             count=len(pairs)) & (copies >= 2)
        return copies, (copies > self.max_copies) | repeat

    def keys(self, window: int) -> int:
        """Keys held for a window (at most ``cache_size``)."""
        return len(self._windows.get(window, ()))

    def close(self, window: int) -> None:
        self._windows.pop(window, None)
        self._flooding.pop(window, None)

    def state(self) -> list[dict[str, Any]]:
        """The open windows' counts as plain data, one dict per window: its start, the
        names of its sources, each key's source (an index into them), key and copies in
        least-recently-seen-first order, and the sources flooding it.

        >>> dc = DuplicateCounter(cache_size=100, max_copies=1)
        >>> _ = dc.add(0, ["s", "s", "t"], [b"k", b"k", b"j"])
        >>> dc.state()
        [{'window': 0, 'names': ['s', 't'], 'source': [0, 1], 'keys': [b'k', b'j'], \
'copies': [2, 1], 'flooding': ['s']}]
        """
        out = []
        for window, counts in self._windows.items():
            index: dict[str, int] = {}
            source = [index.setdefault(name, len(index)) for name, _ in counts]
            out.append({
                "window": window,
                "names": list(index),
                "source": source,
                "keys": [key for _, key in counts],
                "copies": list(counts.values()),
                "flooding": sorted(self._flooding.get(window, ())),
            })
        return out

    def restore(self, state: Sequence[dict[str, Any]]) -> None:
        """Replace the counts with those ``state()`` gave (ValueError if malformed)."""
        windows: dict[int, OrderedDict[tuple[str, bytes], int]] = {}
        flooding: dict[int, set[str]] = {}
        for win in state:
            names = [str(n) for n in win["names"]]
            keys, copies, source = win["keys"], win["copies"], win["source"]
            if not len(keys) == len(copies) == len(source):
                raise ValueError(f"duplicate counts of window {win['window']} are malformed")
            start = int(win["window"])
            drop = max(len(keys) - self.cache_size, 0)  # a smaller cache_size since: oldest go
            windows[start] = OrderedDict(
                ((names[s], bytes(k)), int(c))
                for s, k, c in zip(source[drop:], keys[drop:], copies[drop:], strict=True))
            flooding[start] = {str(n) for n in win["flooding"]}
        self._windows, self._flooding = windows, flooding
