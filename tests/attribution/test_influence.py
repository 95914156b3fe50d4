"""Tests for attribution.influence: a hand-built logistic-regression Hessian, CG vs exact, actual
leave-one-out retraining, and the refusals (indefinite Hessian, unconverged CG, too many parameters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from attribution import AttributionError, AttributionTask, InfluenceFunction
from datanet.convex import fit_logreg, judge
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D, C, L2 = 80, 3, 3, 0.05


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    y = np.argmax(x @ rng.normal(size=(D, C)) + rng.normal(size=(N, C)), axis=1)
    return x, y


def _task(x, y, directory, weight_decay=L2) -> tuple[AttributionTask, object]:
    """A converged logistic regression saved as the task's one checkpoint."""
    fit = fit_logreg(x, y, C, L2)
    model = nn.Sequential(nn.Linear(D, C)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(fit.weight))
        model[0].bias.copy_(torch.from_numpy(fit.bias))
    path = directory / "final.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    task = AttributionTask(model, torch.from_numpy(x), torch.from_numpy(y), [path], load_checkpoint, weight_decay=weight_decay)
    return task, fit


def _hand_influence(fit, x, y, test_x, test_y) -> np.ndarray:
    """(1/n) g_i^T H^-1 g_j with the logistic-regression gradient (p - e_y) ⊗ [x, 1] and Hessian
    mean (diag(p) - p p^T) ⊗ [x, 1][x, 1]^T + l2 I, parameters ordered W row-major then b."""

    def grads(xs, ys):
        p = softmax(fit.logits(xs), axis=1)
        p[np.arange(len(ys)), ys] -= 1.0
        return np.concatenate([np.einsum("nc,nd->ncd", p, xs).reshape(len(xs), -1), p], axis=1)

    p = softmax(fit.logits(x), axis=1)
    hessian = np.zeros((C * (D + 1), C * (D + 1)))
    for pi, xi in zip(p, x):
        curvature = np.diag(pi) - np.outer(pi, pi)
        blocks = np.block([[np.kron(curvature, np.outer(xi, xi)), np.kron(curvature, xi[None]).T],
                           [np.kron(curvature, xi[None]), curvature]])
        hessian += blocks / len(x)
    hessian += L2 * np.eye(len(hessian))
    return grads(x, y) @ np.linalg.solve(hessian, grads(test_x, test_y).T) / len(x)


@pytest.mark.parametrize("structured", [True, False])
def test_exact_matches_the_hand_built_hessian(tmp_path, structured):
    x, y = _data()
    test_x, test_y = _data(seed=1)
    task, fit = _task(x, y, tmp_path)
    scores = InfluenceFunction(structured=structured).fit(task).scores(torch.from_numpy(test_x[:7]), torch.from_numpy(test_y[:7]))
    assert scores.shape == (N, 7)
    np.testing.assert_allclose(scores, _hand_influence(fit, x, y, test_x[:7], test_y[:7]), rtol=1e-6, atol=1e-12)


def test_cg_matches_exact_and_reports_its_residual(tmp_path):
    x, y = _data(seed=2)
    task, _ = _task(x, y, tmp_path)
    test = torch.from_numpy(x[:9]), torch.from_numpy(y[:9])
    exact = InfluenceFunction().fit(task).scores(*test)
    cg = InfluenceFunction("cg", cg_tol=1e-10)
    approx = cg.fit(task).scores(*test)
    np.testing.assert_allclose(approx, exact, rtol=1e-6, atol=1e-9 * np.abs(exact).max())
    assert cg.diagnostics["cg_max_relative_residual"] < 1e-8


def test_predicts_actual_leave_one_out_retraining(tmp_path):
    x, y = _data(seed=3)
    task, fit = _task(x, y, tmp_path)
    test_x, test_y = _data(seed=4)
    scores = InfluenceFunction().fit(task).scores(torch.from_numpy(test_x), torch.from_numpy(test_y))
    full = judge(fit.logits(test_x), test_y).loss.mean()
    removed = range(0, N, 8)
    actual = [judge(fit_logreg(np.delete(x, i, 0), np.delete(y, i), C, L2).logits(test_x), test_y).loss.mean() - full
              for i in removed]
    predicted = scores[list(removed)].mean(axis=1)
    assert np.corrcoef(predicted, actual)[0, 1] > 0.99
    # Dropping a sample also reweights the others' mean loss by n/(n-1), a shift common to all
    # removals that the first-order influence leaves out; compare the centred effects.
    actual = np.asarray(actual)
    np.testing.assert_allclose(predicted - predicted.mean(), actual - actual.mean(), atol=0.1 * np.abs(actual).max())


def test_an_indefinite_hessian_is_refused(tmp_path):
    x, y = _data(seed=5)
    task, _ = _task(x, y, tmp_path, weight_decay=-1.0)
    with pytest.raises(AttributionError, match="not positive definite.*raise damping"):
        InfluenceFunction().fit(task)
    with pytest.raises(AttributionError, match="non-positive curvature"):
        InfluenceFunction("cg").fit(task).scores(torch.from_numpy(x[:3]), torch.from_numpy(y[:3]))


def test_unconverged_cg_is_refused(tmp_path):
    x, y = _data(seed=6)
    task, _ = _task(x, y, tmp_path)
    with pytest.raises(AttributionError, match="CG stopped at relative residual"):
        InfluenceFunction("cg", cg_max_iter=1).fit(task).scores(torch.from_numpy(x[:3]), torch.from_numpy(y[:3]))


def test_bad_settings_are_refused(tmp_path):
    x, y = _data(seed=7)
    task, _ = _task(x, y, tmp_path)
    with pytest.raises(ValueError, match="12 parameters > max_params=5"):
        InfluenceFunction(max_params=5).fit(task)
    with pytest.raises(ValueError, match="solver"):
        InfluenceFunction("lissa")
    with pytest.raises(ValueError, match="damping"):
        InfluenceFunction(damping=-1.0)
