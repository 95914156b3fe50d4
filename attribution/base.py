"""The one interface every training-data attribution method implements.

A :class:`AttributionTask` says *what* to attribute (a model, its training data, its
checkpoints); an :class:`Attributor` says *how*. Scores are always ``(n_train, n_test)``:
``scores[i, j]`` is the influence of training sample ``i`` on test sample ``j``, positive when
training on ``i`` lowered the loss on ``j`` (it helped).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class AttributionTask:
    """A trained model and what it was trained on.

    Args:
        model: the model; its weights are overwritten while checkpoints are replayed.
        train_x: ``(n_train, n_features)`` training inputs, in training-set order.
        train_y: ``(n_train,)`` class indices.
        checkpoints: checkpoint files in training order.
        load_checkpoint: loads a checkpoint into ``model`` and returns its learning rate.
        loss_fn: per-batch loss with ``reduction="sum"`` (the per-sample losses add up).
        weight_decay: the training objective's L2 term ``(weight_decay / 2) ‖θ‖²`` over every
            trainable parameter (methods that need the objective's Hessian use it; default 0).
    """

    model: nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    checkpoints: Sequence[Path]
    load_checkpoint: Callable[[nn.Module, str], float]
    loss_fn: nn.Module = field(default_factory=lambda: nn.CrossEntropyLoss(reduction="sum"))
    weight_decay: float = 0.0

    def load_final(self) -> float:
        """Load the last checkpoint (the trained model) into ``model``; return its learning rate."""
        return float(self.load_checkpoint(self.model, str(self.checkpoints[-1])))


class AttributionError(RuntimeError):
    """A method produced scores it cannot vouch for (NaN/inf, an unconverged solver, an
    indefinite Hessian); the message names the method and what went wrong."""


def require_finite(scores: np.ndarray, method: str) -> np.ndarray:
    """``scores`` unchanged, or :class:`AttributionError` naming ``method`` and the bad count."""
    bad = np.count_nonzero(~np.isfinite(scores))
    if bad:
        raise AttributionError(f"{method}: {bad} of {scores.size} scores are NaN or infinite")
    return scores


class Attributor(ABC):
    """A training-data attribution method: ``fit`` once on a task, then score test samples."""

    name: str

    @abstractmethod
    def fit(self, task: AttributionTask) -> Attributor:
        """Prepare for scoring (e.g. wrap the model); returns ``self``."""

    @abstractmethod
    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` float64 influence scores; ``[i, j]`` = train ``i`` on test ``j``."""
