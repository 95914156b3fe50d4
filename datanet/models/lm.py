"""A causal LM trained on an LM Datanet's documents, offline: a small GPT-2 from scratch, or a
saved model (a pretrained base, or the user's own Hugging Face directory) fine-tuned on them.

::

    texts --train_tokenizer (byte-level BPE, <|endoftext|>)--> tokenizer   (or the base's, load_lm)
          --encode_documents--> documents_token_ids: one list of ids per document
          --document_windows--> Windows: input_ids, attention_mask, labels (m, n_positions), document (m,)
          --train_lm / LMRetrainer (base=None: from scratch; base=dir: fine-tuned)--> causal LM
            (+ a checkpoint per epoch)
          --generate--> Generation (prompt ids, generated ids, text)
          --sequence_log_likelihoods--> log p(generated | prompt) per generation

**Training examples are per-document windows**, not chunks of the concatenated corpus: document
``i`` becomes ``[eot] + ids_i + [eot]``, cut into windows of at most ``n_positions`` tokens that
overlap by one token, so every token after the leading ``eot`` is a target exactly once and no
window mixes two documents. A window's gradient is thus one document's gradient, and dropping a
document (leave-one-contributor-out) leaves every other window unchanged. Windows are
right-padded; padded positions have ``attention_mask`` 0 and label ``IGNORE`` (-100).

Label convention (Hugging Face's): ``labels`` has the shape of ``input_ids``; position ``t + 1``'s
label is predicted from positions ``<= t``, so ``labels[:, 0]`` is never a target.

Every dropout is 0 and attention is the eager kernel (plain matmul + softmax, traceable by
``torch.func``), so training and eval modes compute the same function; initialisation and batch
order come from ``seed`` alone, so the same documents, config and thread count give the same
weights bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Never download: tokenizers and models are built here or read from local directories.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.nn import functional as F
from tqdm import tqdm
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel,
                          PreTrainedTokenizerFast)
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()  # a bar per checkpoint saved or loaded is noise in notebooks and logs

EOT = "<|endoftext|>"
"""The end-of-text token: separates documents, starts every window and every prompt."""
VOCAB_SIZE = 4096
IGNORE = -100
"""Label of a position that is not a target (padding, prompt tokens)."""
EVAL_BATCH_SIZE = 64


def train_tokenizer(texts: Sequence[str], vocab_size: int = VOCAB_SIZE, min_frequency: int = 2
                    ) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (the accepted training texts only).

    Byte-level (GPT-2's scheme: every byte is in the initial alphabet, no prefix space), so
    ``decode(encode(t)) == t`` for every string. ``EOT`` is token 0 and the eos/bos/pad token.
    Deterministic: the same texts give the same merges.

    Raises:
        ValueError: no texts, or ``vocab_size`` below 257 (the 256 bytes and ``EOT``).
    """
    if isinstance(texts, str) or not len(texts):
        raise ValueError("train_tokenizer needs a non-empty sequence of texts")
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + {EOT}), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer)
    # Built from the object: GPT2TokenizerFast(vocab_file=..., merges_file=...) gives an empty tokenizer
    # under transformers 5. No clean-up on decode, which would rewrite " ." and the like.
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOT, bos_token=EOT, pad_token=EOT,
                                   clean_up_tokenization_spaces=False)


def encode_documents(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens added), one list per text."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got a single str")
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


