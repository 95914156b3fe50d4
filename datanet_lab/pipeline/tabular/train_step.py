"""Step 2, train: train on the accepted set with a checkpoint per epoch, record the training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from datanet import Datanet
from datanet.models import build_model, load_checkpoint
from datanet.training import TrainConfig, TrainResult, train
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular import build_step
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.run import TRAINER, Run
from datanet_lab.provenance import file_sha256


def train_config(run: Run) -> TrainConfig:
    return TrainConfig(model=run.params["model"], epochs=run.params["epochs"], seed=run.params["seed"])


def train_model(run: Run) -> TrainResult:
    """The run's trained model: reused (rebuilt from its last checkpoint) when the run directory
    holds it from the same parameters and Datanet, otherwise trained on the accepted set with a
    checkpoint per epoch (``training/``) and recorded in the ledger
    (:func:`~datanet_lab.pipeline.engine.run_step`)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> TrainResult:
    result = train(datanet(run), train_config(run), staging / "training" / "checkpoints")
    result.history.to_csv(staging / "training" / "history.csv", index=False)
    return result


def _records(run: Run, result: TrainResult) -> list[Record]:
    return [training_record(datanet(run).version, train_config(run), result)]


def training_record(dataset_version: str, config: TrainConfig, result: TrainResult, **context: Any) -> Record:
    """The ``training_run`` record of ``result``: the data version, the config, every checkpoint's
    SHA-256 and the final test metrics (plus ``context``, e.g. the round)."""
    last = result.history.iloc[-1]
    return ("training_run", TRAINER, {
        "dataset_version": dataset_version, **context,
        "config": config.to_dict(),
        "checkpoints": [{"file": p.name, "sha256": file_sha256(p)} for p in result.checkpoints],
        "metrics": {"test_accuracy": float(last["test_accuracy"]), "test_loss": float(last["test_loss"])},
    })


def _load(run: Run) -> TrainResult:
    return trained_from(run.directory / "training", run.params["model"], datanet(run))


def trained_from(folder: Path, model_name: str, dn: Datanet) -> TrainResult:
    """A finished training of ``model_name`` on ``dn`` from ``folder`` (``history.csv``,
    ``checkpoints/epoch_*.pt``): the model rebuilt from its last checkpoint, in eval mode."""
    checkpoints = sorted((folder / "checkpoints").glob("epoch_*.pt"))
    model = build_model(model_name, torch.from_numpy(dn.train_x), dn.n_classes)
    load_checkpoint(model, checkpoints[-1])
    return TrainResult(model.eval(), checkpoints, pd.read_csv(folder / "history.csv"))


PROCEDURE = Procedure(manifest.TRAIN, _compute, _load, records=_records, requires=(build_step.PROCEDURE,))
