"""Judge attribution scores ``(n_train, n_test)`` (positive = helped) against retraining ground
truth on a :class:`~datanet_lab.experiments.problem.Problem`.

The ground truth retrains the problem's model on subsets (through a
:class:`attribution.groundtruth.RetrainCache`), each quantity averaged over retrain ``seeds``.
Per method, :func:`judge` reports:

- ``lds_sample``: LDS over ``n_subsets`` random halves of the training samples (test loss), with
  ``lds_sample_ci95`` the 95% half-width over test samples;
- ``lds_contributor``: LDS over random halves of the contributors, on contributor sums;
- ``loco_corr``: Spearman of contributor credit vs leave-one-contributor-out effect;
- ``shapley_corr``: Spearman of contributor credit vs exact contributor Shapley (≤ 10
  contributors; NaN when not computed);
- the detection AUCs of :func:`attribution.metrics.detection_aucs` (``noisy_auc``,
  ``noisy_sample_auc``, ``noisy_auc_all``, ``noisy_sample_auc_all``).

:func:`removal_curves` gives test accuracy after retraining without the top fraction of samples
by credit, for each of :data:`REMOVAL_FRACTIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attribution import groundtruth, metrics
from datanet_lab.experiments.problem import Problem

REMOVAL_FRACTIONS = (0.05, 0.1, 0.2)


@dataclass
class GroundTruth:
    """Retrained quantities: ``sample_masks`` ``(n_subsets, n_train)`` with the mean test losses
    ``sample_losses`` ``(n_subsets, n_test)`` and each seed's in ``per_seed_losses``; the same
    over contributor halves (``contributor_masks`` on rows, ``contributor_losses``); ``loco``
    ``(n_contributors,)`` mean test-loss effect of leaving each contributor out or ``None``;
    ``shapley`` ``(n_contributors,)`` or ``None``."""

    sample_masks: np.ndarray
    sample_losses: np.ndarray
    per_seed_losses: list[np.ndarray]
    contributor_masks: np.ndarray
    contributor_losses: np.ndarray
    loco: np.ndarray | None
    shapley: np.ndarray | None

    def ceiling(self) -> float | None:
        """Mean sample-level LDS one retrain seed's losses reach predicting another's
        (:func:`attribution.metrics.seed_agreement`); ``None`` with a single seed."""
        if len(self.per_seed_losses) < 2:
            return None
        return float(np.nanmean(metrics.seed_agreement(self.per_seed_losses)))


def ground_truth(p: Problem, cache: groundtruth.RetrainCache, n_subsets: int, seed: int, seeds: Sequence[int],
                 shapley: bool, loco: bool = True) -> GroundTruth:
    """Retrain on ``n_subsets`` random sample halves and contributor halves (masks drawn from
    ``seed`` and ``seed + 1``), without each contributor (``loco``), and (``shapley`` and at most
    :data:`attribution.groundtruth.MAX_EXACT_SHAPLEY` contributors) every contributor coalition
    for the first of ``seeds``."""
    seeds = list(seeds)
    n_groups = len(p.contributors)
    sample_masks = groundtruth.random_subsets(len(p.train_y), n_subsets, 0.5, seed)
    contributor_masks = groundtruth.random_subsets(n_groups, n_subsets, 0.5, seed + 1)[:, p.groups]
    per_seed = [groundtruth.subset_losses(cache, sample_masks, [s]) for s in seeds]
    shapley = shapley and n_groups <= groundtruth.MAX_EXACT_SHAPLEY
    return GroundTruth(
        sample_masks=sample_masks,
        sample_losses=np.mean(per_seed, axis=0),
        per_seed_losses=per_seed,
        contributor_masks=contributor_masks,
        contributor_losses=groundtruth.subset_losses(cache, contributor_masks, seeds),
        loco=np.mean([groundtruth.loco(cache, p.groups, n_groups, s) for s in seeds], axis=0).mean(axis=1) if loco else None,
        shapley=groundtruth.exact_shapley(cache, p.groups, n_groups, seeds[0]) if shapley else None,
    )


def sample_lds(scores: np.ndarray, truth: GroundTruth) -> np.ndarray:
    """``(n_test,)`` sample-level LDS of ``scores`` against the seed-averaged retraining."""
    return metrics.lds(scores, truth.sample_masks, truth.sample_losses)


def judge(p: Problem, scores: np.ndarray, truth: GroundTruth) -> dict[str, float]:
    """Every measure of the module docstring but removal, for one method's ``scores``."""
    lds = sample_lds(scores, truth)
    contributor = metrics.group_sums(scores, p.groups, len(p.contributors)).mean(axis=1)
    return {
        "lds_sample": float(np.nanmean(lds)),
        "lds_sample_ci95": float(1.96 * np.nanstd(lds) / np.sqrt(np.isfinite(lds).sum())),
        "lds_contributor": float(np.nanmean(metrics.lds(scores, truth.contributor_masks, truth.contributor_losses))),
        "loco_corr": metrics.loco_correlation(contributor, truth.loco) if truth.loco is not None else float("nan"),
        "shapley_corr": metrics.loco_correlation(contributor, truth.shapley) if truth.shapley is not None else float("nan"),
    } | metrics.detection_aucs(scores, p.groups, p.noisy_contributor, p.flipped_sample, p.behaviours)


def removal_curves(cache: groundtruth.RetrainCache, scores: dict[str, np.ndarray], seeds: Sequence[int]) -> pd.DataFrame:
    """Rows ``method, fraction, accuracy``: test accuracy (mean over ``seeds``) after retraining
    without the top ``fraction`` of samples by each method's credit (fraction 0: every sample)."""
    ranked = {name: np.argsort(-s.mean(axis=1), kind="stable") for name, s in scores.items()}
    kept = {(name, f): np.sort(order[round(f * len(order)):]) for name, order in ranked.items() for f in REMOVAL_FRACTIONS}
    accuracy = dict(zip(kept, _mean_accuracy(cache, list(kept.values()), seeds)))
    n_train = len(next(iter(ranked.values())))
    full = _mean_accuracy(cache, [np.arange(n_train)], seeds)[0]
    return pd.DataFrame([{"method": name, "fraction": f, "accuracy": accuracy.get((name, f), full)}
                         for name in scores for f in (0.0, *REMOVAL_FRACTIONS)])


def _mean_accuracy(cache: groundtruth.RetrainCache, subsets: list[np.ndarray], seeds: Sequence[int]) -> list[float]:
    """Test accuracy of each subset's retrained model, averaged over ``seeds``."""
    return list(np.mean([[o.accuracy for o in cache.outcomes(subsets, s)] for s in seeds], axis=0))
