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
    """

    model: nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    checkpoints: Sequence[Path]
    load_checkpoint: Callable[[nn.Module, str], float]
    loss_fn: nn.Module = field(default_factory=lambda: nn.CrossEntropyLoss(reduction="sum"))


class Attributor(ABC):
    """A training-data attribution method: ``fit`` once on a task, then score test samples."""

    name: str

    @abstractmethod
    def fit(self, task: AttributionTask) -> Attributor:
        """Prepare for scoring (e.g. wrap the model); returns ``self``."""

    @abstractmethod
    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` float64 influence scores; ``[i, j]`` = train ``i`` on test ``j``."""
