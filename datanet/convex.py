"""Convergent L2-regularized multinomial logistic regression: full-batch L-BFGS to a tolerance.

Influence functions assume the model sits at the optimum of a strictly convex objective; SGD for
a few epochs does not get there. This solver minimises, in float64,

    f(W, b) = mean_i CE(W x_i + b, y_i) + (l2 / 2) (‖W‖² + ‖b‖²)

(every parameter penalised, as ``weight_decay`` does in ``torch.optim.SGD``) with SciPy's L-BFGS-B until the gradient's max-norm is below ``tol``, and raises when it does not
converge. :class:`LogRegRetrainer` retrains it on index subsets (the ground-truth retraining of
attribution), returning per-test-sample loss and margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from threadpoolctl import threadpool_limits

from datanet.errors import DatanetError


class ConvergenceError(DatanetError):
    """The solver stopped before reaching its gradient tolerance."""


@dataclass(frozen=True)
class LogRegFit:
    """``weight`` (n_classes, n_features) and ``bias`` (n_classes,) at the optimum; ``grad_norm`` is
    the max-norm of the objective's gradient there."""

    weight: np.ndarray
    bias: np.ndarray
    grad_norm: float
    iterations: int

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


def objective(params: np.ndarray, x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple[float, np.ndarray]:
    """``f`` and its gradient at flat ``params`` = ``[W.ravel(), b]``."""
    d = x.shape[1]
    weight, bias = params[: n_classes * d].reshape(n_classes, d), params[n_classes * d :]
    value = 0.5 * l2 * float((params**2).sum())
    grad_w, grad_b = l2 * weight, l2 * bias
    if len(y):
        logits = x @ weight.T + bias
        value -= float(log_softmax(logits, axis=1)[np.arange(len(y)), y].mean())
        residual = softmax(logits, axis=1)
        residual[np.arange(len(y)), y] -= 1.0
        residual /= len(y)  # (n, n_classes) d mean-loss / d logits
        grad_w = grad_w + residual.T @ x
        grad_b = grad_b + residual.sum(axis=0)
    return value, np.concatenate([grad_w.ravel(), grad_b])


def fit_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, tol: float = 1e-8, max_iter: int = 5000,
               start: LogRegFit | None = None) -> LogRegFit:
    """Minimise ``f`` from ``start`` (default zero weights); the optimum is unique for ``l2 > 0``,
    so the start changes only the iteration count, and no seed is needed."""
    if not 0 < l2 < np.inf:  # NaN fails too
        raise ValueError(f"l2 must be > 0 and finite for a unique optimum, got {l2}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    start = np.zeros(n_classes * (x.shape[1] + 1)) if start is None else np.concatenate([start.weight.ravel(), start.bias])
    # One BLAS thread: these products are small, and threaded OpenBLAS on shared cores ran 40x slower.
    with threadpool_limits(1, user_api="blas"):
        result = minimize(objective, start, args=(x, y, n_classes, l2), jac=True, method="L-BFGS-B",
                          options={"gtol": tol, "ftol": 0.0, "maxiter": max_iter, "maxcor": 30})
    grad_norm = float(np.abs(result.jac).max())
    if not grad_norm <= tol * 100:  # a NaN gradient has not converged
        raise ConvergenceError(f"L-BFGS stopped at gradient max-norm {grad_norm:.3g} > {tol * 100:.3g} "
                               f"after {result.nit} iterations: {result.message}")
    d = x.shape[1]
    return LogRegFit(result.x[: n_classes * d].reshape(n_classes, d), result.x[n_classes * d :], grad_norm, int(result.nit))


@dataclass(frozen=True)
class Outcome:
    """A retrained model judged on the test set: per-test-sample ``loss`` and ``margin``
    (true-class logit minus the largest other logit), both ``(n_test,)``, and ``accuracy``."""

    loss: np.ndarray
    margin: np.ndarray
    accuracy: float


def judge(logits: np.ndarray, y: np.ndarray) -> Outcome:
    """The :class:`Outcome` of ``(n, n_classes)`` logits against class indices ``y``."""
    rows = np.arange(len(y))
    loss = -log_softmax(logits, axis=1)[rows, y]
    others = logits.copy()
    others[rows, y] = -np.inf
    return Outcome(loss, logits[rows, y] - others.max(axis=1), float((logits.argmax(axis=1) == y).mean()))


@dataclass(frozen=True)
class LogRegRetrainer:
    """Retrains :func:`fit_logreg` on a subset of the training rows; picklable for worker processes.

    ``seed`` is accepted for the retrainer protocol and ignored: the optimum is unique. Each
    retrain starts from the full-data optimum (computed once per process), which roughly halves
    the L-BFGS iterations without changing the answer beyond ``tol``.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    l2: float = 1e-2
    tol: float = 1e-8

    @cached_property
    def full_fit(self) -> LogRegFit:
        return fit_logreg(self.train_x, self.train_y, self.n_classes, self.l2, self.tol)

    def __call__(self, indices: np.ndarray, seed: int = 0) -> Outcome:
        fit = fit_logreg(self.train_x[indices], self.train_y[indices], self.n_classes, self.l2, self.tol, start=self.full_fit)
        return judge(fit.logits(np.asarray(self.test_x, dtype=np.float64)), np.asarray(self.test_y))
