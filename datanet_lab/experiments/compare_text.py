"""The text comparison: attribution methods judged against retraining on a text run's two MiniLM
models, backdoor forensics and the paraphrase sybil's gain.

- ``minilm_frozen``: the L2 logistic regression on the frozen sentence embeddings, a convex
  problem (:class:`~datanet_lab.experiments.problem.Problem` of :func:`~datanet_lab.pipeline.text.train_step.frozen_datanet`),
  so exact influence functions apply and the ground truth retrains to the unique optimum (one seed);
- ``minilm``: the fine-tuned top layer + head, attributed on its checkpoints and judged against
  retraining from the pretrained layer (:class:`datanet.models.encoders.TopLayerRetrainer`)
  averaged over ``seeds``, whose seed ceiling is reported.

Per (model, method): ``lds_sample``, ``lds_contributor``, ``noisy_auc`` (low credit flags the noisy
contributor among the honest ones), ``backdoor_auc`` (low credit flags the backdoor contributor's
poisoned samples among all rows), ``seconds`` and ``peak_mib`` of fit + scores.

Backdoor forensics (:func:`backdoor_forensics`): test texts of other classes with the trigger
inserted and labelled with the backdoor's target class; ranking the training rows by their mean
score on those, what share of the top ``k`` are the poisoned rows (precision@k) and the AUC.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import attribution
from attribution import metrics
from datanet.models import encoders
from datanet_lab.experiments import compare
from datanet_lab.pipeline import Run
from datanet_lab.pipeline.experiment import run_experiment
from datanet_lab.pipeline.text.attribute_step import training_task, triggered, triggered_limit
from datanet_lab.pipeline.text.build_step import BuiltText, build_text
from datanet_lab.pipeline.text.train_step import (FROZEN_L2, Encoded, TrainedText, encode_text, encode_texts,
                                                  encoder, frozen_datanet, inputs, train_text)
from datanet_lab.experiments.problem import Problem

COMPARE_TEST = 100
"""Test texts the comparison scores on: every method's cost grows with them (the fine-tuned
layer's per-sample gradients are 1.8M numbers), and 100 per-test LDS values bound the mean's CI."""
FROZEN_METHODS = ("influence_exact", "tracin_fast", "grad_dot", "trak", "random")
FINE_TUNED_METHODS = ("tracin_fast", "grad_dot_fast", "random")
"""TRAK and Gauss-Newton influence hold every per-sample gradient of the fine-tuned layer at once
(7 MiB per text): 225 texts took 6 and 12 GiB, so they are compared on the frozen model only."""
COLUMNS = ["model", "method", "lds_sample", "lds_sample_ci95", "lds_contributor", "noisy_auc", "noisy_sample_auc",
           "backdoor_auc", "seconds", "peak_mib"]


@dataclass
class TextComparison:
    """``table`` (one row per model and method, :data:`COLUMNS`), the fine-tuned model's seed
    ``ceiling``, and the backdoor forensics per fine-tuned method (``backdoor``)."""

    table: pd.DataFrame
    ceiling: float | None
    backdoor: pd.DataFrame


def attributor(name: str, seed: int) -> attribution.Attributor:
    """A method by registry name, or ``influence_exact`` (exact influence functions, convex models only)."""
    return attribution.InfluenceFunction("exact") if name == "influence_exact" else attribution.make_attributor(name, seed)


def poisoned_rows(built: BuiltText) -> np.ndarray:
    """``(n_train,)`` True for the accepted rows the backdoor contributor poisoned (trigger + target label)."""
    truth = built.ground_truth.set_index("sample_id").loc[built.datanet.train_ids]
    return ((truth["behaviour"] == "backdoor") & truth["is_bad"].astype(bool)).to_numpy()


def compare_text(run: Run, n_subsets: int, seeds: Sequence[int] = (0, 1), workers: int = 2,
                 n_test: int = COMPARE_TEST, frozen_methods: Sequence[str] = FROZEN_METHODS,
                 fine_tuned_methods: Sequence[str] = FINE_TUNED_METHODS, folder: str = "compare") -> TextComparison:
    """Judge ``frozen_methods`` on ``minilm_frozen`` (one retrain seed: a unique optimum) and
    ``fine_tuned_methods`` on ``minilm`` (retrains averaged over ``seeds``) on the first
    ``n_test`` test texts, against ``n_subsets`` random halves of the samples and of the
    contributors, and run the backdoor forensics on the fine-tuned model. An experiment step of
    the text run (:func:`~datanet_lab.pipeline.experiment.run_experiment`) keyed by these
    arguments and the run's build, encode and train steps: read back when asked again; retrains
    cached under ``<run>/<folder>/``."""
    params = {"n_subsets": n_subsets, "seeds": list(seeds), "n_test": n_test, "frozen_methods": list(frozen_methods),
              "fine_tuned_methods": list(fine_tuned_methods)}
    return run_experiment(run, folder, params, ("build", "encode", "train"), lambda scratch: _compare_text(
        run, scratch, n_subsets, seeds, workers, n_test, frozen_methods, fine_tuned_methods), TextComparison)


def _compare_text(run: Run, directory: Path, n_subsets: int, seeds: Sequence[int], workers: int, n_test: int,
                  frozen_methods: Sequence[str], fine_tuned_methods: Sequence[str]) -> TextComparison:
    built, encoded, trained = build_text(run), encode_text(run), train_text(run)
    dn, seed = dataclasses.replace(built.datanet, test_texts=built.datanet.test_texts[:n_test],
                                   test_y=built.datanet.test_y[:n_test]), run.params["seed"]
    encoded = Encoded(encoded.train, encoders.EncodedTexts(*(getattr(encoded.test, f.name)[:n_test]
                                                             for f in dataclasses.fields(encoders.EncodedTexts))))
    built = BuiltText(dn, built.ground_truth)
    problem = Problem.from_built(frozen_datanet(dn, encoded), built.ground_truth, FROZEN_L2)
    frozen = compare.compare(problem, [attributor(m, seed) for m in frozen_methods], directory / "minilm_frozen",
                             n_subsets, seed, workers, shapley=False, loco=False, removal=False)
    retrain = encoders.TopLayerRetrainer.from_encoder(encoder(), encoded.train, dn.train_y, encoded.test, dn.test_y,
                                                      dn.n_classes, epochs=run.params["text_epochs"])
    tuned = compare.compare(problem, [attributor(m, seed) for m in fine_tuned_methods], directory / "minilm",
                            n_subsets, seed, workers, target=training_task(dn, encoded, trained), retrain=retrain,
                            seeds=seeds, shapley=False, test=(inputs(encoded.test), torch.from_numpy(dn.test_y)),
                            loco=False, removal=False)
    poisoned = poisoned_rows(built)
    tables = []
    for model, result in (("minilm_frozen", frozen), ("minilm", tuned)):
        # low mean credit on the clean test set flagging the poisoned rows among all training rows
        auc = [metrics.detection_auc(-result.scores[m].mean(axis=1), poisoned) for m in result.table["method"]]
        tables.append(result.table.assign(model=model, backdoor_auc=auc))
    table = pd.concat(tables, ignore_index=True)
    backdoor = pd.DataFrame([{"method": m} | backdoor_forensics(built, encoded, trained, attributor(m, seed), seed)
                             for m in fine_tuned_methods])
    return TextComparison(table[COLUMNS], tuned.diagnostics.get("ceiling"), backdoor)


def triggered_test(built: BuiltText, seed: int, target: int) -> tuple[list[str], np.ndarray]:
    """The test texts of classes other than ``target`` with the trigger inserted, and their
    intended labels (``target``)."""
    dn = built.datanet
    texts = [t for t, y in zip(dn.test_texts, dn.test_y) if y != target]
    return triggered(texts, seed), np.full(len(texts), target, dtype=np.int64)


def backdoor_target(built: BuiltText) -> int:
    """Class index the backdoor contributor relabelled its poisoned rows to."""
    dn = built.datanet
    rows = poisoned_rows(built)
    if not rows.any():
        raise ValueError(f"the text Datanet {dn.name!r} holds no accepted poisoned row: no backdoor to examine")
    return int(np.bincount(dn.train_y[rows]).argmax())


def backdoor_forensics(built: BuiltText, encoded: Encoded, trained: TrainedText, method: attribution.Attributor,
                       seed: int, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """For ``method`` on the fine-tuned model: the attack's success rate on triggered test texts
    of other classes (predicted as the target class), and how well the training rows' mean score
    on them, labelled with the target class, ranks the poisoned rows first (``precision_at_<k>``,
    ``auc``). Methods with a ``self_influence`` (TracIn, gradient dot) are also ranked by that
    score over the training gradient's norm, ``√self-influence`` (``normalized_``: a row's pull
    towards the target per unit of gradient, so large-gradient rows such as flipped labels no
    longer crowd the top); NaN for the others. (Ranking by the score minus the score on the same
    texts without the trigger ranked the poisoned rows no better than chance.)"""
    dn, target = built.datanet, backdoor_target(built)
    texts, labels = triggered_test(built, seed, target)
    attacked = inputs(encode_texts(tuple(texts), triggered_limit(encoders.load_tokenizer(), dn.max_tokens)))
    with torch.no_grad():
        success = float((trained.model(**attacked).argmax(dim=1).numpy() == target).mean())
    fitted = method.fit(training_task(dn, encoded, trained))
    credit = fitted.scores(attacked, torch.from_numpy(labels)).mean(axis=1)
    norms = np.sqrt(fitted.self_influence()) if fitted.capabilities.self_influence else np.full(len(credit), np.nan)
    poisoned = poisoned_rows(built)
    found = {"attack_success": success, "poisoned_rows": int(poisoned.sum())}
    for prefix, ranking in (("", credit), ("normalized_", credit / norms)):
        ranked = np.argsort(-ranking, kind="stable")
        usable = bool(np.isfinite(ranking).all())
        found |= ({f"{prefix}auc": metrics.detection_auc(ranking, poisoned) if usable else float("nan")}
                  | {f"{prefix}precision_at_{k}": float(poisoned[ranked[:k]].mean()) if usable else float("nan")
                     for k in ks})
    return found


def write(result: TextComparison, directory: Path) -> None:
    """``comparison.csv``, ``backdoor.csv`` and ``ceiling.json`` (``{"ceiling": the fine-tuned
    model's seed ceiling, null with one retrain seed}``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(directory / "comparison.csv", index=False)
    result.backdoor.to_csv(directory / "backdoor.csv", index=False)
    (directory / "ceiling.json").write_text(json.dumps({"ceiling": result.ceiling}) + "\n")


def sybil_gain(built: BuiltText, credit: pd.Series) -> pd.DataFrame:
    """Per paraphrase sybil: the contributor it copied, how many of its copies validation
    accepted, and its gain, ``(credit[copied] + credit[sybil]) / credit[copied]`` from contributor
    ``credit`` (1 = the copies earned nothing; 2 = they doubled what the copied data earns).

    Raises:
        ValueError: a copied contributor's credit is not positive, or a credit is not finite: the
            gain is then undefined (there is nothing the copies could be a multiple of).
    """
    truth = built.ground_truth
    sybils = truth[truth["behaviour"] == "paraphrase_sybil"]
    accepted = built.datanet.decisions.set_index("sample_id")["accepted"].astype(bool)
    rows = []
    for sybil, copies in sybils.groupby("contributor"):
        copied = truth.set_index("sample_id").loc[copies["source"].iloc[0], "contributor"]
        rows.append({"sybil": sybil, "copied": copied, "accepted_copies": int(accepted[copies["sample_id"]].sum()),
                     "gain": _gain(credit, sybil, copied)})
    return pd.DataFrame(rows, columns=["sybil", "copied", "accepted_copies", "gain"])


def _gain(credit: pd.Series, sybil: str, copied: str) -> float:
    """``(credit[copied] + credit[sybil]) / credit[copied]``, defined only for finite credit and a
    positively credited ``copied`` (else :class:`ValueError` naming both and their credit)."""
    alone, together = float(credit[copied]), float(credit[copied] + credit[sybil])
    if not (math.isfinite(together) and alone > 0):
        raise ValueError(f"the sybil gain of {sybil!r} is undefined: it copied {copied!r}, whose credit is {alone!r} "
                         f"(with {sybil!r}'s: {together!r}); a gain needs finite credit and the copied contributor's > 0")
    return together / alone