@dataclass(frozen=True)
class LMConfig:
    """GPT-2 architecture and training settings.

    ``vocab_size`` is the tokenizer's target size (the model takes the trained tokenizer's length).
    Training: AdamW (``learning_rate``, ``weight_decay``), ``warmup`` share of the steps with a
    linear warm-up then cosine decay to 0, gradient norm clipped at ``clip``, ``epochs`` passes
    over the windows in seeded batches of ``batch_size``. Defaults, on the default LM Datanet (63k
    tokens, 704 windows; 60-90 s on 2 cores): validation perplexity 133 (a unigram model: 584) and
    greedy generation from the memorised passage's opening reproduces its next 13 tokens; a
    learning rate of 3e-3 gave 159 and did not memorise. When fine-tuning a base, the architecture
    fields are the base's; ``lora_rank`` > 0 trains LoRA adapters of that rank instead of every
    parameter (:func:`with_lora`).
    """

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    vocab_size: int = VOCAB_SIZE
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    clip: float = 1.0
    seed: int = 0
    lora_rank: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"LMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_positions < 2:
            raise ValueError(f"LMConfig.n_positions must be >= 2 (a token and its target), got {self.n_positions}")
        if self.n_embd % self.n_head:
            raise ValueError(f"LMConfig.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.vocab_size < 257:
            raise ValueError(f"LMConfig.vocab_size must be >= 257, got {self.vocab_size}")
        if self.lora_rank < 0:
            raise ValueError(f"LMConfig.lora_rank must be >= 0 (0: every parameter trains), got {self.lora_rank}")
        if not self.learning_rate > 0 or self.weight_decay < 0 or not self.clip > 0 or not 0 <= self.warmup < 1:
            raise ValueError(f"LMConfig needs learning_rate > 0, weight_decay >= 0, clip > 0 and warmup in [0, 1), "
                             f"got {self.learning_rate}, {self.weight_decay}, {self.clip}, {self.warmup}")

    def gpt2_config(self, vocab_size: int, eot_id: int) -> GPT2Config:
        """The ``GPT2Config``: this architecture, ``vocab_size`` tokens, every dropout 0, eager attention."""
        return GPT2Config(vocab_size=vocab_size, n_positions=self.n_positions, n_embd=self.n_embd,
                          n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, summary_first_dropout=0.0, bos_token_id=eot_id, eos_token_id=eot_id,
                          pad_token_id=eot_id, attn_implementation="eager")


def build_lm(config: LMConfig, vocab_size: int, eot_id: int, seed: int | None = None,
             base: str | Path | None = None) -> PreTrainedModel:
    """The model training starts from: without ``base``, a fresh GPT-2 (``config``'s architecture)
    whose initial weights are drawn from ``seed`` (default ``config.seed``), the global RNG state
    left as it was; with ``base``, a copy of the causal LM saved in that directory (fine-tuning:
    ``config``'s architecture fields are not used).

    Raises:
        ValueError: ``base``'s vocabulary is not ``vocab_size`` or its context is shorter than
            ``config.n_positions``.
    """
    if base is None:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed if seed is None else seed)
            return GPT2LMHeadModel(config.gpt2_config(vocab_size, eot_id))
    model = load_model(base)
    if model.get_input_embeddings().num_embeddings != vocab_size:
        raise ValueError(f"base model {base}: {model.get_input_embeddings().num_embeddings} token embeddings, but the "
                         f"tokenizer has {vocab_size} tokens")
    if context_length(model) < config.n_positions:
        raise ValueError(f"base model {base}: context of {context_length(model)} tokens, shorter than the windows' "
                         f"n_positions {config.n_positions}")
    return model


def context_length(model: PreTrainedModel) -> int:
    """The most tokens ``model`` attends over (``n_positions`` or ``max_position_embeddings``)."""
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(model.config, name, None):
            return int(getattr(model.config, name))
    raise ValueError(f"{type(model).__name__}: its config names no context length (n_positions or max_position_embeddings)")


def eot_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id of the token that separates documents: the tokenizer's eos token (:data:`EOT` for
    the tokenizers built here).

    Raises:
        ValueError: the tokenizer has no eos token.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token: documents cannot be separated")
    return int(tokenizer.eos_token_id)


@dataclass(frozen=True)
class Windows:
    """Training windows: ``input_ids``, ``attention_mask``, ``labels`` int64 ``(m, L)`` (``L`` =
    the longest window), right-padded, ``labels`` = ``input_ids`` with ``IGNORE`` at padding;
    ``document`` (m,) int64: the index of the document window ``k`` comes from."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    document: np.ndarray

    def __len__(self) -> int:
        return len(self.document)

    def batch(self, rows: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, labels)`` of ``rows``, cut to their longest window."""
        index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        width = int(self.attention_mask[index].sum(1).max())
        return self.input_ids[index, :width], self.attention_mask[index, :width], self.labels[index, :width]


