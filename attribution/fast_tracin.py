"""Exact TracIn over every trainable layer, fast: Gram matrices for ``nn.Linear``, vmap elsewhere.

A per-sample weight gradient of ``nn.Linear`` is the outer product ``δ aᵀ`` (``a`` the layer's
input, ``δ`` the loss gradient at its output), so the dot product of two of them is
``(δ·δ')(a·a')`` and the bias adds ``δ·δ'``. For a train chunk ``I`` and a test chunk ``J`` the
layer's contribution is ``(Δ_I Δ_Jᵀ) ⊙ (A_I A_Jᵀ + 1)``: two small Gram matrices instead of
materialising ``in × out`` gradients per sample. A Linear applied at several positions per
sample (3-D sequence input, or a module called more than once) has gradient ``Σ_t δ_t a_tᵀ``: it
is materialised per sample by one ``einsum``. Every other trainable parameter gets exact
per-sample gradients from ``torch.func.vmap(grad(...))``
(:class:`~attribution.gradients.SampleGradients`). A sample's loss is the task's loss on that
sample alone (:func:`~attribution.base.per_sample_losses`), whatever its reduction.

The factors are captured by forward hooks that copy the layer's input and add a zero tensor to its
output, whose gradient is ``δ`` even when a later in-place activation overwrites the output. A
Linear is hooked only when a probe shows the preconditions: its own ``forward`` runs, each call's
input has the sample dimension first, its parameters belong to no other module. ``fit`` then
compares the factors with plain per-sample gradients on a few training samples and, should they
disagree (a weight also used outside its module's ``forward``), drops the hooks and uses vmap for
every parameter. Models that couple samples or are random are refused
(:func:`~attribution.gradients.require_per_sample`).

A Gram layer whose input is the same at every checkpoint (nothing trainable before it: the first
Linear of an MLP) needs its input Gram ``A_I A_Jᵀ`` once per block, not once per checkpoint: ``fit``
finds such layers on a few training samples at the first and last checkpoint, and scoring sums
``Σ_t lr_t Δ_I,t Δ_J,tᵀ`` over the checkpoints whose inputs are exactly equal to the block's first
checkpoint's, then multiplies by that input Gram once (one extra ``(rows, n_test)`` sum per such
layer; a checkpoint whose inputs differ takes the plain product).

Work is chunked over train (``batch_size`` rows per block) and test (``test_batch_size``
columns), so memory stays bounded; :meth:`FastTracIn.stream` hands each finished
``(rows, n_test)`` block (summed over checkpoints) to a sink instead of holding the whole matrix.
Captum's ``TracInCPFast`` uses the outer-product trick for the last layer only (and drops its
bias), hence this module; :class:`~attribution.tracin.CaptumTracIn` is the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attribution.base import AttributionError, AttributionTask, Attributor, Capabilities, Inputs, LossFn, forward, n_samples, summed_loss, take
from attribution.gradients import SampleGradients, require_per_sample

BlockSink = Callable[[int, np.ndarray], None]
"""Receives ``(first_train_row, block)`` with ``block`` of shape ``(rows, n_test)`` in the
model's floating dtype (float32 for a float32 model)."""


@dataclass
class GradientFactors:
    """Per-sample gradient factors of one chunk at one checkpoint.

    ``linear``: per Gram layer ``(a (n, d), δ (n, d_out))``; ``a`` is the layer input when the
    weight trains, then a trailing column of ones when the bias trains, so ``(A Aᵀ)`` already
    carries the ``+1``. ``other``: ``(n, n_other_params)`` flattened per-sample gradients of
    everything else, or ``None``.
    """

    linear: list[tuple[torch.Tensor, torch.Tensor]]
    other: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.linear[0][0] if self.linear else self.other)

    @property
    def dtype(self) -> torch.dtype:
        return (self.linear[0][0] if self.linear else self.other).dtype

    def dot(self, test: GradientFactors, out: torch.Tensor | None = None, alpha: float = 1.0,
            skip: Container[int] = ()) -> torch.Tensor:
        """``(n_self, n_test)`` gradient dot products, times ``alpha`` and added to ``out`` in place
        when given (one fused pass per layer), leaving out the Gram layers whose index is in ``skip``."""
        if out is None:
            out = torch.zeros(len(self), len(test), dtype=self.dtype)
        for layer, ((a, d), (a_t, d_t)) in enumerate(zip(self.linear, test.linear)):
            if layer not in skip:
                out.addcmul_(d @ d_t.T, a @ a_t.T, value=alpha)
        if self.other is not None:
            out.addmm_(self.other, test.other.T, alpha=alpha)
        return out

    def squared_norms(self) -> torch.Tensor:
        """``(n_self,)`` squared gradient norms (the self-dot products)."""
        out = torch.zeros(len(self), dtype=self.dtype)
        for a, d in self.linear:
            out += (d * d).sum(dim=1) * (a * a).sum(dim=1)
        if self.other is not None:
            out += (self.other * self.other).sum(dim=1)
        return out

    def double(self) -> GradientFactors:
        return GradientFactors([(a.double(), d.double()) for a, d in self.linear], None if self.other is None else self.other.double())


