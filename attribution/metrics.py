"""How right an attribution is, judged against retraining ground truth and planted bad data.

All take score matrices ``(n_train, n_test)`` with positive = helped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score


def group_sums(scores: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, n_test)`` sums of the score rows of each group."""
    indicator = np.arange(n_groups)[:, None] == np.asarray(groups)[None, :]
    return indicator.astype(np.float64) @ scores


def lds(scores: np.ndarray, masks: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Linear datamodeling score per test sample, ``(n_test,)``.

    For test sample ``j``: the Spearman correlation, across the ``(n_subsets, n_train)`` boolean
    ``masks``, between the attribution summed over each subset (``masks @ scores[:, j]``) and
    minus the retrained model's test loss ``losses[:, j]`` (more help = lower loss). NaN where
    either side is constant across subsets.
    """
    if masks.shape[1] != scores.shape[0] or losses.shape != (masks.shape[0], scores.shape[1]):
        raise ValueError(f"shapes disagree: scores {scores.shape}, masks {masks.shape}, losses {losses.shape}")
    predicted = rankdata(masks.astype(np.float64) @ scores, axis=0)
    actual = rankdata(-losses, axis=0)
    predicted -= predicted.mean(axis=0)
    actual -= actual.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (predicted * actual).sum(axis=0) / np.sqrt((predicted**2).sum(axis=0) * (actual**2).sum(axis=0))


def seed_agreement(per_seed_losses: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_test,)`` LDS ceiling: the Spearman correlation across subsets between one retrain
    seed's minus test losses ``(n_subsets, n_test)`` and another's, averaged over seed pairs. A
    perfect attribution of one seed's retraining reaches this much against another seed's."""
    if len(per_seed_losses) < 2:
        raise ValueError(f"seed agreement needs losses of >= 2 retrain seeds, got {len(per_seed_losses)}")
    ranked = [rankdata(-losses, axis=0) for losses in per_seed_losses]
    centered = [r - r.mean(axis=0) for r in ranked]
    with np.errstate(invalid="ignore", divide="ignore"):
        pairs = [(a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
                 for a, b in itertools.combinations(centered, 2)]
    return np.mean(pairs, axis=0)


def loco_correlation(credit: np.ndarray, loco_effect: np.ndarray) -> float:
    """Spearman correlation between per-group credit ``(n_groups,)`` and the mean LOCO effect."""
    return float(spearmanr(credit, loco_effect).statistic)


def detection_auc(suspicion: np.ndarray, is_bad: np.ndarray) -> float:
    """ROC AUC of ``suspicion`` (higher = more suspect, e.g. minus credit) for flagging ``is_bad``;
    NaN when nothing or everything is bad (no AUC is defined)."""
    is_bad = np.asarray(is_bad, dtype=bool)
    if is_bad.all() or not is_bad.any():
        return float("nan")
    return float(roc_auc_score(is_bad, suspicion))


def detection_aucs(scores: np.ndarray, groups: np.ndarray, noisy_group: np.ndarray, flipped_sample: np.ndarray,
                   behaviours: Sequence[str] = ()) -> dict[str, float]:
    """How well low credit flags flipped labels, four ways, from ``scores`` ``(n_train, n_test)``:

    - ``noisy_auc``: minus the mean credit per accepted sample of each group, flagging the noisy
      groups (``noisy_group`` ``(n_groups,)``) among the groups with accepted rows whose planted
      behaviour (``behaviours``, one per group) is ``honest`` or ``noisy``;
    - ``noisy_sample_auc``: minus sample credit, flagging ``flipped_sample`` ``(n_train,)`` among
      those groups' rows;
    - ``noisy_auc_all``: minus summed group credit against every other group;
    - ``noisy_sample_auc_all``: minus sample credit against every row.

    The first two ask "does this group (sample) hold flipped labels", so the negatives are clean
    data of the same distribution: a group whose every row validation rejected holds no training
    data (credit 0 says nothing of its labels), and out-of-domain data is harmful in another way
    that low credit flags too. The mean, not the sum, so a group's size does not decide. With no
    ``behaviours`` every group that is not noisy counts as honest. ``groups`` ``(n_train,)`` holds
    each row's group index; sample credit is a row's mean score over the test samples.
    """
    groups, noisy_group = np.asarray(groups), np.asarray(noisy_group, dtype=bool)
    flipped_sample = np.asarray(flipped_sample, dtype=bool)
    n_groups = len(noisy_group)
    if scores.ndim != 2 or not len(groups) == len(flipped_sample) == scores.shape[0]:
        raise ValueError(f"scores {scores.shape}, groups {groups.shape} and flipped_sample {flipped_sample.shape} "
                         "must have one row per training sample")
    if behaviours and len(behaviours) != n_groups:
        raise ValueError(f"{len(behaviours)} behaviours for {n_groups} groups")
    credit = scores.mean(axis=1)
    accepted = np.bincount(groups, minlength=n_groups)
    summed = np.bincount(groups, credit, minlength=n_groups)
    clean = accepted > 0
    if behaviours:
        clean &= np.isin(np.asarray(behaviours), ["honest", "noisy"])
    rows = clean[groups]
    return {
        "noisy_auc": detection_auc(-summed[clean] / accepted[clean], noisy_group[clean]),
        "noisy_sample_auc": detection_auc(-credit[rows], flipped_sample[rows]),
        "noisy_auc_all": detection_auc(-summed, noisy_group),
        "noisy_sample_auc_all": detection_auc(-credit, flipped_sample),
    }
