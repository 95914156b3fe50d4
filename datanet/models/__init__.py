"""Model builders by family: :mod:`~datanet.models.tabular` (logistic regression, MLP, the
checkpoint format), :mod:`~datanet.models.encoders` (MiniLM: frozen features, the fine-tuned top
layer) and :mod:`~datanet.models.tfidf` (the TF-IDF reference).

The tabular names are re-exported here; the text modules are imported by name
(``from datanet.models.encoders import ...``) so that tabular users never load transformers.
"""

from datanet.models.tabular import (
    CHECKPOINT_KEYS,
    MLP_HIDDEN,
    MODELS,
    Standardize,
    build_model,
    load_checkpoint,
    save_checkpoint,
    standardization,
)

__all__ = [
    "CHECKPOINT_KEYS",
    "MLP_HIDDEN",
    "MODELS",
    "Standardize",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
    "standardization",
]
# Causal LMs (a small GPT-2 from scratch, byte-level BPE, seeded generation): datanet.models.lm,
# imported by name like the encoders, so that tabular users never load transformers.
