"""LoGra-style projected per-sample gradients of every trainable parameter: ``(n, dim)``.

**The projection** is a property of each trainable parameter alone. A parameter is viewed as a
matrix ``(rows, cols)`` in its stored orientation (a vector or scalar as ``(rows,)``, a
higher-dimensional weight as ``(shape[0], prod(shape[1:]))``, a conv kernel's unfolded form); its
per-sample gradient ``G`` becomes ``P_row G P_colᵀ`` (``(k_row, k_col)``, flattened row-major;
a vector ``g`` becomes ``P_row g``). The entries of ``P`` are ``N(0, 1/k)``, so projected inner
products are unbiased estimates of the exact ones, drawn from a local generator seeded by
``seed``, the parameter's name and the side: fixed, and the same for train and test. A side of at
most ``k`` dimensions is kept as it is (identity: projecting it would add noise and save
nothing); ``k=None`` keeps every side, so the "projection" is the exact gradient.

**The convention for layers** (``a_t`` the layer's input at position ``t`` of a sample, ``δ_t``
the loss gradient at its output; in LoGra's terms ``P_in`` projects ``a``, ``P_out`` projects
``δ``):

- ``nn.Linear``, weight ``(out, in)``: ``G = Σ_t δ_t a_tᵀ``, so ``P_row = P_out``, ``P_col = P_in``
  and the projection is ``Σ_t (P_out δ_t)(P_in a_t)ᵀ``; bias ``P Σ_t δ_t``.
- GPT-2's ``Conv1D``, weight ``(in, out)``: ``G = Σ_t a_t δ_tᵀ``: ``Σ_t (P_in a_t)(P_out δ_t)ᵀ``.
- ``nn.Embedding``, weight ``(num_embeddings, dim)`` (a row per token): a Linear on the one-hot
  token ``e_t`` with ``G = Σ_t e_t δ_tᵀ``, so ``P_row = P_in`` acts on the token and ``P_in e_t``
  is the token's column of ``P_in`` (a gather); tokens equal to ``padding_idx`` add nothing. An
  Embedding called on ids of one row shared by the batch (GPT-2's position embedding ``wpe``: its
  ``(1, T, d)`` output is broadcast onto the batch's, so ``δ`` at it is summed over the samples)
  gets a forward hook that expands its output to the batch (a view, ``(n, T, d)``): ``δ`` there
  is per sample, the ids are expanded alike, and the model computes the same. It is hooked so
  only where a probe forward with the expansion gives the model's output unchanged.
- ``nn.LayerNorm`` (elementwise affine, any ``normalized_shape``): weight ``Σ_t δ_t ⊙ x̂_t``
  (``x̂`` the input normalised over the ``normalized_shape`` dims, recomputed from the captured
  input with the layer's ``eps``), bias ``Σ_t δ_t``; these small per-sample gradients are formed
  and then projected as a parameter's exact gradient is (:meth:`LayerProjection.project`).

None of these forms a ``(rows, cols)`` gradient per sample: the hooks of
:func:`~attribution.fast_tracin.capture` give ``a`` and ``δ`` from one forward and backward of a
chunk, and each position costs two small products. A layer is hooked where a probe shows its own
``forward`` running on per-sample inputs (:func:`~attribution.fast_tracin.per_sample_calls`), or
for an Embedding on batch-shared ids as above. On GPT-2 every parameter is hooked.

**Every other trainable parameter** (conv kernels, a Linear called on a batch-shared input,
other norms, a weight also used outside its layer's ``forward``) gets exact per-sample gradients
from ``torch.func`` (:class:`~attribution.gradients.SampleGradients`), pushed through the same
projection. So every parameter is covered, and one path can stand in for the other; when every
parameter is hooked, no ``torch.func`` pass runs after construction's check.

**Tied parameters** (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) have one name
(the first), hence one ``P_row``, ``P_col``: the gradient of a tied parameter is the sum over its
uses, and so is its projection (the Linear's ``(vocab, dim)`` gradient and the Embedding's add up
in the same projected space). A parameter is hooked only when every module holding it is. At
construction, each hooked parameter's projection on up to 3 samples is compared with its exact
gradient's; one that disagrees (a weight also used outside its module's ``forward``) moves to the
exact path. Models that couple samples must be refused by the caller
(:func:`~attribution.gradients.require_per_sample`).

LoGra's own implementation (LogIX, ``logix-ai``) is not installable here (no package, offline),
and it projects hooked Linear/Conv layers only; this module covers every parameter and tied weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from transformers.pytorch_utils import Conv1D

from attribution.base import AttributionError, Inputs, LossFn, forward, n_samples, take
from attribution.fast_tracin import capture, per_sample_calls
from attribution.gradients import SampleGradients

DEFAULT_K = 32
"""Projected dimensions per side of a parameter (``k × k`` per weight matrix, ``k`` per vector).
Pearson correlation of projected with exact gradient inner products between distinct samples,
on a 1-layer GPT-2 (``n_embd`` 16, vocab 50), seeds 0-2: at its Hugging Face initialisation on
24 unpadded random windows, 0.965-0.970 at 32 and 0.93-0.95 at 16 (hence 32); with the test's
random weights and padded windows (tests/attribution/test_layer_projection.py), 0.991-0.993 and
0.983-0.985."""


class LayerProjection:
    """Projected per-sample gradients of ``model``'s trainable parameters at its *current* weights.

    Args:
        model: the model (keep it private to the caller: hooks are attached during each call).
        loss_fn: the loss of the consistency check (any reduction; a sample's loss is its value
            on that sample alone).
        x, y: samples to probe the layers and check the hooks on (up to 3 are used).
        k: projected dimensions per side (default 32); ``None`` keeps every side (exact gradients).
        seed: seeds the projections.
        batch_size: samples per forward and backward (memory bound).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, x: Inputs, y: torch.Tensor, k: int | None = DEFAULT_K,
                 seed: int = 0, batch_size: int = 32) -> None:
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1 or None, got {k}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.k, self.seed, self.batch_size = model, k, seed, batch_size
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self._params:
            raise AttributionError("layer projection: the model has no trainable parameter")
        self.dtype = next(iter(self._params.values())).dtype
        self._matrices: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self._uses, self._shared = _hookable_uses(model, self._params, x)
        self._exact_path: SampleGradients | None = None
        probe = slice(0, min(n_samples(x), 3))
        exact = self._exact(take(x, probe), y[probe], loss_fn, list(self._params))
        hooked = self._hooked(take(x, probe), y[probe], loss_fn)
        for name, value in hooked.items():
            reference = exact[name].double()
            if not torch.allclose(value.double(), reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max()) + 1e-10):
                del self._uses[name]  # used in a way the hooks cannot see: exact gradients instead
        exact_names = [n for n in self._params if n not in self._uses]
        if exact_names:
            self._exact_path = SampleGradients(model, loss_fn, self.dtype, batch_size, exact_names)

    @property
    def paths(self) -> dict[str, str]:
        """How each trainable parameter's projection is computed: ``"hooks"`` or ``"exact"``."""
        return {n: "hooks" if n in self._uses else "exact" for n in self._params}

    @property
    def dims(self) -> dict[str, int]:
        """Projected dimensions of each trainable parameter, in column order."""
        return {n: self._side(r) * self._side(c) for n, (r, c) in ((n, _matrix_shape(p)) for n, p in self._params.items())}

    @property
    def dim(self) -> int:
        return sum(self.dims.values())

    def _side(self, size: int) -> int:
        return size if self.k is None else min(size, self.k)

    def matrices(self, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(P_row, P_col)`` of parameter ``name``, ``(k, rows)`` and ``(k, cols)`` in the model's
        dtype; ``None`` for a side kept as it is (and for ``P_col`` of a vector)."""
        if name not in self._matrices:
            rows, cols = _matrix_shape(self._params[name])
            self._matrices[name] = (self._gaussian(name, "rows", rows), self._gaussian(name, "cols", cols))
        return self._matrices[name]

    def _gaussian(self, name: str, side: str, size: int) -> torch.Tensor | None:
        if size == 1 or self._side(size) == size:
            return None
        digest = hashlib.blake2b(f"{self.seed}:{name}:{side}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        matrix = torch.randn(self.k, size, generator=generator, dtype=torch.float64) / self.k**0.5  # float64: same P in any dtype
        return matrix.to(self.dtype)

    def project(self, name: str, grads: torch.Tensor) -> torch.Tensor:
        """``(n, dims[name])`` projections of per-sample gradients ``(n, *shape)`` of parameter
        ``name``: ``P_row G P_colᵀ`` formed from the full gradients (the exact path)."""
        rows_p, cols_p = self.matrices(name)
        rows, cols = _matrix_shape(self._params[name])
        g = grads.reshape(len(grads), rows, cols)  # (n, rows, cols)
        if rows_p is not None:
            g = rows_p @ g  # (n, k, cols)
        if cols_p is not None:
            g = g @ cols_p.T  # (n, rows or k, k)
        return g.reshape(len(grads), -1)

    def __call__(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """``(n, dim)`` projected per-sample gradients of ``loss_fn`` on ``(x, y)``, in the model's
        dtype, columns in :attr:`dims` order."""
        return torch.cat(list(self.chunks(x, y, loss_fn)))

    def chunks(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> Iterator[torch.Tensor]:
        """``(batch_size, dim)`` blocks of :meth:`__call__`, in order."""
        for start in range(0, n_samples(x), self.batch_size):
            rows = slice(start, start + self.batch_size)
            xs, ys = take(x, rows), y[rows]
            parts = self._hooked(xs, ys, loss_fn)
            if self._exact_path is not None:
                parts |= self._exact(xs, ys, loss_fn, self._exact_path.names, self._exact_path)
            yield torch.cat([parts[n] for n in self._params], dim=1)

    def _exact(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn, names: list[str],
               gradients: SampleGradients | None = None) -> dict[str, torch.Tensor]:
        """Projections of the exact per-sample gradients (``torch.func``) of parameters ``names``."""
        if gradients is None:
            gradients = SampleGradients(self.model, loss_fn, self.dtype, self.batch_size, names)
        flat = gradients(x, y, loss_fn)  # (n, Σ numel)
        sizes = [self._params[n].numel() for n in names]
        return {n: self.project(n, g) for n, g in zip(names, flat.split(sizes, dim=1))}

    def _hooked(self, x: Inputs, y: torch.Tensor, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Projections of the hooked parameters from one forward and backward, summed over uses."""
        if not self._uses:
            return {}
        modules = list(dict.fromkeys(m for uses in self._uses.values() for m, _ in uses))
        n = n_samples(x)
        expand = [m.register_forward_hook(_expand_to(n)) for m in modules if m in self._shared]  # before capture's hooks
        try:
            inputs, deltas = capture(self.model, modules, x, y, loss_fn)
        finally:
            for handle in expand:
                handle.remove()
        out = {}
        for name, uses in self._uses.items():
            rows_p, cols_p = self.matrices(name)
            total = torch.zeros(n, self.dims[name], dtype=self.dtype)
            for module, attr in uses:
                if isinstance(module, nn.LayerNorm):
                    total += self.project(name, _norm_gradient(module, attr, inputs[module], deltas[module], n))
                    continue
                d = torch.cat([c.reshape(n, -1, c.shape[-1]) for c in deltas[module]], dim=1)  # (n, T, d_out)
                if attr == "bias":
                    total += _apply(d.sum(dim=1), rows_p)  # P Σ_t δ_t
                    continue
                if isinstance(module, nn.Embedding):
                    ids = torch.cat([c.expand(n, *c.shape[1:]).reshape(n, -1) for c in inputs[module]], dim=1)  # (n, T)
                    rows, cols = _token_columns(module, ids, rows_p, self.dtype), _apply(d, cols_p)
                else:
                    a = torch.cat([c.reshape(n, -1, c.shape[-1]) for c in inputs[module]], dim=1)  # (n, T, d_in)
                    rows, cols = (_apply(a, rows_p), _apply(d, cols_p)) if isinstance(module, Conv1D) else (_apply(d, rows_p), _apply(a, cols_p))
                total += torch.einsum("ntr,ntc->nrc", rows, cols).reshape(n, -1)  # Σ_t (P_row r_t)(P_col c_t)ᵀ
            out[name] = total
        return out


def _matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    """``(rows, cols)`` of a parameter viewed as a matrix; ``cols`` is 1 for a vector or scalar."""
    return (p.numel(), 1) if p.dim() <= 1 else (p.shape[0], p.numel() // p.shape[0])


def _apply(v: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    """``v`` ``(..., d)`` projected by ``matrix`` ``(k, d)`` along its last dimension, or as it is."""
    return v if matrix is None else v @ matrix.T


def _token_columns(module: nn.Embedding, ids: torch.Tensor, matrix: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``(n, T, k)`` ``P_in e_t`` of tokens ``ids`` ``(n, T)``: columns of ``matrix`` (one-hot rows
    when it is ``None``), zero at ``padding_idx``."""
    if matrix is None:
        columns = nn.functional.one_hot(ids, module.num_embeddings).to(dtype)
    else:
        columns = matrix.T[ids]
    if module.padding_idx is not None:
        columns = columns * (ids != module.padding_idx)[..., None]
    return columns


def _expand_to(n: int):
    """A forward hook giving a batch-shared output ``(1, ...)`` the batch's ``n`` rows (a view), so
    that the loss gradient at it is per sample; the broadcast it stood for sums the same values."""
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.expand(n, *output.shape[1:])
    return hook


def _norm_gradient(module: nn.LayerNorm, attr: str, inputs: list[torch.Tensor], deltas: list[torch.Tensor], n: int) -> torch.Tensor:
    """``(n, *normalized_shape)`` per-sample gradient of a LayerNorm's ``weight`` (``Σ_t δ_t ⊙ x̂_t``,
    ``x̂`` the normalised input) or ``bias`` (``Σ_t δ_t``), from its captured inputs and ``δ``."""
    shape = tuple(module.normalized_shape)
    dims = tuple(range(-len(shape), 0))
    d = torch.cat([c.reshape(n, -1, *shape) for c in deltas], dim=1)  # (n, T, *shape)
    if attr == "bias":
        return d.sum(dim=1)
    a = torch.cat([c.reshape(n, -1, *shape) for c in inputs], dim=1).to(d.dtype)
    mean, var = a.mean(dim=dims, keepdim=True), a.var(dim=dims, unbiased=False, keepdim=True)
    return (d * ((a - mean) * torch.rsqrt(var + module.eps))).sum(dim=1)


def _hookable(module: nn.Module) -> bool:
    """A layer whose weight gradient is ``Σ_t`` of outer products of its input and output gradient
    (or, for a LayerNorm, of its output gradient and normalised input)."""
    if isinstance(module, nn.LayerNorm):
        return type(module).forward is nn.LayerNorm.forward and module.elementwise_affine
    if isinstance(module, nn.Embedding):
        # max_norm rewrites rows in the forward; scale_grad_by_freq scales by in-batch counts
        return type(module).forward is nn.Embedding.forward and module.max_norm is None and not module.scale_grad_by_freq
    return any(isinstance(module, cls) and type(module).forward is cls.forward for cls in (nn.Linear, Conv1D))


def _hookable_uses(model: nn.Module, params: Mapping[str, nn.Parameter], x: Inputs
                   ) -> tuple[dict[str, list[tuple[nn.Module, str]]], set[nn.Module]]:
    """Per trainable parameter whose every holder is a hookable layer seeing per-sample inputs
    (probed on ``x``): its ``(module, "weight" or "bias")`` uses; and the Embeddings among them
    called on batch-shared ids (every call's ids have 1 row whatever the batch: GPT-2's ``wpe``),
    whose output the hooks expand to the batch."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, p in module.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((module, attr))
    candidates = [m for m in model.modules() if _hookable(m)]
    per_sample = set(per_sample_calls(model, candidates, x))
    shared = _shared_calls(model, [m for m in candidates if isinstance(m, nn.Embedding) and m not in per_sample], x)
    uses = {name: holders[id(p)] for name, p in params.items()
            if all(m in per_sample | shared and attr in ("weight", "bias") for m, attr in holders[id(p)])}
    return uses, shared


def _shared_calls(model: nn.Module, modules: list[nn.Module], x: Inputs) -> set[nn.Module]:
    """The ``modules`` called, in probe forwards on 1 and up to 3 samples of ``x``, the same number
    of times with ids of 1 row, and whose outputs expanded to the batch leave the model's output
    as it is (the model only broadcasts them)."""
    size = min(n_samples(x), 3)
    if size < 2 or not modules:
        return set()
    calls: dict[nn.Module, list[list[tuple[int, ...]]]] = {m: [[], []] for m in modules}
    probe = take(x, slice(0, size))
    for i, part in enumerate((take(x, slice(0, 1)), probe)):
        handles = [m.register_forward_hook(lambda mod, args, out, i=i: calls[mod][i].append(tuple(args[0].shape))) for m in modules]
        try:
            with torch.no_grad():
                reference = forward(model, part)
        finally:
            for handle in handles:
                handle.remove()
    shared = {m for m, (one, some) in calls.items() if one and len(one) == len(some) and all(s[0] == 1 for s in one + some)}
    if not shared:
        return set()
    handles = [m.register_forward_hook(_expand_to(size)) for m in shared]
    try:
        with torch.no_grad():
            expanded = forward(model, probe)
        pairs = list(zip(tree_leaves(expanded), tree_leaves(reference), strict=True))
        same = all(not isinstance(a, torch.Tensor) or (a.shape == b.shape and torch.allclose(a, b)) for a, b in pairs)
    except (RuntimeError, ValueError):
        same = False
    finally:
        for handle in handles:
            handle.remove()
    return shared if same else set()
