"""TracIn and gradient dot products on LoGra-style projected per-sample gradients.

Every trainable parameter's per-sample gradient is projected by
:class:`~attribution.layer_projection.LayerProjection` (``k × k`` per weight matrix, without
forming the matrix for Linear, GPT-2 Conv1D and Embedding layers). Scores are
``Σ_t w_t φ_t(train_i) · φ_t(test_j)`` with ``φ_t`` the projected gradient at checkpoint ``t``
(the test loss's for test samples) and ``w_t`` the checkpoint's learning rate, as in
:class:`~attribution.fast_tracin.FastTracIn`; positive = training on ``i`` lowered the loss on
``j``. With ``k=None`` nothing is projected and the scores are exact TracIn. The training
projections of every checkpoint are computed once, in ``fit``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from attribution.base import AttributionTask, Attributor, Capabilities, Inputs, n_samples, require_finite
from attribution.fast_tracin import GradientFactors
from attribution.gradients import require_per_sample
from attribution.layer_projection import DEFAULT_K, LayerProjection


def projected(task: AttributionTask, k: int | None, seed: int, batch_size: int, method: str
              ) -> tuple[AttributionTask, LayerProjection]:
    """``task`` on its own model copy (trained weights loaded, per-sample computation checked, else
    :class:`AttributionError` naming ``method``) and its :class:`LayerProjection`; load a
    checkpoint into the copy's model before calling the projection."""
    task = task.own_copy()
    task.load_final()
    require_per_sample(task.model, task.train_x, method)
    return task, LayerProjection(task.model, task.loss_fn, task.train_x, task.train_y, k, seed, batch_size)


class LoGradTracIn(Attributor):
    """TracIn ``Σ_t lr_t φ_t(train_i) · φ_t(test_j)`` on projected gradients.

    Args:
        k: projected dimensions per side of each parameter (default 32); ``None``: exact gradients.
        seed: seeds the projections.
        batch_size: samples per forward and backward (default 32).
    """

    name = "tracin_lograd"
    capabilities = Capabilities(gradient_factors=True, self_influence=True)

    def __init__(self, k: int | None = DEFAULT_K, seed: int = 0, batch_size: int = 32) -> None:
        self.k, self.seed, self.batch_size = k, seed, batch_size
        self._task: AttributionTask | None = None
        self._projection: LayerProjection | None = None
        self._weights: list[float] = []
        self._train: list[torch.Tensor] = []  # per checkpoint (n_train, dim)

    def fit(self, task: AttributionTask) -> LoGradTracIn:
        task, self._projection = projected(task, self.k, self.seed, self.batch_size, self.name)
        self._task = task
        self._weights, self._train = [], []
        for t in range(len(task.checkpoints)):
            self._weights.append(self._load(t))
            self._train.append(self._projection(task.train_x, task.train_y, task.loss_fn))
        return self

    @property
    def projection(self) -> LayerProjection:
        """The fitted projection (its ``paths`` say which parameters are hooked)."""
        self._fitted()
        return self._projection

    @property
    def checkpoint_weights(self) -> list[float]:
        """``lr_t`` of each checkpoint (1.0 for :class:`LoGradDot`'s one checkpoint)."""
        self._fitted()
        return list(self._weights)

    def factors(self, x: Inputs, y: torch.Tensor, checkpoint: int = -1, test: bool = False) -> GradientFactors:
        """``(n, dim)`` projected gradients of ``(x, y)`` at checkpoint index ``checkpoint``, as
        :class:`GradientFactors` with no Gram layer."""
        task = self._fitted()
        self._load(checkpoint % len(self._weights))
        return GradientFactors([], self._projection(x, y, task.test_loss if test else task.loss_fn))

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        out = torch.zeros(self._fitted().n_train, n_samples(test_x), dtype=torch.float64)
        for t, (train, weight) in enumerate(zip(self._train, self._weights)):
            test = self.factors(test_x, test_y, t, test=True).other  # (n_test, dim)
            out += weight * (train @ test.T).double()
        return require_finite(out.numpy(), self.name)

    def self_influence(self) -> np.ndarray:
        """``(n_train,)`` ``Σ_t w_t |φ_t(train_i)|²``: squared norms of the *projected* gradients."""
        self._fitted()
        return sum(w * (train.double() ** 2).sum(dim=1) for train, w in zip(self._train, self._weights)).numpy()

    def _fitted(self) -> AttributionTask:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} used before fit(task)")
        return self._task

    def _load(self, t: int) -> float:
        """Load the task's checkpoint ``t`` into the private model; its learning rate."""
        task = self._fitted()
        return float(task.load_checkpoint(task.model, str(task.checkpoints[t])))


class LoGradDot(LoGradTracIn):
    """``φ(train_i) · φ(test_j)`` at the trained model (the task's last checkpoint, unweighted)."""

    name = "grad_dot_lograd"

    def fit(self, task: AttributionTask) -> LoGradDot:
        super().fit(dataclasses.replace(task, checkpoints=list(task.checkpoints)[-1:]))
        self._weights = [1.0]
        return self
