"""Label consistency: does a record's label agree with what trusted data says about it?

Two opinions, both fitted on the trusted set (the model's clean training data):

* the *neighbourhood*: for a record ``x`` with label ``y`` and each class ``c``,
  ``d_c(x)`` is the mean distance from ``x`` to its ``k`` nearest trusted
  records of class ``c`` (standardised features; one ``scipy.spatial.cKDTree``
  per class below ``BRUTE_FORCE_COLUMNS`` columns, a matrix product above).
  The *distance ratio* ``d_y(x) / min_{c != y} d_c(x)`` is below 1
  when the record sits nearer its own class, above 1 when nearer another one
  (the "trust score" of Jiang et al., 2018, inverted);
* a *linear model* (``streams.poisoning.linear``, optional): ``-log p(y | x)``
  under a multinomial logistic regression (the mean over the ``FOLDS`` models
  of the cross-fit below).

Each opinion is turned into a rank against the trusted records' own scores,
measured out of sample (the neighbourhood leave-one-out, the linear model
out-of-fold over ``FOLDS`` folds), and the record's *inconsistency* is the
mean of its two ranks (the mean, not the larger: a new record beyond the
trusted maximum of either opinion would otherwise be rarer among trusted
records than among clean new ones, and break the calibration). Its conformal
p-value is the share of trusted records of its label's class at least as
inconsistent (plus one, over ``n_class + 1``): a
clean record exchangeable with the trusted ones of its class has ``P(p <= a)
<= a`` for every level ``a``, so a rare class (the frauds) does not lose more
of its clean records than a common one. So:

* ``p <= label_false_rate`` is *strong* evidence (quarantine on its own): about
  that share of clean records is quarantined by this check. A class with fewer
  than ``1 / label_false_rate - 1`` trusted records cannot be calibrated at
  that level alone and is compared with all trusted records pooled (the bound
  then holds over the classes together); with fewer than that in all, strong
  means "more inconsistent than every trusted record" (at most ``1 / (n + 1)``
  of clean records);
* a larger p-value, up to ``label_weak_rate``, is *weak* evidence: it counts
  when the record's source has more such labels than a clean source would
  (Benjamini-Hochberg per source, ``streams.poisoning.sources``).

Cost per batch: one k-nearest query per class and record, ``FOLDS`` matrix
products. State: the trusted rows in the trees (``trusted_max_rows``), the
``FOLDS`` linear models' weights, and the sorted calibration scores (a few arrays
of trusted size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from streams.poisoning.linear import LinearModel

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_EPS = 1e-9
#: Folds of the linear model's out-of-fold calibration scores.
FOLDS = 5


@dataclass(frozen=True)
class LabelScores:
    """Per record (NaN where the label is not a trusted class): the distance ratio, the
    linear model's ``-log p(label)`` (NaN without it), the conformal p-value, and the index
    of the class the trusted data prefers."""

    ratio: Floats
    nll: Floats
    pvalue: Floats
    preferred: Ints


def _rank(reference: Floats, x: Floats, *, members: bool = False) -> Floats:
    """Share of the other values of ``reference`` (sorted) strictly below each ``x``;
    ``members``: the ``x`` are themselves in ``reference`` (so ``n - 1`` others), which
    puts the reference's own values and new ones on the same scale [0, 1]."""
    others = max(reference.size - (1 if members else 0), 1)
    out: Floats = np.searchsorted(reference, x, side="left") / others
    return out


#: Columns from which neighbours are found by brute force (one matrix product per
#: class) rather than a k-d tree, which degrades towards brute force in high dimension.
BRUTE_FORCE_COLUMNS = 16
#: Distances computed at once by brute force (bounds the temporary matrix: 32 MB).
_CHUNK = 4_000_000


