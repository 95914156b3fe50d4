"""Step 3, attribute: scoring, roll-up and recording, each its own function.

- :func:`score`: the ``attribution_method`` scores ``(n_train, n_test)`` (positive = the
  training sample lowered that test sample's loss) and Integrated Gradients of the test set;
- :func:`roll_up`: sample credit, redundancy clusters and contributor credit (what payouts use);
- :func:`attribute`: the files under ``attribution/`` (:func:`write_scores`, IG) and the ledger's
  ``attribution_run`` entry (:func:`run_payload`), written by the step engine when the run
  directory does not already hold the step's outputs from the same parameters and inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import attribution
from datanet import Datanet
from datanet.models import load_checkpoint
from datanet.training import TrainResult
from datanet_lab import figures
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular import build_step, train_step
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.run import ATTRIBUTOR, Run
from datanet_lab.pipeline.tabular.train_step import train_model
from datanet_lab.provenance import file_sha256


@dataclass
class Scores:
    """A method's scores ``(n_train, n_test)`` (its registry name in ``method``) and IG
    attributions of the test samples."""

    method: str
    scores: np.ndarray
    features: attribution.FeatureAttributions


@dataclass
class Rollup:
    """Per-sample credit (``sample_id, contributor, credit, cluster, shared_credit``), contributor
    credit (indexed by every contributor, named ``attribution``) and the roll-up's ledger summary."""

    sample_credit: pd.DataFrame
    contributor_credit: pd.Series
    summary: dict[str, Any]


@dataclass
class Attribution:
    """Method scores ``(n_train, n_test)``, their roll-ups, and IG attributions of test samples."""

    scores: np.ndarray
    sample_credit: pd.DataFrame
    contributor_credit: pd.Series
    features: attribution.FeatureAttributions


def training_task(dn: Datanet, trained: TrainResult) -> attribution.AttributionTask:
    """The attribution task of a tabular run: its trained model, accepted rows and checkpoints."""
    return attribution.AttributionTask(trained.model, torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y),
                                       trained.checkpoints, load_checkpoint)


def score(dn: Datanet, trained: TrainResult, method: str, seed: int) -> Scores:
    """IG of the test set on the trained weights, then ``method`` (a registry name, seeded by
    ``seed``) over the training checkpoints."""
    test_x, test_y = torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y)
    task = training_task(dn, trained)
    features = attribution.integrated_gradients(trained.model, test_x, task.train_x.mean(dim=0))
    attributor = attribution.make_attributor(method, seed)
    scores = attributor.fit(task).scores(test_x, test_y)
    return Scores(attributor.name, scores, features)


def submission_order(run: Run, dn: Datanet) -> np.ndarray:
    """``(n_train,)`` the ledger sequence number of each training row's ``contribution`` entry
    (earlier submission = smaller)."""
    with run.ledger() as book:
        seq = {e.payload["sample_id"]: e.seq for e in book.entries("contribution")}
    missing = [s for s in dn.train_ids if s not in seq]
    if missing:
        raise ValueError(f"{run.ledger_path}: no contribution entry for {len(missing)} accepted samples, "
                         f"e.g. {missing[0]!r}")
    return np.array([seq[s] for s in dn.train_ids], dtype=np.int64)


def roll_up(dn: Datanet, scores: np.ndarray, model: nn.Module, order: np.ndarray) -> Rollup:
    """The redundancy-aware roll-up of a tabular Datanet's ``scores`` (:func:`roll_up_samples`)."""
    return roll_up_samples(scores, model, (torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y)),
                           (torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y)), dn.train_ids,
                           dn.train_contributors, dn.contributors, order)


