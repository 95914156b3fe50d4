"""The method comparison on a non-convex model: the planted Datanet's MLP (notebook 06).

The same :class:`~datanet_lab.experiments.problem.Problem` as notebook 05, but the attributed model is a
64-128-C ReLU MLP trained by SGD with a cosine schedule (:class:`datanet.MLPRetrainer`, 5
checkpoints) and the ground truth retrains it on each subset with several seeds and averages:
two retrainings with different seeds disagree (``diagnostics["ceiling"]``), so no method can
beat their agreement against one seed. Ensembles average a method over the trained model and
models trained on random halves (:class:`EnsembleMembers`), TRAK's recipe. :func:`compare` runs
it all (notebook 06's one call).

Defaults (ridge 3 for TRAK and Gauss-Newton influence, rank 2, 10 models, member ``k`` trained on
its own random half with mask seed ``2000 + k`` and seed ``1000 + k``) were chosen by
``benchmarks/mlp_lds_bench.py --tune`` on held-out halves and seeds of the digits split, never on
a reported ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import attribution
from attribution import groundtruth
from datanet.mlp_retrain import MLPRetrainer, mlp
from datanet.models import load_checkpoint
from datanet_lab.experiments import compare as method_comparison
from datanet_lab.pipeline.experiment import run_experiment
from datanet_lab.pipeline.run import Run
from datanet_lab.experiments.problem import Problem

MEMBER_SEED, MEMBER_MASK_SEED = 1000, 2000


def retrainer(p: Problem) -> MLPRetrainer:
    """The MLP retrainer of ``p``'s standardized features (the :class:`MLPRetrainer` defaults)."""
    return MLPRetrainer(p.train_x, p.train_y, p.test_x, p.test_y, p.n_classes)


class EnsembleMembers:
    """Trains attribution tasks: the full-data model (seed 0) and ensemble member ``k`` on its own
    random half (mask seed ``2000 + k``, seed ``1000 + k``), each trained once and kept; every
    task scores the whole training set. Use as :class:`attribution.Ensemble`'s ``member``."""

    def __init__(self, retrain: MLPRetrainer, directory: Path) -> None:
        self.retrain, self.directory = retrain, Path(directory)
        self.x = torch.as_tensor(retrain.train_x, dtype=torch.float32)
        self.y = torch.as_tensor(retrain.train_y)
        self._tasks: dict[int, attribution.AttributionTask] = {}
        self.train_seconds = 0.0

    def task(self, rows: np.ndarray, seed: int, name: str) -> attribution.AttributionTask:
        """The model trained on ``rows`` with ``seed`` (checkpoints under ``directory / name``)."""
        start = time.perf_counter()
        _, paths = self.retrain.train(rows, seed, self.directory / name)
        self.train_seconds += time.perf_counter() - start
        model = mlp(self.x.shape[1], self.retrain.hidden, self.retrain.n_classes, seed)
        return attribution.AttributionTask(model, self.x, self.y, paths, load_checkpoint,
                                           weight_decay=self.retrain.weight_decay)

    def full(self) -> attribution.AttributionTask:
        """The attributed model: every training row, seed 0."""
        return self.task(np.arange(len(self.y)), 0, "full")

    def train_members(self, n_models: int) -> None:
        """Train members ``1 .. n_models - 1`` now, so that an ensemble's timing is its scoring alone."""
        for k in range(1, n_models):
            self(None, k)

    def __call__(self, task: attribution.AttributionTask | None, k: int) -> attribution.AttributionTask:
        if k not in self._tasks:
            half = groundtruth.random_subsets(len(self.y), 1, 0.5, MEMBER_MASK_SEED + k)[0]
            self._tasks[k] = self.task(np.flatnonzero(half), MEMBER_SEED + k, f"member_{k:03d}")
        return self._tasks[k]


def default_methods(members: EnsembleMembers, n_models: int = 10) -> list[attribution.Attributor]:
    """Peers (gradient dot, TracIn over the checkpoints), TRAK and Gauss-Newton influence on the
    trained model, and both averaged over ``n_models`` models. CG influence with the true
    Hessian is left out: on the digits MLP it refuses (negative curvature), as it should."""
    return [
        attribution.GradientDot(),
        attribution.FastTracIn(),
        attribution.TRAK(),
        attribution.GaussNewtonInfluence(),
        attribution.Ensemble(attribution.TRAK, members, n_models),
        attribution.Ensemble(attribution.GaussNewtonInfluence, members, n_models),
    ]


def compare(p: Problem, directory: Path, n_subsets: int = 100, seed: int = 0, n_seeds: int = 3, n_models: int = 10,
            workers: int = 2) -> method_comparison.Comparison:
    """The MLP comparison of notebook 06: train the attributed model (every row, seed 0) and the
    ``n_models - 1`` ensemble members first (timed apart, ``diagnostics["member_train_seconds"]``,
    so the table's seconds are fit + scores only; models under ``directory / "models"``), then judge
    :func:`default_methods` against retraining averaged over seeds ``0 .. n_seeds - 1`` (two or
    more: their agreement is ``diagnostics["ceiling"]``) on ``n_subsets`` halves drawn from
    ``seed``, without contributor Shapley."""
    if n_seeds < 2:
        raise ValueError(f"n_seeds must be >= 2 (the ground truth averages retrain seeds; two give its ceiling), got {n_seeds}")
    if n_models < 1:
        raise ValueError(f"n_models must be >= 1, got {n_models}")
    retrain = retrainer(p)
    members = EnsembleMembers(retrain, directory / "models")
    target = members.full()
    members.train_members(n_models)
    result = method_comparison.compare(p, default_methods(members, n_models), directory, n_subsets=n_subsets, seed=seed,
                                       workers=workers, target=target, retrain=retrain, seeds=range(n_seeds),
                                       shapley=False)
    result.diagnostics["member_train_seconds"] = members.train_seconds
    return result


def compare_in_run(run: Run, folder: str, p: Problem, n_subsets: int = 100, seed: int = 0, n_seeds: int = 3,
                   n_models: int = 10) -> method_comparison.Comparison:
    """:func:`compare` as an experiment step of ``run``
    (:func:`~datanet_lab.pipeline.experiment.run_experiment`) keyed by ``p``'s fingerprint and
    these arguments; models and retrains kept in ``<run>/<folder>/``."""
    params = {"problem": groundtruth.retrainer_fingerprint(p), "methods": "default_methods", "n_subsets": n_subsets,
              "seed": seed, "n_seeds": n_seeds, "n_models": n_models}
    return run_experiment(run, folder, params, (), lambda scratch: compare(p, scratch, n_subsets, seed, n_seeds, n_models),
                          method_comparison.Comparison)
