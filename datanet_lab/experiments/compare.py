"""Compare attribution methods against retraining ground truth on one planted Datanet.

By default the attributed model is the convergent one influence functions assume: L2-regularized
logistic regression solved by full-batch L-BFGS to a gradient max-norm of 1e-8
(:mod:`datanet.convex`), on the standardized features of a :class:`~datanet_lab.experiments.problem.Problem`
(:func:`~datanet_lab.experiments.problem.task`); the ground truth retrains the same solver on subsets (cached,
in worker processes). :mod:`datanet_lab.experiments.compare_mlp` runs the same comparison on an MLP.

Every method scores the same model. Per method, the table holds the measures of
:mod:`datanet_lab.experiments.evaluation` (LDS, LOCO and Shapley correlations, detection AUCs), the
test-accuracy change after removing the top fractions by credit (``removal_<f>``), and
``seconds`` and ``peak_mib`` of fit + scores (:func:`datanet_lab.profiling.measure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attribution
from attribution import groundtruth
from datanet_lab.experiments import evaluation
from datanet_lab.experiments.evaluation import REMOVAL_FRACTIONS
from datanet_lab.pipeline.experiment import run_experiment
from datanet_lab.pipeline.run import Run
from datanet_lab.experiments.problem import Problem, retrainer, task
from datanet_lab.profiling import measure

__all__ = ["REMOVAL_FRACTIONS", "Comparison", "Problem", "cg_error", "compare", "compare_in_run", "default_methods", "retrainer",
           "task", "write"]


def default_methods(seed: int, projection_dim: int) -> list[attribution.Attributor]:
    """Every method but CG influence (see :func:`cg_error`), default settings chosen without
    looking at the ground truth."""
    return [
        attribution.InfluenceFunction("exact"),
        attribution.FastTracIn(),
        attribution.CaptumTracIn(),
        attribution.ProjectedTracIn(projection_dim, seed),
        attribution.GradientDot(),
        attribution.GradientDot(cosine=True),
        attribution.RepresentationSimilarity(),
        attribution.TrainingLoss(),
        attribution.KNNShapley(),
        attribution.RandomScores(seed),
    ]


@dataclass
class Comparison:
    """``table``: one row per method; ``lds``: per-test sample-level LDS ``(n_test,)`` per method;
    ``removal``: accuracy after removing top fractions (rows: method, fraction, accuracy);
    ``diagnostics``: each method's own, ``retrains`` and (two or more seeds) ``ceiling``;
    ``scores``: each method's ``(n_train, n_test)`` scores."""

    table: pd.DataFrame
    lds: dict[str, np.ndarray]
    removal: pd.DataFrame
    diagnostics: dict[str, Any]
    scores: dict[str, np.ndarray]