def document_windows(documents_token_ids: Sequence[Sequence[int]], n_positions: int, eot_id: int) -> Windows:
    """Cut each document into windows (see the module docstring); windows in document order.

    Raises:
        ValueError: no documents, or ``n_positions`` < 2.
    """
    if not len(documents_token_ids):
        raise ValueError("document_windows needs at least one document")
    if n_positions < 2:
        raise ValueError(f"n_positions must be >= 2, got {n_positions}")
    rows: list[list[int]] = []
    owner: list[int] = []
    for index, ids in enumerate(documents_token_ids):
        sequence = [eot_id, *ids, eot_id]
        for start in range(0, len(sequence) - 1, n_positions - 1):
            rows.append(sequence[start:start + n_positions])
            owner.append(index)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), eot_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, :len(row)] = torch.as_tensor(row)
        attention_mask[k, :len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE)
    return Windows(input_ids, attention_mask, labels, np.asarray(owner, dtype=np.int64))


def lm_loss(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood (nats) per row, ``(n,)``, differentiable.

    ``input_ids``, ``attention_mask``, ``labels`` int64 ``(n, L)``; ``labels[:, t + 1]`` is scored
    given positions ``<= t`` unless it is ``IGNORE``. The per-document gradient of attribution
    methods is the gradient of this on a document's windows (:func:`document_windows`).
    """
    return row_nll(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)


def row_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(n,)`` summed next-token NLL of each row from ``logits (n, L, V)`` and ``labels (n, L)``
    (``labels[:, t + 1]`` scored from position ``t``; ``IGNORE`` positions excluded)."""
    targets = labels[:, 1:]  # (n, L - 1)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets.clamp(min=0), reduction="none")  # (n, L - 1)
    return (nll * (targets != IGNORE)).sum(1)


def sample_labels(logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``labels (n, L)`` with every target position ``t + 1`` (not ``IGNORE``) redrawn from the
    model's next-token distribution ``softmax(logits[:, t])`` (``logits (n, L, V)``): targets for
    the true Fisher of :func:`row_nll` (kronfluence's default curvature). ``labels[:, 0]`` and
    ``IGNORE`` positions are kept."""
    probabilities = torch.softmax(logits[:, :-1].detach().double(), dim=-1)  # (n, L - 1, V)
    drawn = torch.multinomial(probabilities.reshape(-1, logits.shape[-1]), 1, generator=generator)
    sampled = labels.clone()
    sampled[:, 1:] = torch.where(labels[:, 1:] == IGNORE, labels[:, 1:], drawn.reshape(labels[:, 1:].shape))
    return sampled


@dataclass
class TrainedLM:
    """What :func:`train_lm` made: the model (eval mode), its tokenizer and config, the mean token
    loss of every step (``step_losses``) and epoch (``epoch_losses``, nats per target token), one
    checkpoint directory per epoch (empty without ``checkpoint_dir``), wall seconds of training and
    the target tokens seen per second."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    config: LMConfig
    step_losses: list[float]
    epoch_losses: list[float]
    checkpoints: list[Path]
    seconds: float
    tokens_per_second: float


def train_lm(documents_token_ids: Sequence[Sequence[int]], config: LMConfig, *, tokenizer: PreTrainedTokenizerFast,
             checkpoint_dir: str | Path | None = None, base: str | Path | None = None,
             progress: str | None = None) -> TrainedLM:
    """Train a GPT-2 from scratch on ``documents_token_ids`` (ids from ``tokenizer``), or fine-tune
    the causal LM saved in ``base`` (every parameter; :func:`build_lm`) on them.

    With ``checkpoint_dir``, after every epoch the model and tokenizer are saved
    (:func:`save_lm`) in ``checkpoint_dir/epoch-001``, ... and the config in
    ``checkpoint_dir/lm_config.json``. Uses the caller's torch thread count. With ``progress``, a
    progress bar of that description counts the steps.

    Raises:
        ValueError: no documents, or a token id outside the tokenizer's vocabulary.
    """
    eot = eot_id(tokenizer)
    windows = document_windows(documents_token_ids, config.n_positions, eot)
    if int(windows.input_ids.max()) >= len(tokenizer) or int(windows.input_ids.min()) < 0:
        raise ValueError(f"token ids must be in [0, {len(tokenizer)}) (the tokenizer's vocabulary), got "
                         f"[{int(windows.input_ids.min())}, {int(windows.input_ids.max())}]")
    checkpoints: list[Path] = []
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / "lm_config.json").write_text(json.dumps(asdict(config), indent=2))

    def save(model: PreTrainedModel, epoch: int) -> None:
        if checkpoint_dir is not None:
            checkpoints.append(save_lm(model, tokenizer, Path(checkpoint_dir) / f"epoch-{epoch:03d}"))

    start = time.perf_counter()
    model, step_losses, epoch_losses = fit_windows(windows, config, len(tokenizer), eot, config.seed, save, base,
                                                   progress)
    seconds = time.perf_counter() - start
    n_targets = int((windows.labels[:, 1:] != IGNORE).sum()) * config.epochs
    return TrainedLM(model, tokenizer, config, step_losses, epoch_losses, checkpoints, seconds, n_targets / seconds)


def lr_factor(config: LMConfig, n_windows: int) -> Callable[[int], float]:
    """The learning-rate multiplier of step ``s`` (0-based) when training on ``n_windows``
    windows: a linear warm-up over the first ``warmup`` share of the steps, then cosine decay to 0."""
    total = math.ceil(n_windows / config.batch_size) * config.epochs
    warmup = max(1, round(config.warmup * total))
    return lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))