@dataclass
class _Hooked:
    """A trainable ``nn.Linear`` whose factors come from hooks: ``gram`` (one call on 2-D input)
    or materialised ``Σ_t δ_t a_tᵀ`` (several positions per sample)."""

    module: nn.Linear
    gram: bool

    @property
    def weight(self) -> bool:
        return self.module.weight.requires_grad

    @property
    def bias(self) -> bool:
        return self.module.bias is not None and self.module.bias.requires_grad


class FastTracIn(Attributor):
    """TracIn ``Σ_t lr_t ∇ℓ(train_i; θ_t) · ∇ℓ_test(test_j; θ_t)`` over all trainable parameters.

    Args:
        batch_size: training rows per block (default 2048), fewer when a block's factors would
            pass ``block_mb``.
        test_batch_size: test columns per Gram product (default 2048).
        cache_mb: keep every checkpoint's training factors after the first ``scores`` when they fit
            in this many MiB (default 256), so later calls only compute test factors.
        block_mb: the most MiB one block of training factors may take (default 512). Layers whose
            gradients are materialised (a transformer layer's Linears see every position) take
            ``4 × in × out`` bytes per sample, 7 MiB for a MiniLM layer: 1,244 rows at once
            would need 9 GiB. The test factors of every checkpoint are held besides.
    """

    name = "tracin_fast"
    capabilities = Capabilities(gradient_factors=True, self_influence=True)

    def __init__(self, batch_size: int = 2048, test_batch_size: int = 2048, cache_mb: float = 256.0,
                 block_mb: float = 512.0) -> None:
        if batch_size < 1 or test_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {test_batch_size}")
        if not block_mb > 0:
            raise ValueError(f"block_mb must be > 0, got {block_mb}")
        self.batch_size, self.test_batch_size, self.cache_mb, self.block_mb = batch_size, test_batch_size, cache_mb, block_mb
        self._task: AttributionTask | None = None
        self._states: list[tuple[dict[str, torch.Tensor], float]] = []
        self._loaded = -1
        self._dtype = torch.float32
        self._hooked: list[_Hooked] = []
        self._shared_inputs: list[int] = []
        self._other: SampleGradients | None = None
        self._train_cache: list[list[GradientFactors]] | None = None

    def fit(self, task: AttributionTask) -> FastTracIn:
        task = task.own_copy()
        self._task, self._states, self._train_cache = task, [], None
        for path in task.checkpoints:
            lr = float(task.load_checkpoint(task.model, str(path)))
            self._states.append(({k: v.detach().clone() for k, v in task.model.state_dict().items()}, lr))
        self._loaded = len(self._states) - 1
        self._dtype = next((p.dtype for p in task.model.parameters() if p.is_floating_point()), torch.float32)
        require_per_sample(task.model, task.train_x, self.name)
        self._hooked = _hooked_linears(task.model, task.train_x)
        self._other = self._sample_gradients()
        self._shared_inputs = []
        if self._hooked:
            n = min(task.n_train, 3)
            probe = take(task.train_x, slice(0, n)), task.train_y[:n]
            last = self.factors(*probe, -1)
            if not self._factors_agree(last):
                self._hooked = []  # a Linear used in a way the hooks cannot follow: vmap everything
                self._other = self._sample_gradients()
            elif len(self._states) > 1:
                first = self.factors(*probe, 0)
                self._shared_inputs = [i for i, ((a0, _), (a1, _)) in enumerate(zip(first.linear, last.linear)) if torch.equal(a0, a1)]
        return self

    @property
    def hooked_layers(self) -> dict[str, str]:
        """The Linear layers whose factors come from hooks, by module name: ``"gram"`` (one call on
        2-D input) or ``"positions"`` (``Σ_t δ_t a_tᵀ`` materialised); vmap covers the rest."""
        names = {m: n for n, m in self._fitted().model.named_modules()}
        return {names[h.module]: "gram" if h.gram else "positions" for h in self._hooked}

    @property
    def checkpoint_weights(self) -> list[float]:
        """The weight of each checkpoint's gradient dots in :meth:`scores`, in the order
        :meth:`factors` indexes them: ``lr_t`` (1.0 for :class:`FastGradientDot`'s one checkpoint)."""
        self._fitted()
        return [lr for _, lr in self._states]

    def _sample_gradients(self) -> SampleGradients | None:
        """vmap gradients of the trainable parameters outside the hooked Linears, if any."""
        task = self._fitted()
        covered = {id(p) for h in self._hooked for p in h.module.parameters()}
        other = [n for n, p in task.model.named_parameters() if p.requires_grad and id(p) not in covered]
        if not other and not self._hooked:
            raise AttributionError(f"{self.name}: the model has no trainable parameter")
        return SampleGradients(task.model, task.loss_fn, self._dtype, self.batch_size, other) if other else None

    def _factors_agree(self, fast: GradientFactors) -> bool:
        """Whether the dot products of ``fast``, the factors of the first ``len(fast)`` training
        samples at the last checkpoint, equal those of plain per-sample gradients (one
        ``autograd.grad`` per sample)."""
        task = self._fitted()
        n = len(fast)
        fast = fast.double()
        fast = fast.dot(fast)
        params = [p for p in task.model.parameters() if p.requires_grad]
        rows = []
        with torch.enable_grad():
            for i in range(n):
                loss = task.loss_fn(forward(task.model, take(task.train_x, slice(i, i + 1))), task.train_y[i : i + 1]).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
        plain = torch.stack(rows).double()
        plain = plain @ plain.T
        return torch.allclose(fast, plain, rtol=1e-3, atol=1e-4 * float(plain.abs().max()) + 1e-10)

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        task = self._fitted()
        out = np.empty((task.n_train, n_samples(test_x)), dtype=np.float64)

        def keep(start: int, block: np.ndarray) -> None:
            out[start : start + len(block)] = block

        self.stream(test_x, test_y, keep)
        return out

    def stream(self, test_x: Inputs, test_y: torch.Tensor, sink: BlockSink) -> None:
        """Compute the scores block by block (train rows in order) and hand each to ``sink``."""
        task = self._fitted()
        n_test = n_samples(test_x)
        tests: list[list[GradientFactors]] = []  # per checkpoint, filled at the first block (one checkpoint load for both)
        size = self._block_rows()
        starts = range(0, task.n_train, size)
        cache = self._train_cache
        keep = cache is None and self._train_bytes() <= self.cache_mb * 2**20
        fresh: list[list[GradientFactors]] = [[] for _ in self._states]
        for b, start in enumerate(starts):
            rows = slice(start, start + size)
            block = torch.zeros(len(task.train_y[rows]), n_test, dtype=self._dtype)
            shared: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
            for t, (_, lr) in enumerate(self._states):
                if t == len(tests):
                    tests.append([self.factors(take(test_x, slice(s, s + self.test_batch_size)), test_y[s : s + self.test_batch_size], t, test=True)
                                  for s in range(0, n_test, self.test_batch_size)])
                test_chunks = tests[t]
                train = cache[t][b] if cache is not None else self.factors(take(task.train_x, rows), task.train_y[rows], t)
                if keep:
                    fresh[t].append(train)
                for c, chunk in enumerate(test_chunks):
                    summed = self._sum_shared(shared, c, train, chunk, lr)
                    train.dot(chunk, block[:, self._columns(c, chunk)], alpha=lr, skip=summed)  # (rows, chunk columns) += lr · dots
            for (_, c), (a, a_t, total) in shared.items():
                block[:, self._columns(c, a_t)].addcmul_(total, a @ a_t.T)
            sink(start, block.numpy())
        if keep:
            self._train_cache = fresh

    def _columns(self, chunk: int, test: GradientFactors | torch.Tensor) -> slice:
        """The block's columns of test chunk number ``chunk`` (``test``: its factors, or a tensor of its rows)."""
        return slice(chunk * self.test_batch_size, chunk * self.test_batch_size + len(test))

    def _sum_shared(self, shared: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], chunk: int,
                    train: GradientFactors, test: GradientFactors, lr: float) -> set[int]:
        """For each layer in ``_shared_inputs`` whose inputs (train and test chunk number ``chunk``)
        equal exactly those of the block's first checkpoint, add ``lr Δ Δ_testᵀ`` to its sum in
        ``shared`` (``(layer, chunk) -> (A, A_test, Σ_t lr_t Δ_t Δ_test,tᵀ)``) and return the layer:
        the block gets ``sum ⊙ (A A_testᵀ)`` once, after the last checkpoint. A layer whose inputs
        differ is left to :meth:`GradientFactors.dot` at this checkpoint."""
        summed = set()
        for layer in self._shared_inputs:
            (a, d), (a_t, d_t) = train.linear[layer], test.linear[layer]
            kept = shared.get((layer, chunk))
            if kept is None:
                kept = shared[layer, chunk] = (a, a_t, torch.zeros(len(d), len(d_t), dtype=d.dtype))
            if torch.equal(a, kept[0]) and torch.equal(a_t, kept[1]):
                kept[2].addmm_(d, d_t.T, alpha=lr)
                summed.add(layer)
        return summed

    def _sample_bytes(self) -> int:
        """Bytes of one sample's factors at one checkpoint."""
        width = sum((h.module.in_features * h.weight + h.bias + h.module.out_features) if h.gram
                    else h.module.weight.numel() * h.weight + h.module.out_features * h.bias for h in self._hooked)
        width += self._other.n_params if self._other is not None else 0
        return self._dtype.itemsize * width

    def _train_bytes(self) -> int:
        """Bytes of every checkpoint's training factors."""
        return self._sample_bytes() * self._fitted().n_train * len(self._states)

    def _block_rows(self) -> int:
        """Training rows per block: ``batch_size``, or fewer so one block's factors fit ``block_mb``."""
        return max(1, min(self.batch_size, int(self.block_mb * 2**20 // self._sample_bytes())))

    def self_influence(self) -> np.ndarray:
        """``(n_train,)`` ``Σ_t lr_t |∇ℓ(train_i; θ_t)|²``."""
        task = self._fitted()
        out = np.zeros(task.n_train)
        for t, (_, lr) in enumerate(self._states):
            size = self._block_rows()
            for start in range(0, task.n_train, size):
                rows = slice(start, start + size)
                out[rows] += lr * self.factors(take(task.train_x, rows), task.train_y[rows], t).squared_norms().double().numpy()
        return out

    def _fitted(self) -> AttributionTask:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} used before fit(task)")
        return self._task

    def _load(self, checkpoint: int) -> None:
        checkpoint %= len(self._states)
        if checkpoint != self._loaded:
            self._fitted().model.load_state_dict(self._states[checkpoint][0])
            self._loaded = checkpoint

    def factors(self, x: Inputs, y: torch.Tensor, checkpoint: int = -1, test: bool = False) -> GradientFactors:
        """Per-sample gradient factors of ``(x, y)`` at checkpoint ``checkpoint`` (an index into the
        task's checkpoints), of the test loss when ``test``; their :meth:`GradientFactors.dot` is the
        heavy phase."""
        task = self._fitted()
        self._load(checkpoint)
        loss_fn: LossFn = task.test_loss if test else task.loss_fn
        inputs, deltas = capture(task.model, [h.module for h in self._hooked], x, y, loss_fn)
        linear, other = [], []
        for h in self._hooked:
            a_calls, d_calls = inputs[h.module], deltas[h.module]
            n = len(y)
            if h.gram:
                a, d = a_calls[0], d_calls[0]
                parts = ([a] if h.weight else []) + ([torch.ones(n, 1, dtype=a.dtype)] if h.bias else [])
                linear.append((torch.cat(parts, dim=1), d))
                continue
            a = torch.cat([c.reshape(n, -1, c.shape[-1]) for c in a_calls], dim=1)  # (n, positions, d_in)
            d = torch.cat([c.reshape(n, -1, c.shape[-1]) for c in d_calls], dim=1)  # (n, positions, d_out)
            if h.weight:
                other.append(torch.einsum("npo,npi->noi", d, a).reshape(n, -1))  # Σ_t δ_t a_tᵀ, row-major
            if h.bias:
                other.append(d.sum(dim=1))
        if self._other is not None:
            other.append(self._other(x, y, loss_fn))
        return GradientFactors(linear, torch.cat(other, dim=1) if other else None)


def capture(model: nn.Module, modules: Sequence[nn.Module], x: Inputs, y: torch.Tensor, loss_fn: LossFn
            ) -> tuple[dict[nn.Module, list[torch.Tensor]], dict[nn.Module, list[torch.Tensor]]]:
    """One forward and backward of the summed per-sample losses with hooks on ``modules``: per
    module, the first argument of each call (its input, detached, not copied) and the loss
    gradient ``δ`` at that call's output, in call order. ``δ`` is that of a zero tensor added to the
    output, so a later in-place op on the output cannot change it. A model that overwrites a
    captured input in place after the call cannot be differentiated w.r.t. the weight at all
    (autograd refuses it)."""
    inputs: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in modules}
    taps: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in modules}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        tap = torch.zeros_like(output, requires_grad=True)  # its gradient is δ, whatever later overwrites output
        inputs[module].append(args[0].detach())
        taps[module].append(tap)
        return output + tap

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.enable_grad():
            loss = summed_loss(loss_fn, forward(model, x), y)
            flat = [tap for m in modules for tap in taps[m]]
            grads = torch.autograd.grad(loss, flat, allow_unused=True) if flat else ()
    finally:
        for handle in handles:
            handle.remove()
    filled = iter([torch.zeros_like(tap) if g is None else g for tap, g in zip(flat, grads)])
    return inputs, {m: [next(filled) for _ in taps[m]] for m in modules}


