"""Tests for attribution.tracin.CaptumTracIn against a hand-written TracIn reference.

Reference: score[i, j] = sum over checkpoints t of lr_t * grad_theta l(train_i) . grad_theta l(test_j),
with per-sample gradients from torch.autograd and l the summed cross-entropy of one sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attribution import AttributionTask, CaptumTracIn
from datanet.models import build_model
from datanet.training import load_checkpoint

N_FEATURES, N_CLASSES = 4, 3
LEARNING_RATES = (0.1, 0.05, 0.2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g) * 2.0 + 1.0
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return x, y


def _checkpoints(model_name: str, train_x: torch.Tensor, directory) -> tuple[nn.Module, list]:
    """A model and three checkpoints of random weights, each with its own learning rate."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(model_name, train_x, N_CLASSES)
    paths = []
    for epoch, lr in enumerate(LEARNING_RATES, 1):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        path = directory / f"epoch_{epoch:03d}.pt"
        torch.save({"state_dict": model.state_dict(), "learning_rate": lr, "epoch": epoch}, path)
        paths.append(path)
    return model, paths


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x[None]), y[None], reduction="sum")
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


def _reference(model, paths, train_x, train_y, test_x, test_y) -> np.ndarray:
    scores = np.zeros((len(train_x), len(test_x)))
    for path in paths:
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["state_dict"])
        lr = state["learning_rate"]
        g_train = torch.stack([_grad(model, x, y) for x, y in zip(train_x, train_y)])
        g_test = torch.stack([_grad(model, x, y) for x, y in zip(test_x, test_y)])
        scores += lr * (g_train @ g_test.T).numpy()
    return scores


def _tracin(model, paths, train_x, train_y, batch_size=256) -> CaptumTracIn:
    task = AttributionTask(model, train_x, train_y, paths, load_checkpoint)
    return CaptumTracIn(batch_size=batch_size).fit(task)


@pytest.mark.parametrize("model_name", ["logreg", "mlp"])
@pytest.mark.parametrize("batch_size", [256, 3])
def test_scores_match_the_hand_reference(tmp_path, model_name, batch_size):
    train_x, train_y = _data(7, seed=1)
    test_x, test_y = _data(3, seed=2)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    scores = _tracin(model, paths, train_x, train_y, batch_size).scores(test_x, test_y)
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (7, 3)
    assert scores.dtype == np.float64
    expected = _reference(model, paths, train_x, train_y, test_x, test_y)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_orientation_is_train_by_test(tmp_path):
    """Scoring a single test sample gives one column, and column j equals scoring test j alone."""
    train_x, train_y = _data(5, seed=3)
    test_x, test_y = _data(4, seed=4)
    model, paths = _checkpoints("logreg", train_x, tmp_path)
    tracin = _tracin(model, paths, train_x, train_y)
    full = tracin.scores(test_x, test_y)
    assert full.shape == (5, 4)
    for j in range(4):
        column = tracin.scores(test_x[j : j + 1], test_y[j : j + 1])
        assert column.shape == (5, 1)
        np.testing.assert_allclose(column[:, 0], full[:, j], rtol=1e-5, atol=1e-8)
    # Dropping a training sample drops its row, leaving the others unchanged.
    fewer = _tracin(model, paths, train_x[1:], train_y[1:]).scores(test_x, test_y)
    assert fewer.shape == (4, 4)
    np.testing.assert_allclose(fewer, full[1:], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("model_name", ["logreg", "mlp"])
def test_self_influence_is_positive(tmp_path, model_name):
    train_x, train_y = _data(6, seed=5)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    scores = _tracin(model, paths, train_x, train_y).scores(train_x, train_y)
    assert scores.shape == (6, 6)
    assert (np.diag(scores) > 0).all()
    # TracIn with the same checkpoints on both sides is symmetric.
    np.testing.assert_allclose(scores, scores.T, rtol=1e-4, atol=1e-7)
    # Cauchy-Schwarz per checkpoint summed: |s_ij| <= sqrt(s_ii s_jj).
    bound = np.sqrt(np.outer(np.diag(scores), np.diag(scores)))
    assert (np.abs(scores) <= bound * (1 + 1e-4) + 1e-7).all()


def test_a_copy_of_a_test_sample_in_training_helps_it(tmp_path):
    train_x, train_y = _data(6, seed=6)
    test_x, test_y = _data(3, seed=7)
    # Training row 6 is an exact copy of test sample 1.
    train_x = torch.cat([train_x, test_x[1:2]])
    train_y = torch.cat([train_y, test_y[1:2]])
    model, paths = _checkpoints("mlp", train_x, tmp_path)
    scores = _tracin(model, paths, train_x, train_y).scores(test_x, test_y)
    assert scores[6, 1] > 0


def test_learning_rate_scales_the_scores(tmp_path):
    train_x, train_y = _data(4, seed=8)
    test_x, test_y = _data(2, seed=9)
    model, paths = _checkpoints("logreg", train_x, tmp_path)
    base = _tracin(model, paths, train_x, train_y).scores(test_x, test_y)
    for path in paths:
        state = torch.load(path, weights_only=True)
        state["learning_rate"] *= 3.0
        torch.save(state, path)
    tripled = _tracin(model, paths, train_x, train_y).scores(test_x, test_y)
    np.testing.assert_allclose(tripled, 3.0 * base, rtol=1e-5, atol=1e-8)


def test_scores_before_fit_raise():
    with pytest.raises(RuntimeError, match="fit"):
        CaptumTracIn().scores(torch.zeros(1, N_FEATURES), torch.zeros(1, dtype=torch.long))