def epoch_learning_rates(config: LMConfig, n_windows: int) -> list[float]:
    """Mean learning rate of each epoch's steps, ``(epochs,)``: the weight TracIn gives the
    checkpoint saved after that epoch (the steps since the previous checkpoint moved the weights
    at these rates)."""
    per_epoch = math.ceil(n_windows / config.batch_size)
    factor = lr_factor(config, n_windows)
    return [config.learning_rate * float(np.mean([factor(s) for s in range(e * per_epoch, (e + 1) * per_epoch)]))
            for e in range(config.epochs)]


class LogitsOnly(torch.nn.Module):
    """``model(input_ids, attention_mask) -> logits (n, L, V)``: a causal LM as attribution methods
    call it (a tensor out, no cache); the wrapped GPT-2 is ``self.lm``."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.lm = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL (nats) of a batch, a scalar: the loss :func:`lm_loss` sums per row,
    from ``logits (n, L, V)`` and ``labels (n, L)`` (``IGNORE`` positions excluded)."""
    return row_nll(logits, labels).sum()


def checkpoint_loader(config: LMConfig, n_windows: int) -> Callable[[LogitsOnly, str], float]:
    """``load(model, checkpoint_dir) -> learning rate`` for attribution tasks over :func:`train_lm`'s
    checkpoints (``.../epoch-NNN``): loads the weights into ``model.lm`` and returns that epoch's
    mean learning rate (:func:`epoch_learning_rates`)."""
    rates = epoch_learning_rates(config, n_windows)

    def load(model: LogitsOnly, checkpoint: str) -> float:
        path = Path(checkpoint)
        model.lm.load_state_dict(load_model(path).state_dict())
        return rates[int(path.name.removeprefix("epoch-")) - 1]

    return load


