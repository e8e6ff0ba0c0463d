"""The label join's lanes: a shadow's prediction waits beside the served one of the same
request, one label completes both in any order, and the two are paired."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from streams.join import LabelJoin, lane_key

HOUR = 3_600_000
Step = tuple[str, str]  # (input, who): "p" served, "s" shadow, "l" label


def _value(who: str) -> dict[str, Any]:
    return {"who": who}


def _play(
    order: list[str], join: LabelJoin, store: dict[bytes, bytes], request: str = "r"
) -> dict[str, Any]:
    """One request's served prediction (p), shadow answer (s) and label (l) in ``order``:
    which predictions were labeled, and the pairs seen."""
    labeled: list[tuple[str, Any]] = []
    arrivals: list[tuple[str, str]] = []
    late: list[tuple[str, str]] = []
    pairs: list[tuple[str, str]] = []
    for step in order:
        if step == "l":
            out = join.add_labels(store, "m", [(request, 10, 1)])
        else:
            key = request if step == "p" else lane_key(request, "shadow")
            out = join.add_predictions(store, "m", [(key, 0, _value(step))])
        labeled += [(p["who"], y) for p, y in zip(out.predictions, out.labels, strict=True)]
        arrivals += [(a["who"], b["who"]) for a, b in out.arrivals]
        late += [(out.predictions[i]["who"], o["who"]) for i, o in out.late_pairs]
        pairs += [(out.predictions[a]["who"], out.predictions[b]["who"]) for a, b in out.pairs]
    return {"labeled": sorted(labeled), "arrivals": arrivals, "late": late, "pairs": pairs}


@pytest.mark.parametrize("order", list(itertools.permutations("psl")))
def test_one_label_completes_both_in_any_order_and_the_pair_is_seen_once(
    order: tuple[str, ...],
) -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    _play(["p", "s", "l"], join, store, request="before")  # the model has a shadow
    got = _play(list(order), join, store)
    assert got["labeled"] == [("p", 1), ("s", 1)]
    assert got["arrivals"] == [("p", "s")]  # served first, shadow second, whoever came first
    # labeled as a pair: in the same call when both waited for the label, else one after
    # the other
    assert len(got["pairs"]) + len(got["late"]) == 1
    assert join.pending(store, "m") == (0, 0)


def test_lanes_are_remembered_in_the_store_and_retired_after_their_ttl() -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", [(lane_key("a", "shadow"), 0, {"who": "s"})])
    assert join.clock(store, "m")["lanes"] == {"shadow": 0}
    join.add_predictions(store, "m", [("b", 3 * HOUR, {"who": "p"})])
    assert join.clock(store, "m")["lanes"] == {"shadow": 0}
    join.add_predictions(store, "m", [("c", 3 * HOUR + 1, {"who": "p"})])
    assert "lanes" not in join.clock(store, "m")


def test_without_lanes_nothing_changes() -> None:
    """A second plain prediction of a request is still a duplicate."""
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", [("r", 0, {"who": "p"})])
    out = join.add_predictions(store, "m", [("r", 0, {"who": "again"})])
    assert out.arrivals == [] and join.clock(store, "m")["duplicates"] == 1
    assert [p["who"] for p in join.add_labels(store, "m", [("r", 5, 0)]).predictions] == ["p"]


def test_an_unused_copy_of_a_label_expires_as_no_orphan() -> None:
    """A request the shadow never answered: its label's copy for the shadow expires
    uncounted; a label with no prediction at all is still an orphan."""
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", [(lane_key("a", "shadow"), 0, {"who": "s"})])
    join.add_predictions(store, "m", [("r", 0, {"who": "p"})])
    join.add_labels(store, "m", [("r", 10, 1), ("ghost", 10, 0)])
    assert join.pending(store, "m") == (1, 2)  # a's shadow; r's copy, ghost
    out = join.add_predictions(store, "m", [("z", 3 * HOUR, {})])
    assert out.orphans_expired == 1
    assert join.clock(store, "m")["orphan_labels"] == 1


def test_a_restarted_join_still_knows_the_lanes() -> None:
    join = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    store: dict[bytes, bytes] = {}
    join.add_predictions(store, "m", [("r", 0, {"who": "p"})])
    join.add_predictions(store, "m", [(lane_key("r", "shadow"), 0, {"who": "s"})])
    again = LabelJoin(ttl_ms=HOUR, bucket_ms=HOUR)
    out = again.add_labels(store, "m", [("r", 10, 1)])
    assert sorted(p["who"] for p in out.predictions) == ["p", "s"]
    assert [(out.predictions[a]["who"], out.predictions[b]["who"]) for a, b in out.pairs] == [
        ("p", "s")
    ]
