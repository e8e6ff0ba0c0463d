"""Feature outliers: river's HalfSpaceTrees fitted on the trusted set.

Supporting evidence only: an unusual record is not a poisoned one (fraud is
unusual by nature), so the guard never quarantines on this score alone; it
counts when the record also carries another signal (a weak label
disagreement, or a source that behaves unlike itself).

The trees see the standardised encoded features (``streams.poisoning.encode``)
with the trusted set's per-column range as their limits. They are fitted once,
on the trusted set (window size = its rows, so its masses are the reference
masses), and never learn from the stream: a poisoner cannot move them, and a
replay scores the same. The threshold is the empirical ``1 - outlier_rate``
quantile of the trusted records' own scores. Size: ``outlier_trees`` trees of
``2^(outlier_height + 1) - 1`` nodes, whatever the stream.

Scoring: river scores one record at a time in Python (about 40 microseconds per
record on 64 features, 20 ms for a batch of 500). The fitted trees are copied
into arrays (a complete binary tree per row: split feature, threshold and
reference mass of every node) and a batch walks them together in numpy, with
river's arithmetic (mass times ``2^depth``, stopping below 0.1 of the window),
so the scores are river's to the last bit (checked in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


class OutlierScorer:
    """HalfSpaceTrees on the trusted rows; ``score`` is in [0, 1], high is unusual.

    >>> rng = np.random.default_rng(0)
    >>> scorer = OutlierScorer(rng.normal(0, 1, (500, 3)), n_trees=10, height=6, rate=0.01,
    ...                        seed=0)
    >>> inside, far = scorer.score(np.array([[0.0, 0.0, 0.0], [4.0, -4.0, 4.0]])).tolist()
    >>> inside < scorer.threshold < far
    True
    """

    def __init__(self, z: Floats, *, n_trees: int, height: int, rate: float, seed: int) -> None:
        lo = z.min(axis=0)
        hi = z.max(axis=0)
        flat = hi <= lo
        lo = np.where(flat, lo - 0.5, lo)
        hi = np.where(flat, hi + 0.5, hi)
        self.width = z.shape[1]
        self.n_trees = n_trees
        self.height = height
        # imported here: river.anomaly takes over a second to import, which a worker
        # start paid whether or not a model had a trusted set to fit
        from river.anomaly import HalfSpaceTrees

        self._trees = HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=z.shape[0],
            limits={j: (float(lo[j]), float(hi[j])) for j in range(self.width)},
            seed=seed,
        )
        learn: Callable[[dict[int, float]], None] = self._trees.learn_one
        for row in z.tolist():
            learn(dict(enumerate(row)))
        self._feature, self._threshold, self._mass = _flatten(self._trees.trees, height)
        self._size_limit = float(self._trees.size_limit)
        self._max_score = float(self._trees._max_score)
        trusted = self.score(z)
        self.threshold = float(np.quantile(trusted, 1.0 - rate))

    @property
    def nodes(self) -> int:
        """Nodes held, all trees together (the bound on this state)."""
        nodes: int = self.n_trees * (2 ** (self.height + 1) - 1)
        return nodes

    def score(self, z: Floats) -> Floats:
        """Scores of a batch, vectorised (the same values as river's ``score_one``)."""
        n = z.shape[0]
        total = np.zeros(n)
        rows = np.arange(n)
        for t in range(self.n_trees):
            node = np.zeros(n, dtype=np.int64)
            live = np.ones(n, dtype=np.bool_)
            pow2 = 1.0
            for _ in range(self.height):
                mass = self._mass[t, node]
                total += np.where(live, mass * pow2, 0.0)
                live &= mass >= self._size_limit
                go_right = z[rows, self._feature[t, node]] >= self._threshold[t, node]
                node = 2 * node + 1 + go_right
                pow2 *= 2.0
            total += np.where(live, self._mass[t, node] * pow2, 0.0)
        out: Floats = 1.0 - total / self._max_score
        return out

    def score_river(self, z: Floats) -> Floats:
        """River's own ``score_one``, record by record (the reference for ``score``)."""
        score_one: Callable[[dict[int, float]], float] = self._trees.score_one
        return np.fromiter(
            (score_one(dict(enumerate(row))) for row in z.tolist()),
            dtype=np.float64,
            count=z.shape[0],
        )


def _flatten(
    trees: list[Any], height: int
) -> tuple[npt.NDArray[np.int64], Floats, Floats]:
    """Each tree as arrays over its nodes in breadth-first order (children of ``i`` at
    ``2i + 1`` and ``2i + 2``): split feature and threshold (internal nodes) and mass."""
    size = 2 ** (height + 1) - 1
    feature = np.zeros((len(trees), size), dtype=np.int64)
    threshold = np.zeros((len(trees), size))
    mass = np.zeros((len(trees), size))
    for t, root in enumerate(trees):
        level = [root]
        index = 0
        for depth in range(height + 1):
            nxt = []
            for node in level:
                mass[t, index] = node.r_mass
                if depth < height:
                    feature[t, index] = node.feature
                    threshold[t, index] = node.threshold
                    nxt.extend(node.children)
                index += 1
            level = nxt
    return feature, threshold, mass
