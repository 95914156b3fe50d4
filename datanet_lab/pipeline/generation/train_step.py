"""Generation step 2, train: the LM of the run, with a checkpoint per epoch; held-out perplexity
against a unigram model.

``lm_model`` picks the setting: ``scratch`` trains a byte-level BPE tokenizer and a small GPT-2 from
scratch on the accepted documents; ``pretrained`` fine-tunes the kit's base GPT-2
(:mod:`datanet.models.lm_base`, pretrained once on docstrings of other packages and cached) and
a local directory fine-tunes the user's own causal LM, each with its own tokenizer. Fine-tuning
updates every parameter at :data:`FINETUNE_LEARNING_RATE`, or with ``lm_lora_rank`` > 0 only LoRA
adapters of that rank.

``training/`` holds ``checkpoints/epoch-NNN/`` (weights, config and tokenizer per epoch; the last
is the model the run generates with), ``checkpoints/lm_config.json``, ``history.csv`` (mean
training NLL per epoch), ``summary.json`` (time, tokens/s, perplexities: the base's too when
fine-tuned) and ``base.json`` (the base's directory and weights hash, or none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from datanet.models import lm, lm_base
from datanet.text.lm_datanet import LMDatanet
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.generation import build_step as gen_build
from datanet_lab.pipeline.generation.build_step import build_generation
from datanet_lab.pipeline.run import TRAINER, Run
from datanet_lab.provenance import file_sha256


@dataclass
class TrainedGeneration:
    """The trained LM (last checkpoint), its tokenizer and config, the accepted documents' token
    ids (``documents[i]``: document ``i`` of ``LMDatanet.accepted``), the checkpoint directories,
    the per-epoch ``history``, the ``summary`` (seconds, tokens/s, perplexities) and the ``base``
    model directory it was fine-tuned from (``None``: trained from scratch)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    config: lm.LMConfig
    documents: list[list[int]]
    checkpoints: list[Path]
    history: pd.DataFrame
    summary: dict[str, Any]
    base: Path | None = None


BATCH_SIZE, LEARNING_RATE = 4, 2e-3
"""Small batches at a higher rate: on the small default Datanets (a few hundred documents) the
library's 16 at 1e-3 take too few steps for the memorised passage to be learnt."""
FINETUNE_LEARNING_RATE = 5e-4
"""Fine-tuning every weight of a base moves them at a quarter of the from-scratch rate (LoRA
adapters, which start at zero, train at the from-scratch rate)."""


def lm_config(params: dict[str, Any]) -> lm.LMConfig:
    """The run's GPT-2 config: 2 layers, 4 heads, ``gen_width`` wide, a ``gen_vocab_size`` BPE,
    ``gen_epochs`` epochs of batches of :data:`BATCH_SIZE`, seeded by ``seed``."""
    full_fine_tune = params["lm_model"] != "scratch" and not params["lm_lora_rank"]
    rate = FINETUNE_LEARNING_RATE if full_fine_tune else LEARNING_RATE
    return lm.LMConfig(n_embd=params["gen_width"], vocab_size=params["gen_vocab_size"], epochs=params["gen_epochs"],
                       batch_size=BATCH_SIZE, learning_rate=rate, seed=params["seed"], lora_rank=params["lm_lora_rank"])


def base_model(params: dict[str, Any]) -> Path | None:
    """The directory of the model ``lm_model`` fine-tunes (the kit's cached base, pretrained here
    if missing, or the user's directory), or ``None`` for ``scratch``."""
    if params["lm_model"] == "scratch":
        return None
    if params["lm_model"] == "pretrained":
        return lm_base.pretrained_base()
    return Path(params["lm_model"]).expanduser().resolve()


