"""A base GPT-2 pretrained once on a general offline corpus: where the fine-tuning setting starts.

The systems this kit studies fine-tune a base model on a Datanet. Here the base learns Python
docstring prose in general from packages no LM Datanet draws from (:data:`BASE_PACKAGES`: two
installed libraries and standard-library packages other than the off-topic ones), so that
fine-tuning on the Datanet's packages only specialises it, and leave-one-contributor-out retraining
redoes only the fine-tune (from the same base weights), not the whole model.

The base is cached by a key over everything that produced it: the corpus hash (which covers the
installed package versions), the :class:`~datanet.models.lm.LMConfig` and torch's version. A build
writes into a staging directory and renames it into place when complete, so a killed build leaves
nothing that would be reused; concurrent builds of one key keep the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from datanet.models import lm
from datanet.text.docstrings import docstring_corpus
from datanet.text.table import TextTable

BASE_PACKAGES = ("transformers", "matplotlib", "dask", "distributed", "IPython", "tornado", "jinja2", "pygments",
                 "unittest", "multiprocessing", "importlib", "collections", "concurrent", "urllib", "idlelib", "ctypes")
"""Packages whose docstrings the base learns from: locked libraries and standard-library packages,
none an LM Datanet's honest or off-topic source."""
BASE_FILE = "base.json"
"""Written last into a cached base: its key, corpus provenance, config and perplexity."""


def default_cache() -> Path:
    """``$DATANET_LAB_CACHE`` or ``~/.cache/datanet-lab``: where pretrained bases are kept."""
    return Path(os.environ.get("DATANET_LAB_CACHE") or Path.home() / ".cache" / "datanet-lab")


@dataclass(frozen=True)
class BaseSpec:
    """What a base is pretrained from: ``per_package`` docstrings of each of ``packages`` (a
    corpus seeded by ``config.seed``) and the GPT-2 ``config`` (its own BPE of ``config.vocab_size``).
    The default: up to 150 docstrings of each of 16 packages, 2 layers 96 wide, a 4,096-token BPE,
    3 epochs of batches of 16."""

    packages: tuple[str, ...] = BASE_PACKAGES
    per_package: int = 150
    config: lm.LMConfig = field(default_factory=lambda: lm.LMConfig(n_embd=96, epochs=3))


def base_corpus(spec: BaseSpec) -> TextTable:
    """The docstrings the base is pretrained on (:func:`~datanet.text.docstrings.docstring_corpus`)."""
    return docstring_corpus(spec.packages, spec.per_package, seed=spec.config.seed, name="base")


def base_key(corpus: TextTable, config: lm.LMConfig) -> str:
    """16 hex digits naming a base: the corpus hash, the config and torch's version."""
    payload = json.dumps({"corpus_sha256": corpus.provenance["corpus_sha256"], "config": asdict(config),
                          "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrained_base(spec: BaseSpec = BaseSpec(), cache: Path | None = None) -> Path:
    """The directory of the base pretrained from ``spec`` (a saved LM: :func:`~datanet.models.lm.load_lm`),
    ``<cache>/base-<key>/``: reused when cached, otherwise pretrained (minutes at the default) and cached.
    ``<dir>/base.json`` holds the key, the corpus provenance, the config, the seconds and tokens/s
    of pretraining and the training perplexity."""
    cache = default_cache() if cache is None else Path(cache)
    corpus = base_corpus(spec)
    key = base_key(corpus, spec.config)
    target = cache / f"base-{key}"
    if (target / BASE_FILE).is_file():
        return target
    staging = cache / f".base-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = lm.train_tokenizer(corpus.texts, spec.config.vocab_size)
    documents = lm.encode_documents(tokenizer, corpus.texts)
    trained = lm.train_lm(documents, spec.config, tokenizer=tokenizer, progress=f"pretraining base {key}")
    lm.save_lm(trained.model, tokenizer, staging)
    summary = {"key": key, "corpus": corpus.provenance, "documents": len(documents),
               "tokens": sum(map(len, documents)), "config": asdict(spec.config), "torch": torch.__version__,
               "seconds": round(trained.seconds, 1), "tokens_per_second": round(trained.tokens_per_second),
               "train_loss": trained.epoch_losses[-1]}
    (staging / BASE_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    try:
        os.replace(staging, target)
    except OSError:  # another build of the same key finished first: keep it
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / BASE_FILE).is_file():
            raise
    return target
