"""Compare attribution methods against retraining ground truth on one planted Datanet.

The model is the convergent one influence functions assume: L2-regularized logistic regression
solved by full-batch L-BFGS to a gradient max-norm of 1e-8 (:mod:`datanet.convex`), on features
standardized by the accepted training set. Every method scores the same model; the ground truth
retrains the same solver on subsets (cached, in worker processes). Per method:

- ``lds_sample``: LDS over ``n_subsets`` random halves of the training samples (test loss);
- ``lds_contributor``: LDS over random halves of the contributors, on contributor sums;
- ``loco_corr``: Spearman of contributor credit vs leave-one-contributor-out effect;
- ``shapley_corr``: Spearman of contributor credit vs exact contributor Shapley (≤ 10 contributors);
- ``noisy_auc``: AUC of minus the mean credit per accepted sample for flagging noisy contributors
  among the honest and noisy contributors with accepted data; ``noisy_sample_auc``: AUC of minus
  sample credit for flagging flipped-label samples among those contributors' samples. The
  question is "does this contributor (sample) hold flipped labels", so the negatives are clean
  data of the same distribution: a contributor whose every row validation rejected holds no
  training data (credit 0 says nothing about its labels), and out-of-domain data is harmful in
  another way that low credit flags too (AUC of noisy against it measures which kind of bad data
  it is, not whether labels are flipped). The mean, not the sum, so a contributor's size does
  not decide; it is the credit per accepted sample that notebook 03 and the pipeline tests rank by.
  ``noisy_auc_all`` / ``noisy_sample_auc_all`` keep the first definitions: minus summed credit
  against every other contributor / minus sample credit against every accepted sample;
- ``removal_<f>``: test-accuracy change after dropping the top fraction ``f`` of samples by credit;
- ``seconds`` and ``peak_mib`` (RSS growth above the start, sampled every 5 ms) of fit + scores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attribution
from attribution import groundtruth, metrics
from datanet import build_datanet, load_table, parse_scenario
from datanet.convex import LogRegRetrainer, fit_logreg
from datanet.models import build_model
from datanet.training import load_checkpoint

REMOVAL_FRACTIONS = (0.05, 0.1, 0.2)


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


def problem(dataset: str, label_column: str, scenario: str, n_contributors: int, noise_rate: float, seed: int,
            l2: float = 1e-2) -> Problem:
    """Build the Datanet (as step 1 does, with ``noise_rate``) and standardize it; ``l2`` is the
    converged logistic regression's L2 weight (unused when another model is compared)."""
    built = build_datanet(load_table(dataset, label_column), parse_scenario(scenario, n_contributors), noise_rate, seed)
    dn, truth = built.datanet, built.ground_truth.set_index("sample_id")
    mean, std = dn.train_x.mean(axis=0, dtype=np.float64), dn.train_x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    behaviour = truth.groupby("contributor")["behaviour"].first().reindex(list(dn.contributors))
    index = {c: i for i, c in enumerate(dn.contributors)}
    flipped = (truth.loc[dn.train_ids, "behaviour"] == "noisy") & truth.loc[dn.train_ids, "is_bad"]
    return Problem((dn.train_x - mean) / std, dn.train_y, (dn.test_x - mean) / std, dn.test_y, dn.n_classes,
                   np.array([index[c] for c in dn.train_contributors]), dn.contributors,
                   (behaviour == "noisy").to_numpy(), flipped.to_numpy(dtype=bool), l2, tuple(behaviour))


def retrainer(p: Problem) -> LogRegRetrainer:
    return LogRegRetrainer(p.train_x, p.train_y, p.test_x, p.test_y, p.n_classes, p.l2)


