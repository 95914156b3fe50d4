"""Token-level Integrated Gradients of a text classifier, with Captum's ``LayerIntegratedGradients``.

Token ids are integers, so the path runs through the output of the model's embedding layer: from
the embeddings of a baseline sequence to those of the input. Each sample's baseline keeps its
structure and drops its content: ``[CLS]`` + ``[PAD]`` … + ``[SEP]`` at the sample's real length
(positions after it stay ``[PAD]``), under the sample's own attention mask. Positions whose id
equals the baseline's (``[CLS]``, ``[SEP]``, padding) therefore get exactly zero attribution, and the
row sums to ``f(x) − f(baseline)`` for the target logit, up to the path integral's error
(``convergence_delta``). Attributions are in logit units, summed over the embedding dimension;
positive = the token pushed the target logit up.

:func:`trigger_mass` reads a backdoor's fingerprint off them: the share of a sample's absolute
attribution that sits on a trigger phrase's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn


@dataclass(frozen=True)
class TokenAttributions:
    """Token attributions of ``n`` samples padded to length ``L``.

    ``attributions`` (n, L) float64: ``[i, t]`` = contribution of token ``t`` of sample ``i`` to
    its target logit (0 at padding); ``convergence_delta`` (n,): ``attributions[i].sum()`` minus
    ``f(x_i) − f(baseline_i)`` for the target logit (0 for an exact path integral);
    ``input_ids``, ``attention_mask`` (n, L) int64 and ``targets`` (n,) int64 as attributed.
    """

    attributions: np.ndarray
    convergence_delta: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    targets: np.ndarray

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i``'s token ids and attributions over its real length (padding dropped)."""
        length = int(self.attention_mask[i].sum())
        return self.input_ids[i, :length], self.attributions[i, :length]


def baseline_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, cls_id: int, sep_id: int,
                 pad_id: int) -> torch.Tensor:
    """``(n, L)`` baselines: ``[CLS]`` + ``[PAD]`` … + ``[SEP]`` at each sample's real length
    (``attention_mask`` row sum), ``[PAD]`` after it."""
    lengths = attention_mask.sum(dim=1)  # (n,)
    baseline = torch.full_like(input_ids, pad_id)
    baseline[:, 0] = cls_id
    baseline[torch.arange(len(input_ids)), lengths - 1] = sep_id
    return baseline


