"""A bucket expires without its chunks read back when the working set says what is left.

``LabelJoin`` counts its working set's entries per bucket; a bucket that expires
with none left (every prediction labeled: the usual case) is dropped without
decoding its chunks, and one with a few left finds them in the working set
(``scan_factor``). ``Decoding`` below always decodes them, as the join did before
the counts; ``Scanning`` always looks them up. On random calls (predictions, labels
before and after their predictions, repeated ids, both clocks jumping, restarts
that rebuild the working set from the store) all must hand back the same matches,
expired predictions and orphan labels, keep the same entries waiting and leave the
same store.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.join as join_module
from streams.join import JoinOutcome, LabelJoin, ModelClock, Store

TTL, BUCKET = 10_000, 2_000


class Decoding(LabelJoin):
    """The join as before the counts: every expiring bucket's chunks decoded."""

    scan_factor = 0

    def _advance(self, store: Store, model: str, clock: ModelClock, *args: Any) -> None:
        for kind, buckets in clock["buckets"].items():
            live = self._live[model][kind]
            for bucket_s in buckets:
                live[int(bucket_s)] = live.get(int(bucket_s), 0) + 1_000_000
        super()._advance(store, model, clock, *args)


class Scanning(LabelJoin):
    """An expiring bucket's waiting entries always looked up in the working set."""

    scan_factor = 1_000_000


CALL = st.tuples(
    st.sampled_from(["p", "l", "restart"]),
    st.lists(st.integers(0, 60), max_size=12),  # request ids
    st.integers(0, 4_000),  # how far the call's times move on
)


def run(join: LabelJoin, calls: list[tuple[str, list[int], int]]) -> tuple[list[Any], Store]:
    store: Store = {}
    seen: list[Any] = []
    now = 0
    for kind, ids, step in calls:
        now += step
        if kind == "restart":
            join.forget()
            continue
        out: JoinOutcome
        if kind == "p":
            out = join.add_predictions(store, "m", [(f"r{i}", now, {"id": i}) for i in ids])
        else:
            out = join.add_labels(store, "m", [(f"r{i}", now, i % 2) for i in ids])
        seen.append(([(m.prediction, m.label, m.label_ts_ms) for m in out.matches],
                     sorted(p["id"] for p in out.expired), out.orphans_expired))
        seen.append(join.pending(store, "m"))
    return seen, store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(CALL, min_size=1, max_size=40))
def test_counted_expiry_hands_back_what_decoding_did(
    calls: list[tuple[str, list[int], int]],
) -> None:
    counted = run(LabelJoin(ttl_ms=TTL, bucket_ms=BUCKET), calls)
    decoded = run(Decoding(ttl_ms=TTL, bucket_ms=BUCKET), calls)
    scanned = run(Scanning(ttl_ms=TTL, bucket_ms=BUCKET), calls)
    assert counted == decoded
    assert scanned == decoded


def test_expiring_buckets_are_not_read_back(monkeypatch: Any) -> None:
    join = LabelJoin(ttl_ms=TTL, bucket_ms=BUCKET)
    store: Store = {}
    join.add_predictions(store, "m", [(f"a{i}", 0, {"id": i}) for i in range(100)])
    join.add_predictions(store, "m", [(f"b{i}", BUCKET, {"id": i}) for i in range(100)])
    join.add_labels(store, "m", [(f"a{i}", 10, 1) for i in range(100)])  # all of bucket 0
    join.add_labels(store, "m", [(f"b{i}", 10, 1) for i in range(50)])  # half of the next
    decoded: list[bytes] = []
    real = join_module.orjson

    class Counting:
        dumps = staticmethod(real.dumps)

        @staticmethod
        def loads(raw: bytes) -> Any:
            decoded.append(raw)
            return real.loads(raw)

    monkeypatch.setattr(join_module, "orjson", Counting)
    out = join.add_labels(store, "m", [("late", 2 * BUCKET + TTL + 1, 1)])
    assert sorted(p["id"] for p in out.expired) == list(range(50, 100))
    # bucket 0: all joined; bucket 2000: its 50 waiting entries found in the working set
    assert not any(raw.startswith((b'{"a', b'{"b')) for raw in decoded)
    assert not [k for k in store if k.startswith(b"x|m|p|")]  # both dropped
