"""Text steps 2 and 3: encode the accepted and test texts once with the frozen MiniLM, then train.

- :func:`encode_text` caches what the frozen encoder gives (``features/encoded.npz``): the hidden
  states entering its top layer and the sentence embeddings, for the training and test texts.
- :func:`train_text` fine-tunes the top layer and a head (``minilm``, the model the run pays
  by) with a checkpoint per epoch, and fits the two references it is judged against: an L2
  logistic regression on the frozen embeddings (``minilm_frozen``) and TF-IDF + logistic
  regression (``tfidf_logreg``); ``training/models.csv`` holds their test accuracy and loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from datanet import Datanet
from datanet.convex import fit_logreg, judge
from datanet.models import encoders, load_checkpoint, standardization
from datanet.models.tfidf import tfidf_logreg
from datanet.text.datanet import TextDatanet
from datanet.validation import Schema
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.run import TRAINER, Run
from datanet_lab.pipeline.text import build_step as text_build
from datanet_lab.pipeline.text.build_step import build_text
from datanet_lab.provenance import file_sha256

FROZEN_L2 = 0.1
"""L2 weight of the logistic regression on the frozen embeddings (standardized): a unique optimum,
so exact influence functions and retraining ground truth apply. The best test loss of 1e-3 … 1
on the default docstring Datanet (seed 0)."""


@dataclass
class Encoded:
    """The frozen encoder's outputs for the training and test texts (:class:`encoders.EncodedTexts`)."""

    train: encoders.EncodedTexts
    test: encoders.EncodedTexts


@dataclass
class TrainedText:
    """The fine-tuned model (last checkpoint loaded), its checkpoints and per-epoch ``history``,
    and one row per model (``model, test_accuracy, test_loss, seconds``) in ``models``."""

    model: encoders.TopLayerClassifier
    checkpoints: list
    history: pd.DataFrame
    models: pd.DataFrame


@lru_cache(maxsize=1)
def encoder() -> torch.nn.Module:
    """The frozen MiniLM encoder (eval mode), loaded once per process."""
    return encoders.load_encoder()


def encode_texts(texts: tuple[str, ...], max_tokens: int) -> encoders.EncodedTexts:
    """The frozen encoder's outputs for ``texts`` (each at most ``max_tokens`` tokens)."""
    return encoders.encode(encoder(), encoders.tokenize(encoders.load_tokenizer(), texts, max_tokens))


def encode_text(run: Run) -> Encoded:
    """The cached encoder outputs of the text run's Datanet, computed once and checked by manifest."""
    return run_step(run, ENCODE)


def _encode(run: Run, staging: Path) -> None:
    dn = build_text(run).datanet
    encoded = Encoded(encode_texts(dn.train_texts, dn.max_tokens), encode_texts(dn.test_texts, dn.max_tokens))
    (staging / "features").mkdir()
    np.savez(staging / "features" / "encoded.npz",
             **{f"{split}_{part}": getattr(getattr(encoded, split), part).numpy()
                for split in ("train", "test") for part in ENCODED_PARTS})


def _load_encoded(run: Run) -> Encoded:
    stored = np.load(run.directory / "features" / "encoded.npz")
    return Encoded(*(encoders.EncodedTexts(*(torch.from_numpy(stored[f"{split}_{part}"]) for part in ENCODED_PARTS))
                     for split in ("train", "test")))


ENCODED_PARTS = ("top_input", "attention_mask", "pooled")
"""The arrays of each split in ``features/encoded.npz`` (the fields of :class:`encoders.EncodedTexts`)."""
ENCODE = Procedure(manifest.TEXT_ENCODE, _encode, _load_encoded, requires=(text_build.PROCEDURE,))


def inputs(encoded: encoders.EncodedTexts) -> dict[str, torch.Tensor]:
    """The fine-tuned model's inputs: ``{"hidden_states", "attention_mask"}``."""
    return {"hidden_states": encoded.top_input, "attention_mask": encoded.attention_mask}


def frozen_datanet(dn: TextDatanet, encoded: Encoded) -> Datanet:
    """The text Datanet as a tabular one whose features are the frozen sentence embeddings
    ``(n, 384)``: what ``minilm_frozen`` (a logistic regression) is trained and attributed on."""
    dim = encoded.train.pooled.shape[1]
    return Datanet(name=f"{dn.name}-minilm-embeddings", version=dn.version, schema=Schema(dim, dn.label_set),
                   feature_names=tuple(f"embedding_{i}" for i in range(dim)), image_shape=None,
                   contributors=dn.contributors, decisions=dn.decisions,
                   train_x=encoded.train.pooled.numpy(), train_y=dn.train_y, train_ids=dn.train_ids,
                   train_contributors=dn.train_contributors, test_x=encoded.test.pooled.numpy(), test_y=dn.test_y)


