"""Tests for datanet.convex: the L2 logistic-regression objective, its solver and retrainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import check_grad

from datanet.convex import ConvergenceError, LogRegRetrainer, fit_logreg, judge, objective


def _data(n=60, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int) + (x[:, 1] > 1).astype(int)
    return x, y % c


def _torch_objective_grad(params, x, y, c, l2):
    """The objective's gradient by autograd, independently of the hand-written one."""
    d = x.shape[1]
    theta = torch.tensor(params, requires_grad=True)
    w, b = theta[: c * d].reshape(c, d), theta[c * d :]
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(x) @ w.T + b, torch.from_numpy(y)) + 0.5 * l2 * (theta**2).sum()
    return torch.autograd.grad(loss, theta)[0].numpy()


def test_objective_gradient_matches_autograd_and_finite_differences():
    x, y = _data()
    params = np.random.default_rng(1).normal(size=3 * 5)
    _, grad = objective(params, x, y, 3, 0.1)
    np.testing.assert_allclose(grad, _torch_objective_grad(params, x, y, 3, 0.1), rtol=1e-10, atol=1e-12)
    assert check_grad(lambda p: objective(p, x, y, 3, 0.1)[0], lambda p: objective(p, x, y, 3, 0.1)[1], params) < 1e-5


@pytest.mark.parametrize("l2", [1e-1, 1e-2, 1e-3])
def test_fit_reaches_the_optimum(l2):
    x, y = _data(seed=2)
    fit = fit_logreg(x, y, 3, l2)
    params = np.concatenate([fit.weight.ravel(), fit.bias])
    assert np.abs(_torch_objective_grad(params, x, y, 3, l2)).max() < 1e-7
    assert fit.grad_norm < 1e-6


def test_empty_training_set_gives_the_zero_model():
    x, y = _data()
    fit = fit_logreg(x[:0], y[:0], 3, 1e-2)
    assert not fit.weight.any() and not fit.bias.any()


def test_unconverged_solve_raises():
    x, y = _data()
    with pytest.raises(ConvergenceError, match="gradient max-norm"):
        fit_logreg(x, y, 3, 1e-3, max_iter=2)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_logreg(x, y, 3, 0.0)


def test_judge_by_hand():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 3.5]])
    outcome = judge(logits, np.array([0, 1]))
    np.testing.assert_allclose(outcome.margin, [1.0, -0.5])
    np.testing.assert_allclose(outcome.loss[0], np.log(np.exp(2) + 1 + np.exp(1)) - 2.0)
    assert outcome.accuracy == 0.5


def test_retrainer_uses_only_the_subset():
    x, y = _data(seed=3)
    retrain = LogRegRetrainer(x, y, x[:5], y[:5], 3, l2=1e-2)
    first_half = retrain(np.arange(30))
    expected = judge(fit_logreg(x[:30], y[:30], 3, 1e-2).logits(x[:5]), y[:5])
    np.testing.assert_allclose(first_half.loss, expected.loss, rtol=1e-5)
    assert not np.allclose(retrain(np.arange(30, 60)).loss, first_half.loss)


def test_a_warm_start_reaches_the_same_optimum():
    x, y = _data(seed=4)
    cold = fit_logreg(x[:40], y[:40], 3, 1e-2)
    warm = fit_logreg(x[:40], y[:40], 3, 1e-2, start=fit_logreg(x, y, 3, 1e-2))
    np.testing.assert_allclose(warm.weight, cold.weight, atol=1e-6)
    np.testing.assert_allclose(warm.bias, cold.bias, atol=1e-6)
