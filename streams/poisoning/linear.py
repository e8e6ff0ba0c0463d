"""A multinomial logistic regression fitted to the trusted set (numpy and scipy only).

The label check's second opinion (``streams.poisoning.label_consistency``): a
linear model sees what a neighbourhood misses when classes overlap locally but
separate along a direction (the breast-cancer data is such a case), and the
neighbourhood sees what a linear model misses (classes in several clumps).

The objective is scikit-learn's ``LogisticRegression(C=1)`` on the
standardised encoded features: the summed log loss plus ``|W|^2 / 2`` (the
intercepts are not penalised), minimised with L-BFGS from zero weights, so the
fit is deterministic. Size: ``(columns + 1) * classes`` numbers; a fit costs
at most ``MAX_ITER`` gradient evaluations over the trusted rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import log_softmax

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

MAX_ITER = 300


class LinearModel:
    """Weights ``W`` (columns x classes) and intercepts ``b`` (classes).

    >>> rng = np.random.default_rng(0)
    >>> z = np.vstack([rng.normal(-2, 1, (100, 2)), rng.normal(2, 1, (100, 2))])
    >>> m = LinearModel.fit(z, np.repeat([0, 1], 100), classes=2)
    >>> m.log_proba(np.array([[-2.0, -2.0], [2.0, 2.0]])).argmax(axis=1).tolist()
    [0, 1]
    """

    def __init__(self, weights: Floats, intercepts: Floats) -> None:
        self.weights = weights
        self.intercepts = intercepts

    @classmethod
    def fit(cls, z: Floats, y: Ints, *, classes: int, l2: float = 1.0) -> LinearModel:
        n, d = z.shape
        onehot = np.zeros((n, classes))
        onehot[np.arange(n), y] = 1.0

        def loss(theta: Floats) -> tuple[float, Floats]:
            w = theta[: d * classes].reshape(d, classes)
            b = theta[d * classes :]
            logp = log_softmax(z @ w + b, axis=1)
            value = -float(np.sum(logp * onehot)) + 0.5 * l2 * float(np.sum(w * w))
            residual = np.exp(logp) - onehot
            grad_w = z.T @ residual + l2 * w
            grad_b = residual.sum(axis=0)
            return value, np.concatenate([grad_w.ravel(), grad_b])

        result = minimize(
            loss,
            np.zeros(d * classes + classes),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": MAX_ITER},
        )
        theta = np.asarray(result.x, dtype=np.float64)
        return cls(theta[: d * classes].reshape(d, classes), theta[d * classes :])

    def log_proba(self, z: Floats) -> Floats:
        out: Floats = log_softmax(z @ self.weights + self.intercepts, axis=1)
        return out
