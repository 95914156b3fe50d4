"""Random-projection TracIn (TracIn-RP / TRAK-style features without the kernel inverse).

Each checkpoint's per-sample gradients ``(n, P)`` are projected to ``(n, dim)`` by a Gaussian
matrix with entries ``N(0, 1/dim)`` (so inner products are unbiased), drawn from a local
``torch.Generator`` seeded by ``seed`` and the checkpoint index; train and test use the same
matrix. Scores are ``Σ_t lr_t (G_train R_t)(G_test R_t)ᵀ``.
"""

from __future__ import annotations

import numpy as np
import torch

from attribution.base import AttributionTask, Attributor, require_finite
from attribution.gradients import SampleGradients


class ProjectedTracIn(Attributor):
    """TracIn on gradients projected to ``dim`` dimensions (default 512), seeded by ``seed``."""

    def __init__(self, dim: int = 512, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.seed = dim, seed
        self.name = f"tracin_rp{dim}"
        self._task: AttributionTask | None = None

    def fit(self, task: AttributionTask) -> ProjectedTracIn:
        self._task = task
        self._train = [self._project(t, task.train_x, task.train_y) for t in range(len(task.checkpoints))]
        return self

    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        if self._task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        out = torch.zeros(len(self._task.train_x), len(test_x), dtype=torch.float64)
        for t, (train, lr) in enumerate(self._train):
            test, _ = self._project(t, test_x, test_y)
            out += lr * train @ test.T
        return require_finite(out.numpy(), self.name)

    def _project(self, t: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Projected gradients at checkpoint ``t`` and its learning rate."""
        task = self._task
        lr = float(task.load_checkpoint(task.model, str(task.checkpoints[t])))
        grads = SampleGradients(task.model, task.loss_fn, torch.float32)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + t)
        matrix = torch.randn(grads.n_params, self.dim, generator=generator) / self.dim**0.5
        projected = torch.cat([g @ matrix for g in grads.chunks(x, y)])
        return projected.double(), lr
