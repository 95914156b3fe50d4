"""Judge generation credit against leave-one-contributor-out (LOCO) retraining of the LM.

Ground truth for contributor ``c`` and generation ``g``: ``Δ[c, g] = log p_full(g) − log
p_{−c}(g)``, the drop in the generation's log-likelihood (given its prompt) when the LM is
retrained without ``c``'s documents (positive = ``c`` helped produce ``g``), averaged over the
retrain seeds: from scratch, or in the fine-tuning setting (``lm_model`` not ``scratch``) only the
fine-tune is redone, from the same base weights (:func:`attribution.groundtruth.loco` on :class:`GenerationRetrainer`).

Methods, each giving ``(n_contributors, n_generations)`` credit:

* ``span``: the run's span credit (what it pays by; :mod:`datanet_lab.pipeline.generation.pay_step`):
  :class:`attribution.spans.SpanAttributor` scores rolled up per generation;
* ``tracin`` / ``grad_dot``: gradient attribution of each generation's negative log-likelihood
  over the training windows on the LM's checkpoints (:class:`attribution.FastTracIn` /
  :class:`attribution.FastGradientDot`, exact per-sample gradients of every parameter), summed per
  contributor; ``tracin_lograd``: TracIn on projected per-sample gradients (no per-sample
  gradient is built);
* ``random``: seeded standard normal credit.

Each method is scored by the Spearman correlation across contributors with ``Δ[:, g]``, per
generation, then averaged over the generations where both sides vary (a generation without any
span gives span credit 0 for everyone: no ranking, counted in ``undefined``). The interval is a
seeded bootstrap over generations (95%); with several retrain seeds, ``ceiling`` is the mean
Spearman of one seed's ``Δ`` predicting another's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import attribution
from attribution.groundtruth import RetrainCache, loco
from attribution.rollup import contributor_credit_per_test
from datanet.convex import Outcome
from datanet.models import lm
from datanet_lab.pipeline.experiment import run_experiment
from datanet_lab.pipeline.generation.build_step import build_generation
from datanet_lab.pipeline.generation.generate_step import generate_texts, generation_id
from datanet_lab.pipeline.generation.pay_step import span_attributor
from datanet_lab.pipeline.generation.train_step import TrainedGeneration, train_generation
from datanet_lab.pipeline.run import Run

GRADIENT_METHODS = ("tracin_fast", "grad_dot_fast", "tracin_lograd")
"""Registry names of the gradient comparators; shown as ``tracin``, ``grad_dot`` and
``tracin_lograd`` (TracIn on projected per-sample gradients of every layer, :mod:`attribution.lograd`)."""
SPAN_PARAMS = ("gen_min_span", "gen_max_count")
"""The run parameters span credit depends on beyond the steps the comparison reads."""
BOOTSTRAP = 2000


@dataclass(frozen=True)
class GenerationRetrainer:
    """``(document indices, seed) -> Outcome`` for :class:`attribution.groundtruth.RetrainCache`:
    the LM retrained on those documents (from scratch or from its base), judged on the fixed
    generations; ``loss`` is each generation's negative log-likelihood given its prompt
    (``(n_generations,)``, nats)."""

    retrainer: lm.LMRetrainer
    prompt_ids: tuple[tuple[int, ...], ...]
    generated_ids: tuple[tuple[int, ...], ...]

    def __call__(self, indices: np.ndarray, seed: int = 0) -> Outcome:
        log_likelihood = lm.sequence_log_likelihoods(self.retrainer(indices, seed), self.prompt_ids, self.generated_ids)
        return Outcome(-log_likelihood, log_likelihood, float("nan"))


@dataclass
class GenerationComparison:
    """``table``: one row per method (``method, spearman, ci_low, ci_high, generations,
    undefined``); ``per_generation``: Spearman per (generation, method); ``truth``: LOCO ``Δ``
    per seed ``(n_seeds, n_contributors, n_generations)``; ``credit``: method ->
    ``(n_contributors, n_generations)``; ``ceiling``: seed-to-seed Spearman or ``None``."""

    contributors: list[str]
    generations: list[str]
    table: pd.DataFrame
    per_generation: pd.DataFrame
    truth: np.ndarray
    credit: dict[str, np.ndarray]
    ceiling: float | None


def span_credit_matrix(run: Run, contributors: Sequence[str], generations: Sequence[lm.Generation]) -> np.ndarray:
    """``(n_contributors, n_generations)`` the run's span credit: its span attributor's scores
    rolled up per generation (:func:`attribution.rollup.contributor_credit_per_test`)."""
    attributor, docs = span_attributor(run)
    scores = attributor.scores([g.generated_ids for g in generations])
    return contributor_credit_per_test(scores, docs.contributors, contributors, attributor.task.clusters, docs.order)


def gradient_credit(trained: TrainedGeneration, generations: Sequence[lm.Generation], contributors: Sequence[str],
                    doc_contributors: Sequence[str], method: str | attribution.Attributor, seed: int) -> np.ndarray:
    """``(n_contributors, n_generations)`` credit of ``method`` (a registry name, made with
    ``seed``, or an unfitted :class:`~attribution.Attributor`): its scores of the training windows
    on each generation's NLL, summed per contributor (positive = training on the contributor's
    windows lowered the generation's NLL over the checkpoints)."""
    windows = lm.document_windows(trained.documents, trained.config.n_positions, trained.model.config.eos_token_id)
    task = attribution.AttributionTask(
        lm.LogitsOnly(trained.model), {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask},
        windows.labels, trained.checkpoints, lm.checkpoint_loader(trained.config, len(windows)), loss_fn=lm.causal_lm_loss)
    test_x, test_y = lm.generation_batch([g.prompt_ids for g in generations], [g.generated_ids for g in generations])
    attributor = attribution.make_attributor(method, seed) if isinstance(method, str) else method
    scores = attributor.fit(task).scores(test_x, test_y)  # (n_windows, n_generations)
    owner = np.asarray(doc_contributors)[windows.document]
    return np.stack([scores[owner == c].sum(axis=0) for c in contributors])