def token_attributions(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    embeddings: nn.Module,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    n_steps: int = 32,
    internal_batch_size: int = 16,
) -> TokenAttributions:
    """Integrated Gradients of each sample's ``targets`` logit w.r.t. the output of ``embeddings``.

    Args:
        model: ``model(input_ids, attention_mask) -> (n, n_classes)`` logits, in eval mode.
        input_ids: ``(n, L)`` integer token ids, each row ``[CLS] … [SEP]`` then padding.
        attention_mask: ``(n, L)`` 1 on the real tokens (a prefix of each row, at least 2), 0 after.
        targets: ``(n,)`` class index whose logit is attributed (e.g. the predicted class).
        embeddings: the submodule of ``model`` whose output the path runs through (its embedding layer).
        cls_id, sep_id, pad_id: the tokenizer's ``[CLS]``, ``[SEP]`` and ``[PAD]`` ids (the baseline's).
        n_steps: points of the path integral (Gauss-Legendre; default 32).
        internal_batch_size: at most this many path points (sample × step) per forward pass (default 16).

    Raises:
        ValueError: naming the argument, sample or module when shapes, masks, ids, targets or the
            model's mode are not as above.
    """
    _check(model, input_ids, attention_mask, targets, cls_id, sep_id, n_steps, internal_batch_size)
    n_classes = _n_classes(model, input_ids[:1], attention_mask[:1])
    if int(targets.min()) < 0 or int(targets.max()) >= n_classes:
        raise ValueError(f"targets must be class indices in [0, {n_classes}), got values from {int(targets.min())} "
                         f"to {int(targets.max())}")
    baseline = baseline_ids(input_ids, attention_mask, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
    lig = LayerIntegratedGradients(model, embeddings)
    # Chunks of samples such that Captum evaluates all their steps in passes of <= internal_batch_size rows.
    chunk = max(1, internal_batch_size // n_steps)
    parts, deltas = [], []
    for start in range(0, len(input_ids), chunk):
        rows = slice(start, start + chunk)
        attributions, delta = lig.attribute(
            input_ids[rows], baselines=baseline[rows], target=targets[rows], additional_forward_args=(attention_mask[rows],),
            n_steps=n_steps, internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
        parts.append(attributions.detach().sum(dim=-1).double())  # (chunk, L, d) -> (chunk, L)
        deltas.append(delta.detach().double())
    return TokenAttributions(
        torch.cat(parts).numpy(), torch.cat(deltas).numpy(), input_ids.numpy().astype(np.int64),
        attention_mask.numpy().astype(np.int64), targets.numpy().astype(np.int64),
    )


def _check(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
           cls_id: int, sep_id: int, n_steps: int, internal_batch_size: int) -> None:
    if n_steps < 1 or internal_batch_size < 1:
        raise ValueError(f"n_steps and internal_batch_size must be >= 1, got {n_steps} and {internal_batch_size}")
    training = [name or "<root>" for name, module in model.named_modules() if module.training]
    if training:
        raise ValueError(f"the model is in training mode (module {training[0]!r}; dropout would make attributions "
                         "random); call model.eval() first")
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must be a 2-D integer tensor (n, L), got "
                             f"{type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}")
    if len(input_ids) == 0:
        raise ValueError("input_ids holds no sample")
    if not isinstance(targets, torch.Tensor) or targets.shape != (len(input_ids),) or targets.is_floating_point():
        raise ValueError(f"targets must be an integer tensor of shape ({len(input_ids)},), got "
                         f"{type(targets).__name__} {getattr(targets, 'dtype', '')} {tuple(getattr(targets, 'shape', ()))}")
    lengths = attention_mask.sum(dim=1)
    prefix = torch.arange(input_ids.shape[1])[None] < lengths[:, None]  # (n, L) the mask each row must have
    bad = torch.nonzero(~torch.eq(attention_mask, prefix.long()).all(dim=1) | (lengths < 2)).flatten()
    if len(bad):
        raise ValueError(f"attention_mask row {int(bad[0])} is not 1s on at least 2 leading tokens then 0s: "
                         f"{attention_mask[bad[0]].tolist()}")
    ends = input_ids[torch.arange(len(input_ids)), lengths - 1]
    bad = torch.nonzero((input_ids[:, 0] != cls_id) | (ends != sep_id)).flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"sample {i} must start with [CLS] (id {cls_id}) and end with [SEP] (id {sep_id}) at its real "
                         f"length {int(lengths[i])}; it starts with {int(input_ids[i, 0])} and ends with {int(ends[i])}")


def _n_classes(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    with torch.no_grad():
        logits = model(input_ids, attention_mask)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"the model must return (n, n_classes) logits, got {type(logits).__name__} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    return logits.shape[1]


def trigger_mass(attributions: np.ndarray, input_ids: np.ndarray, trigger_ids: Sequence[int]) -> np.ndarray:
    """``(n,)`` share of each sample's absolute attribution on occurrences of ``trigger_ids``.

    ``attributions`` and ``input_ids`` are ``(n, L)`` (as in :class:`TokenAttributions`);
    ``trigger_ids`` is the trigger phrase's token ids (no special tokens). Only contiguous
    occurrences of the whole phrase count, so its common words elsewhere in a text do not.
    ``[i]`` is in [0, 1]: 0 when sample ``i`` holds no trigger. ``ValueError`` for mismatched
    shapes, an empty trigger, or a sample with no attribution at all (the share is undefined).
    """
    attributions, input_ids = np.asarray(attributions, dtype=np.float64), np.asarray(input_ids)
    trigger = np.asarray(trigger_ids)
    if attributions.ndim != 2 or attributions.shape != input_ids.shape:
        raise ValueError(f"attributions {attributions.shape} and input_ids {input_ids.shape} must be the same (n, L) shape")
    if trigger.ndim != 1 or len(trigger) == 0:
        raise ValueError(f"trigger_ids must be a non-empty sequence of token ids, got {list(trigger_ids)}")
    mass = np.abs(attributions)
    total = mass.sum(axis=1)
    empty = np.flatnonzero(total == 0)
    if len(empty):
        raise ValueError(f"sample {int(empty[0])} has no attribution mass; its trigger share is undefined")
    k, length = len(trigger), input_ids.shape[1]
    on_trigger = np.zeros(input_ids.shape, dtype=bool)
    if k <= length:
        windows = np.lib.stride_tricks.sliding_window_view(input_ids, k, axis=1)  # (n, L - k + 1, k)
        for i, t in zip(*np.nonzero((windows == trigger).all(axis=2))):
            on_trigger[i, t : t + k] = True
    return (mass * on_trigger).sum(axis=1) / total
