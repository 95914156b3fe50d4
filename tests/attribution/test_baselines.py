"""Tests for attribution.baselines and attribution.projection against hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from attribution import (AttributionError, AttributionTask, FastTracIn, GradientDot, KNNShapley, ProjectedTracIn,
                         RandomScores, RepresentationSimilarity, TrainingLoss, require_finite)
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, C = 3, 3


def _task(tmp_path, n=12, seed=0, checkpoints=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randint(0, C, (n,), generator=g)
    model = nn.Sequential(nn.Linear(D, C)).double()
    paths = []
    for t in range(checkpoints):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        paths.append(tmp_path / f"c{t}.pt")
        torch.save({"state_dict": model.state_dict(), "learning_rate": 0.5 + t}, paths[-1])
    return AttributionTask(model, x, y, paths, load_checkpoint)


def _logreg_grads(model, x, y):
    """(p - e_y) ⊗ [x, 1], parameters ordered W row-major then b."""
    with torch.no_grad():
        p = softmax(model(x).numpy(), axis=1)
    p[np.arange(len(y)), y.numpy()] -= 1.0
    return np.concatenate([np.einsum("nc,nd->ncd", p, x.numpy()).reshape(len(x), -1), p], axis=1)


def test_gradient_dot_and_cosine_by_hand(tmp_path):
    task = _task(tmp_path)
    test_x, test_y = task.train_x[:4] + 0.3, task.train_y[:4]
    g_train, g_test = _logreg_grads(task.model, task.train_x, task.train_y), _logreg_grads(task.model, test_x, test_y)
    np.testing.assert_allclose(GradientDot().fit(task).scores(test_x, test_y), g_train @ g_test.T, rtol=1e-10)
    norms = np.outer(np.linalg.norm(g_train, axis=1), np.linalg.norm(g_test, axis=1))
    np.testing.assert_allclose(GradientDot(cosine=True).fit(task).scores(test_x, test_y), g_train @ g_test.T / norms, rtol=1e-10)


def test_representation_similarity_of_a_linear_model_is_input_cosine(tmp_path):
    task = _task(tmp_path)
    x = task.train_x.numpy()
    expected = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x[:5] / np.linalg.norm(x[:5], axis=1, keepdims=True)).T
    np.testing.assert_allclose(RepresentationSimilarity().fit(task).scores(task.train_x[:5], task.train_y[:5]), expected, rtol=1e-10)


def test_training_loss_is_minus_the_loss_in_every_column(tmp_path):
    task = _task(tmp_path)
    with torch.no_grad():
        p = softmax(task.model(task.train_x).numpy(), axis=1)
    losses = -np.log(p[np.arange(12), task.train_y.numpy()])
    scores = TrainingLoss().fit(task).scores(task.train_x[:3], task.train_y[:3])
    np.testing.assert_allclose(scores, np.repeat(-losses[:, None], 3, axis=1), rtol=1e-10)


def _knn_utility(train, labels, test, label, subset, k):
    if not subset:
        return 0.0
    subset = sorted(subset, key=lambda i: np.linalg.norm(train[i] - test))
    return sum(labels[i] == label for i in subset[:k]) / k


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_shapley_matches_brute_force_shapley(tmp_path, k):
    task = _task(tmp_path, n=6, seed=1)
    test_x, test_y = task.train_x[:2] + 0.5, task.train_y[:2]
    scores = KNNShapley(k).fit(task).scores(test_x, test_y)
    train, labels = task.train_x.numpy(), task.train_y.numpy()
    for j in range(2):
        expected = np.zeros(6)
        for order in itertools.permutations(range(6)):
            for pos, i in enumerate(order):
                before = list(order[:pos])
                expected[i] += (_knn_utility(train, labels, test_x[j].numpy(), test_y[j].item(), before + [i], k)
                                - _knn_utility(train, labels, test_x[j].numpy(), test_y[j].item(), before, k))
        np.testing.assert_allclose(scores[:, j], expected / math.factorial(6), atol=1e-12)


def test_random_is_seeded(tmp_path):
    task = _task(tmp_path)
    a = RandomScores(seed=1).fit(task).scores(task.train_x[:3], task.train_y[:3])
    np.testing.assert_array_equal(a, RandomScores(seed=1).fit(task).scores(task.train_x[:3], task.train_y[:3]))
    assert not np.allclose(a, RandomScores(seed=2).fit(task).scores(task.train_x[:3], task.train_y[:3]))


def test_projected_tracin_approximates_exact_tracin_and_is_seeded(tmp_path):
    task = _task(tmp_path, n=10, checkpoints=2)
    test_x, test_y = task.train_x[:4] * 0.7, task.train_y[:4]
    exact = FastTracIn().fit(task).scores(test_x, test_y)
    scale = np.sqrt(np.outer(FastTracIn().fit(task).self_influence(), np.diag(FastTracIn().fit(
        AttributionTask(task.model, test_x, test_y, task.checkpoints, load_checkpoint)).scores(test_x, test_y))))
    projected = ProjectedTracIn(dim=8192, seed=3).fit(task).scores(test_x, test_y)
    # Johnson-Lindenstrauss: the error is ~ sqrt(2 / dim) of the norms' product, about 0.016 here.
    assert np.abs(projected - exact).max() < 0.08 * scale.max()
    assert not np.allclose(projected, exact)
    np.testing.assert_array_equal(projected, ProjectedTracIn(dim=8192, seed=3).fit(task).scores(test_x, test_y))
    assert not np.array_equal(projected, ProjectedTracIn(dim=8192, seed=4).fit(task).scores(test_x, test_y))


def test_nan_scores_are_refused():
    with pytest.raises(AttributionError, match="grad_dot: 1 of 4 scores are NaN"):
        require_finite(np.array([[1.0, np.nan], [0.0, 1.0]]), "grad_dot")


def test_use_before_fit_and_bad_settings(tmp_path):
    for method in (GradientDot(), ProjectedTracIn()):
        with pytest.raises(RuntimeError, match="before fit"):
            method.scores(torch.zeros(1, D), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="k must be"):
        KNNShapley(0)
    with pytest.raises(ValueError, match="dim must be"):
        ProjectedTracIn(dim=0)
