"""A seeded MLP retrainer: the ground-truth retraining of attribution on a non-convex model.

:class:`MLPRetrainer` trains a ``n_features-hidden-n_classes`` ReLU MLP by minibatch SGD with a
cosine learning-rate schedule and coupled weight decay, on one thread, from an initialisation and
a batch order drawn from local generators seeded by ``seed``; the same ``(indices, seed)`` gives
the same weights bit for bit. Called as a retrainer ``(indices, seed) -> Outcome`` it returns the
per-test-sample loss and margin (:func:`datanet.convex.judge`); :meth:`MLPRetrainer.train` also
writes ``n_checkpoints`` evenly spaced checkpoints (:func:`datanet.models.save_checkpoint`) for
the attribution methods that replay them.

Features are expected already standardized (the model has no ``Standardize`` layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datanet.convex import Outcome, judge
from datanet.models import save_checkpoint


def mlp(n_features: int, hidden: int, n_classes: int, seed: int) -> nn.Sequential:
    """A fresh ``Linear-ReLU-Linear`` model whose initial weights are drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


@dataclass(frozen=True)
class MLPRetrainer:
    """Retrains the MLP on a subset of the training rows; picklable for worker processes.

    Args:
        train_x, train_y, test_x, test_y: standardized features ``(n, d)`` and class indices.
        n_classes: number of classes.
        hidden: hidden units (default 128).
        epochs: passes over the subset (default 20).
        learning_rate: peak SGD step size (default 0.1), cosine-annealed per step to 0.
        weight_decay: coupled L2 penalty, as in ``torch.optim.SGD`` (default 1e-3).
        batch_size: minibatch size (default 32).
        n_checkpoints: checkpoints :meth:`train` writes, evenly spaced in epochs (default 5).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    hidden: int = 128
    epochs: int = 20
    learning_rate: float = 0.1
    weight_decay: float = 1e-3
    batch_size: int = 32
    n_checkpoints: int = 5

    def __post_init__(self) -> None:
        for name in ("hidden", "epochs", "batch_size", "n_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLPRetrainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_checkpoints > self.epochs:
            raise ValueError(f"MLPRetrainer.n_checkpoints ({self.n_checkpoints}) must be <= epochs ({self.epochs})")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"MLPRetrainer needs learning_rate > 0 and weight_decay >= 0, got "
                             f"{self.learning_rate} and {self.weight_decay}")

    def __call__(self, indices: np.ndarray, seed: int = 0) -> Outcome:
        model, _ = self.train(indices, seed)
        with torch.no_grad():
            logits = model(torch.as_tensor(self.test_x, dtype=torch.float32)).double().numpy()
        return judge(logits, np.asarray(self.test_y))

    def checkpoint_epochs(self) -> list[int]:
        """The epochs after which :meth:`train` saves a checkpoint (the last one is ``epochs``)."""
        return [round(self.epochs * (k + 1) / self.n_checkpoints) for k in range(self.n_checkpoints)]

    def train(self, indices: np.ndarray, seed: int = 0, checkpoint_dir: str | Path | None = None
              ) -> tuple[nn.Sequential, list[Path]]:
        """The model trained on rows ``indices`` with ``seed``, and the checkpoint files written to
        ``checkpoint_dir`` (none when it is ``None``). A checkpoint's ``learning_rate`` is the mean
        step size since the previous one (what TracIn weighs that checkpoint's gradients by)."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if not len(indices):
            raise ValueError("MLPRetrainer.train needs at least one training row, got an empty subset")
        x = torch.as_tensor(self.train_x[indices], dtype=torch.float32)
        y = torch.as_tensor(self.train_y[indices], dtype=torch.int64)
        model = mlp(x.shape[1], self.hidden, self.n_classes, seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(x) / self.batch_size)
        total = steps_per_epoch * self.epochs
        order_rng = torch.Generator().manual_seed(seed)
        saves, paths, step, rates = set(self.checkpoint_epochs()), [], 0, []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny products: one thread per retrain, parallelism is across processes
        try:
            for epoch in range(1, self.epochs + 1):
                for batch in torch.randperm(len(x), generator=order_rng).split(self.batch_size):
                    rate = 0.5 * self.learning_rate * (1 + math.cos(math.pi * step / total))
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                    rates.append(rate)
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                    optimizer.step()
                    step += 1
                if checkpoint_dir is not None and epoch in saves:
                    paths.append(save_checkpoint(model, checkpoint_dir, epoch, float(np.mean(rates))))
                    rates = []
        finally:
            torch.set_num_threads(threads)
        return model.eval(), paths
