"""The steps of a generation run, as notebook 08 calls them: an LM Datanet, a small GPT-2 trained
from scratch on it, the suffix-array index of its training documents, seeded generations, and a
payment per generation by span credit with its evidence in the ledger.

A generation run lives in ``<run>/generation/`` (:func:`generation_run`) with its own manifests,
keystore and ledger. Its layout::

    ledger.sqlite  generations.jsonl  comparison.csv  loco.csv  ceiling.json  figures/*.png
    results.json (from `datanet-lab run --generation`: the figures the README quotes)
    manifests/   build.json train.json index.json generate.json pay.json
    dataset/     lm_datanet.json      (documents with verdicts, held-out texts, prompts)
    training/    history.csv summary.json checkpoints/epoch-NNN/ (weights, tokenizer)
    index/       tokenized.0 offset.0 table.0 datanet-span-index.json   (infini-gram v4, u16; no
                 table.0 with span_engine="reference")
    credit/      generation_credit.csv spans.csv
"""

from datanet_lab.pipeline.generation.build_step import build_generation, generation_run, planted_lm_datanet
from datanet_lab.pipeline.generation.generate_step import generate_texts, generation_id
from datanet_lab.pipeline.generation.index_step import index_generation
from datanet_lab.pipeline.generation.pay_step import pay_generation
from datanet_lab.pipeline.generation.train_step import TrainedGeneration, lm_config, train_generation

__all__ = ["TrainedGeneration", "build_generation", "generate_texts", "generation_id", "generation_run",
           "index_generation", "lm_config", "pay_generation", "planted_lm_datanet", "train_generation"]
