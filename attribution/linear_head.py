"""Closed forms for a model whose only trainable part is its final ``nn.Linear`` under softmax
cross-entropy (a logistic regression on fixed features).

With ``a`` the layer's input (a trailing 1 when the bias trains), ``p`` the softmax output and
``δ = p − onehot(y)``, a sample's loss gradient is ``δ ⊗ a`` (weight ``δ aᵀ``, bias ``δ``) and its
Hessian is ``(diag p − p pᵀ) ⊗ a aᵀ``. Summed over samples the Hessian is a block-diagonal
``Aᵀ diag(p_c) A`` per class minus ``BᵀB`` with ``B = p ⊗ a`` row by row: two matrix products,
where autograd (``jacrev`` of ``jacrev``, ``vmap`` of ``grad``) traces the model per sample.
Vectors are flattened in :class:`~attribution.gradients.SampleGradients` order (weight row-major,
then bias), so both paths agree entry by entry.
"""

from __future__ import annotations

import torch
from torch import nn

from attribution.base import Inputs, LossFn, forward
from attribution.gradients import SampleGradients


class LinearSoftmaxHead:
    """Exact gradients and Hessian of the summed softmax cross-entropy of ``grads``' model.

    Build it with :meth:`find`, which returns ``None`` when the model is not of this form.
    """

    def __init__(self, grads: SampleGradients, layer: nn.Linear) -> None:
        self._grads, self._layer = grads, layer
        self._bias = layer.bias is not None

    @staticmethod
    def plain_cross_entropy(loss: LossFn) -> bool:
        """Whether a sample's ``loss`` is plain softmax cross-entropy (any reduction: one sample's
        sum and mean agree), the loss the closed forms are written for."""
        return (type(loss) is nn.CrossEntropyLoss and loss.weight is None and loss.label_smoothing == 0.0
                and loss.reduction in ("sum", "mean", "none"))

    @classmethod
    def find(cls, grads: SampleGradients, probe: Inputs) -> LinearSoftmaxHead | None:
        """The head of ``grads``' model when its trainable parameters are exactly one
        ``nn.Linear`` (weight, and bias if it has one), called once on 2-D input, whose output is
        the model's output, and its loss is plain cross-entropy; else ``None``."""
        if not cls.plain_cross_entropy(grads.loss_fn):
            return None
        model = grads.model
        names = {id(p): n for n, p in model.named_parameters()}
        for layer in (m for m in model.modules() if isinstance(m, nn.Linear)):
            own = [names[id(p)] for p in layer.parameters()]
            if sorted(own) == sorted(grads.names):
                head = cls(grads, layer)
                return head if head._is_output(probe) else None
        return None

    def _is_output(self, probe: Inputs) -> bool:
        calls: list[tuple[int, torch.Tensor]] = []
        handle = self._layer.register_forward_hook(lambda m, args, out: calls.append((args[0].dim(), out)))
        try:
            with torch.no_grad():
                output = forward(self._grads.model, probe)
        finally:
            handle.remove()
        return len(calls) == 1 and calls[0][0] == 2 and calls[0][1] is output

    def factors(self, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """``a (n, d_in [+1])`` and ``p (n, C)`` at the model's current weights, in the gradients' dtype."""
        captured: list[torch.Tensor] = []
        handle = self._grads.shadow_module(self._layer).register_forward_hook(lambda m, args, out: captured.append(args[0]))
        try:
            logits = self._grads.outputs(x)
        finally:
            handle.remove()
        a = captured[0]
        if self._bias:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
        return a, torch.softmax(logits, dim=1)

    def gradients(self, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        """``(n, P)`` per-sample loss gradients ``δ ⊗ a``."""
        a, p = self.factors(x)
        delta = p.clone()
        delta[torch.arange(len(y)), y] -= 1.0
        return self._to_parameter_order(delta[:, :, None] * a[:, None, :])  # (n, C, d) -> (n, P)

    def hessian(self, x: Inputs) -> torch.Tensor:
        """``(P, P)`` Hessian of the summed loss: ``Σ_i (diag p_i − p_i p_iᵀ) ⊗ a_i a_iᵀ``."""
        a, p = self.factors(x)
        n, d, c = len(a), a.shape[1], p.shape[1]
        blocks = (a.T[None] * p.T[:, None, :]) @ a  # (C, d, d): Aᵀ diag(p_c) A
        b = (p[:, :, None] * a[:, None, :]).reshape(n, c * d)  # rows p_i ⊗ a_i
        h = torch.block_diag(*blocks) - b.T @ b  # (C·d, C·d), index c·d + k
        order = self._parameter_order(c, d)
        return h[order][:, order]

    def _parameter_order(self, c: int, d: int) -> torch.Tensor:
        """Indices into the class-major ``c·d + k`` layout, in weight-then-bias order."""
        index = torch.arange(c * d).reshape(c, d)
        return torch.cat([index[:, : d - 1].reshape(-1), index[:, d - 1]]) if self._bias else index.reshape(-1)

    def _to_parameter_order(self, outer: torch.Tensor) -> torch.Tensor:
        if not self._bias:
            return outer.reshape(len(outer), -1)
        return torch.cat([outer[:, :, :-1].reshape(len(outer), -1), outer[:, :, -1]], dim=1)
