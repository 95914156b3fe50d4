"""The one interface every training-data attribution method implements.

A :class:`AttributionTask` says *what* to attribute (a model, its training data, its
checkpoints); an :class:`Attributor` says *how*. Scores are always ``(n_train, n_test)``:
``scores[i, j]`` is the influence of training sample ``i`` on test sample ``j``, positive when
training on ``i`` lowered the loss on ``j`` (it helped).

Inputs (:data:`Inputs`) are one tensor, a tuple of tensors (the model is called ``model(*x)``) or a
mapping of tensors (``model(**x)``, e.g. integer ``input_ids`` and an ``attention_mask``), all
sharing their first (sample) dimension; :func:`n_samples`, :func:`take` and :func:`forward` are
the only ways methods touch them. A sample's loss is ``loss_fn`` on a batch of that one sample
(:func:`per_sample_losses`), whatever its reduction.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np
import torch
from torch import nn
from torch.func import vmap

if TYPE_CHECKING:
    from attribution.fast_tracin import GradientFactors

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...], Mapping[str, torch.Tensor]]
"""A batch of model inputs: a tensor, a tuple of tensors or a mapping of tensors, first dim = sample."""

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
"""``loss_fn(model_output, targets)`` of a batch: a scalar (any reduction) or per-sample values."""


def input_parts(x: Inputs) -> list[tuple[str, torch.Tensor]]:
    """The tensors of ``x`` (a tensor, a tuple or a mapping of tensors), each with its name in errors."""
    if isinstance(x, torch.Tensor):
        return [("input", x)]
    if isinstance(x, tuple):
        return [(f"input {k}", t) for k, t in enumerate(x)]
    if isinstance(x, Mapping):
        return [(f"input {k!r}", t) for k, t in x.items()]
    raise TypeError(f"inputs must be a tensor, a tuple of tensors or a mapping of tensors, got {type(x).__name__}")


def n_samples(x: Inputs) -> int:
    """The shared first dimension of every tensor of ``x``; ``ValueError`` naming the odd one out."""
    parts = input_parts(x)
    if not parts:
        raise ValueError("inputs hold no tensor")
    sizes = {}
    for name, t in parts:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            raise ValueError(f"{name} must be a tensor with a sample dimension, got {type(t).__name__} "
                             f"{tuple(getattr(t, 'shape', ()))}")
        sizes[name] = len(t)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the number of samples: {sizes}")
    return next(iter(sizes.values()))


def map_inputs(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor of ``x`` (a tensor, tuple, list or mapping), in ``x``'s form."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(map_inputs(t, fn) for t in x)
    if isinstance(x, Mapping):
        return {k: map_inputs(t, fn) for k, t in x.items()}
    raise TypeError(f"expected a tensor, a tuple of tensors or a mapping of tensors, got {type(x).__name__}")


def take(x: Inputs, rows: slice | int | torch.Tensor) -> Inputs:
    """Rows ``rows`` (a slice, an index or an index tensor) of every tensor of ``x``, in ``x``'s form."""
    return map_inputs(x, lambda t: t[rows])


def forward(model: nn.Module, x: Inputs) -> Any:
    """``model(x)``, ``model(*x)`` or ``model(**x)`` as ``x`` is a tensor, tuple or mapping."""
    if isinstance(x, torch.Tensor):
        return model(x)
    if isinstance(x, tuple):
        return model(*x)
    return model(**x)