def roll_up_samples(scores: np.ndarray, model: nn.Module, train: tuple[attribution.Inputs, torch.Tensor],
                    test: tuple[attribution.Inputs, torch.Tensor], sample_ids: np.ndarray,
                    sample_contributors: np.ndarray, contributors: tuple[str, ...], order: np.ndarray) -> Rollup:
    """The redundancy-aware roll-up of ``scores`` ``(n_train, n_test)``: samples of the same label
    whose last-layer loss gradients at ``model``'s weights (the trained model, at its last
    checkpoint) point the same way within the test gradients' span
    (:func:`attribution.project_to_span`, :func:`attribution.similarity_clusters`, cosine >=
    :data:`attribution.REDUNDANCY_SIMILARITY`) form a cluster that earns its members' mean credit,
    all of it to the member submitted first by ``order`` (:func:`submission_order`), so data
    accepted again under other identities (perturbed enough to pass the duplicate checks) earns
    nothing. ``train`` and ``test`` are ``(inputs, class indices)`` as the model takes them; each
    sample keeps its own ``credit`` beside its ``cluster`` and ``shared_credit``."""
    test_gradients = attribution.last_layer_gradients(model, *test)
    train_y = train[1]
    clusters = attribution.similarity_clusters(
        attribution.project_to_span(attribution.last_layer_gradients(model, *train), test_gradients), train_y.numpy())
    own = attribution.sample_credit(scores)
    samples = pd.DataFrame({"sample_id": sample_ids, "contributor": sample_contributors, "credit": own,
                            "cluster": clusters, "shared_credit": attribution.shared_credit(own, clusters, order)})
    credit = attribution.contributor_credit(scores, sample_contributors, contributors, clusters, order)
    summary = {"redundancy_similarity": attribution.REDUNDANCY_SIMILARITY, "cluster_credit_to": "earliest submission",
               "redundant_samples": int((np.bincount(clusters)[clusters] > 1).sum())}
    return Rollup(samples, credit, summary)


def write_scores(run: Run, scores: np.ndarray, rollup: Rollup) -> None:
    """``attribution/scores.npy``, ``sample_credit.csv`` and ``contributor_credit.csv``."""
    np.save(run.path("attribution", "scores.npy"), scores)
    rollup.sample_credit.to_csv(run.path("attribution", "sample_credit.csv"), index=False)
    rollup.contributor_credit.to_csv(run.path("attribution", "contributor_credit.csv"), index_label="contributor")


def read_scores(run: Run) -> tuple[np.ndarray, pd.DataFrame, pd.Series]:
    """What :func:`write_scores` wrote: scores, sample credit, contributor credit."""
    folder = run.directory / "attribution"
    return (np.load(folder / "scores.npy"), pd.read_csv(folder / "sample_credit.csv"),
            pd.read_csv(folder / "contributor_credit.csv", index_col="contributor")["attribution"])


def run_payload(method: str, dataset_version: str, checkpoints: list, scores: np.ndarray, rollup: Rollup) -> dict[str, Any]:
    """The ``attribution_run`` ledger payload: the method, the data and checkpoints it read, the
    scores' shape and hash, the sign convention, the roll-up and the contributor credit."""
    return {
        "method": method,
        "dataset_version": dataset_version,
        "checkpoints": [file_sha256(p) for p in checkpoints],
        "scores_shape": list(scores.shape),
        "scores_sha256": hashlib.sha256(scores.tobytes()).hexdigest(),
        "sign": "positive = lowered test loss (helped)",
        "rollup": rollup.summary,
        "contributor_credit": {c: float(v) for c, v in rollup.contributor_credit.items()},
    }


def attribute(run: Run) -> Attribution:
    """The run's attribution: reused when the run directory holds it from the same parameters,
    Datanet and checkpoints, otherwise scored, rolled up and recorded (building and training
    first when the run has no model; :func:`~datanet_lab.pipeline.engine.run_step`)."""
    found = run_step(run, PROCEDURE)
    found.sample_credit.attrs[figures.METHOD] = run.params["attribution_method"]
    return found


def _compute(run: Run, staging: Path) -> dict[str, Any]:
    """Score, roll up and write ``attribution/`` under ``staging``; return the ``attribution_run`` payload."""
    dn, trained = datanet(run), train_model(run)
    scored = score(dn, trained, run.params["attribution_method"], run.params["seed"])
    rollup = roll_up(dn, scored.scores, trained.model, submission_order(run, dn))
    staged = Run(staging, run.params)
    write_scores(staged, scored.scores, rollup)
    features = scored.features
    np.savez(staged.path("attribution", "integrated_gradients.npz"), attributions=features.attributions,
             targets=features.targets, convergence_delta=features.convergence_delta)
    payload = run_payload(scored.method, dn.version, trained.checkpoints, scored.scores, rollup)
    return payload | {"ig_max_abs_convergence_delta": float(np.abs(features.convergence_delta).max())}


def _load(run: Run) -> Attribution:
    ig = np.load(run.directory / "attribution" / "integrated_gradients.npz")
    scores, sample_credit, contributor_credit = read_scores(run)
    return Attribution(scores, sample_credit, contributor_credit,
                       attribution.FeatureAttributions(ig["attributions"], ig["targets"], ig["convergence_delta"]))


PROCEDURE = Procedure(manifest.ATTRIBUTE, _compute, _load,
                      records=lambda run, payload: [("attribution_run", ATTRIBUTOR, payload)],
                      requires=(build_step.PROCEDURE, train_step.PROCEDURE))