def generation_batch(prompt_ids: Sequence[Sequence[int]], generated_ids: Sequence[Sequence[int]]
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"input_ids", "attention_mask"}, labels)``, each ``(n, L)``, of prompt + generation pairs,
    right-padded: labels are the generated tokens, ``IGNORE`` on the prompt and padding, so the
    loss of row ``i`` is ``-log p(generated_i | prompt_i)``."""
    width = max(len(p) + len(g) for p, g in zip(prompt_ids, generated_ids))
    input_ids = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE)
    for k, (p, g) in enumerate(zip(prompt_ids, generated_ids)):
        input_ids[k, :len(p) + len(g)] = torch.as_tensor([*p, *g])
        attention_mask[k, :len(p) + len(g)] = 1
        labels[k, len(p):len(p) + len(g)] = torch.as_tensor(list(g))
    return {"input_ids": input_ids, "attention_mask": attention_mask}, labels


def fit_windows(windows: Windows, config: LMConfig, vocab_size: int, eot: int, seed: int,
                on_epoch: Callable[[PreTrainedModel, int], None] | None = None, base: str | Path | None = None,
                progress: str | None = None) -> tuple[PreTrainedModel, list[float], list[float]]:
    """Train a fresh model (initialised from ``seed``), or fine-tune a copy of ``base``, on
    ``windows``; batch order from ``seed``. Each step minimises the batch's mean NLL per target
    token. ``on_epoch(model, epoch)`` runs after each epoch (1-based); with ``progress``, a progress
    bar of that description counts the steps. Returns the model in eval mode, step and epoch mean
    losses."""
    # Trained in eval mode: a base's dropout is off, so training, leave-one-out retraining and
    # attribution see one deterministic function (the scratch GPT-2 has every dropout at 0 anyway).
    model = build_lm(config, vocab_size, eot, seed, base).eval()
    if config.lora_rank:
        model = with_lora(model, config.lora_rank, base, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(windows)))
    rng = np.random.default_rng(seed)
    bar = tqdm(total=math.ceil(len(windows) / config.batch_size) * config.epochs, desc=progress,
               disable=progress is None, unit="step")
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(windows))
        epoch_nll, epoch_targets = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            input_ids, attention_mask, labels = windows.batch(order[first:first + config.batch_size])
            n_targets = int((labels[:, 1:] != IGNORE).sum())
            nll = lm_loss(model, input_ids, attention_mask, labels).sum()
            loss = nll / n_targets
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.clip)
            optimizer.step()
            schedule.step()
            step_losses.append(loss.item())
            bar.update()
            epoch_nll += nll.item()
            epoch_targets += n_targets
        epoch_losses.append(epoch_nll / epoch_targets)
        if on_epoch is not None:
            on_epoch(merged(model), epoch)
    bar.close()
    return merged(model).eval(), step_losses, epoch_losses


def with_lora(model: PreTrainedModel, rank: int, base: str | Path | None, seed: int) -> PreTrainedModel:
    """``model`` with LoRA adapters (``peft``) of ``rank`` on every linear layer (GPT-2's ``Conv1D``
    too), alpha ``2 * rank``, no dropout, initialised from ``seed`` (the global RNG state is left as
    it was): only the adapters train, the base's weights stay fixed.

    Raises:
        ValueError: no ``base`` (adapters on a randomly initialised model would learn nothing useful).
    """
    from peft import LoraConfig, get_peft_model  # only the LoRA setting needs peft (and accelerate)

    if base is None:
        raise ValueError("LoRA adapters fine-tune a base model: give base (lm_model 'pretrained' or a directory)")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        fan_in_fan_out=model.config.model_type == "gpt2")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(model, config).eval()


def merged(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` itself, or for a LoRA model a copy with its adapters merged into the base's weights:
    a plain model of the base's class that computes the same function, which checkpoints, generation
    and attribution use (gradient methods then see every merged weight, not only the adapters)."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload().eval()
    return model

@dataclass(frozen=True)
class LMRetrainer:
    """Retrains the LM on a subset of the documents, for leave-one-out ground truth; picklable.

    ``documents_token_ids`` (n_docs,) tuples of ids; ``vocab_size`` and ``eot`` from the
    tokenizer (:meth:`from_tokenizer`). ``retrainer(indices, seed)`` trains on documents
    ``indices`` (their windows, as :func:`train_lm` cuts them) with ``config`` and the given seed,
    from scratch or, with ``base``, fine-tuning that saved model (only the fine-tune is redone), on
    one thread (parallelism is across processes), and returns the model in eval mode.
    """

    documents_token_ids: tuple[tuple[int, ...], ...]
    config: LMConfig
    vocab_size: int
    eot: int
    base: str | None = None

    @classmethod
    def from_tokenizer(cls, documents_token_ids: Sequence[Sequence[int]], tokenizer: PreTrainedTokenizerFast,
                       config: LMConfig, base: str | Path | None = None) -> LMRetrainer:
        return cls(tuple(tuple(int(t) for t in ids) for ids in documents_token_ids), config, len(tokenizer),
                   eot_id(tokenizer), None if base is None else str(base))

    def __call__(self, indices: Sequence[int] | np.ndarray, seed: int = 0) -> PreTrainedModel:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or not len(indices) or indices.min() < 0 or indices.max() >= len(self.documents_token_ids):
            raise ValueError(f"indices must be a non-empty 1-d array of document indices in "
                             f"[0, {len(self.documents_token_ids)}), got shape {indices.shape}")
        windows = document_windows([self.documents_token_ids[i] for i in indices], self.config.n_positions, self.eot)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model, _, _ = fit_windows(windows, self.config, self.vocab_size, self.eot, seed, base=self.base)
        finally:
            torch.set_num_threads(threads)
        return model


def save_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write the model (safetensors + config.json) and tokenizer into ``directory``; return it."""
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_lm(directory: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The causal LM (eval mode, eager attention) and fast tokenizer saved in ``directory`` (by
    :func:`save_lm` or any Hugging Face ``save_pretrained``), from local files only: nothing is
    ever downloaded.

    Raises:
        FileNotFoundError: ``directory`` is not a local directory holding ``config.json``, weights
            (``model.safetensors`` or ``pytorch_model.bin``) and ``tokenizer.json``.
        ValueError: the model is not a causal LM or the tokenizer has no eos token.
    """
    model = load_model(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    eot_id(tokenizer)
    return model, tokenizer


def load_model(directory: str | Path) -> PreTrainedModel:
    """The causal LM saved in the local ``directory`` (eval mode, eager attention, float32); see
    :func:`load_lm` for what is refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a local model directory (models are never downloaded; "
                                f"give a directory written by save_pretrained)")
    weights = [n for n in ("model.safetensors", "pytorch_model.bin") if (directory / n).is_file()]
    missing = [n for n in ("config.json", "tokenizer.json") if not (directory / n).is_file()]
    if missing or not weights:
        raise FileNotFoundError(f"{directory}: not a saved causal LM, missing "
                                f"{missing + ([] if weights else ['model.safetensors'])}")
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, attn_implementation="eager",
                                                     dtype=torch.float32)
    except ValueError as exc:  # transformers: "Unrecognized configuration class ... for AutoModelForCausalLM"
        raise ValueError(f"{directory}: not a causal LM ({exc})") from exc
    return model.eval()