def compare(p: Problem, methods: list[attribution.Attributor], directory: Path, n_subsets: int = 100, seed: int = 0,
            workers: int = 2, target: attribution.AttributionTask | None = None,
            retrain: groundtruth.Retrainer | None = None, seeds: Sequence[int] = (0,), shapley: bool = True,
            test: tuple[attribution.Inputs, torch.Tensor] | None = None, loco: bool = True,
            removal: bool = True) -> Comparison:
    """Score with every method and judge each against retraining (see the module docstring).

    ``target`` and ``retrain`` default to the converged logistic regression (:func:`task`,
    :func:`retrainer`); pass another model's task and retrainer (e.g. the MLP of
    :mod:`datanet_lab.experiments.compare_mlp`) to judge methods on it. Every retrained quantity is averaged
    over ``seeds`` (retrain seeds: one suffices for the unique logistic optimum); with two or more,
    ``diagnostics["ceiling"]`` is the sample-level LDS one seed's retrains reach predicting
    another's. ``shapley=False`` skips exact contributor Shapley (``2^n`` retrains per seed;
    ``shapley_corr`` is then NaN); it is computed for the first seed only. ``loco=False`` and
    ``removal=False`` skip the leave-one-contributor-out retrains (``loco_corr`` NaN) and the
    removal curves (no ``removal_<f>`` columns), for models whose retrains are costly. ``test``
    is ``(inputs, class indices)`` as ``target``'s model takes them (default: ``p``'s test
    features). Retrains are cached under ``directory / "retrains"`` by the retrainer's parameters and
    data (:func:`~attribution.groundtruth.retrainer_fingerprint`), the subset and the seed: a
    directory reused with another problem or ``l2`` retrains rather than reading the old losses."""
    target = task(p, directory) if target is None else target
    retrain = retrainer(p) if retrain is None else retrain
    test = (torch.from_numpy(p.test_x.astype(np.float32)), torch.from_numpy(p.test_y)) if test is None else test
    scored = {}
    for method in methods:
        scored[method.name] = measure(lambda m=method: m.fit(target).scores(*test))
    scores = {name: s for name, (s, _, _) in scored.items()}
    with groundtruth.RetrainCache(retrain, workers=workers, cache_dir=directory / "retrains") as cache:
        truth = evaluation.ground_truth(p, cache, n_subsets, seed, seeds, shapley, loco)
        curves = evaluation.removal_curves(cache, scores, seeds) if removal else pd.DataFrame(
            columns=["method", "fraction", "accuracy"])
        retrains = cache.retrains
    accuracy = curves.set_index(["method", "fraction"])["accuracy"]
    rows = [{"method": name} | evaluation.judge(p, scores[name], truth)
            | {f"removal_{f:g}": accuracy[name, f] - accuracy[name, 0.0] for f in REMOVAL_FRACTIONS if removal}
            | {"seconds": seconds, "peak_mib": peak} for name, (_, seconds, peak) in scored.items()]
    diagnostics = {m.name: dict(getattr(m, "diagnostics", {})) for m in methods} | {"retrains": retrains}
    if (ceiling := truth.ceiling()) is not None:
        diagnostics["ceiling"] = ceiling
    lds = {name: evaluation.sample_lds(s, truth) for name, s in scores.items()}
    return Comparison(pd.DataFrame(rows), lds, curves, diagnostics, scores)


def compare_in_run(run: Run, folder: str, p: Problem, n_subsets: int = 100, seed: int = 0, shapley: bool = True,
                   projection_dim: int = 512) -> Comparison:
    """:func:`compare` of :func:`default_methods` (``seed``, ``projection_dim``) on ``p``, as an
    experiment step of ``run`` (:func:`~datanet_lab.pipeline.experiment.run_experiment`) keyed by
    ``p``'s fingerprint (every array and number of the problem) and these arguments: read back
    when asked again, computed beside it for other arguments; retrains cached in ``<run>/<folder>/``."""
    params = {"problem": groundtruth.retrainer_fingerprint(p), "methods": "default_methods",
              "projection_dim": projection_dim, "n_subsets": n_subsets, "seed": seed, "shapley": shapley}
    return run_experiment(run, folder, params, (), lambda scratch: compare(
        p, default_methods(seed, projection_dim), scratch, n_subsets=n_subsets, seed=seed, shapley=shapley), Comparison)


def cg_error(p: Problem, directory: Path, n_test: int = 20) -> dict[str, float]:
    """CG influence vs exact on the first ``n_test`` test samples: max relative difference,
    iterations, seconds of each (CG's batched Hessian-vector products cost ~1 s per 360 columns
    here, so the full comparison uses the exact solver)."""
    target = task(p, directory)
    test = torch.from_numpy(p.test_x[:n_test].astype(np.float32)), torch.from_numpy(p.test_y[:n_test])
    exact, exact_s, _ = measure(lambda: attribution.InfluenceFunction("exact").fit(target).scores(*test))
    cg = attribution.InfluenceFunction("cg")
    approx, cg_s, _ = measure(lambda: cg.fit(target).scores(*test))
    return {"max_rel_diff": float(np.abs(approx - exact).max() / np.abs(exact).max()), "cg_iterations": cg.diagnostics["cg_iterations"],
            "exact_seconds": exact_s, "cg_seconds": cg_s}


def write(result: Comparison, directory: Path) -> None:
    """``comparison.csv`` (one row per method), ``removal.csv`` and ``lds_per_test.csv``."""
    directory.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(directory / "comparison.csv", index=False)
    result.removal.to_csv(directory / "removal.csv", index=False)
    pd.DataFrame(result.lds).to_csv(directory / "lds_per_test.csv", index_label="test_sample")
