"""Random-projection TracIn (TracIn-RP / TRAK-style features without the kernel inverse).

Each checkpoint's per-sample gradients ``(n, P)`` are projected to ``(n, dim)`` by a Gaussian
matrix with entries ``N(0, 1/dim)`` (so inner products are unbiased), drawn from a local
``torch.Generator`` seeded by ``seed`` and the checkpoint index; train and test use the same
matrix. Scores are ``Σ_t lr_t (G_train R_t)(G_test R_t)ᵀ``.
"""

from __future__ import annotations

import numpy as np
import torch

from attribution.base import AttributionTask, Attributor, Inputs, LossFn, n_samples, require_finite
from attribution.gradients import SampleGradients, require_per_sample

DEFAULT_DIM = 512


class ProjectedTracIn(Attributor):
    """TracIn on gradients projected to ``dim`` dimensions (default 512), seeded by ``seed``.

    Its name is ``tracin_projected`` at the default ``dim``, ``tracin_projected_<dim>`` otherwise.
    """

    def __init__(self, dim: int = DEFAULT_DIM, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.seed = dim, seed
        self.name = "tracin_projected" if dim == DEFAULT_DIM else f"tracin_projected_{dim}"
        self._task: AttributionTask | None = None

    def fit(self, task: AttributionTask) -> ProjectedTracIn:
        task = task.own_copy()
        task.load_final()
        require_per_sample(task.model, task.train_x, self.name)
        self._task = task
        self._grads = SampleGradients(task.model, task.loss_fn, torch.float32)
        self._train = []
        for t in range(len(task.checkpoints)):
            lr = self._load(t)
            self._train.append((self._project(t, task.train_x, task.train_y, task.loss_fn), lr))
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        if self._task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        out = torch.zeros(self._task.n_train, n_samples(test_x), dtype=torch.float64)
        for t, (train, lr) in enumerate(self._train):
            self._load(t)
            out += lr * train @ self._project(t, test_x, test_y, self._task.test_loss).T
        return require_finite(out.numpy(), self.name)

    def _load(self, t: int) -> float:
        """Load checkpoint ``t`` into the private model; its learning rate."""
        task = self._task
        return float(task.load_checkpoint(task.model, str(task.checkpoints[t])))

    def _project(self, t: int, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """``(n, dim)`` projected gradients at checkpoint ``t`` (already loaded)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + t)
        matrix = torch.randn(self._grads.n_params, self.dim, generator=generator) / self.dim**0.5
        return torch.cat([g @ matrix for g in self._grads.chunks(x, y, loss_fn)]).double()