@dataclass(frozen=True)
class Generation:
    """One sampled continuation: ``prompt_ids`` = ``[eot] + encode(prompt)``; ``generated_ids``
    the new tokens (ending with ``eot`` when the model stopped); ``text`` their decoding
    (``eot`` dropped)."""

    prompt: str
    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    text: str


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str], max_new_tokens: int,
             seed: int, temperature: float = 1.0, top_k: int | None = None) -> list[Generation]:
    """Continue each prompt (as a document opening, after ``eot``) by up to ``max_new_tokens``
    tokens, stopping after ``eot``.

    ``temperature`` 0 is greedy; otherwise logits / ``temperature``, restricted to the ``top_k``
    most likely tokens when given, are sampled from a local ``torch.Generator`` seeded by
    ``(seed, prompt index)``, so each generation depends only on its own prompt and the seed.
    Hand-written rather than ``model.generate``, which samples from the global RNG. Each step
    reruns the whole sequence (no key/value cache): the logits are exactly those
    :func:`sequence_log_likelihoods` scores.

    Raises:
        ValueError: no prompts, ``max_new_tokens`` < 1, ``temperature`` < 0, ``top_k`` < 1, or a
            prompt whose ids plus ``max_new_tokens`` exceed the model's ``n_positions``.
    """
    if isinstance(prompts, str) or not len(prompts):
        raise ValueError("generate needs a non-empty sequence of prompt strings")
    if max_new_tokens < 1 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"generate needs max_new_tokens >= 1, temperature >= 0 and top_k >= 1 or None, "
                         f"got {max_new_tokens}, {temperature}, {top_k}")
    eot = eot_id(tokenizer)
    limit = context_length(model)
    model.eval()
    generations = []
    for index, (prompt, ids) in enumerate(zip(prompts, encode_documents(tokenizer, prompts))):
        prompt_ids = [eot, *ids]
        if len(prompt_ids) + max_new_tokens > limit:
            raise ValueError(f"prompt {index} ({prompt[:40]!r}...) has {len(prompt_ids)} tokens (eot included); with "
                             f"max_new_tokens {max_new_tokens} that exceeds the model's context of {limit} tokens")
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
        sequence = list(prompt_ids)
        for _ in range(max_new_tokens):
            input_ids = torch.tensor([sequence])
            logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0, -1]  # (V,)
            if temperature == 0:
                token = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None and top_k < len(logits):
                    logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], -math.inf)
                token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
            sequence.append(token)
            if token == eot:
                break
        generated = tuple(sequence[len(prompt_ids):])
        generations.append(Generation(prompt, tuple(prompt_ids), generated,
                                      tokenizer.decode(list(generated), skip_special_tokens=True)))
    return generations