def per_sample_calls(model: nn.Module, modules: Sequence[nn.Module], x: Inputs) -> dict[nn.Module, list[list[tuple[int, ...]]]]:
    """The ``modules`` whose hooks see per-sample inputs, found by probe forwards on 1 and up to 3
    samples of ``x``: the module runs the same number of times in both and each call's first
    argument has the probe's sample count first. Each maps to its calls' input shapes, per probe.
    None with fewer than 2 samples: one probe cannot tell a per-sample input from one the batch
    shares (GPT-2's position ids), so every parameter then takes the exact path."""
    if n_samples(x) < 2:
        return {}
    probes = [1, min(n_samples(x), 3)]
    shapes: dict[nn.Module, list[list[tuple[int, ...]]]] = {m: [] for m in modules}
    for size in probes:
        seen: dict[nn.Module, list[tuple[int, ...]]] = {m: [] for m in modules}
        handles = [m.register_forward_hook(lambda mod, args, out: seen[mod].append(tuple(args[0].shape))) for m in modules]
        try:
            with torch.no_grad():
                forward(model, take(x, slice(0, size)))
        finally:
            for handle in handles:
                handle.remove()
        for m in modules:
            shapes[m].append(seen[m] if all(s[0] == size for s in seen[m]) else [])
    return {m: calls for m, calls in shapes.items() if all(calls) and len({len(c) for c in calls}) == 1}


