"""Per-sample loss gradients of a model's trainable parameters, flattened: ``(n, n_params)``.

``torch.func.vmap(grad(...))`` over ``functional_call``; the call runs on a private copy of the
model that receives every parameter and buffer each time (``functional_call`` leaves a module
reused twice in one model with weights that no longer require grad, torch 2.13).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


class SampleGradients:
    """Per-sample gradients of ``loss_fn`` (a summed loss) w.r.t. ``model``'s trainable parameters
    at the model's *current* weights.

    Args:
        model: the model (its current weights are read at each call).
        loss_fn: loss of a batch of one, e.g. ``CrossEntropyLoss(reduction="sum")``.
        dtype: dtype of the computation and result (default float64, for solvers).
        batch_size: samples per vmap call (memory bound).
        names: the parameters to differentiate (default: every trainable one).
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, dtype: torch.dtype = torch.float64, batch_size: int = 512,
                 names: list[str] | None = None) -> None:
        self.model, self.loss_fn, self.dtype, self.batch_size = model, loss_fn, dtype, batch_size
        self._shadow = copy.deepcopy(model).to(dtype)
        self.names = names if names is not None else [n for n, p in model.named_parameters() if p.requires_grad]

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

    def loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed loss of batch ``(x, y)`` at ``params``."""
        return self.loss_fn(functional_call(self._shadow, (params, self.fixed()), (x.to(self.dtype),)), y)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` at the current parameters, in :attr:`dtype`, without grad."""
        with torch.no_grad():
            return functional_call(self._shadow, (self.params(), self.fixed()), (x.to(self.dtype),))

    def shadow_module(self, module: nn.Module) -> nn.Module:
        """The submodule of the private :attr:`dtype` copy that :meth:`outputs` runs for ``module``
        of the model (to hook its inputs)."""
        name = next(n for n, m in self.model.named_modules() if m is module)
        return self._shadow.get_submodule(name)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(self.chunks(x, y)))

    def chunks(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[torch.Tensor]:
        """``(batch, n_params)`` gradient blocks, in order."""
        params = self.params()

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return self.loss(p, xi[None], yi[None])

        per_sample = vmap(grad(one), in_dims=(None, 0, 0))
        for start in range(0, len(x), self.batch_size):
            grads = per_sample(params, x[start : start + self.batch_size], y[start : start + self.batch_size])
            yield torch.cat([grads[n].reshape(len(grads[n]), -1) for n in self.names], dim=1)
