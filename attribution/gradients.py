"""Per-sample loss gradients of a model's trainable parameters, flattened: ``(n, n_params)``.

``torch.func.vmap(grad(...))`` over ``functional_call``, each sample's loss taken on a batch of
that sample alone (so the gradient is exactly that of
:func:`~attribution.base.per_sample_losses`); a model whose forward ``vmap`` cannot trace falls
back to a loop of ``torch.func.grad`` over samples, as exact and slower. The call runs on a private
copy of the model that receives every parameter and buffer each time (``functional_call`` leaves
a module reused twice in one model with weights that no longer require grad, torch 2.13).

:func:`require_per_sample` refuses models whose per-sample gradient is not a function of the
sample alone (batch statistics, randomness): no method here can attribute those exactly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from attribution.base import AttributionError, Inputs, LossFn, forward, map_inputs, n_samples, summed_loss, take


def require_per_sample(model: nn.Module, x: Inputs, method: str) -> None:
    """Raise :class:`AttributionError` naming the module or input when a sample's output depends on
    the rest of its batch or on chance: BatchNorm using batch statistics, dropout in training
    mode, or (checked numerically on up to 3 samples of ``x``) any other coupling or randomness."""
    for name, module in model.named_modules():
        label = f"module {name or '<root>'!r} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
            raise AttributionError(f"{method}: {label} normalises with batch statistics (training mode or no running "
                                   "stats), so a sample's gradient depends on its batch; call model.eval() first")
        p = getattr(module, "p", 0.0) if isinstance(module, nn.modules.dropout._DropoutNd) else getattr(module, "dropout", 0.0)
        if module.training and isinstance(p, float) and p > 0:
            raise AttributionError(f"{method}: {label} drops units at random in training mode (p={p}), so gradients "
                                   "are random; call model.eval() first")
    probe = take(x, slice(0, min(n_samples(x), 3)))
    with torch.no_grad():
        batched, again = _leaves(forward(model, probe)), _leaves(forward(model, probe))
        alone = [_leaves(forward(model, take(probe, slice(i, i + 1)))) for i in range(n_samples(probe))]
    for k, (out, out2) in enumerate(zip(batched, again)):
        if not torch.equal(out, out2):
            raise AttributionError(f"{method}: the model's output {k} differs between two identical forward passes "
                                   "(random layers?); per-sample gradients would be random")
        single = torch.cat([leaves[k] for leaves in alone])
        if out.shape != single.shape:
            raise AttributionError(f"{method}: the model's output {k} has shape {tuple(out.shape)} on a batch but "
                                   f"{tuple(single.shape)} stacked from single samples; its first dimension must be the sample")
        gap = float((out - single).abs().max()) if out.numel() else 0.0
        if gap > 1e-4 * float(out.abs().max()) + 1e-7:
            raise AttributionError(f"{method}: the model's output {k} for a sample changes with the rest of its batch "
                                   f"(max difference {gap:.3g}); per-sample gradients are undefined for a model that "
                                   "couples samples")


def _leaves(output: Any) -> list[torch.Tensor]:
    """The floating tensors of a model output (a tensor, or tuples, lists and mappings of them), in order."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for part in output for t in _leaves(part)]
    return []


