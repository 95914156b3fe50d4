"""Tests for attribution.trak: the kernel against a naive P x P reference, projection, the large-ridge
limit (gradient dot), determinism and the refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from attribution import AttributionError, AttributionTask, GradientDot
from attribution.trak import TRAK
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, M, D, H, C = 14, 5, 3, 4, 3


def _task(directory, seed=0) -> tuple[AttributionTask, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x, test_x = torch.randn(N, D, generator=generator), torch.randn(M, D, generator=generator)
    y, test_y = torch.randint(0, C, (N,), generator=generator), torch.randint(0, C, (M,), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C))
    path = directory / f"final_{seed}.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    return AttributionTask(model, x, y, [path], load_checkpoint), (test_x, test_y)


def _loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, P) per-sample loss gradients, one autograd call per sample, in float64."""
    model = copy.deepcopy(model).double()
    rows = []
    for xi, yi in zip(x, y):
        loss = nn.functional.cross_entropy(model(xi[None].double()), yi[None], reduction="sum")
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]))
    return torch.stack(rows)


def _naive(task, test, ridge, projection=None) -> np.ndarray:
    """G (GᵀG + λI)⁻¹ gᵀ formed in parameter space, λ = ridge · mean ‖g_i‖²."""
    task.load_final()
    g_train, g_test = _loop_gradients(task.model, task.train_x, task.train_y), _loop_gradients(task.model, *test)
    if projection is not None:
        g_train, g_test = g_train @ projection, g_test @ projection
    lam = ridge * float((g_train**2).sum(dim=1).mean())
    fisher = g_train.T @ g_train + lam * torch.eye(g_train.shape[1], dtype=torch.float64)
    return (g_train @ torch.linalg.solve(fisher, g_test.T)).numpy()


@pytest.mark.parametrize("ridge", [0.01, 3.0])
def test_kernel_matches_naive_parameter_space_formula(tmp_path, ridge):
    task, test = _task(tmp_path)
    scores = TRAK(ridge).fit(task).scores(*test)
    assert scores.shape == (N, M) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, _naive(task, test, ridge), rtol=1e-6, atol=1e-10)


def test_projected_kernel_uses_a_seeded_gaussian_matrix(tmp_path):
    task, test = _task(tmp_path)
    n_params = sum(p.numel() for p in task.model.parameters())
    projection = torch.randn(n_params, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64) / 6**0.5
    method = TRAK(1.0, dim=6, seed=7)
    np.testing.assert_allclose(method.fit(task).scores(*test), _naive(task, test, 1.0, projection), rtol=1e-6, atol=1e-10)
    assert method.name == "trak_p6"
    assert not np.array_equal(TRAK(1.0, dim=6, seed=8).fit(task).scores(*test), method.scores(*test))


def test_large_ridge_tends_to_gradient_dot(tmp_path):
    task, test = _task(tmp_path)
    method = TRAK(1e9).fit(task)
    limit = method.scores(*test) * method.diagnostics["lam"]
    np.testing.assert_allclose(limit, GradientDot().fit(task).scores(*test), rtol=1e-6)


def test_deterministic_and_leaves_inputs_alone(tmp_path):
    task, test = _task(tmp_path)
    before = test[0].clone()
    first = TRAK().fit(task).scores(*test)
    assert np.array_equal(first, TRAK().fit(task).scores(*test))
    assert torch.equal(test[0], before)


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="ridge"):
        TRAK(0.0)
    with pytest.raises(ValueError, match="dim"):
        TRAK(dim=0)
    task, test = _task(tmp_path)
    with pytest.raises(RuntimeError, match="before fit"):
        TRAK().scores(*test)
    task.loss_fn = lambda logits, y: (logits * 0).sum()  # every gradient vanishes
    with pytest.raises(AttributionError, match="zero"):
        TRAK().fit(task)
