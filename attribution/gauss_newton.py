"""Influence functions with a ridged Gauss-Newton Hessian, solved in kernel space.

An MLP's Hessian is indefinite (CG influence refuses it); the generalized Gauss-Newton matrix of
the cross-entropy is positive semi-definite by construction:

    H = Σ_i J_iᵀ Λ_i J_i,   Λ_i = diag(p_i) − p_i p_iᵀ,

``J_i`` the ``(n_classes, P)`` Jacobian of sample ``i``'s logits and ``p_i`` its softmax. Keeping
the top ``rank`` eigenpairs ``(μ, v)`` of each ``Λ_i`` (a well-fitted sample's curvature sits in
one or two directions) writes ``H ≈ UᵀU`` with rows ``u = √μ J_iᵀ v = ∇_θ (√μ vᵀ f(x_i))``: a
gradient of a weighted logit sum, so ``U``'s Gram products come from the same ``nn.Linear``
outer-product factors as :class:`~attribution.fast_tracin.FastTracIn`. With ``G`` the train loss
gradients and ``g_j`` a test one, by Woodbury

    scores[i, j] = G_i (UᵀU + λI)⁻¹ g_jᵀ = (G_i g_jᵀ − G_i Uᵀ (UUᵀ + λI)⁻¹ U g_jᵀ) / λ,

an ``(n·rank)``-square solve whatever ``P`` is. That is the influence function of removing ``i``
(Koh & Liang) with the mean-loss GGN damped by ``λ / n``; ``λ = ridge · tr(UUᵀ) / n`` (the mean
per-sample curvature), so one default carries across models and data sizes. The task's
``weight_decay`` is not added on top: it would add ``n · weight_decay`` to ``λ``, which the ridge
dwarfs (1.4 against ≈ 45 on the digits MLP). Positive = helped.

The truncation keeps ``diagnostics["curvature_kept"]`` of ``Σ_i tr Λ_i`` (0.83 at rank 2 there).
The training loss must be an unweighted ``nn.CrossEntropyLoss`` on ``(n, C)`` logits (any
reduction: a sample's loss is its own cross-entropy); the task's test loss may be any.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from attribution.base import AttributionError, AttributionTask, Attributor, Inputs, forward, require_finite, take
from attribution.fast_tracin import FastTracIn
from attribution.trak import ridged_cholesky


class _WeightedLogits(nn.Module):
    """``Σ_i s_i · f(x_i)``: a "loss" whose per-sample gradient is ``J_iᵀ s_i``."""

    def forward(self, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (logits * weights.to(logits.dtype)).sum()


def _require_cross_entropy(task: AttributionTask, method: str) -> None:
    """The GGN's ``Λ = diag(p) − p pᵀ`` is the Hessian of plain softmax cross-entropy on 2-D logits."""
    loss = task.loss_fn
    if not (type(loss) is nn.CrossEntropyLoss and loss.weight is None and loss.label_smoothing == 0.0):
        raise ValueError(f"{method}: the Gauss-Newton curvature is written for an unweighted nn.CrossEntropyLoss "
                         f"without label smoothing; task.loss_fn is {loss!r}")


class GaussNewtonInfluence(Attributor):
    """Influence with the ridged, rank-truncated GGN at the trained model (the last checkpoint).

    Args:
        ridge: ``λ`` relative to the mean per-sample GGN trace, ``λ = ridge · tr(UUᵀ) / n``
            (default 3, chosen on held-out subsets and seeds by ``benchmarks/mlp_lds_bench.py
            --tune``, never on the reported ground truth).
        rank: curvature directions kept per training sample (default 2); the kernel is
            ``(n_train · rank)`` square, so memory grows as its square.
        max_kernel: largest ``n_train · rank`` accepted (default 20000, 3.2 GB in float64).
    """

    def __init__(self, ridge: float = 3.0, rank: int = 2, max_kernel: int = 20_000) -> None:
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0 (the kernel is singular without it), got {ridge}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.ridge, self.rank, self.max_kernel = ridge, rank, max_kernel
        self.name = "gauss_newton_if"
        self.diagnostics: dict[str, float] = {}

    def fit(self, task: AttributionTask) -> GaussNewtonInfluence:
        _require_cross_entropy(task, self.name)
        final = dataclasses.replace(task.own_copy(), checkpoints=[task.checkpoints[-1]])
        final.load_final()
        x_rep, weights = self._curvature_directions(final)
        if len(weights) > self.max_kernel:
            raise ValueError(f"{self.name}: the kernel would be {len(weights)} square > max_kernel={self.max_kernel}; "
                             f"lower rank (now {self.rank})")
        self._loss = FastTracIn().fit(final)
        directions = FastTracIn().fit(dataclasses.replace(final, train_x=x_rep, train_y=weights, loss_fn=_WeightedLogits(),
                                                          test_loss_fn=None))
        self._train = self._loss.factors(final.train_x, final.train_y).double()
        self._u = directions.factors(x_rep, weights).double()
        kernel = self._u.dot(self._u)  # (n·rank, n·rank)
        trace = float(kernel.diagonal().sum())
        if not trace > 0:
            raise AttributionError(f"{self.name}: the Gauss-Newton matrix is zero (every prediction is certain); nothing to invert")
        self._lam = self.ridge * trace / final.n_train
        self._factor = ridged_cholesky(kernel, self._lam, self.name)
        self._train_u = self._train.dot(self._u)  # (n_train, n·rank)
        self.diagnostics.update(lam=self._lam, kernel_rows=len(kernel))
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        if not hasattr(self, "_factor"):
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        test = self._loss.factors(test_x, test_y, test=True).double()
        inner = torch.cholesky_solve(self._u.dot(test), self._factor)  # (n·rank, n_test)
        scores = (self._train.dot(test) - self._train_u @ inner) / self._lam
        return require_finite(scores.numpy(), self.name)

    def _curvature_directions(self, task: AttributionTask) -> tuple[Inputs, torch.Tensor]:
        """Inputs repeated ``rank`` times and the weights ``√μ v`` of each kept eigenpair of ``Λ_i``."""
        with torch.no_grad():
            logits = forward(task.model, task.train_x)
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2):
            raise ValueError(f"{self.name}: the model must return (n, n_classes) logits, got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        p = torch.softmax(logits.double(), dim=1)  # (n, C)
        curvature = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
        mu, v = torch.linalg.eigh(curvature)  # ascending eigenvalues
        rank = min(self.rank, p.shape[1])
        mu, v = mu[:, -rank:].clamp_min(0.0), v[:, :, -rank:]  # (n, rank), (n, C, rank)
        self.diagnostics["curvature_kept"] = float(mu.sum() / curvature.diagonal(dim1=1, dim2=2).sum())
        weights = (v * mu.sqrt()[:, None, :]).transpose(1, 2).reshape(-1, p.shape[1])  # (n·rank, C)
        return take(task.train_x, torch.arange(task.n_train).repeat_interleave(rank)), weights