class SampleGradients:
    """Per-sample gradients of a loss w.r.t. ``model``'s trainable parameters at the model's
    *current* weights.

    Args:
        model: the model (its current weights are read at each call); keep it private to the method.
        loss_fn: the default loss of a batch (any reduction; a sample's loss is its value on that
            sample alone).
        dtype: dtype of the computation and result (default float64, for solvers); integer
            inputs (token ids) are passed unchanged.
        batch_size: samples per vmap call (memory bound).
        names: the parameters to differentiate (default: every trainable one).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, dtype: torch.dtype = torch.float64, batch_size: int = 512,
                 names: list[str] | None = None) -> None:
        self.model, self.loss_fn, self.dtype, self.batch_size = model, loss_fn, dtype, batch_size
        self._shadow = copy.deepcopy(model).to(dtype)
        self.names = names if names is not None else [n for n, p in model.named_parameters() if p.requires_grad]
        self.looped = False  # set when vmap could not trace the model and samples are looped over

    @property
    def n_params(self) -> int:
        return sum(p.numel() for n, p in self.model.named_parameters() if n in self.names)

    def params(self) -> dict[str, torch.Tensor]:
        """The current trainable parameters, detached, in :attr:`dtype`."""
        state = dict(self.model.named_parameters())
        return {n: state[n].detach().to(self.dtype) for n in self.names}

    def fixed(self) -> dict[str, torch.Tensor]:
        """Everything else the forward needs (frozen parameters and buffers)."""
        state = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        return {n: t.detach().to(self.dtype) if t.is_floating_point() else t for n, t in state.items() if n not in self.names}

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        shapes = {n: p.shape for n, p in self.model.named_parameters() if n in self.names}
        parts = flat.split([shapes[n].numel() for n in self.names])
        return {n: part.reshape(shapes[n]) for n, part in zip(self.names, parts)}

    def _call(self, params: dict[str, torch.Tensor], x: Inputs):
        x = map_inputs(x, lambda t: t.to(self.dtype) if t.is_floating_point() else t)
        state = (params, self.fixed())
        if isinstance(x, torch.Tensor):
            return functional_call(self._shadow, state, (x,))
        if isinstance(x, tuple):
            return functional_call(self._shadow, state, x)
        return functional_call(self._shadow, state, (), dict(x))

    def loss(self, params: dict[str, torch.Tensor], x: Inputs, y: torch.Tensor, loss_fn: LossFn | None = None) -> torch.Tensor:
        """Sum of the per-sample losses of batch ``(x, y)`` at ``params`` (``loss_fn`` default: the
        constructor's)."""
        loss_fn = self.loss_fn if loss_fn is None else loss_fn
        if n_samples(x) == 1:
            return loss_fn(self._call(params, x), y).sum()
        return summed_loss(loss_fn, self._call(params, x), y)

    def outputs(self, x: Inputs):
        """The model's output on ``x`` at the current parameters, in :attr:`dtype`, without grad."""
        with torch.no_grad():
            return self._call(self.params(), x)

    def shadow_module(self, module: nn.Module) -> nn.Module:
        """The submodule of the private :attr:`dtype` copy that :meth:`outputs` runs for ``module``
        of the model (to hook its inputs)."""
        name = next(n for n, m in self.model.named_modules() if m is module)
        return self._shadow.get_submodule(name)

    def __call__(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn | None = None) -> torch.Tensor:
        return torch.cat(list(self.chunks(x, y, loss_fn)))

    def chunks(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn | None = None) -> Iterator[torch.Tensor]:
        """``(batch, n_params)`` gradient blocks, in order."""
        params = self.params()

        def one(p: dict[str, torch.Tensor], xi: Inputs, yi: torch.Tensor) -> torch.Tensor:
            return self.loss(p, map_inputs(xi, lambda t: t[None]), map_inputs(yi, lambda t: t[None]), loss_fn)

        per_sample = vmap(grad(one), in_dims=(None, 0, 0))
        for start in range(0, n_samples(x), self.batch_size):
            rows = slice(start, start + self.batch_size)
            xs, ys = take(x, rows), take(y, rows)
            grads = None
            if not self.looped:
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="There is a performance drop")
                        grads = per_sample(params, xs, ys)
                except Exception:  # a forward vmap cannot trace: loop over samples (raises if that fails too)
                    self.looped = True
            if grads is None:
                single = [grad(one)(params, take(xs, i), take(ys, i)) for i in range(n_samples(xs))]
                grads = {n: torch.stack([g[n] for g in single]) for n in self.names}
            yield torch.cat([grads[n].reshape(len(grads[n]), -1) for n in self.names], dim=1)