def task(p: Problem, directory: Path) -> attribution.AttributionTask:
    """The converged model as an attribution task (one checkpoint, learning rate 1)."""
    fit = fit_logreg(p.train_x, p.train_y, p.n_classes, p.l2)
    x = torch.from_numpy(p.train_x.astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("logreg", torch.zeros(2, x.shape[1]), p.n_classes)  # identity standardization
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(fit.weight))
        model[1].bias.copy_(torch.from_numpy(fit.bias))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "converged.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0, "epoch": 0}, path)
    return attribution.AttributionTask(model, x, torch.from_numpy(p.train_y), [path], load_checkpoint, weight_decay=p.l2)


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


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds, and its peak RSS growth in MiB (sampled every 5 ms)."""
    statm, page = Path("/proc/self/statm"), 4096

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    start_rss, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        watcher.join()
    return result, seconds, max(0, max(peak[0], rss()) - start_rss) / 2**20


@dataclass
class Comparison:
    """``table``: one row per method; ``lds``: per-test sample-level LDS ``(n_test,)`` per method;
    ``removal``: accuracy after removing top fractions (rows: method, fraction, accuracy)."""

    table: pd.DataFrame
    lds: dict[str, np.ndarray]
    removal: pd.DataFrame
    diagnostics: dict[str, Any]


def compare(p: Problem, methods: list[attribution.Attributor], directory: Path, n_subsets: int = 100, seed: int = 0,
            workers: int = 2, target: attribution.AttributionTask | None = None,
            retrain: groundtruth.Retrainer | None = None, seeds: Sequence[int] = (0,), shapley: bool = True) -> Comparison:
    """Score with every method and judge each against retraining (see the module docstring).

    ``target`` and ``retrain`` default to the converged logistic regression (:func:`task`,
    :func:`retrainer`); pass another model's task and retrainer (e.g. the MLP of
    :mod:`datanet_lab.compare_mlp`) to judge methods on it. Every retrained quantity is averaged
    over ``seeds`` (retrain seeds: one suffices for the unique logistic optimum); with two or more,
    ``diagnostics["ceiling"]`` is the sample-level LDS one seed's retrains reach predicting
    another's (:func:`attribution.metrics.seed_agreement`). ``shapley=False`` skips exact
    contributor Shapley (``2^n`` retrains per seed; ``shapley_corr`` is then NaN); it is computed
    for the first seed only."""
    target = task(p, directory) if target is None else target
    retrain = retrainer(p) if retrain is None else retrain
    test = torch.from_numpy(p.test_x.astype(np.float32)), torch.from_numpy(p.test_y)
    scored = {}
    for method in methods:
        scored[method.name] = measure(lambda m=method: m.fit(target).scores(*test))
    with groundtruth.RetrainCache(retrain, workers=workers, cache_dir=directory / "retrains") as cache:
        truth = _ground_truth(p, cache, n_subsets, seed, list(seeds), shapley)
        ranked = {name: np.argsort(-scores.mean(axis=1), kind="stable") for name, (scores, _, _) in scored.items()}
        kept = {(name, f): np.sort(order[round(f * len(order)):]) for name, order in ranked.items() for f in REMOVAL_FRACTIONS}
        accuracy = dict(zip(kept, _mean_accuracy(cache, list(kept.values()), seeds)))
        full_accuracy = _mean_accuracy(cache, [np.arange(len(p.train_y))], seeds)[0]
        retrains = cache.retrains
    rows, lds = [], {}
    for name, (scores, seconds, peak) in scored.items():
        lds[name] = metrics.lds(scores, truth["sample_masks"], truth["sample_losses"])
        rows.append(_row(p, name, scores, lds[name], truth)
                    | {f"removal_{f:g}": accuracy[name, f] - full_accuracy for f in REMOVAL_FRACTIONS}
                    | {"seconds": seconds, "peak_mib": peak})
    removal = pd.DataFrame([{"method": name, "fraction": f, "accuracy": accuracy.get((name, f), full_accuracy)}
                            for name in scored for f in (0.0, *REMOVAL_FRACTIONS)])
    diagnostics = {m.name: dict(getattr(m, "diagnostics", {})) for m in methods} | {"retrains": retrains}
    if len(truth["per_seed_losses"]) > 1:
        diagnostics["ceiling"] = float(np.nanmean(metrics.seed_agreement(truth["per_seed_losses"])))
    return Comparison(pd.DataFrame(rows), lds, removal, diagnostics)


def _mean_accuracy(cache: groundtruth.RetrainCache, subsets: list[np.ndarray], seeds: Sequence[int]) -> list[float]:
    """Test accuracy of each subset's retrained model, averaged over ``seeds``."""
    return list(np.mean([[o.accuracy for o in cache.outcomes(subsets, s)] for s in seeds], axis=0))