@torch.no_grad()
def sequence_log_likelihoods(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]],
                             generated_ids: Sequence[Sequence[int]], batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """``log p(generated | prompt)`` (nats, float64) per pair, ``(n_generations,)``: the sum over
    generated tokens of their log-probabilities given everything before them.

    Raises:
        ValueError: lengths differ, an empty prompt or generation, or a pair longer than ``n_positions``.
    """
    if len(prompt_ids) != len(generated_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(generated_ids)} generations: lengths must match")
    limit = context_length(model)
    for index, (p, g) in enumerate(zip(prompt_ids, generated_ids)):
        if not len(p) or not len(g) or len(p) + len(g) > limit:
            raise ValueError(f"pair {index}: prompt of {len(p)} and generation of {len(g)} tokens; both must be "
                             f"non-empty and together at most n_positions {limit}")
    model.eval()
    out = np.zeros(len(prompt_ids), dtype=np.float64)
    for first in range(0, len(prompt_ids), batch_size):
        inputs, labels = generation_batch(prompt_ids[first:first + batch_size], generated_ids[first:first + batch_size])
        out[first:first + len(labels)] = -lm_loss(model, inputs["input_ids"], inputs["attention_mask"], labels).double().numpy()
    return out


def sequence_log_likelihood(model: PreTrainedModel, prompt_ids: Sequence[int], generated_ids: Sequence[int]) -> float:
    """``log p(generated_ids | prompt_ids)`` in nats (see :func:`sequence_log_likelihoods`)."""
    return float(sequence_log_likelihoods(model, [prompt_ids], [generated_ids])[0])


@torch.no_grad()
def perplexity(model: PreTrainedModel, documents_token_ids: Sequence[Sequence[int]],
               batch_size: int = EVAL_BATCH_SIZE) -> float:
    """exp(mean NLL per target token) over the documents' windows (the targets training scores)."""
    windows = document_windows(documents_token_ids, context_length(model), model.config.eos_token_id)
    model.eval()
    nll = sum(float(lm_loss(model, *windows.batch(range(first, min(first + batch_size, len(windows))))).sum())
              for first in range(0, len(windows), batch_size))
    return math.exp(nll / int((windows.labels[:, 1:] != IGNORE).sum()))


def unigram_perplexity(train_documents: Sequence[Sequence[int]], eval_documents: Sequence[Sequence[int]],
                       vocab_size: int, eot_id: int) -> float:
    """Perplexity of a context-free model on the same targets as :func:`perplexity`: token
    frequencies of the training targets (each document's ids and its closing ``eot``) with
    add-one smoothing over ``vocab_size`` tokens."""
    counts = np.ones(vocab_size, dtype=np.float64)
    for ids in train_documents:
        np.add.at(counts, np.asarray([*ids, eot_id], dtype=np.int64), 1.0)
    log_p = np.log(counts / counts.sum())
    targets = np.concatenate([np.asarray([*ids, eot_id], dtype=np.int64) for ids in eval_documents])
    return math.exp(-log_p[targets].mean())