def per_sample_losses(loss_fn: LossFn, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """``(n,)`` losses, ``[i]`` = ``loss_fn`` on the batch of sample ``i`` alone (summed if it
    returns several values), differentiable w.r.t. ``outputs``.

    This is exact for any reduction (``"sum"``, ``"mean"``, ``"none"``, weighted): the loss is
    evaluated per sample under ``torch.func.vmap``; a loss that cannot be (data-dependent Python
    control flow, ``.item()``) raises ``ValueError`` naming it. A built-in torch loss with
    ``reduction="none"`` is evaluated once on the batch instead (each value depends on one sample).
    """
    if isinstance(loss_fn, nn.modules.loss._Loss) and loss_fn.reduction == "none":
        values = loss_fn(outputs, targets)
        return values.reshape(len(values), -1).sum(dim=1)

    def one(output: Any, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(map_inputs(output, lambda t: t[None]), map_inputs(target, lambda t: t[None])).sum()

    try:
        return vmap(one)(outputs, targets)
    except Exception as error:  # vmap raises many types; name the loss and the cause
        raise ValueError(f"the loss {loss_fn!r} cannot be evaluated one sample at a time under torch.func.vmap "
                         f"({type(error).__name__}: {error}); give a loss of one batch that torch.func can trace") from error


def summed_loss(loss_fn: LossFn, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """``Σ_i`` of :func:`per_sample_losses`: one call of a built-in torch loss with ``reduction="sum"``
    (a sum of per-sample terms), per-sample evaluation otherwise."""
    if isinstance(loss_fn, nn.modules.loss._Loss) and loss_fn.reduction == "sum":
        return loss_fn(outputs, targets)
    return per_sample_losses(loss_fn, outputs, targets).sum()


@dataclass
class AttributionTask:
    """A trained model and what it was trained on.

    Args:
        model: the model; methods never change it (they work on their own copy).
        train_x: training inputs (:data:`Inputs`, ``n_train`` samples), in training-set order.
        train_y: ``(n_train, ...)`` targets, e.g. class indices.
        checkpoints: checkpoint files in training order.
        load_checkpoint: loads a checkpoint into the model it is given and returns its learning rate.
        loss_fn: the training loss of a batch, any reduction; a sample's loss is its value on that
            sample alone (:func:`per_sample_losses`).
        weight_decay: the training objective's L2 term ``(weight_decay / 2) ‖θ‖²`` over every
            trainable parameter (methods that need the objective's Hessian use it; default 0).
        test_loss_fn: the loss whose test gradients are attributed (default ``None``: ``loss_fn``).
    """

    model: nn.Module
    train_x: Inputs
    train_y: torch.Tensor
    checkpoints: Sequence[Path]
    load_checkpoint: Callable[[nn.Module, str], float]
    loss_fn: LossFn = field(default_factory=lambda: nn.CrossEntropyLoss(reduction="sum"))
    weight_decay: float = 0.0
    test_loss_fn: LossFn | None = None

    def __post_init__(self) -> None:
        n = n_samples(self.train_x)
        if len(self.train_y) != n:
            raise ValueError(f"train_x has {n} samples but train_y has {len(self.train_y)}")
        if not self.checkpoints:
            raise ValueError("checkpoints is empty; a task needs at least the trained model's checkpoint")

    @property
    def n_train(self) -> int:
        return n_samples(self.train_x)

    @property
    def test_loss(self) -> LossFn:
        """The loss of test samples: ``test_loss_fn``, or ``loss_fn`` when it is ``None``."""
        return self.loss_fn if self.test_loss_fn is None else self.test_loss_fn

    def own_copy(self) -> AttributionTask:
        """This task on a deep copy of the model, for a method to load checkpoints into."""
        return dataclasses.replace(self, model=copy.deepcopy(self.model))

    def load_final(self) -> float:
        """Load the last checkpoint (the trained model) into ``model``; return its learning rate."""
        return float(self.load_checkpoint(self.model, str(self.checkpoints[-1])))


class AttributionError(RuntimeError):
    """A method produced scores it cannot vouch for (NaN/inf, an unconverged solver, an
    indefinite Hessian) or was given a model it cannot attribute exactly; the message names the
    method and what went wrong."""


def require_finite(scores: np.ndarray, method: str) -> np.ndarray:
    """``scores`` unchanged, or :class:`AttributionError` naming ``method`` and the bad count."""
    bad = np.count_nonzero(~np.isfinite(scores))
    if bad:
        raise AttributionError(f"{method}: {bad} of {scores.size} scores are NaN or infinite")
    return scores


@dataclass(frozen=True)
class Capabilities:
    """What an :class:`Attributor` offers beyond ``fit`` and ``scores``, declared by its class;
    the :class:`Attributor` methods of a capability it lacks raise ``NotImplementedError``.

    ``gradient_factors``: :meth:`Attributor.factors` and :attr:`Attributor.checkpoint_weights`;
    its scores are ``Σ_t w_t`` of the factors' dot products at checkpoint ``t``, so a query can
    be scored against training factors computed once (query-time attribution).
    ``self_influence``: :meth:`Attributor.self_influence`, each training sample's score on itself.
    """

    gradient_factors: bool = False
    self_influence: bool = False


class Attributor(ABC):
    """A training-data attribution method: ``fit`` once on a task, then score test samples.

    ``name`` is the method's key in :data:`attribution.METHODS` (or a stable name for methods
    outside it). ``fit`` works on its own copy of the task's model: the caller's weights never change.
    ``capabilities`` declares what else it offers; ``diagnostics`` holds numbers its last ``fit``
    or ``scores`` measured (a ridge, a solver's residual), empty for a method that measures none.
    """

    name: str
    capabilities: ClassVar[Capabilities] = Capabilities()
    diagnostics: Mapping[str, float] = MappingProxyType({})

    @abstractmethod
    def fit(self, task: AttributionTask) -> Attributor:
        """Prepare for scoring (e.g. wrap the model); returns ``self``."""

    @abstractmethod
    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` float64 influence scores; ``[i, j]`` = train ``i`` on test ``j``."""

    def factors(self, x: Inputs, y: torch.Tensor, checkpoint: int = -1, test: bool = False) -> GradientFactors:
        """Per-sample gradient factors of ``(x, y)`` at checkpoint index ``checkpoint``, of the test
        loss when ``test`` (``Capabilities.gradient_factors``)."""
        raise self._lacks("gradient_factors")

    @property
    def checkpoint_weights(self) -> list[float]:
        """The weight ``w_t`` of each checkpoint's factor dot products in :meth:`scores`, in the
        order :meth:`factors` indexes them (``Capabilities.gradient_factors``)."""
        raise self._lacks("gradient_factors")

    def self_influence(self) -> np.ndarray:
        """``(n_train,)`` each training sample's score on itself (``Capabilities.self_influence``)."""
        raise self._lacks("self_influence")

    def _lacks(self, capability: str) -> NotImplementedError:
        return NotImplementedError(f"{self.name}: {type(self).__name__} declares no {capability} (Capabilities.{capability})")
