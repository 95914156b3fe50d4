"""Tests for attribution.gauss_newton: the kernel-space solve against a naive parameter-space GGN,
rank truncation, agreement with exact influence functions where GGN = Hessian (logistic
regression), the large-ridge limit, and the refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from attribution import AttributionError, AttributionTask, GradientDot, InfluenceFunction
from attribution.gauss_newton import GaussNewtonInfluence
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, M, D, C = 14, 5, 3, 3


def _task(directory, hidden: int | None = 4, certain: bool = False):
    generator = torch.Generator().manual_seed(0)
    x, test_x = torch.randn(N, D, generator=generator, dtype=torch.float64), torch.randn(M, D, generator=generator, dtype=torch.float64)
    y, test_y = torch.randint(0, C, (N,), generator=generator), torch.randint(0, C, (M,), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = [nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, C)] if hidden else [nn.Linear(D, C)]
        model = nn.Sequential(*layers).double()
    if certain:  # every prediction is class 0 with probability exactly 1: zero curvature
        with torch.no_grad():
            model[-1].weight.zero_()
            model[-1].bias.copy_(torch.tensor([1e4, 0.0, 0.0]))
    path = directory / "final.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    return AttributionTask(model, x, y, [path], load_checkpoint), (test_x, test_y)


def _naive(task, test, ridge, rank) -> np.ndarray:
    """G (Σ_i J_iᵀ Λ_i^(rank) J_i + λI)⁻¹ gᵀ in parameter space, from per-sample autograd Jacobians."""
    task.load_final()
    model = copy.deepcopy(task.model)
    params = list(model.parameters())

    def flat_grad(out: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params, retain_graph=True)])

    def loss_grads(x, y):
        return torch.stack([flat_grad(nn.functional.cross_entropy(model(xi[None]), yi[None], reduction="sum")) for xi, yi in zip(x, y)])

    hessian = 0
    for xi in task.train_x:
        logits = model(xi[None])[0]
        jac = torch.stack([flat_grad(logits[c]) for c in range(C)])  # (C, P)
        p = torch.softmax(logits.detach(), dim=0)
        mu, v = torch.linalg.eigh(torch.diag(p) - torch.outer(p, p))
        kept = (v[:, -rank:] * mu[-rank:].clamp_min(0)) @ v[:, -rank:].T
        hessian = hessian + jac.T @ kept @ jac
    lam = ridge * float(torch.trace(hessian)) / N
    g_train, g_test = loss_grads(task.train_x, task.train_y), loss_grads(*test)
    return (g_train @ torch.linalg.solve(hessian + lam * torch.eye(len(hessian), dtype=torch.float64), g_test.T)).numpy()


@pytest.mark.parametrize("rank", [1, 2, C])
def test_kernel_solve_matches_naive_parameter_space_ggn(tmp_path, rank):
    task, test = _task(tmp_path)
    scores = GaussNewtonInfluence(0.1, rank).fit(task).scores(*test)
    assert scores.shape == (N, M) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, _naive(task, test, 0.1, rank), rtol=1e-7, atol=1e-12)


def test_equals_exact_influence_where_ggn_is_the_hessian(tmp_path):
    task, test = _task(tmp_path, hidden=None)  # logistic regression: the CE Hessian is exactly JᵀΛJ
    method = GaussNewtonInfluence(0.05, rank=C).fit(task)
    exact = InfluenceFunction("exact", damping=method.diagnostics["lam"] / N).fit(task).scores(*test)
    np.testing.assert_allclose(method.scores(*test), exact, rtol=1e-7, atol=1e-12)


def test_large_ridge_tends_to_gradient_dot_and_is_deterministic(tmp_path):
    task, test = _task(tmp_path)
    method = GaussNewtonInfluence(1e9).fit(task)
    scores = method.scores(*test)
    np.testing.assert_allclose(scores * method.diagnostics["lam"], GradientDot().fit(task).scores(*test), rtol=1e-6)
    assert np.array_equal(scores, GaussNewtonInfluence(1e9).fit(task).scores(*test))


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="ridge"):
        GaussNewtonInfluence(0.0)
    with pytest.raises(ValueError, match="rank"):
        GaussNewtonInfluence(rank=0)
    task, test = _task(tmp_path)
    with pytest.raises(RuntimeError, match="before fit"):
        GaussNewtonInfluence().scores(*test)
    with pytest.raises(ValueError, match="max_kernel"):
        GaussNewtonInfluence(rank=2, max_kernel=2 * N - 1).fit(task)
    certain, _ = _task(tmp_path, certain=True)
    with pytest.raises(AttributionError, match="zero"):
        GaussNewtonInfluence().fit(certain)
