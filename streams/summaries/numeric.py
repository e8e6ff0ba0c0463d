"""Numeric feature summary: counts on fixed bins, or a KLL sketch before bins exist.

State (a plain dict, stored as is in a Faust table)::

    {"missing": int, "counts": list[int] | None, "sketch": str | None}

``counts`` has ``len(edges) + 1`` cells: bin ``i`` holds ``edges[i-1] <= x < edges[i]``
(``numpy.searchsorted(edges, x, side="right")``). Once a reference exists its
edges are known and a window keeps only these counts: exact, and about
``8 * (bins + 1)`` bytes. Before that (the warm-up) values go into an Apache
DataSketches KLL sketch (k=200; at most about 3.5 KB however many values, rank
error about 1.3 %), from which quantile edges and approximate counts come.
"""

from __future__ import annotations

import base64
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from datasketches import kll_doubles_sketch

Edges = npt.NDArray[np.float64]


class NumericState(TypedDict):
    missing: int
    counts: list[int] | None
    sketch: str | None


def _load(sketch: str) -> Any:
    return kll_doubles_sketch.deserialize(base64.b64decode(sketch))


def _dump(sketch: Any) -> str:
    return base64.b64encode(sketch.serialize()).decode("ascii")


class NumericSummary:
    """Fold over :class:`NumericState`; the object holds configuration only.

    >>> s = NumericSummary()
    >>> edges = np.array([0.0, 1.0])
    >>> st = s.update(s.initialize(), np.array([-1.0, 0.5, 0.7, 3.0, np.nan]), edges)
    >>> st["counts"], st["missing"]
    ([1, 2, 1], 1)
    """

    K = 200

    def __init__(self, *, k: int = K) -> None:
        if not 8 <= k <= 65535:
            raise ValueError("k must be between 8 and 65535")
        self.k = k

    @staticmethod
    def initialize() -> NumericState:
        return {"missing": 0, "counts": None, "sketch": None}

    def update(
        self, state: NumericState, values: npt.NDArray[np.float64], edges: Edges | None
    ) -> NumericState:
        """Add a batch; NaN counts as missing. Bins when ``edges`` is given, else sketches."""
        nan = np.isnan(values)
        finite = values[~nan]
        out: NumericState = {
            "missing": state["missing"] + int(nan.sum()),
            "counts": state["counts"],
            "sketch": state["sketch"],
        }
        if finite.size == 0:
            return out
        if edges is not None:
            idx = np.searchsorted(edges, finite, side="right")
            add = np.bincount(idx, minlength=edges.size + 1)
            old = state["counts"]
            out["counts"] = (add if old is None else add + np.asarray(old)).tolist()
        else:
            sketch = (
                _load(state["sketch"]) if state["sketch"] else kll_doubles_sketch(self.k)
            )
            sketch.update(finite)
            out["sketch"] = _dump(sketch)
        return out

    def merge(self, a: NumericState, b: NumericState) -> NumericState:
        counts: list[int] | None
        if a["counts"] is None or b["counts"] is None:
            counts = a["counts"] if b["counts"] is None else b["counts"]
        else:
            counts = (np.asarray(a["counts"]) + np.asarray(b["counts"])).tolist()
        sketch = a["sketch"] or b["sketch"]
        if a["sketch"] and b["sketch"]:
            merged = _load(a["sketch"])
            merged.merge(_load(b["sketch"]))
            sketch = _dump(merged)
        return {"missing": a["missing"] + b["missing"], "counts": counts, "sketch": sketch}

    @staticmethod
    def count(state: NumericState) -> int:
        """Non-missing values summarised."""
        n = sum(state["counts"]) if state["counts"] else 0
        if state["sketch"]:
            n += int(_load(state["sketch"]).n)
        return n

    @staticmethod
    def quantile_edges(state: NumericState, bins: int) -> Edges:
        """Interior edges at the quantiles ``i / bins``; duplicates (ties) removed.

        Needs the sketch (a warm-up state). With no values it returns no edges.
        """
        if not state["sketch"]:
            return np.empty(0)
        sketch = _load(state["sketch"])
        ranks = [i / bins for i in range(1, bins)]
        return np.unique(np.asarray(sketch.get_quantiles(ranks), dtype=np.float64))

    @staticmethod
    def bin_counts(state: NumericState, edges: Edges) -> npt.NDArray[np.float64]:
        """Counts per bin of ``edges``: exact from binned values, estimated from the sketch."""
        out = np.zeros(edges.size + 1)
        if state["counts"] is not None:
            out += np.asarray(state["counts"], dtype=np.float64)
        if state["sketch"]:
            sketch = _load(state["sketch"])
            if edges.size:
                cdf = np.asarray(sketch.get_cdf(edges.tolist(), inclusive=False))
                out += np.diff(np.concatenate(([0.0], cdf))) * sketch.n
            else:
                out[0] += sketch.n
        return out
