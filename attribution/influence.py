"""Influence functions (Koh & Liang, 2017) at the trained model: exact Hessian or CG iHVPs.

For the training objective ``R(θ) = mean_i ℓ_i(θ) + (weight_decay / 2) ‖θ‖²`` at its optimum,
removing training sample ``i`` changes the test loss of ``j`` by about
``(1/n) ∇ℓ_jᵀ (H + damping·I)⁻¹ ∇ℓ_i`` (``H`` the Hessian of ``R``); that is ``scores[i, j]``
(positive = removing ``i`` would raise ``j``'s loss = ``i`` helped).

``solver="exact"`` forms ``H`` (float64) and factors it by Cholesky: for models up to ``max_params``
parameters. When the model's only trainable part is its final ``nn.Linear`` under softmax
cross-entropy, gradients and Hessian come from their closed forms
(:class:`~attribution.linear_head.LinearSoftmaxHead`); otherwise, or with ``structured=False``
(the reference the tests compare against), from autograd: ``vmap(grad)`` per-sample gradients
and ``jacrev`` of ``jacrev`` for ``H``. ``solver="cg"`` solves ``(H + damping·I) v = ∇ℓ_j`` for
every test sample at once by conjugate gradients on Hessian-vector products (``jvp`` of ``grad``),
never forming ``H``. Both refuse to return silently wrong numbers: a Hessian that is not
positive definite, negative curvature met by CG or CG stopping above its tolerance raise
:class:`~attribution.base.AttributionError`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import grad, jacrev, jvp

from attribution.base import AttributionError, AttributionTask, Attributor, Inputs, LossFn, require_finite, take
from attribution.gradients import SampleGradients, require_per_sample
from attribution.linear_head import LinearSoftmaxHead


class InfluenceFunction(Attributor):
    """Influence of removing each training sample on each test loss.

    Args:
        solver: ``"exact"`` (default) or ``"cg"``.
        damping: added to the Hessian's diagonal (default 0: the task's ``weight_decay`` already
            makes a converged L2 logistic regression strictly convex).
        max_params: largest model ``"exact"`` accepts (default 3000; the Hessian is P² float64).
        cg_max_iter, cg_tol: CG's iteration cap (default 200) and relative residual tolerance
            (default 1e-6); CG failing to reach ``cg_tol`` raises.
        structured: use the closed forms for a linear softmax head when the model is one
            (default True); False always uses autograd.
    """

    def __init__(self, solver: str = "exact", damping: float = 0.0, max_params: int = 3000,
                 cg_max_iter: int = 200, cg_tol: float = 1e-6, structured: bool = True) -> None:
        if solver not in ("exact", "cg"):
            raise ValueError(f"solver must be 'exact' or 'cg', got {solver!r}")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.solver, self.damping, self.max_params = solver, damping, max_params
        self.cg_max_iter, self.cg_tol, self.structured = cg_max_iter, cg_tol, structured
        self.name = f"influence_{solver}"
        self.diagnostics: dict[str, float] = {}
        self._task: AttributionTask | None = None

    def fit(self, task: AttributionTask) -> InfluenceFunction:
        task = task.own_copy()
        task.load_final()
        require_per_sample(task.model, task.train_x, self.name)
        self._task = task
        self._grads = SampleGradients(task.model, task.loss_fn)
        if self.solver == "exact" and self._grads.n_params > self.max_params:
            raise ValueError(f"{self.name}: the model has {self._grads.n_params} parameters > max_params="
                             f"{self.max_params}; use solver='cg'")
        structured = self.structured and LinearSoftmaxHead.plain_cross_entropy(task.test_loss)
        self._head = LinearSoftmaxHead.find(self._grads, take(task.train_x, slice(0, 1))) if structured else None
        self._train = self._sample_gradients(task.train_x, task.train_y, task.loss_fn)  # (n_train, P)
        self._theta = self._grads.flatten(self._grads.params())
        if self.solver == "exact":
            self._cholesky = self._factor(self._hessian())
        return self

    def _sample_gradients(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        return self._head.gradients(x, y) if self._head is not None else self._grads(x, y, loss_fn)

    def _hessian(self) -> torch.Tensor:
        """``(P, P)`` Hessian of :meth:`_objective` at the trained parameters."""
        if self._head is None:
            return jacrev(jacrev(self._objective))(self._theta)  # rev-over-rev: 1.5x hessian()'s speed here
        task = self._task
        h = self._head.hessian(task.train_x) / task.n_train
        h.diagonal().add_(task.weight_decay + self.damping)
        return h

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        if self._task is None:
            raise RuntimeError(f"{self.name}.scores called before fit(task)")
        test = self._sample_gradients(test_x, test_y, self._task.test_loss)  # (n_test, P)
        if self.solver == "exact":
            solved = torch.cholesky_solve(test.T, self._cholesky)  # (P, n_test)
        else:
            solved = self._conjugate_gradients(test.T)
        scores = (self._train @ solved / len(self._train)).numpy()  # (n_train, n_test)
        return require_finite(scores, self.name)

    def _objective(self, theta: torch.Tensor) -> torch.Tensor:
        """``R(θ) + (damping / 2) ‖θ‖²`` at flat parameters ``θ``."""
        task = self._task
        mean_loss = self._grads.loss(self._grads.unflatten(theta), task.train_x, task.train_y) / task.n_train
        return mean_loss + 0.5 * (task.weight_decay + self.damping) * (theta**2).sum()

    def _factor(self, h: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of ``h``; its success is the positive-definiteness check (the smallest
        eigenvalue, which costs more than the rest of the method, is computed only for the error)."""
        factor, info = torch.linalg.cholesky_ex(h)
        if info != 0:
            smallest = float(torch.linalg.eigvalsh(h)[0])
            raise AttributionError(f"{self.name}: the damped Hessian is not positive definite (smallest "
                                   f"eigenvalue {smallest:.3g}); raise damping above {-smallest:.3g}")
        return factor

    def _hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(P, m)`` products of the damped Hessian with ``vectors`` columns."""
        hvp = torch.vmap(lambda v: jvp(grad(self._objective), (self._theta,), (v,))[1])
        return hvp(vectors.T).T

    def _conjugate_gradients(self, b: torch.Tensor) -> torch.Tensor:
        """Solve ``(H + damping·I) X = b`` column by column, all columns in lockstep."""
        x = torch.zeros_like(b)
        r, p = b.clone(), b.clone()
        rr = (r * r).sum(dim=0)
        b_norm = b.norm(dim=0).clamp_min(torch.finfo(b.dtype).tiny)
        iterations = 0
        for iterations in range(1, self.cg_max_iter + 1):
            hp = self._hvp(p)
            curvature = (p * hp).sum(dim=0)
            active = rr > 0
            if (curvature[active] <= 0).any():
                raise AttributionError(f"{self.name}: CG met non-positive curvature (min {float(curvature[active].min()):.3g}); "
                                       f"the Hessian is indefinite, raise damping (now {self.damping})")
            alpha = torch.where(active, rr / torch.where(active, curvature, 1.0), 0.0)
            x += alpha * p
            r -= alpha * hp
            rr_next = (r * r).sum(dim=0)
            if (rr_next.sqrt() / b_norm).max() <= self.cg_tol:
                break
            p = r + torch.where(active, rr_next / torch.where(active, rr, 1.0), 0.0) * p
            rr = rr_next
        residual = float(((b - self._hvp(x)).norm(dim=0) / b_norm).max())
        self.diagnostics.update(cg_iterations=iterations, cg_max_relative_residual=residual)
        if residual > max(self.cg_tol * 100, 1e-6):
            raise AttributionError(f"{self.name}: CG stopped at relative residual {residual:.3g} after {iterations} "
                                   f"iterations (tolerance {self.cg_tol}); raise cg_max_iter or damping")
        return x
