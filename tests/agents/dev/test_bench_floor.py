"""The bench's floor handler: one table value per message, a mark every N messages."""

from __future__ import annotations

from agents.dev.bench_floor import FloorHandler, FloorMark
from agents.inputs.codec import Origin


def test_it_counts_messages_writes_the_asked_size_and_marks_every_n() -> None:
    handler = FloorHandler(every=3, value_bytes=1000)
    table: dict[bytes, bytes] = {}
    marks = []
    for offset in range(7):
        out = handler.handle(b"not read, not even JSON", Origin("p", 0, offset, b"m"), table)
        assert out.counted == 1 and not out.dead
        marks.extend(out.reports)
    assert marks == [FloorMark(messages=3), FloorMark(messages=6)]
    (value,) = table.values()
    assert value.startswith(b"7|") and len(value) == len(b"7|") + 1000
    # messages of another key are counted apart
    handler.handle(None, Origin("p", 0, 7, b"other"), table)
    assert sorted(v.split(b"|")[0] for v in table.values()) == [b"1", b"7"]
