"""TracIn through Captum's ``TracInCP`` (the reference implementation).

TracIn (Pruthi et al., 2020) sums, over checkpoints ``t``, ``lr_t * ∇ℓ(z_train; θ_t) · ∇ℓ(z_test; θ_t)``:
positive when a gradient step on the training sample lowers the test loss (a proponent).

Captum has two modes. Its default, a per-sample loop (``sample_wise_grads_per_batch=False``),
differentiates every parameter of the layers it is given and is exact on any model. Its fast mode
(``sample_wise_grads_per_batch=True``) computes per-sample gradients only for ``nn.Linear`` and
``nn.Conv2d`` layers and silently drops every other parameter (LayerNorm, Embedding, ...).
:class:`CaptumTracIn` uses the fast mode only where it is exact, the loop otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from captum.influence import TracInCP
from torch import nn
from torch.utils.data import TensorDataset

from attribution.base import AttributionTask, Attributor, Inputs, LossFn, forward, per_sample_losses, take
from attribution.gradients import require_per_sample


class _Keywords(nn.Module):
    """``model(**dict(zip(keys, tensors)))`` called positionally, for Captum (which unpacks tuples)."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *tensors: torch.Tensor):
        return self.model(**dict(zip(self.keys, tensors)))


def _as_tuple(x: Inputs, keys: list[str] | None) -> tuple[torch.Tensor, ...]:
    if isinstance(x, torch.Tensor):
        return (x,)
    if isinstance(x, Mapping):
        if sorted(x) != sorted(keys):
            raise ValueError(f"test inputs have keys {sorted(x)}, training inputs {sorted(keys)}")
        return tuple(x[k] for k in keys)
    return tuple(x)


class CaptumTracIn(Attributor):
    """Captum ``TracInCP`` over every trainable parameter, exact on any model.

    Captum's fast mode runs when it is exact: every trainable parameter sits in an ``nn.Linear``
    (called once per forward on 2-D input) or ``nn.Conv2d`` (called once), no parameter is
    frozen, and both losses sum per sample (``reduction="sum"``). Otherwise Captum's per-sample
    loop runs with the task's per-sample losses; ``mode`` says which after :meth:`fit`
    (``"sample_wise"`` or ``"loop"``). Dict inputs are passed to Captum positionally.

    Args:
        batch_size: training samples per Captum batch (memory vs. speed; default 256).
    """

    name = "tracin_captum"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self.mode: str | None = None
        self._tracin: TracInCP | None = None
        self._keys: list[str] | None = None

    def fit(self, task: AttributionTask) -> CaptumTracIn:
        task = task.own_copy()
        task.load_final()
        require_per_sample(task.model, task.train_x, self.name)
        model, load = task.model, task.load_checkpoint
        self._keys = list(task.train_x) if isinstance(task.train_x, Mapping) else None
        if self._keys is not None:
            model = _Keywords(task.model, self._keys)
            load = lambda wrapper, path: task.load_checkpoint(wrapper.model, path)  # noqa: E731
        sample_wise = _sample_wise_is_exact(task)
        self.mode = "sample_wise" if sample_wise else "loop"
        as_captum = (lambda loss: loss) if sample_wise else _per_sample  # the loop takes per-sample losses
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(reduction|required grads).*")
            self._tracin = TracInCP(
                model,
                TensorDataset(*_as_tuple(task.train_x, self._keys), task.train_y),
                checkpoints=[str(p) for p in task.checkpoints],
                # Captum's default loader cannot carry a learning rate beside the weights.
                checkpoints_load_func=load,
                loss_fn=as_captum(task.loss_fn),
                test_loss_fn=None if task.test_loss_fn is None else as_captum(task.test_loss_fn),
                batch_size=self.batch_size,
                layers=None if sample_wise else _loop_layers(model),
                sample_wise_grads_per_batch=sample_wise,
            )
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        if self._tracin is None:
            raise RuntimeError("CaptumTracIn.scores called before fit(task)")
        # Captum answers (n_test, n_train); this package's convention is (n_train, n_test).
        with warnings.catch_warnings():
            # Captum turns on requires_grad for its per-sample hooks and warns each batch that it did.
            warnings.filterwarnings("ignore", message=r"Input Tensor \d+ did not already require gradients")
            influence = self._tracin.influence((*_as_tuple(test_x, self._keys), test_y), show_progress=False)
        return influence.detach().double().numpy().T.copy()


def _per_sample(loss_fn: LossFn) -> LossFn:
    """The ``(n,)`` per-sample losses Captum's loop differentiates one by one."""
    return lambda outputs, targets: per_sample_losses(loss_fn, outputs, targets)


def _sample_wise_is_exact(task: AttributionTask) -> bool:
    """Whether Captum's fast mode covers every trainable parameter exactly (see :class:`CaptumTracIn`)."""
    model = task.model
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    if any(not p.requires_grad for p in every) or len({id(p) for p in every}) != len(every):
        return False  # frozen parameters, or a parameter shared by two modules
    if any(getattr(loss, "reduction", None) != "sum" for loss in (task.loss_fn, task.test_loss)):
        return False
    supported = (nn.Linear, nn.Conv2d)
    layers = [m for m in model.modules() if type(m) in supported]
    if any(next(m.parameters(recurse=False), None) is not None and type(m) not in supported for m in model.modules()):
        return False
    calls: dict[nn.Module, list[int]] = {m: [] for m in layers}
    handles = [m.register_forward_hook(lambda mod, args, out: calls[mod].append(args[0].dim())) for m in layers]
    try:
        with torch.no_grad():
            forward(model, take(task.train_x, slice(0, 2)))
    finally:
        for handle in handles:
            handle.remove()
    return all(c == [2] if type(m) is nn.Linear else len(c) == 1 for m, c in calls.items())


def _loop_layers(model: nn.Module) -> list[str] | None:
    """Names of the modules Captum's loop differentiates (all of a module's parameters, children
    included), covering exactly the trainable parameters; ``None`` when every parameter trains."""
    params = dict(model.named_parameters())
    if all(p.requires_grad for p in params.values()):
        return None
    owners = sorted({n.rpartition(".")[0] for n, p in params.items() if p.requires_grad})
    for owner in owners:
        frozen = [n for n, p in model.get_submodule(owner).named_parameters() if not p.requires_grad]
        if owner == "" or frozen or any(o != owner and o.startswith(owner + ".") for o in owners):
            raise ValueError(f"Captum's per-sample loop differentiates whole modules, and module {owner or '<root>'!r} "
                             f"mixes trainable and frozen parameters ({frozen or 'or holds another trainable module'}); "
                             "use FastTracIn")
    return owners
