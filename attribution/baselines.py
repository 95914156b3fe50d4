"""Baseline attribution methods, each an :class:`~attribution.base.Attributor` at the trained model
(the task's last checkpoint): random, gradient dot, gradient cosine, representation similarity,
training loss, and k-NN Shapley (Jia et al., 2019)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from attribution.base import AttributionTask, Attributor, Inputs, forward, n_samples, per_sample_losses, require_finite
from attribution.gradients import SampleGradients, require_per_sample


class _AtFinal(Attributor):
    """Holds a copy of the task at its final checkpoint; ``scores`` checks the result is finite."""

    def fit(self, task: AttributionTask) -> _AtFinal:
        self._task = task.own_copy()
        self._task.load_final()
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        task = getattr(self, "_task", None)
        if task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        return require_finite(np.asarray(self._scores(task, test_x, test_y), dtype=np.float64), self.name)

    @abstractmethod
    def _scores(self, task: AttributionTask, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` scores at the final checkpoint (already loaded)."""


class RandomScores(_AtFinal):
    """Standard normal scores from a local generator seeded by ``seed`` (default 0)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _scores(self, task, test_x, test_y):
        return np.random.default_rng(self.seed).standard_normal((task.n_train, n_samples(test_x)))


class GradientDot(_AtFinal):
    """``∇ℓ_i · ∇ℓ_j`` at the trained model; ``cosine=True`` divides by both norms."""

    def __init__(self, cosine: bool = False) -> None:
        self.cosine = cosine
        self.name = "grad_cosine" if cosine else "grad_dot"

    def fit(self, task: AttributionTask) -> GradientDot:
        super().fit(task)
        require_per_sample(self._task.model, self._task.train_x, self.name)
        return self

    def _scores(self, task, test_x, test_y):
        grads = SampleGradients(task.model, task.loss_fn)
        train, test = grads(task.train_x, task.train_y), grads(test_x, test_y, task.test_loss)
        if self.cosine:
            tiny = torch.finfo(train.dtype).tiny
            train, test = train / train.norm(dim=1, keepdim=True).clamp_min(tiny), test / test.norm(dim=1, keepdim=True).clamp_min(tiny)
        return (train @ test.T).numpy()


def representations(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``(n, width)`` inputs of the model's last ``nn.Linear`` (its penultimate representation);
    ``ValueError`` unless that layer runs once per forward on ``(n, width)`` input."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the model has no nn.Linear whose input could serve as its representation: {type(model).__name__}")
    seen: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda module, args, output: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            forward(model, x)
    finally:
        handle.remove()
    if len(seen) != 1 or seen[0].shape[:1] != (n_samples(x),) or seen[0].dim() != 2:
        raise ValueError(f"the model's last nn.Linear must run once per forward on (n_samples, width) input to give a "
                         f"representation; it ran {len(seen)} times on shapes {[tuple(t.shape) for t in seen]}")
    return seen[0].double()


class RepresentationSimilarity(_AtFinal):
    """Cosine similarity of penultimate representations (label-blind)."""

    name = "representation_similarity"

    def _scores(self, task, test_x, test_y):
        train, test = representations(task.model, task.train_x), representations(task.model, test_x)
        return (nn.functional.normalize(train, dim=1) @ nn.functional.normalize(test, dim=1).T).numpy()


class TrainingLoss(_AtFinal):
    """Minus each training sample's loss (the task's ``loss_fn`` on it alone) at the trained
    model, the same for every test sample (a hard-to-fit sample is suspect)."""

    name = "training_loss"

    def _scores(self, task, test_x, test_y):
        with torch.no_grad():
            losses = per_sample_losses(task.loss_fn, forward(task.model, task.train_x), task.train_y).double()
        return np.repeat(-losses.numpy()[:, None], n_samples(test_x), axis=1)


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
