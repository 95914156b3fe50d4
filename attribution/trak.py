"""TRAK-style kernel attribution (Park et al., 2023) on after-training loss gradients.

At the trained model (the task's last checkpoint), with ``G`` the ``(n_train, P)`` per-sample
loss gradients (optionally projected to ``dim`` columns by a seeded Gaussian matrix) and ``g_j``
a test sample's loss gradient,

    scores[i, j] = G_i (GᵀG + λI)⁻¹ g_jᵀ,

an influence function whose Hessian is the (PSD) empirical Fisher ``GᵀG``, ridged by ``λ``. By the
push-through identity ``G (GᵀG + λI)⁻¹ = (GGᵀ + λI)⁻¹ G``, so the solve is ``(n_train, n_train)``
whatever ``P`` is: one Cholesky factor of the train Gram matrix ``K = GGᵀ``. ``λ`` is not a raw
number but ``ridge · tr(K) / n_train`` (the mean squared gradient norm), so one default carries
across models, data sizes and loss scales. Positive = helped, as everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from attribution.base import AttributionError, AttributionTask, Attributor, Inputs, LossFn, require_finite
from attribution.gradients import SampleGradients, require_per_sample


def ridged_cholesky(kernel: torch.Tensor, lam: float, method: str) -> torch.Tensor:
    """The Cholesky factor of ``kernel + lam·I``, or :class:`AttributionError` naming ``method``."""
    factor, info = torch.linalg.cholesky_ex(kernel + lam * torch.eye(len(kernel), dtype=kernel.dtype))
    if info != 0:
        raise AttributionError(f"{method}: kernel + λI is not positive definite at λ={lam:.3g}; raise ridge")
    return factor


class TRAK(Attributor):
    """Kernel attribution ``G (GᵀG + λI)⁻¹ gᵀ`` at the trained model; one model (see
    :class:`~attribution.ensemble.Ensemble` to average over independently trained ones).

    Args:
        ridge: ``λ`` relative to the mean squared train-gradient norm, ``λ = ridge · tr(GGᵀ) / n``
            (default 3, chosen on held-out subsets and seeds by ``benchmarks/mlp_lds_bench.py
            --tune``, never on the reported ground truth).
        dim: project gradients to ``dim`` dimensions first (default ``None``: exact gradients,
            affordable since only the ``n × n`` Gram matrix is solved).
        seed: seeds the projection's local generator (used only with ``dim``).
    """

    def __init__(self, ridge: float = 3.0, dim: int | None = None, seed: int = 0) -> None:
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0 (the Gram matrix is singular without it), got {ridge}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1 or None, got {dim}")
        self.ridge, self.dim, self.seed = ridge, dim, seed
        self.name = "trak" if dim is None else f"trak_p{dim}"
        self.diagnostics: dict[str, float] = {}
        self._task: AttributionTask | None = None

    def fit(self, task: AttributionTask) -> TRAK:
        task = task.own_copy()
        task.load_final()
        require_per_sample(task.model, task.train_x, self.name)
        self._task = task
        self._grads = SampleGradients(task.model, task.loss_fn)
        self._projection = self._matrix(self._grads.n_params)
        self._train = self._features(task.train_x, task.train_y, task.loss_fn)  # (n_train, P or dim)
        gram = self._train @ self._train.T  # (n_train, n_train)
        scale = float(gram.diagonal().mean())
        if not scale > 0:
            raise AttributionError(f"{self.name}: every training gradient is zero; nothing to attribute")
        lam = self.ridge * scale
        self._factor = ridged_cholesky(gram, lam, self.name)
        self.diagnostics.update(lam=lam, mean_sq_grad_norm=scale)
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        if self._task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        cross = self._train @ self._features(test_x, test_y, self._task.test_loss).T  # (n_train, n_test)
        return require_finite(torch.cholesky_solve(cross, self._factor).numpy(), self.name)

    def _matrix(self, n_params: int) -> torch.Tensor | None:
        """``(P, dim)`` Gaussian projection with ``N(0, 1/dim)`` entries, or ``None``."""
        if self.dim is None:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(n_params, self.dim, generator=generator, dtype=torch.float64) / self.dim**0.5

    def _features(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        if self._projection is None:
            return self._grads(x, y, loss_fn)
        return torch.cat([g @ self._projection for g in self._grads.chunks(x, y, loss_fn)])
