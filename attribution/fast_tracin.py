"""Exact TracIn over every trainable layer, fast: Gram matrices for ``nn.Linear``, vmap elsewhere.

A per-sample weight gradient of ``nn.Linear`` is the outer product ``δ aᵀ`` (``a`` the layer's
input, ``δ`` the loss gradient at its output), so the dot product of two of them is
``(δ·δ')(a·a')`` and the bias adds ``δ·δ'``. For a train chunk ``I`` and a test chunk ``J`` the
layer's contribution is ``(Δ_I Δ_Jᵀ) ⊙ (A_I A_Jᵀ + 1)``: two small Gram matrices instead of
materialising ``in × out`` gradients per sample. Every other trainable parameter (a module that
is not a 2-D-input, once-called ``nn.Linear``) gets exact per-sample gradients from
``torch.func.vmap(grad(...))``. Captum's ``TracInCPFast`` uses the outer-product trick for the
last layer only (and drops its bias), hence this module; ``CaptumTracIn`` is the reference.

Work is chunked over train (``batch_size`` rows per block) and test (``test_batch_size``
columns), so memory stays bounded; :meth:`FastTracIn.stream` hands each finished
``(rows, n_test)`` block (summed over checkpoints) to a sink instead of holding the whole matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attribution.base import AttributionTask, Attributor
from attribution.gradients import SampleGradients

BlockSink = Callable[[int, np.ndarray], None]
"""Receives ``(first_train_row, block)`` with ``block`` of shape ``(rows, n_test)``, float32."""


@dataclass
class GradientFactors:
    """Per-sample gradient factors of one chunk at one checkpoint.

    ``linear``: per Gram layer ``(a (n, d_in + bias), δ (n, d_out))``; a bias is folded into
    ``a`` as a trailing column of ones, so ``(A Aᵀ)`` already carries the ``+1``.
    ``other``: ``(n, n_other_params)`` flattened vmap gradients, or ``None``.
    """

    linear: list[tuple[torch.Tensor, torch.Tensor]]
    other: torch.Tensor | None

    def dot(self, test: GradientFactors) -> torch.Tensor:
        """``(n_self, n_test)`` gradient dot products."""
        out = None
        for (a, d), (a_t, d_t) in zip(self.linear, test.linear):
            term = (d @ d_t.T).mul_(a @ a_t.T)
            out = term if out is None else out.add_(term)
        if self.other is not None:
            term = self.other @ test.other.T
            out = term if out is None else out.add_(term)
        return out

    def squared_norms(self) -> torch.Tensor:
        """``(n_self,)`` squared gradient norms (the self-dot products)."""
        out = torch.zeros(len(self.linear[0][0]) if self.linear else len(self.other))
        for a, d in self.linear:
            out += (d * d).sum(dim=1) * (a * a).sum(dim=1)
        if self.other is not None:
            out += (self.other * self.other).sum(dim=1)
        return out


class FastTracIn(Attributor):
    """TracIn ``Σ_t lr_t ∇ℓ(train_i; θ_t) · ∇ℓ(test_j; θ_t)`` over all trainable parameters.

    Args:
        batch_size: training rows per block (default 2048).
        test_batch_size: test columns per Gram product (default 2048).
    """

    name = "tracin_fast"

    def __init__(self, batch_size: int = 2048, test_batch_size: int = 2048) -> None:
        if batch_size < 1 or test_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {test_batch_size}")
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self._task: AttributionTask | None = None
        self._states: list[tuple[dict[str, torch.Tensor], float]] = []
        self._gram_layers: list[nn.Linear] = []
        self._other: SampleGradients | None = None

    def fit(self, task: AttributionTask) -> FastTracIn:
        reduction = getattr(task.loss_fn, "reduction", None)
        if reduction != "sum":
            raise ValueError(f"task.loss_fn must sum per-sample losses (reduction='sum'), got reduction={reduction!r}")
        self._task = task
        self._states = []
        for path in task.checkpoints:
            lr = float(task.load_checkpoint(task.model, str(path)))
            self._states.append(({k: v.detach().clone() for k, v in task.model.state_dict().items()}, lr))
        self._gram_layers = _gram_layers(task.model, task.train_x[:1])
        in_gram = {id(p) for m in self._gram_layers for p in m.parameters()}
        other = [n for n, p in task.model.named_parameters() if p.requires_grad and id(p) not in in_gram]
        self._other = SampleGradients(task.model, task.loss_fn, torch.float32, self.batch_size, other) if other else None
        return self

    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        task = self._fitted()
        out = np.empty((len(task.train_x), len(test_x)), dtype=np.float64)

        def keep(start: int, block: np.ndarray) -> None:
            out[start : start + len(block)] = block

        self.stream(test_x, test_y, keep)
        return out

    def stream(self, test_x: torch.Tensor, test_y: torch.Tensor, sink: BlockSink) -> None:
        """Compute the scores block by block (train rows in order) and hand each to ``sink``."""
        task = self._fitted()
        tests = []  # per checkpoint: test features in test chunks
        for state, _ in self._states:
            task.model.load_state_dict(state)
            tests.append([self.factors(test_x[s : s + self.test_batch_size], test_y[s : s + self.test_batch_size])
                          for s in range(0, len(test_x), self.test_batch_size)])
        for start in range(0, len(task.train_x), self.batch_size):
            x, y = task.train_x[start : start + self.batch_size], task.train_y[start : start + self.batch_size]
            block = torch.zeros(len(x), len(test_x))
            for (state, lr), test_chunks in zip(self._states, tests):
                task.model.load_state_dict(state)
                train = self.factors(x, y)
                col = 0
                for chunk in test_chunks:
                    dots = train.dot(chunk)  # (rows, chunk columns)
                    block[:, col : col + dots.shape[1]].add_(dots, alpha=lr)
                    col += dots.shape[1]
            sink(start, block.numpy())

    def self_influence(self) -> np.ndarray:
        """``(n_train,)`` ``Σ_t lr_t |∇ℓ(train_i; θ_t)|²``."""
        task = self._fitted()
        out = np.zeros(len(task.train_x))
        for state, lr in self._states:
            task.model.load_state_dict(state)
            for start in range(0, len(task.train_x), self.batch_size):
                rows = slice(start, start + self.batch_size)
                out[rows] += lr * self.factors(task.train_x[rows], task.train_y[rows]).squared_norms().double().numpy()
        return out

    def _fitted(self) -> AttributionTask:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} used before fit(task)")
        return self._task

    def factors(self, x: torch.Tensor, y: torch.Tensor) -> GradientFactors:
        """Per-sample gradient factors of ``(x, y)`` at the model's current weights (load a
        checkpoint into ``task.model`` first); their :meth:`GradientFactors.dot` is the heavy phase."""
        task = self._fitted()
        model, loss_fn = task.model, task.loss_fn
        inputs: dict[nn.Linear, torch.Tensor] = {}
        outputs: dict[nn.Linear, torch.Tensor] = {}

        def capture(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs[module], outputs[module] = args[0].detach(), output

        handles = [m.register_forward_hook(capture) for m in self._gram_layers]
        try:
            with torch.enable_grad():
                loss = loss_fn(model(x), y)
                deltas = torch.autograd.grad(loss, [outputs[m] for m in self._gram_layers]) if self._gram_layers else ()
        finally:
            for h in handles:
                h.remove()
        linear = []
        for m, d in zip(self._gram_layers, deltas):
            a = inputs[m]
            if m.bias is not None and m.bias.requires_grad:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
            linear.append((a, d.detach()))
        return GradientFactors(linear, self._other(x, y) if self._other is not None else None)


def _gram_layers(model: nn.Module, probe: torch.Tensor) -> list[nn.Linear]:
    """Trainable ``nn.Linear`` layers called exactly once per forward on 2-D input (the Gram trick's
    preconditions), found by one probe forward; the rest fall back to vmap."""
    calls: dict[nn.Module, list[int]] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        calls.setdefault(module, []).append(args[0].dim())

    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
    handles = [m.register_forward_hook(record) for m in linears]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return [m for m in linears if calls.get(m) == [2] and (m.bias is None or m.bias.requires_grad)]
