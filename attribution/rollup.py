"""Roll per-sample influence up to contributors.

Sign convention: a positive score helped the model on the test set (lowered test loss).
A sample's credit is its mean score over the test set; a contributor's credit is the sum of
its accepted samples' credits, so it grows with both how much and how many samples helped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def sample_credit(scores: np.ndarray) -> np.ndarray:
    """``(n_train,)`` mean influence of each training sample over the test samples."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_train, n_test), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores hold {np.count_nonzero(~np.isfinite(scores))} non-finite values")
    return scores.mean(axis=1)


def contributor_credit(scores: np.ndarray, contributors: Sequence[str], all_contributors: Sequence[str]) -> pd.Series:
    """Sum of sample credit per contributor, indexed by ``all_contributors`` (0 for none accepted)."""
    if len(contributors) != scores.shape[0]:
        raise ValueError(f"{len(contributors)} contributor ids for {scores.shape[0]} training rows")
    credit = pd.Series(sample_credit(scores)).groupby(np.asarray(contributors)).sum()
    return credit.reindex(list(all_contributors), fill_value=0.0).rename("attribution")
