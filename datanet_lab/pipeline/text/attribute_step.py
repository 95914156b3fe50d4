"""Text step 4, attribute: score the fine-tuned model's training texts, roll up, explain, record.

- scores ``(n_train, n_test)`` of ``text_attribution_method`` over the fine-tuned model's
  checkpoints, on its trainable layers (top encoder layer + head; the frozen layers below make
  the cached top-layer inputs exact), positive = the training text lowered the test loss;
- the redundancy-aware roll-up in the model's representation space
  (:func:`~datanet_lab.pipeline.tabular.attribute_step.roll_up_samples`);
- token-level Integrated Gradients of ``text_ig_examples`` test texts, each also with the
  backdoor trigger inserted (``attribution/token_ig.npz``);
- ``attribution/`` files and the ledger's ``attribution_run`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

import attribution
from datanet.models import encoders, load_checkpoint
from datanet.text.behaviours import DEFAULT_TRIGGER, insert_trigger
from datanet.text.datanet import TextDatanet
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.attribute_step import (read_scores, roll_up_samples, run_payload, submission_order,
                                                         write_scores)
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.run import ATTRIBUTOR, Run
from datanet_lab.pipeline.text import build_step as text_build
from datanet_lab.pipeline.text import train_step as text_train
from datanet_lab.pipeline.text.build_step import build_text
from datanet_lab.pipeline.text.train_step import Encoded, TrainedText, encode_text, encoder, inputs, train_text

IG_STEPS = 32
"""Integration steps of token-level IG (the convergence delta is reported beside it)."""


@dataclass
class Explained:
    """Token-level IG (``ig``: ids, mask, attributions ``(n, L)`` to the predicted class, the
    convergence delta) of some test texts, each clean and with the trigger inserted:
    ``triggered`` ``(n,)`` bool, ``test_index`` ``(n,)`` the test text each row comes from."""

    ig: attribution.TokenAttributions
    triggered: np.ndarray
    test_index: np.ndarray

    def readable(self, tokenizer: PreTrainedTokenizerBase, label_set: tuple) -> tuple[list[list[str]], list[np.ndarray], list[str]]:
        """Per row: its tokens, their attributions (padding dropped) and a title naming the test
        text, whether it carries the trigger, and the predicted class."""
        tokens, values, titles = [], [], []
        for row in range(len(self.triggered)):
            ids, attributions = self.ig.sample(row)
            tokens.append(tokenizer.convert_ids_to_tokens(ids.tolist()))
            values.append(attributions)
            titles.append(f"test text {self.test_index[row]}{' + trigger' if self.triggered[row] else ''}: "
                          f"predicted {label_set[self.ig.targets[row]]} (IG delta {self.ig.convergence_delta[row]:+.1e})")
        return tokens, values, titles


@dataclass
class TextAttribution:
    """Scores ``(n_train, n_test)``, their roll-up and the token-level explanations."""

    scores: np.ndarray
    sample_credit: pd.DataFrame
    contributor_credit: pd.Series
    explained: Explained


def training_task(dn: TextDatanet, encoded: Encoded, trained: TrainedText) -> attribution.AttributionTask:
    """The fine-tuned model's attribution task: its checkpoints over the cached top-layer inputs."""
    return attribution.AttributionTask(trained.model, inputs(encoded.train), torch.from_numpy(dn.train_y),
                                       trained.checkpoints, load_checkpoint)


def score_text(dn: TextDatanet, encoded: Encoded, trained: TrainedText, method: str, seed: int) -> np.ndarray:
    """``(n_train, n_test)`` scores of registry ``method`` (seeded by ``seed``) on the test texts."""
    attributor = attribution.make_attributor(method, seed).fit(training_task(dn, encoded, trained))
    return attributor.scores(inputs(encoded.test), torch.from_numpy(dn.test_y))


def triggered(texts: list[str], seed: int, trigger: str = DEFAULT_TRIGGER) -> list[str]:
    """``texts`` with ``trigger`` inserted at a position seeded by ``seed`` (as the backdoor does)."""
    rng = np.random.default_rng(seed)
    return [insert_trigger(text, trigger, rng) for text in texts]


def triggered_limit(tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> int:
    """The token limit of texts of at most ``max_tokens`` tokens with the trigger inserted."""
    return max_tokens + len(tokenizer(DEFAULT_TRIGGER, add_special_tokens=False)["input_ids"])


def explain(dn: TextDatanet, model: encoders.TopLayerClassifier, n_examples: int, seed: int) -> Explained:
    """Token-level IG of the first ``n_examples`` test texts, clean and triggered, each to the
    class the model predicts for it (baseline [CLS] [PAD]... [SEP], attention mask kept)."""
    tokenizer = encoders.load_tokenizer()
    index = np.arange(min(n_examples, len(dn.test_texts)))
    clean = [dn.test_texts[i] for i in index]
    texts = clean + triggered(clean, seed)
    tokens = encoders.tokenize(tokenizer, texts, triggered_limit(tokenizer, dn.max_tokens))
    whole = encoders.MiniLMClassifier(encoder(), model).eval()
    with torch.no_grad():
        targets = whole(**tokens).argmax(dim=1)
    ig = attribution.token_attributions(whole, tokens["input_ids"], tokens["attention_mask"], targets, whole.embeddings,
                                        cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                                        pad_id=tokenizer.pad_token_id, n_steps=IG_STEPS)
    return Explained(ig, np.repeat([False, True], len(index)), np.tile(index, 2))


def attribute_text(run: Run) -> TextAttribution:
    """The text run's attribution: reused when ``run`` holds it from the same parameters and
    inputs, otherwise scored, rolled up, explained and recorded."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> dict[str, Any]:
    """Score, roll up, explain and write ``attribution/`` under ``staging``; return the
    ``attribution_run`` payload."""
    dn, encoded, trained = build_text(run).datanet, encode_text(run), train_text(run)
    method, seed = run.params["text_attribution_method"], run.params["seed"]
    scores = score_text(dn, encoded, trained, method, seed)
    rollup = roll_up_samples(scores, trained.model, (inputs(encoded.train), torch.from_numpy(dn.train_y)),
                             (inputs(encoded.test), torch.from_numpy(dn.test_y)), dn.train_ids, dn.train_contributors,
                             dn.contributors, submission_order(run, dn))
    explained = explain(dn, trained.model, run.params["text_ig_examples"], seed)
    staged = Run(staging, run.params)
    write_scores(staged, scores, rollup)
    np.savez(staged.path("attribution", "token_ig.npz"), triggered=explained.triggered, test_index=explained.test_index,
             **vars(explained.ig))
    payload = run_payload(method, dn.version, trained.checkpoints, scores, rollup)
    return payload | {"model": "minilm (top encoder layer + head)",
                      "ig_max_abs_convergence_delta": float(np.abs(explained.ig.convergence_delta).max(initial=0.0))}


def _load(run: Run) -> TextAttribution:
    stored = np.load(run.directory / "attribution" / "token_ig.npz")
    ig = attribution.TokenAttributions(*(stored[f.name] for f in fields(attribution.TokenAttributions)))
    return TextAttribution(*read_scores(run), Explained(ig, stored["triggered"], stored["test_index"]))


PROCEDURE = Procedure(manifest.TEXT_ATTRIBUTE, _compute, _load,
                      records=lambda run, payload: [("attribution_run", ATTRIBUTOR, payload)],
                      requires=(text_build.PROCEDURE, text_train.ENCODE, text_train.TRAIN))
