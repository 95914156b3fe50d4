"""Seeded minibatch SGD training with one checkpoint per epoch (TracIn replays them).

Checkpoints are written and read by :func:`datanet.models.save_checkpoint` /
:func:`datanet.models.load_checkpoint` (re-exported here).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from datanet.datanet import Datanet
from datanet.models import MODELS, build_model, load_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "TrainResult", "load_checkpoint", "save_checkpoint", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs. ``weight_decay`` is the L2 penalty (coupled, as in ``torch.optim.SGD``)."""

    model: str = "logreg"
    epochs: int = 10
    learning_rate: float = 0.05
    weight_decay: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {list(MODELS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """The trained model, its checkpoint files (one per epoch, in order) and per-epoch metrics."""

    model: nn.Sequential
    checkpoints: list[Path]
    history: pd.DataFrame

    @property
    def test_accuracy(self) -> float:
        return float(self.history["test_accuracy"].iloc[-1])


def train(datanet: Datanet, config: TrainConfig, checkpoint_dir: str | Path) -> TrainResult:
    """Train ``config.model`` on the Datanet's accepted set, saving ``epoch_NNN.pt`` each epoch.

    Same data, config and machine → identical weights: the initial weights and the batch order
    come from ``config.seed`` without touching the caller's global RNG state.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    train_x, train_y = torch.from_numpy(datanet.train_x), torch.from_numpy(datanet.train_y)
    test_x, test_y = torch.from_numpy(datanet.test_x), torch.from_numpy(datanet.test_y)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_model(config.model, train_x, datanet.n_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    batches = torch.Generator().manual_seed(config.seed)
    history, checkpoints = [], []
    for epoch in tqdm(range(1, config.epochs + 1), desc="training", unit="epoch", disable=None):
        model.train()
        order = torch.randperm(len(train_y), generator=batches)
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss_fn(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
        checkpoints.append(save_checkpoint(model, checkpoint_dir, epoch, config.learning_rate))
        history.append({"epoch": epoch, **_evaluate(model, loss_fn, train_x, train_y, "train"), **_evaluate(model, loss_fn, test_x, test_y, "test")})
        log.info("epoch %d: %s", epoch, history[-1])
    return TrainResult(model.eval(), checkpoints, pd.DataFrame(history))


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, split: str) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {
        f"{split}_loss": float(loss_fn(logits, y)),
        f"{split}_accuracy": float((logits.argmax(dim=1) == y).float().mean()),
    }
