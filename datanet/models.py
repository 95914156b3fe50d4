"""Models a Datanet trains: L2-regularized logistic regression (default) and a small MLP.

Both start with a :class:`Standardize` layer whose mean/std are buffers fitted on the accepted
training set, so attribution methods see raw features and only trainable layers have gradients.
"""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("logreg", "mlp")
MLP_HIDDEN = 64


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed buffers (std of constant features is taken as 1)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(name: str, train_x: torch.Tensor, n_classes: int) -> nn.Sequential:
    """A fresh, untrained model for ``(n, n_features)`` inputs and ``n_classes`` logits.

    Initial weights come from torch's global generator: seed it (e.g. in
    ``torch.random.fork_rng``) around this call for a reproducible model.
    """
    standardize = Standardize(train_x.mean(dim=0), train_x.std(dim=0))
    n_features = train_x.shape[1]
    if name == "logreg":
        return nn.Sequential(standardize, nn.Linear(n_features, n_classes))
    if name == "mlp":
        return nn.Sequential(standardize, nn.Linear(n_features, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, n_classes))
    raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
