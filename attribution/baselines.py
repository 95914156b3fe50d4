"""Baseline attribution methods, each an :class:`~attribution.base.Attributor` at the trained model
(the task's last checkpoint): random, gradient dot, gradient cosine, representation similarity,
training loss, and k-NN Shapley (Jia et al., 2019)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from attribution.base import AttributionTask, Attributor, require_finite
from attribution.gradients import SampleGradients


class _AtFinal(Attributor):
    """Holds the task; ``scores`` reloads the final checkpoint and checks the result is finite."""

    def fit(self, task: AttributionTask) -> _AtFinal:
        self._task = task
        return self

    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        task = getattr(self, "_task", None)
        if task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        task.load_final()
        return require_finite(np.asarray(self._scores(task, test_x, test_y), dtype=np.float64), self.name)

    @abstractmethod
    def _scores(self, task: AttributionTask, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` scores at the final checkpoint (already loaded)."""


class RandomScores(_AtFinal):
    """Standard normal scores from a local generator seeded by ``seed`` (default 0)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _scores(self, task, test_x, test_y):
        return np.random.default_rng(self.seed).standard_normal((len(task.train_x), len(test_x)))


class GradientDot(_AtFinal):
    """``∇ℓ_i · ∇ℓ_j`` at the trained model; ``cosine=True`` divides by both norms."""

    def __init__(self, cosine: bool = False) -> None:
        self.cosine = cosine
        self.name = "grad_cosine" if cosine else "grad_dot"

    def _scores(self, task, test_x, test_y):
        grads = SampleGradients(task.model, task.loss_fn)
        train, test = grads(task.train_x, task.train_y), grads(test_x, test_y)
        if self.cosine:
            tiny = torch.finfo(train.dtype).tiny
            train, test = train / train.norm(dim=1, keepdim=True).clamp_min(tiny), test / test.norm(dim=1, keepdim=True).clamp_min(tiny)
        return (train @ test.T).numpy()


def representations(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(n, width)`` inputs of the model's last ``nn.Linear`` (its penultimate representation)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda module, args, output: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0].double()


class RepresentationSimilarity(_AtFinal):
    """Cosine similarity of penultimate representations (label-blind)."""

    name = "representation_similarity"

    def _scores(self, task, test_x, test_y):
        train, test = representations(task.model, task.train_x), representations(task.model, test_x)
        return (nn.functional.normalize(train, dim=1) @ nn.functional.normalize(test, dim=1).T).numpy()


class TrainingLoss(_AtFinal):
    """Minus each training sample's loss at the trained model, the same for every test sample
    (a hard-to-fit sample is suspect)."""

    name = "training_loss"

    def _scores(self, task, test_x, test_y):
        with torch.no_grad():
            losses = nn.functional.cross_entropy(task.model(task.train_x), task.train_y, reduction="none").double()
        return np.repeat(-losses.numpy()[:, None], len(test_x), axis=1)


class KNNShapley(_AtFinal):
    """Exact Shapley values of each training sample for a ``k``-nearest-neighbour classifier's
    utility on each test sample (Jia et al., 2019, Theorem 1), in penultimate representations.

    Args:
        k: neighbours (default 5).
    """

    name = "knn_shapley"

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def _scores(self, task, test_x, test_y):
        train, test = representations(task.model, task.train_x), representations(task.model, test_x)
        n = len(train)
        order = torch.cdist(test, train).argsort(dim=1).numpy()  # (n_test, n_train), nearest first
        match = (task.train_y.numpy()[order] == test_y.numpy()[:, None]).astype(np.float64)
        values = np.empty_like(match)
        values[:, -1] = match[:, -1] / n
        rank = np.arange(1, n)  # 1-based rank of position i (0-based i = rank - 1)
        steps = (match[:, :-1] - match[:, 1:]) / self.k * np.minimum(self.k, rank) / rank
        # s_i = s_{i+1} + step_i, from the farthest backwards: a reversed cumulative sum.
        values[:, :-1] = values[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
        scores = np.empty_like(values)
        np.put_along_axis(scores, order, values, axis=1)
        return scores.T