def spearman_per_generation(credit: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(n_generations,)`` Spearman of ``credit[:, g]`` with ``truth[:, g]``; NaN where either is constant."""
    out = np.full(credit.shape[1], np.nan)
    for g in range(credit.shape[1]):
        if np.ptp(credit[:, g]) > 0 and np.ptp(truth[:, g]) > 0:
            out[g] = spearmanr(credit[:, g], truth[:, g]).statistic
    return out


def spearman_summary(rho: np.ndarray, seed: int) -> dict[str, float | int]:
    """A table row's figures from per-generation Spearman ``rho`` (:func:`spearman_per_generation`):
    ``spearman`` (mean of the finite values, NaN if none), ``ci_low``, ``ci_high``
    (:func:`bootstrap_interval`), ``generations`` (finite) and ``undefined`` (NaN)."""
    low, high = bootstrap_interval(rho, seed)
    return {"spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"), "ci_low": low,
            "ci_high": high, "generations": int(np.isfinite(rho).sum()), "undefined": int(np.isnan(rho).sum())}


def bootstrap_interval(values: np.ndarray, seed: int, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile interval of the mean of the finite ``values``, resampled ``n`` times (seeded)."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(finite, size=(n, len(finite))).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def compare_generation(run: Run, seeds: Sequence[int] = (0,), workers: int = 2,
                       methods: Sequence[str] = GRADIENT_METHODS, folder: str = "compare") -> GenerationComparison:
    """Span credit, the gradient ``methods`` and random credit against LOCO retraining over
    ``seeds`` (module docstring); retrains run in ``workers`` processes, cached under
    ``<run>/<folder>/``. An experiment step of the generation run
    (:func:`~datanet_lab.pipeline.experiment.run_experiment`) keyed by these arguments and the
    run's steps it reads (build, train, index, generate): read back when asked again."""
    params = {"seeds": list(seeds), "methods": list(methods), "span": {name: run.params[name] for name in SPAN_PARAMS}}
    return run_experiment(run, folder, params, ("build", "train", "index", "generate"),
                          lambda scratch: _compare_generation(run, scratch, seeds, workers, methods), GenerationComparison)


def _compare_generation(run: Run, directory: Path, seeds: Sequence[int], workers: int,
                        methods: Sequence[str]) -> GenerationComparison:
    dn, trained, generations = build_generation(run), train_generation(run), generate_texts(run)
    doc_contributors = list(dn.train_contributors)
    contributors = sorted(set(doc_contributors))
    groups = np.array([contributors.index(c) for c in doc_contributors])
    gen_ids = [generation_id(k) for k in range(len(generations))]
    retrainer = GenerationRetrainer(lm.LMRetrainer.from_tokenizer(trained.documents, trained.tokenizer, trained.config,
                                                                  trained.base),
                                    tuple(g.prompt_ids for g in generations), tuple(g.generated_ids for g in generations))
    with RetrainCache(retrainer, workers, directory / "retrains") as cache:
        truth = np.stack([loco(cache, groups, len(contributors), s) for s in seeds])  # (seeds, contributors, generations)
    seed = run.params["seed"]
    credit = {"span": span_credit_matrix(run, contributors, generations)}
    for method in methods:
        credit[method.removesuffix("_fast")] = gradient_credit(trained, generations, contributors, doc_contributors,
                                                               method, seed)
    credit["random"] = np.random.default_rng(seed).standard_normal(truth.shape[1:])
    mean_truth = truth.mean(axis=0)
    rows, per_generation = [], []
    for name, values in credit.items():
        rho = spearman_per_generation(values, mean_truth)
        rows.append({"method": name, **spearman_summary(rho, seed)})
        per_generation += [{"generation": g, "method": name, "spearman": r} for g, r in zip(gen_ids, rho)]
    ceiling = None
    if len(seeds) > 1:
        ceiling = float(np.nanmean([np.nanmean(spearman_per_generation(truth[a], truth[b]))
                                    for a in range(len(seeds)) for b in range(len(seeds)) if a != b]))
    return GenerationComparison(contributors, gen_ids, pd.DataFrame(rows), pd.DataFrame(per_generation), truth, credit,
                                ceiling)


def write(comparison: GenerationComparison, directory: Path) -> None:
    """``comparison.csv`` (the table), ``loco.csv`` (mean ``Δ`` per contributor and generation) and
    ``ceiling.json`` (``{"ceiling": the seed ceiling, null with one retrain seed}``)."""
    comparison.table.to_csv(Path(directory) / "comparison.csv", index=False)
    (Path(directory) / "ceiling.json").write_text(json.dumps({"ceiling": comparison.ceiling}) + "\n")
    pd.DataFrame(comparison.truth.mean(axis=0), index=pd.Index(comparison.contributors, name="contributor"),
                 columns=comparison.generations).to_csv(Path(directory) / "loco.csv")