class _Neighbours:
    """The trusted records of one class, and their ``k`` nearest to new points."""

    def __init__(self, rows: Floats) -> None:
        self.rows = rows
        self.size = rows.shape[0]
        self.tree = cKDTree(rows) if rows.shape[1] < BRUTE_FORCE_COLUMNS else None
        self.squares = np.einsum("ij,ij->i", rows, rows)

    def nearest(self, z: Floats, k: int) -> Floats:
        """``len(z) x k`` distances to the ``k`` nearest rows, nearest first."""
        if self.tree is not None:
            d, _ = self.tree.query(z, k=k)
            return np.asarray(d, dtype=np.float64).reshape(z.shape[0], k)
        out = np.empty((z.shape[0], k))
        step = max(1, _CHUNK // max(self.size, 1))
        for start in range(0, z.shape[0], step):
            q = z[start : start + step]
            qq = np.einsum("ij,ij->i", q, q)
            d2 = qq[:, None] + self.squares[None, :] - 2.0 * (q @ self.rows.T)
            part = np.partition(d2, k - 1, axis=1)[:, :k] if k < self.size else d2
            out[start : start + step] = np.sqrt(np.maximum(np.sort(part, axis=1), 0.0))
        return out


class LabelConsistency:
    """Both opinions and their calibration.

    >>> rng = np.random.default_rng(0)
    >>> z = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])
    >>> lc = LabelConsistency(z, ["a"] * 200 + ["b"] * 200, k=5, linear=True, false_rate=0.01)
    >>> s = lc.score(np.array([[0.0, 0.0], [0.0, 0.0]]), ["a", "b"])
    >>> [round(p, 3) for p in s.pvalue.tolist()], lc.classes[int(s.preferred[1])]
    ([0.463, 0.005], 'a')
    """

    def __init__(
        self, z: Floats, keys: Sequence[str], *, k: int, linear: bool, false_rate: float
    ) -> None:
        self.classes: tuple[str, ...] = tuple(sorted(set(keys)))
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.k = k
        own = np.array([self.index[key] for key in keys], dtype=np.int64)
        self.n = int(own.size)
        self._index = [_Neighbours(z[own == i]) for i in range(len(self.classes))]
        ratio = self._ratio(self._distances(z, own), own)
        finite = np.isfinite(ratio)
        self._ratio_ref = np.sort(ratio[finite])
        inconsistency = _rank(self._ratio_ref, np.where(finite, ratio, np.inf), members=True)
        self.linear: list[LinearModel] = []
        self._nll_ref = np.zeros(0)
        if linear:
            nll = self._out_of_fold_nll(z, own)
            self._nll_ref = np.sort(nll)
            inconsistency = (inconsistency + _rank(self._nll_ref, nll, members=True)) / 2
        # Calibration sets: a class with enough trusted records for the strong level is
        # calibrated on its own (Mondrian), the others on all records pooled.
        self._own = own
        self._pooled = np.sort(inconsistency)
        self._by_class: list[Floats] = []
        enough = 1.0 / false_rate - 1.0
        for i in range(len(self.classes)):
            mine = np.sort(inconsistency[own == i])
            self._by_class.append(mine if mine.size >= enough else self._pooled)

    def strong_level(self, false_rate: float) -> float:
        """The p-value at or below which the label check quarantines on its own: with too
        few records to calibrate at ``false_rate``, "beyond every trusted record"."""
        return max(false_rate, 1.0 / (self.n + 1))

    def _out_of_fold_nll(self, z: Floats, own: Ints) -> Floats:
        """Each trusted record's ``-log p(label)`` under the model fitted without its fold;
        the fold models are kept, and a new record's score is their mean, so that it is
        judged by models of the same strength as the calibration scores."""
        fold = np.arange(self.n) % FOLDS
        nll = np.zeros(self.n)
        for f in range(FOLDS):
            test = fold == f
            train = ~test
            if not test.any() or len(set(own[train].tolist())) < 2:
                continue
            model = LinearModel.fit(z[train], own[train], classes=len(self.classes))
            self.linear.append(model)
            nll[test] = -model.log_proba(z[test])[np.arange(int(test.sum())), own[test]]
        return nll

    def _distances(self, z: Floats, own: Ints | None) -> Floats:
        """``n x classes``: mean distance to the k nearest trusted records of each class;
        with ``own`` (leave-one-out, trusted rows), a record's nearest neighbour in its
        own class (itself) is skipped."""
        out = np.full((z.shape[0], len(self.classes)), np.inf)
        if z.shape[0] == 0:
            return out
        for i, index in enumerate(self._index):
            plain = min(self.k, index.size)
            if own is None:
                out[:, i] = index.nearest(z, plain).mean(axis=1)
                continue
            d = index.nearest(z, min(self.k + 1, index.size))
            mine = own == i
            if d.shape[1] >= 2:  # a class of one record has no neighbour but itself: stays inf
                out[mine, i] = d[mine, 1:].mean(axis=1)
            out[~mine, i] = d[~mine, :plain].mean(axis=1)
        return out

    @staticmethod
    def _ratio(d: Floats, own: Ints) -> Floats:
        rows = np.arange(d.shape[0])
        mine = d[rows, own]
        others = d.copy()
        others[rows, own] = np.inf
        with np.errstate(invalid="ignore"):
            ratio: Floats = (mine + _EPS) / (others.min(axis=1) + _EPS)
        return ratio

    def _pvalue(self, inconsistency: Floats, own: Ints) -> Floats:
        out = np.empty(inconsistency.size)
        for i, ref in enumerate(self._by_class):
            mine = own == i
            if mine.any():
                at_least = ref.size - np.searchsorted(ref, inconsistency[mine], side="left")
                out[mine] = (1.0 + at_least) / (ref.size + 1.0)
        return out

    def score(self, z: Floats, keys: Sequence[str]) -> LabelScores:
        """Scores of records with these label keys."""
        n = z.shape[0]
        own = np.array([self.index.get(key, -1) for key in keys], dtype=np.int64)
        known = np.flatnonzero(own >= 0)
        d = self._distances(z, None)
        ratio = np.full(n, np.nan)
        nll = np.full(n, np.nan)
        pvalue = np.full(n, np.nan)
        preferred = np.argmin(d, axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
        if self.linear and n:
            logp = np.mean([m.log_proba(z) for m in self.linear], axis=0)
            preferred = np.argmax(logp, axis=1).astype(np.int64)
        if known.size:
            cls = own[known]
            ratio[known] = self._ratio(d[known], cls)
            inconsistency = _rank(self._ratio_ref, ratio[known])
            if self.linear:
                nll[known] = -logp[known, cls]
                inconsistency = (inconsistency + _rank(self._nll_ref, nll[known])) / 2
            pvalue[known] = self._pvalue(inconsistency, cls)
        return LabelScores(ratio=ratio, nll=nll, pvalue=pvalue, preferred=preferred)