def _hooked_linears(model: nn.Module, x: Inputs) -> list[_Hooked]:
    """Trainable ``nn.Linear`` layers whose gradients the hooks can capture exactly, found by probe
    forwards on 1 and up to 3 samples of ``x``: the layer's own ``forward`` runs the same number of
    times in both, each call's input has the probe's sample count first, and its parameters are
    used by no other module. Gram when there is one call on 2-D input; the rest fall back to vmap."""
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    linears = [m for m in model.modules() if type(m).forward is nn.Linear.forward and isinstance(m, nn.Linear)
               and any(p.requires_grad for p in m.parameters()) and all(owners[id(p)] == 1 for p in m.parameters())]
    return [_Hooked(m, gram=all(len(c) == 1 and len(c[0]) == 2 for c in calls))
            for m, calls in per_sample_calls(model, linears, x).items()]


class FastGradientDot(FastTracIn):
    """``∇ℓ_i · ∇ℓ_j`` at the trained model (the task's last checkpoint, unweighted), from
    :class:`FastTracIn`'s factors: the scores of :class:`~attribution.baselines.GradientDot`, with
    training rows in blocks bounded by ``block_mb`` where GradientDot holds every per-sample
    gradient at once (7 MiB per sample for a MiniLM layer)."""

    name = "grad_dot_fast"

    def fit(self, task: AttributionTask) -> FastGradientDot:
        super().fit(dataclasses.replace(task, checkpoints=list(task.checkpoints)[-1:]))
        self._states = [(self._states[0][0], 1.0)]
        return self
