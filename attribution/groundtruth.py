"""Ground truth by retraining: leave-one-contributor-out, exact contributor Shapley, LDS subsets.

A *retrainer* is any picklable callable ``(train_indices, seed) -> Outcome`` (e.g.
:class:`datanet.convex.LogRegRetrainer`); :class:`RetrainCache` runs it in worker processes and
caches each outcome by (subset hash, seed), in memory and optionally as ``.npz`` files kept under
the retrainer's fingerprint (:func:`retrainer_fingerprint`: its class and every field, training
and test data included), so LOCO, Shapley and LDS share retrains and a retrainer with other
parameters or data never reads another's. Signs follow the package: positive = the data helped
(lowered test loss).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from datanet.convex import Outcome

Retrainer = Callable[[np.ndarray, int], Outcome]
MAX_EXACT_SHAPLEY = 10


def subset_key(indices: np.ndarray, seed: int) -> str:
    """A stable name for a (training subset, seed) pair: order and duplicates do not matter."""
    unique = np.unique(np.asarray(indices, dtype=np.int64))
    return f"{hashlib.sha256(unique.tobytes()).hexdigest()[:24]}-s{seed}"


def retrainer_fingerprint(retrainer: object) -> str:
    """SHA-256 of what a retrainer computes from: its class and, recursively, every dataclass field
    (arrays and tensors by dtype, shape and bytes; a torch module by its ``repr`` (structure and
    hyperparameters) and its state dict; numbers, strings, torch dtypes and devices, tuples, lists,
    mappings by value). Fields
    that are not dataclass fields (a ``cached_property``, a counter) do not count; code does not.

    Raises:
        TypeError: the retrainer is not a dataclass, or a field holds a value of another type.
    """
    if not dataclasses.is_dataclass(retrainer) or isinstance(retrainer, type):
        raise TypeError(f"a cached retrainer must be a dataclass instance (its fields are its cache key), "
                        f"got {type(retrainer).__qualname__}")
    digest = hashlib.sha256()
    for chunk in _chunks(retrainer, type(retrainer).__qualname__):
        digest.update(chunk)
    return digest.hexdigest()


def _chunks(value: object, where: str) -> Iterator[bytes]:
    """The bytes :func:`retrainer_fingerprint` hashes for ``value`` (named ``where`` in errors)."""
    yield f"{type(value).__module__}.{type(value).__qualname__}(".encode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield f"{field.name}=".encode()
            yield from _chunks(getattr(value, field.name), f"{where}.{field.name}")
    elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
        yield f"{value.dtype.str}{value.shape}".encode()
        yield np.ascontiguousarray(value).tobytes()
    elif isinstance(value, torch.Tensor):
        yield from _chunks(value.detach().cpu().numpy(), where)
    elif isinstance(value, torch.nn.Module):
        text = repr(value).encode()
        yield b"%d:%s" % (len(text), text)
        yield from _chunks(dict(value.state_dict()), f"{where}.state_dict()")
    elif isinstance(value, (tuple, list)):
        for k, item in enumerate(value):
            yield from _chunks(item, f"{where}[{k}]")
    elif isinstance(value, Mapping):
        for key in sorted(value, key=repr):
            yield f"{key!r}:".encode()
            yield from _chunks(value[key], f"{where}[{key!r}]")
    elif value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic, torch.dtype, torch.device)):
        text = repr(value).encode()
        yield b"%d:%s" % (len(text), text)  # length-prefixed: no two values share an encoding
    else:
        raise TypeError(f"cannot fingerprint the retrainer's {where} (type {type(value).__qualname__}): fields "
                        f"must be dataclasses, arrays, tensors, torch modules, numbers, strings, tuples, lists or mappings")
    yield b")"


class RetrainCache:
    """Retrains on subsets in ``workers`` processes (1 = in this process), caching every outcome.

    Args:
        retrainer: ``(indices, seed) -> Outcome``; must be picklable when ``workers > 1``.
        workers: worker processes (default 2), kept until :meth:`close` (or the ``with`` block ends).
        cache_dir: where outcomes are kept across runs as ``<retrainer fingerprint>/<subset_key>.npz``
            (optional; the retrainer must then be a dataclass, see :func:`retrainer_fingerprint`).
    """

    def __init__(self, retrainer: Retrainer, workers: int = 2, cache_dir: str | Path | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.retrainer, self.workers = retrainer, workers
        self.cache_dir = Path(cache_dir) / retrainer_fingerprint(retrainer)[:32] if cache_dir is not None else None
        self._memory: dict[str, Outcome] = {}
        self._pool: ProcessPoolExecutor | None = None
        self.retrains = 0  # retrains actually run (cache misses)

    def __enter__(self) -> RetrainCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (started on the first parallel batch)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def outcomes(self, subsets: Sequence[np.ndarray], seed: int = 0) -> list[Outcome]:
        """The outcome of retraining on each subset with ``seed``, in order."""
        keys = [subset_key(s, seed) for s in subsets]
        missing = {k: np.unique(s) for k, s in zip(keys, subsets) if self._lookup(k) is None}
        if missing:
            results = self._run(list(missing.values()), seed)
            for key, outcome in zip(missing, results):
                self._store(key, outcome)
            self.retrains += len(missing)
        return [self._memory[k] for k in keys]

    def _run(self, subsets: list[np.ndarray], seed: int) -> list[Outcome]:
        if self.workers == 1 or len(subsets) == 1:
            return [self.retrainer(s, seed) for s in subsets]
        if self._pool is None:
            # spawn: forking a process that holds torch/OpenMP threads can deadlock the children.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        chunk = max(1, len(subsets) // (4 * self.workers))
        return list(self._pool.map(self.retrainer, subsets, [seed] * len(subsets), chunksize=chunk))

    def _lookup(self, key: str) -> Outcome | None:
        if key not in self._memory and self.cache_dir is not None and (self.cache_dir / f"{key}.npz").is_file():
            with np.load(self.cache_dir / f"{key}.npz") as stored:
                self._memory[key] = Outcome(stored["loss"], stored["margin"], float(stored["accuracy"]))
        return self._memory.get(key)

    def _store(self, key: str, outcome: Outcome) -> None:
        self._memory[key] = outcome
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = self.cache_dir / f".{key}.npz"
            np.savez(partial, loss=outcome.loss, margin=outcome.margin, accuracy=outcome.accuracy)
            partial.replace(self.cache_dir / f"{key}.npz")  # never a half-written cache entry


def _members(groups: np.ndarray, chosen: Sequence[int]) -> np.ndarray:
    return np.flatnonzero(np.isin(groups, list(chosen)))


def loco(cache: RetrainCache, groups: np.ndarray, n_groups: int, seed: int = 0) -> np.ndarray:
    """``(n_groups, n_test)`` leave-one-group-out effect: test loss without group ``g`` minus test
    loss with everyone (positive = ``g`` helped)."""
    groups = np.asarray(groups)
    everyone = np.arange(len(groups))
    subsets = [everyone] + [np.flatnonzero(groups != g) for g in range(n_groups)]
    full, *without = cache.outcomes(subsets, seed)
    return np.stack([o.loss - full.loss for o in without])


def exact_shapley(cache: RetrainCache, groups: np.ndarray, n_groups: int, seed: int = 0) -> np.ndarray:
    """``(n_groups,)`` exact Shapley values of utility ``v(S)`` = −mean test loss of the model
    retrained on the groups in ``S`` (all ``2^n_groups`` coalitions; at most 10 groups)."""
    if not 1 <= n_groups <= MAX_EXACT_SHAPLEY:
        raise ValueError(f"exact Shapley needs 1..{MAX_EXACT_SHAPLEY} groups (2^n retrains), got {n_groups}")
    groups = np.asarray(groups)
    coalitions = [c for r in range(n_groups + 1) for c in itertools.combinations(range(n_groups), r)]
    outcomes = cache.outcomes([_members(groups, c) for c in coalitions], seed)
    value = {c: -float(o.loss.mean()) for c, o in zip(coalitions, outcomes)}
    shapley = np.zeros(n_groups)
    for c in coalitions:
        weight = math.factorial(len(c)) * math.factorial(n_groups - len(c) - 1) / math.factorial(n_groups) if len(c) < n_groups else 0.0
        for g in set(range(n_groups)) - set(c):
            shapley[g] += weight * (value[tuple(sorted((*c, g)))] - value[c])
    return shapley


def permutation_shapley(cache: RetrainCache, groups: np.ndarray, n_groups: int, n_permutations: int,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo contributor Shapley for many groups: ``(value, standard_error)``, both
    ``(n_groups,)``, from ``n_permutations`` random orders (local generator seeded by ``seed``);
    each order costs ``n_groups + 1`` (cached) retrains."""
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2 for a standard error, got {n_permutations}")
    groups, rng = np.asarray(groups), np.random.default_rng(seed)
    marginals = np.zeros((n_permutations, n_groups))
    for k in range(n_permutations):
        order = rng.permutation(n_groups)
        outcomes = cache.outcomes([_members(groups, order[:r]) for r in range(n_groups + 1)])
        values = np.array([-o.loss.mean() for o in outcomes])
        marginals[k, order] = np.diff(values)
    return marginals.mean(axis=0), marginals.std(axis=0, ddof=1) / np.sqrt(n_permutations)


def random_subsets(n: int, n_subsets: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """``(n_subsets, n)`` boolean masks, each keeping ``round(fraction * n)`` items drawn without
    replacement from a local generator seeded by ``seed``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_subsets, n), dtype=bool)
    for row in masks:
        row[rng.choice(n, size=round(fraction * n), replace=False)] = True
    return masks


def subset_losses(cache: RetrainCache, masks: np.ndarray, seeds: Sequence[int] = (0,)) -> np.ndarray:
    """``(n_subsets, n_test)`` test loss of the model retrained on each mask, averaged over ``seeds``."""
    subsets = [np.flatnonzero(m) for m in masks]
    return np.mean([[o.loss for o in cache.outcomes(subsets, s)] for s in seeds], axis=0)