def _ground_truth(p: Problem, cache: groundtruth.RetrainCache, n_subsets: int, seed: int, seeds: list[int],
                  shapley: bool) -> dict[str, Any]:
    n_groups = len(p.contributors)
    sample_masks = groundtruth.random_subsets(len(p.train_y), n_subsets, 0.5, seed)
    contributor_masks = groundtruth.random_subsets(n_groups, n_subsets, 0.5, seed + 1)[:, p.groups]
    per_seed = [groundtruth.subset_losses(cache, sample_masks, [s]) for s in seeds]
    shapley = shapley and n_groups <= groundtruth.MAX_EXACT_SHAPLEY
    return {
        "sample_masks": sample_masks,
        "sample_losses": np.mean(per_seed, axis=0),
        "per_seed_losses": per_seed,
        "contributor_masks": contributor_masks,
        "contributor_losses": groundtruth.subset_losses(cache, contributor_masks, seeds),
        "loco": np.mean([groundtruth.loco(cache, p.groups, n_groups, s) for s in seeds], axis=0).mean(axis=1),
        "shapley": groundtruth.exact_shapley(cache, p.groups, n_groups, seeds[0]) if shapley else None,
    }


def _row(p: Problem, name: str, scores: np.ndarray, lds: np.ndarray, truth: dict[str, Any]) -> dict[str, Any]:
    contributor = metrics.group_sums(scores, p.groups, len(p.contributors)).mean(axis=1)
    return {
        "method": name,
        "lds_sample": float(np.nanmean(lds)),
        "lds_sample_ci95": float(1.96 * np.nanstd(lds) / np.sqrt(np.isfinite(lds).sum())),
        "lds_contributor": float(np.nanmean(metrics.lds(scores, truth["contributor_masks"], truth["contributor_losses"]))),
        "loco_corr": metrics.loco_correlation(contributor, truth["loco"]),
        "shapley_corr": metrics.loco_correlation(contributor, truth["shapley"]) if truth["shapley"] is not None else float("nan"),
    } | detection_aucs(p, scores)


def detection_aucs(p: Problem, scores: np.ndarray) -> dict[str, float]:
    """``noisy_auc``, ``noisy_sample_auc`` and the first definitions ``noisy_auc_all``,
    ``noisy_sample_auc_all`` of ``scores`` (see the module docstring)."""
    credit = scores.mean(axis=1)
    n_groups = len(p.contributors)
    accepted = np.bincount(p.groups, minlength=n_groups)
    contributor = np.bincount(p.groups, credit, minlength=n_groups)
    clean = accepted > 0
    if p.behaviours:
        clean &= np.isin(np.asarray(p.behaviours), ["honest", "noisy"])
    rows = clean[p.groups]
    return {
        "noisy_auc": metrics.detection_auc(-contributor[clean] / accepted[clean], p.noisy_contributor[clean]),
        "noisy_sample_auc": metrics.detection_auc(-credit[rows], p.flipped_sample[rows]),
        "noisy_auc_all": metrics.detection_auc(-contributor, p.noisy_contributor),
        "noisy_sample_auc_all": metrics.detection_auc(-credit, p.flipped_sample),
    }


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
