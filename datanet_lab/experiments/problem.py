"""A planted Datanet as a comparison problem: standardized features, contributor groups, the
planted bad data, and the converged logistic regression the comparison of notebook 05 attributes.

A problem comes from a Datanet and its planted truth (:meth:`Problem.from_built`): a run's saved
``dataset/`` and ``planted/`` (:meth:`Problem.from_run`), or one built from parameters by the
pipeline's own builder (:meth:`Problem.planted`; the comparison uses its own noise rate).
Features are standardized by :func:`datanet.models.standardization`, the models' own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import attribution
from datanet import Datanet
from datanet.convex import LogRegRetrainer, fit_logreg
from datanet.models import build_model, load_checkpoint, save_checkpoint, standardization
from datanet_lab import pipeline


@dataclass
class Problem:
    """A planted Datanet ready for comparison: standardized float64 features, contributor index
    per training row, and which contributors / samples were planted bad."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    groups: np.ndarray
    contributors: tuple[str, ...]
    noisy_contributor: np.ndarray
    flipped_sample: np.ndarray
    l2: float
    behaviours: tuple[str, ...] = ()
    """Planted behaviour per contributor; empty when unknown (the noisy AUCs then count every
    contributor that is not noisy as honest)."""

    @classmethod
    def from_built(cls, dn: Datanet, ground_truth: pd.DataFrame, l2: float = 1e-2) -> Problem:
        """The problem of Datanet ``dn`` with its planted ``ground_truth`` (one row per submission:
        ``sample_id, contributor, behaviour, is_bad``); ``l2`` is the converged logistic
        regression's L2 weight (unused when another model is compared)."""
        truth = ground_truth.set_index("sample_id")
        mean, std = standardization(dn.train_x)
        behaviour = truth.groupby("contributor")["behaviour"].first().reindex(list(dn.contributors))
        index = {c: i for i, c in enumerate(dn.contributors)}
        rows = truth.loc[dn.train_ids]
        flipped = (rows["behaviour"] == "noisy") & rows["is_bad"].astype(bool)
        return cls((dn.train_x - mean) / std, dn.train_y, (dn.test_x - mean) / std, dn.test_y, dn.n_classes,
                   np.array([index[c] for c in dn.train_contributors]), dn.contributors,
                   (behaviour == "noisy").to_numpy(), flipped.to_numpy(dtype=bool), l2, tuple(behaviour))

    @classmethod
    def from_run(cls, run: pipeline.Run, l2: float = 1e-2) -> Problem:
        """The problem of a run's Datanet (its build step's outputs, checked against their manifest)."""
        built = pipeline.build(run)
        return cls.from_built(built.datanet, built.ground_truth, l2)

    @classmethod
    def planted(cls, dataset: str, label_column: str, scenario: str, n_contributors: int, noise_rate: float, seed: int,
                l2: float = 1e-2) -> Problem:
        """The problem of the Datanet the build step makes from these parameters (built here with
        :func:`datanet_lab.pipeline.planted_datanet`, not saved or recorded)."""
        built = pipeline.planted_datanet(dataset, label_column, scenario, n_contributors, noise_rate, seed)
        return cls.from_built(built.datanet, built.ground_truth, l2)


def retrainer(p: Problem) -> LogRegRetrainer:
    """The converged logistic regression's retrainer (the ground truth of notebook 05)."""
    return LogRegRetrainer(p.train_x, p.train_y, p.test_x, p.test_y, p.n_classes, p.l2)


def task(p: Problem, directory: Path) -> attribution.AttributionTask:
    """The converged logistic regression as an attribution task: one checkpoint
    (``directory/epoch_000.pt``, learning rate 1), identity standardization (``p`` is standardized)."""
    fit = fit_logreg(p.train_x, p.train_y, p.n_classes, p.l2)
    x = torch.from_numpy(p.train_x.astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("logreg", torch.zeros(2, x.shape[1]), p.n_classes)  # mean 0, std 1
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(fit.weight))
        model[1].bias.copy_(torch.from_numpy(fit.bias))
    path = save_checkpoint(model, directory, 0, 1.0)
    return attribution.AttributionTask(model, x, torch.from_numpy(p.train_y), [path], load_checkpoint, weight_decay=p.l2)