def train_generation(run: Run) -> TrainedGeneration:
    """The generation run's LM: reused (its last checkpoint) when ``run`` holds it from the same
    parameters and Datanet, otherwise trained, saved and recorded in the ledger (``training_run``
    with the config, every checkpoint's weight hash and the perplexities)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> TrainedGeneration:
    dn, config, base = build_generation(run), lm_config(run.params), base_model(run.params)
    folder = staging / "training"
    base_lm, tokenizer = (None, lm.train_tokenizer(dn.train_texts, config.vocab_size)) if base is None else lm.load_lm(base)
    documents = lm.encode_documents(tokenizer, dn.train_texts)
    trained = lm.train_lm(documents, config, tokenizer=tokenizer, checkpoint_dir=folder / "checkpoints", base=base)
    history = pd.DataFrame({"epoch": range(1, config.epochs + 1), "train_loss": trained.epoch_losses})
    history.to_csv(folder / "history.csv", index=False)
    summary = _summary(dn, trained, documents, base_lm)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (folder / "base.json").write_text(json.dumps(_base_record(base), indent=2, sort_keys=True) + "\n")
    return TrainedGeneration(trained.model, tokenizer, config, documents, trained.checkpoints, history, summary, base)


def _base_record(base: Path | None) -> dict[str, Any]:
    """The base's directory and weights hash (what the ledger records of it); ``{}`` from scratch."""
    if base is None:
        return {}
    weights = next(base / n for n in ("model.safetensors", "pytorch_model.bin") if (base / n).is_file())
    return {"directory": str(base), "weights": weights.name, "sha256": file_sha256(weights)}


def _records(run: Run, trained: TrainedGeneration) -> list[Record]:
    return [("training_run", TRAINER, {
        "dataset_version": build_generation(run).version,
        "model": trained.model.config.model_type,
        "base": _base_record(trained.base) or None,
        "config": {k: v for k, v in vars(trained.config).items()},
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(trained.tokenizer)},
        "checkpoints": [{"file": f"{p.name}/model.safetensors", "sha256": file_sha256(p / "model.safetensors")}
                        for p in trained.checkpoints],
        "metrics": {k: trained.summary[k] for k in ("validation_perplexity", "unigram_perplexity", "train_loss")},
    })]


def _load(run: Run) -> TrainedGeneration:
    folder = run.directory / "training"
    checkpoints = sorted((folder / "checkpoints").glob("epoch-*"))
    model, tokenizer = lm.load_lm(checkpoints[-1])
    base = json.loads((folder / "base.json").read_text()).get("directory")
    return TrainedGeneration(model, tokenizer, lm_config(run.params),
                             lm.encode_documents(tokenizer, build_generation(run).train_texts), checkpoints,
                             pd.read_csv(folder / "history.csv"), json.loads((folder / "summary.json").read_text()),
                             None if base is None else Path(base))


PROCEDURE = Procedure(manifest.GEN_TRAIN, _compute, _load, records=_records, requires=(gen_build.PROCEDURE,))


def _summary(dn: LMDatanet, trained: lm.TrainedLM, documents: list[list[int]],
             base: PreTrainedModel | None) -> dict[str, Any]:
    """Training time and speed, the last epoch's training NLL, and the held-out perplexity of the
    LM, of the base it was fine-tuned from (``None`` from scratch) and of a unigram (context-free)
    model on the same targets."""
    tokenizer = trained.tokenizer
    held_out = lm.encode_documents(tokenizer, dn.validation_texts)
    eot = lm.eot_id(tokenizer)
    return {
        "base_validation_perplexity": None if base is None else lm.perplexity(base, held_out),
        "seconds": round(trained.seconds, 1),
        "tokens_per_second": round(trained.tokens_per_second),
        "train_documents": len(documents),
        "train_tokens": sum(map(len, documents)),
        "train_loss": trained.epoch_losses[-1],
        "validation_perplexity": lm.perplexity(trained.model, held_out),
        "unigram_perplexity": lm.unigram_perplexity(documents, held_out, len(tokenizer), eot),
        "train_perplexity": math.exp(trained.epoch_losses[-1]),
    }
