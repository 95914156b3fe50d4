"""The sybil experiment: does submitting near-copies of one's rows under extra identities pay?"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import attribution
from datanet_lab.compare import Problem, task

SYBIL_JITTER = 0.01
"""Standard deviation of the noise on a sybil's near-copies, in standardized feature units: about
0.03 of digits' median nearest-neighbour distance, a copy in every respect but its bytes."""


def sybil_gain(p: Problem, make_method: Callable[[], attribution.Attributor], contributor: int, k: int,
               directory: Path, jitter: float = SYBIL_JITTER, redundancy_aware: bool = True, seed: int = 0) -> float:
    """Payout share of ``contributor`` when its accepted rows are also submitted under ``k - 1``
    extra identities as near-copies (every feature plus ``N(0, jitter²)``, in standardized units:
    new bytes, so the exact-duplicate check accepts them), divided by its share alone. Payout
    shares are positive contributor credit over the total positive credit, as the ledger's split
    pays; ``redundancy_aware`` rolls credit up as the payouts do (near-copies share one sample's
    credit, :func:`attribution.rollup.shared_credit`), False sums raw sample credit."""

    def share(q: Problem, owners: list[int]) -> float:
        scores = make_method().fit(task(q, directory)).scores(torch.from_numpy(q.test_x.astype(np.float32)),
                                                              torch.from_numpy(q.test_y))
        clusters = attribution.redundancy_clusters(q.train_x, q.train_y) if redundancy_aware else None
        credit = attribution.contributor_credit(scores, q.groups, range(q.groups.max() + 1), clusters)  # as payouts roll up
        by_group = np.clip(credit.to_numpy(), 0.0, None)
        return float(by_group[owners].sum() / by_group.sum()) if by_group.sum() > 0 else 0.0

    rows = np.flatnonzero(p.groups == contributor)
    if k < 1 or not len(rows) or jitter < 0:
        raise ValueError(f"sybil_gain needs k >= 1, jitter >= 0 and a contributor with accepted rows; got k={k}, "
                         f"jitter={jitter}, contributor {contributor} with {len(rows)} rows")
    n_groups = len(p.contributors)
    copies = np.concatenate([rows] * (k - 1)) if k > 1 else rows[:0]
    noise = np.random.default_rng(seed).normal(0.0, jitter, (len(copies), p.train_x.shape[1]))
    sybil_groups = np.repeat(n_groups + np.arange(k - 1), len(rows))
    q = Problem(np.concatenate([p.train_x, p.train_x[copies] + noise]), np.concatenate([p.train_y, p.train_y[copies]]),
                p.test_x, p.test_y, p.n_classes, np.concatenate([p.groups, sybil_groups]), p.contributors,
                p.noisy_contributor, p.flipped_sample, p.l2, p.behaviours)
    return share(q, [contributor, *range(n_groups, n_groups + k - 1)]) / share(p, [contributor])
