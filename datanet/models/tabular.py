"""Models a Datanet trains, their feature standardization, and their checkpoint file format.

Both models (L2-regularized logistic regression, the default, and a small MLP) start with a
:class:`Standardize` layer whose mean/std are buffers fitted on the accepted training set
(:func:`standardization`), so attribution methods see raw features and only trainable layers have
gradients. Code that standardizes features outside a model (the method comparison) calls the same
:func:`standardization`.

A checkpoint file holds ``{"state_dict", "learning_rate", "epoch"}``: :func:`save_checkpoint`
writes it and :func:`load_checkpoint` restores the weights and returns the learning rate, the form
Captum's TracIn expects of a ``checkpoints_load_func``. Every writer of checkpoints goes through
this pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

MODELS = ("logreg", "mlp")
MLP_HIDDEN = 64
CHECKPOINT_KEYS = ("state_dict", "learning_rate")
"""What :func:`load_checkpoint` needs of a checkpoint (``epoch`` is informative)."""


def standardization(train_x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``mean`` and ``std`` ``(n_features,)`` float64 of ``(n, n_features)`` training
    features: the population std (``ddof=0``, so standardized training features have unit
    variance), taken as 1 for constant features (they are then only centred)."""
    x = np.asarray(train_x, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"standardization needs (n >= 1, n_features) features, got shape {x.shape}")
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed buffers (a std of 0 is taken as 1); :meth:`fit` gives the
    layer of :func:`standardization`, the one the Datanet models use."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)))

    @classmethod
    def fit(cls, train_x: np.ndarray | torch.Tensor) -> Standardize:
        """The layer of :func:`standardization` of ``train_x``."""
        mean, std = standardization(train_x)
        return cls(torch.from_numpy(mean).float(), torch.from_numpy(std).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(name: str, train_x: torch.Tensor, n_classes: int) -> nn.Sequential:
    """A fresh, untrained model for ``(n, n_features)`` inputs and ``n_classes`` logits.

    Initial weights come from torch's global generator: seed it (e.g. in
    ``torch.random.fork_rng``) around this call for a reproducible model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    standardize = Standardize.fit(train_x)
    n_features = train_x.shape[1]
    if name == "logreg":
        return nn.Sequential(standardize, nn.Linear(n_features, n_classes))
    return nn.Sequential(standardize, nn.Linear(n_features, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, n_classes))


def save_checkpoint(model: nn.Module, directory: str | Path, epoch: int, learning_rate: float) -> Path:
    """Write ``model``'s weights after ``epoch`` to ``directory/epoch_NNN.pt`` with the
    ``learning_rate`` that TracIn weighs this checkpoint by (the step size of the steps since the
    previous one); return the path."""
    path = Path(directory) / f"epoch_{epoch:03d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "learning_rate": float(learning_rate), "epoch": int(epoch)}, path)
    return path


def load_checkpoint(model: nn.Module, path: str | Path) -> float:
    """Load a checkpoint's weights into ``model``; return its learning rate."""
    checkpoint = torch.load(path, weights_only=True)
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a checkpoint of datanet.models.save_checkpoint (missing {missing})")
    model.load_state_dict(checkpoint["state_dict"])
    return float(checkpoint["learning_rate"])
