"""Sinks for score blocks streamed by :meth:`attribution.fast_tracin.FastTracIn.stream`.

A 100k × 10k score matrix is 4 GB in float32; these keep only what is needed: per-group sums
(contributor-level credit) or a float16 memory-mapped file on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class GroupSums:
    """Sums score rows per group: ``totals[g, j]`` = Σ of rows ``i`` with ``groups[i] == g``.

    Args:
        groups: ``(n_train,)`` group index of each training row, in ``0..n_groups-1``.
        n_groups: number of groups (rows of :attr:`totals`).
        n_test: number of test columns.
    """

    def __init__(self, groups: Sequence[int] | np.ndarray, n_groups: int, n_test: int) -> None:
        self.groups = np.asarray(groups, dtype=np.int64)
        if self.groups.size and (self.groups.min() < 0 or self.groups.max() >= n_groups):
            raise ValueError(f"group indices must lie in [0, {n_groups}), got [{self.groups.min()}, {self.groups.max()}]")
        self.totals = np.zeros((n_groups, n_test), dtype=np.float64)

    def __call__(self, start: int, block: np.ndarray) -> None:
        groups = self.groups[start : start + len(block)]
        # A (n_groups, rows) indicator matmul: np.add.at is ~100x slower on wide blocks.
        indicator = (np.arange(len(self.totals))[:, None] == groups[None, :]).astype(block.dtype)
        self.totals += indicator @ block


class Float16Memmap:
    """Writes each block into a ``(n_train, n_test)`` float16 ``np.memmap`` at ``path`` (C order,
    no header; reopen with ``np.memmap(path, np.float16, "r", shape=shape)``)."""

    def __init__(self, path: str | Path, shape: tuple[int, int]) -> None:
        self.path, self.shape = Path(path), shape
        self.array = np.memmap(self.path, dtype=np.float16, mode="w+", shape=shape)

    def __call__(self, start: int, block: np.ndarray) -> None:
        if not np.isfinite(block).all():
            raise ValueError(f"score block at train row {start} holds non-finite values")
        if np.abs(block).max(initial=0.0) > np.finfo(np.float16).max:
            raise ValueError(f"score block at train row {start} overflows float16 (max |score| {np.abs(block).max():.3g})")
        self.array[start : start + len(block)] = block
