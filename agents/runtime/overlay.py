"""A write-buffering view of a table, so agent work can run off the event loop."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping


class Overlay(MutableMapping[bytes, bytes]):
    """Reads fall through to ``base``; writes stay in ``writes`` until applied.

    The drift agent computes in a worker thread (so Faust's consumer keeps
    fetching while it works) against an Overlay of its table, then applies the
    writes on the event loop, where Faust's tables must be written.

    >>> base = {b"a": b"1"}
    >>> view = Overlay(base)
    >>> view[b"b"] = b"2"
    >>> del view[b"a"]
    >>> view[b"b"], b"a" in view, base
    (b'2', False, {b'a': b'1'})
    >>> view.apply(base); base
    {b'b': b'2'}
    """

    def __init__(self, base: Mapping[bytes, bytes]) -> None:
        self.base = base
        self.writes: dict[bytes, bytes] = {}
        self.deleted: set[bytes] = set()

    def __getitem__(self, key: bytes) -> bytes:
        if key in self.writes:
            return self.writes[key]
        if key in self.deleted:
            raise KeyError(key)
        return self.base[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        if key in self.writes:
            return self.writes[key]
        if key in self.deleted:
            return default
        return self.base.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.writes or (key not in self.deleted and key in self.base)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value
        self.deleted.discard(key)

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        self.writes.pop(key, None)
        if key in self.base:
            self.deleted.add(key)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.writes
        yield from (k for k in self.base if k not in self.writes and k not in self.deleted)

    def __len__(self) -> int:
        return len((set(self.writes) | set(self.base)) - self.deleted)

    def changes(self) -> dict[bytes, bytes | None]:
        """Every write, and every delete as None."""
        return {**self.writes, **dict.fromkeys(self.deleted)}

    def apply(self, target: MutableMapping[bytes, bytes]) -> None:
        """Write, then delete (a Faust table sends a tombstone to its changelog)."""
        apply_changes(target, self.changes())


def apply_changes(target: MutableMapping[bytes, bytes],
                  changes: Mapping[bytes, bytes | None]) -> None:
    """Write each change to ``target``; None deletes the key (if there)."""
    for key, value in changes.items():
        if value is not None:
            target[key] = value
        elif key in target:
            del target[key]
