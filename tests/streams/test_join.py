"""The label join: either order, event-time TTL, nothing dropped silently."""

from __future__ import annotations

import numpy as np
import pytest

from streams.join import LabelJoin

HOUR = 3_600_000


def _preds(ids: list[str], ts: int) -> list[tuple[str, int, dict[str, object]]]:
    return [(r, ts, {"id": r, "t": ts}) for r in ids]


def test_labels_join_their_predictions_in_either_order() -> None:
    join = LabelJoin(ttl_ms=24 * HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    first = join.add_predictions(store, "m", _preds(["a", "b"], 0))
    assert first.matches == []
    early = join.add_labels(store, "m", [("c", 1000, 1)])  # before its prediction
    assert early.matches == []
    late = join.add_labels(store, "m", [("a", 2000, 0), ("b", 2000, 1)])
    assert sorted((m.prediction["id"], m.label) for m in late.matches) == [("a", 0), ("b", 1)]
    arrived = join.add_predictions(store, "m", _preds(["c"], 500))
    assert [(m.prediction["id"], m.label, m.label_ts_ms) for m in arrived.matches] == [
        ("c", 1, 1000)
    ]


def test_models_do_not_share_request_ids() -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m1", _preds(["r"], 0))
    assert join.add_labels(store, "m2", [("r", 10, 1)]).matches == []
    assert len(join.add_labels(store, "m1", [("r", 10, 1)]).matches) == 1


def test_unlabeled_predictions_expire_after_the_ttl_and_are_handed_back() -> None:
    ttl, bucket = 10 * HOUR, HOUR
    join = LabelJoin(ttl_ms=ttl, bucket_ms=bucket)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", _preds([f"r{i}" for i in range(100)], 0))
    join.add_labels(store, "m", [(f"r{i}", 60_000, 1) for i in range(30)])
    # Predictions running far ahead do not expire them: their labels may be late.
    assert join.add_predictions(store, "m", _preds(["ahead"], ttl + bucket + 1)).expired == []
    # By the labels' clock: at the TTL plus one bucket, nothing has expired yet ...
    assert join.add_labels(store, "m", [("other", ttl + bucket, 0)]).expired == []
    # ... one millisecond later the 70 unlabeled predictions come back, once.
    out = join.add_labels(store, "m", [("other2", ttl + bucket + 1, 0)])
    assert sorted(p["id"] for p in out.expired) == sorted(f"r{i}" for i in range(30, 100))
    assert join.add_labels(store, "m", [("x", ttl + bucket + 2, 0)]).expired == []


def test_a_stalled_label_feed_still_bounds_the_pending_predictions() -> None:
    """With no labels at all, predictions expire at twice the TTL of their own clock."""
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", _preds(["a", "b"], 0))
    assert join.add_predictions(store, "m", _preds(["c"], 3 * HOUR)).expired == []
    out = join.add_predictions(store, "m", _preds(["d"], 3 * HOUR + 1))
    assert sorted(p["id"] for p in out.expired) == ["a", "b"]


def test_labels_without_predictions_expire_as_counted_orphans() -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_labels(store, "m", [("ghost1", 0, 1), ("ghost2", 0, 0)])
    out = join.add_predictions(store, "m", _preds(["x"], 2 * HOUR + 1))  # predictions' clock
    assert out.orphans_expired == 2
    assert join.clock(store, "m")["orphan_labels"] == 2
    # The label of an expired orphan does not meet a prediction that comes later.
    assert join.add_predictions(store, "m", _preds(["ghost1"], 2 * HOUR + 2)).matches == []


def test_a_repeated_prediction_is_counted_not_stored_twice() -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", _preds(["r"], 0))
    join.add_predictions(store, "m", _preds(["r"], 5))
    assert join.clock(store, "m")["duplicates"] == 1
    assert len(join.add_labels(store, "m", [("r", 10, 1)]).matches) == 1


def test_expiry_leaves_only_the_model_clock_in_the_store() -> None:
    """Every pending entry and every chunk key goes when its bucket expires: the
    store is bounded by what is younger than the TTL."""
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR // 4)
    store: dict[bytes, bytes] = {}
    rng = np.random.default_rng(0)
    ts = 0
    for batch in range(40):
        ids = [f"b{batch}-{i}" for i in range(50)]
        join.add_predictions(store, "m", _preds(ids, ts))
        labeled = [r for r in ids if rng.random() < 0.5]
        join.add_labels(store, "m", [(r, ts + 1000, 1) for r in labeled])
        join.add_labels(store, "m", [(f"orphan{batch}", ts, 0)])
        ts += 60_000
    sizes = len(store)
    # Both clocks move on: everything before expires.
    join.add_labels(store, "m", [("end", ts + 2 * HOUR, 0)])
    join.add_predictions(store, "m", _preds(["endp"], ts + 2 * HOUR))
    remaining = {k.split(b"|")[0] for k in store}
    assert sizes > 100
    # Only the model clock and the last two calls' own chunks are left.
    assert len(store) == 3 and remaining == {b"m", b"x"}
    assert join.pending(store, "m") == (1, 1)


def test_a_restarted_join_rebuilds_its_working_set_from_the_store() -> None:
    """After a restart (a new LabelJoin on the recovered store) the join goes on as if
    nothing happened: the same matches, the same expiries."""
    calls: list[tuple[str, list[tuple[str, int, object]]]] = []
    rng = np.random.default_rng(5)
    for i in range(60):
        ts = i * 120_000
        calls.append(("p", [(f"r{i}-{k}", ts, {"id": f"r{i}-{k}"}) for k in range(20)]))
        back = int(rng.integers(0, i + 1))
        calls.append(("l", [(f"r{back}-{k}", ts + 1, k % 2) for k in range(0, 20, 3)]
                      + [(f"early{i}", ts, 1)]))
        calls.append(("p", [(f"early{max(i - 1, 0)}", ts + 2, {"id": f"early{i}"})]))

    def run(restart_at: int | None) -> list[object]:
        store: dict[bytes, bytes] = {}
        join = LabelJoin(ttl_ms=HOUR, bucket_ms=600_000)
        seen: list[object] = []
        for n, (kind, items) in enumerate(calls):
            if n == restart_at:
                join = LabelJoin(ttl_ms=HOUR, bucket_ms=600_000)
            out = (join.add_predictions(store, "m", items) if kind == "p"  # type: ignore[arg-type]
                   else join.add_labels(store, "m", items))
            seen.append(([(m.prediction, m.label) for m in out.matches], out.expired,
                         out.orphans_expired))
        return seen

    straight = run(None)
    assert sum(len(s[1]) for s in straight) > 100  # type: ignore[index, arg-type]
    for restart_at in (7, 50, 121):
        assert run(restart_at) == straight


def test_a_replay_of_the_same_calls_gives_the_same_store() -> None:
    def run() -> dict[bytes, bytes]:
        join = LabelJoin(ttl_ms=HOUR, bucket_ms=600_000)
        store: dict[bytes, bytes] = {}
        for i in range(20):
            join.add_predictions(store, "m", _preds([f"p{i}"], i * 400_000))
            join.add_labels(store, "m", [(f"p{i // 2}", i * 400_000 + 1, i % 2)])
        return store

    assert run() == run()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LabelJoin(ttl_ms=0, bucket_ms=1)