def train_text(run: Run) -> TrainedText:
    """The text run's models: reused (the fine-tuned model from its last checkpoint) when ``run``
    holds them from the same parameters and inputs, otherwise trained, saved to ``training/`` and
    the fine-tuned model's run recorded in the ledger."""
    return run_step(run, TRAIN)


def _train(run: Run, staging: Path) -> TrainedText:
    dn, encoded = build_text(run).datanet, encode_text(run)
    folder = staging / "training"
    train_y, test_y = torch.from_numpy(dn.train_y), torch.from_numpy(dn.test_y)
    started = time.perf_counter()
    model, history, checkpoints = encoders.fine_tune(
        encoded.train.top_input, encoded.train.attention_mask, train_y, dn.n_classes, encoder(),
        epochs=run.params["text_epochs"], seed=run.params["seed"], checkpoint_dir=folder / "checkpoints",
        test=(encoded.test.top_input, encoded.test.attention_mask, test_y))
    last = history.iloc[-1]
    models = pd.DataFrame([
        {"model": "minilm", "test_accuracy": float(last["test_accuracy"]), "test_loss": float(last["test_loss"]),
         "seconds": time.perf_counter() - started},
        frozen_reference(frozen_datanet(dn, encoded)),
        tfidf_reference(dn, run.params["seed"]),
    ])
    history.to_csv(folder / "history.csv", index=False)
    models.to_csv(folder / "models.csv", index=False)
    return TrainedText(model, checkpoints, history, models)


def _train_records(run: Run, trained: TrainedText) -> list[Record]:
    last = trained.history.iloc[-1]
    return [("training_run", TRAINER, {
        "dataset_version": build_text(run).datanet.version,
        "config": {"model": "minilm", "trainable": "top encoder layer + linear head", "epochs": run.params["text_epochs"],
                   "learning_rate": encoders.LEARNING_RATE, "batch_size": encoders.BATCH_SIZE,
                   "weight_decay": encoders.WEIGHT_DECAY, "seed": run.params["seed"], "encoder": encoders.MINILM_PACKAGE},
        "checkpoints": [{"file": p.name, "sha256": file_sha256(p)} for p in trained.checkpoints],
        "metrics": {"test_accuracy": float(last["test_accuracy"]), "test_loss": float(last["test_loss"])},
    })]


def _load_trained(run: Run) -> TrainedText:
    folder = run.directory / "training"
    checkpoints = sorted((folder / "checkpoints").glob("epoch_*.pt"))
    model = encoders.TopLayerClassifier.from_encoder(encoder(), build_text(run).datanet.n_classes, run.params["seed"])
    load_checkpoint(model, checkpoints[-1])
    return TrainedText(model.eval(), checkpoints, pd.read_csv(folder / "history.csv"), pd.read_csv(folder / "models.csv"))


TRAIN = Procedure(manifest.TEXT_TRAIN, _train, _load_trained, records=_train_records,
                  requires=(text_build.PROCEDURE, ENCODE))


def frozen_reference(dn: Datanet, l2: float = FROZEN_L2) -> dict[str, float | str]:
    """``minilm_frozen``'s test accuracy and mean loss: the L2 logistic regression on the
    standardized frozen embeddings of ``dn`` (:func:`frozen_datanet`)."""
    started = time.perf_counter()
    mean, std = standardization(dn.train_x)
    fit = fit_logreg((dn.train_x - mean) / std, dn.train_y, dn.n_classes, l2)
    outcome = judge(fit.logits((dn.test_x - mean) / std), dn.test_y)
    return {"model": "minilm_frozen", "test_accuracy": outcome.accuracy, "test_loss": float(outcome.loss.mean()),
            "seconds": time.perf_counter() - started}


def tfidf_reference(dn: TextDatanet, seed: int) -> dict[str, float | str]:
    """``tfidf_logreg``'s test accuracy and mean loss on ``dn`` (the non-transformer reference)."""
    started = time.perf_counter()
    result = tfidf_logreg(dn.train_texts, dn.train_y, dn.test_texts, dn.test_y, seed)
    return {"model": "tfidf_logreg", "test_accuracy": result.accuracy, "test_loss": result.loss,
            "seconds": time.perf_counter() - started}
