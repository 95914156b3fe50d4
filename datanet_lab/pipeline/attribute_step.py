"""Step 3, attribute: scoring, roll-up and recording, each its own function.

- :func:`score`: the ``attribution_method`` scores ``(n_train, n_test)`` (positive = the
  training sample lowered that test sample's loss) and Integrated Gradients of the test set;
- :func:`roll_up`: sample credit, redundancy clusters and contributor credit (what payouts use);
- :func:`record`: the files under ``attribution/`` and the ledger's ``attribution_run`` entry.

:func:`attribute` runs the three when the run directory does not already hold the step's outputs
from the same parameters and inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import attribution
from datanet import Datanet
from datanet.models import load_checkpoint
from datanet.training import TrainResult
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.build_step import datanet
from datanet_lab.pipeline.run import ATTRIBUTOR, Run
from datanet_lab.pipeline.train_step import train_model
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


def score(dn: Datanet, trained: TrainResult, method: str, seed: int) -> Scores:
    """IG of the test set on the trained weights, then ``method`` (a registry name, seeded by
    ``seed``) over the training checkpoints."""
    train_x, train_y = torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y)
    test_x, test_y = torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y)
    features = attribution.integrated_gradients(trained.model, test_x, train_x.mean(dim=0))
    task = attribution.AttributionTask(trained.model, train_x, train_y, trained.checkpoints, load_checkpoint)
    attributor = attribution.make_attributor(method, seed)
    scores = attributor.fit(task).scores(test_x, test_y)
    return Scores(attributor.name, scores, features)


def roll_up(dn: Datanet, scores: np.ndarray, standardize: nn.Module) -> Rollup:
    """The redundancy-aware roll-up of ``scores`` (:func:`attribution.redundancy_clusters`):
    near-identical samples of the same label, in the standardized features the model sees
    (``standardize``, the model's first layer), share one sample's credit, so data accepted again
    under other identities (perturbed just enough to pass the exact-duplicate check) earns nothing
    extra. Each sample keeps its own ``credit`` beside its ``cluster`` and ``shared_credit``."""
    with torch.no_grad():
        model_view = standardize(torch.from_numpy(dn.train_x)).double().numpy()
    clusters = attribution.redundancy_clusters(model_view, dn.train_y)
    own = attribution.sample_credit(scores)
    samples = pd.DataFrame({"sample_id": dn.train_ids, "contributor": dn.train_contributors, "credit": own,
                            "cluster": clusters, "shared_credit": attribution.shared_credit(own, clusters)})
    credit = attribution.contributor_credit(scores, dn.train_contributors, dn.contributors, clusters)
    summary = {"redundancy_radius": attribution.REDUNDANCY_RADIUS,
               "redundant_samples": int((np.bincount(clusters)[clusters] > 1).sum())}
    return Rollup(samples, credit, summary)


def record(run: Run, dn: Datanet, trained: TrainResult, scored: Scores, rollup: Rollup) -> Attribution:
    """Write ``attribution/`` (``scores.npy``, ``sample_credit.csv``, ``contributor_credit.csv``,
    ``integrated_gradients.npz``) and append the ``attribution_run`` entry to the ledger."""
    scores, features = scored.scores, scored.features
    np.save(run.path("attribution", "scores.npy"), scores)
    rollup.sample_credit.to_csv(run.path("attribution", "sample_credit.csv"), index=False)
    rollup.contributor_credit.to_csv(run.path("attribution", "contributor_credit.csv"), index_label="contributor")
    np.savez(run.path("attribution", "integrated_gradients.npz"), attributions=features.attributions,
             targets=features.targets, convergence_delta=features.convergence_delta)
    payload = {
        "method": scored.method,
        "dataset_version": dn.version,
        "checkpoints": [file_sha256(p) for p in trained.checkpoints],
        "scores_shape": list(scores.shape),
        "scores_sha256": hashlib.sha256(scores.tobytes()).hexdigest(),
        "sign": "positive = lowered test loss (helped)",
        "rollup": rollup.summary,
        "contributor_credit": {c: float(v) for c, v in rollup.contributor_credit.items()},
        "ig_max_abs_convergence_delta": float(np.abs(features.convergence_delta).max()),
    }
    with run.ledger() as book:
        book.append("attribution_run", ATTRIBUTOR, payload)
    return Attribution(scores, rollup.sample_credit, rollup.contributor_credit, features)


def attribute(run: Run) -> Attribution:
    """The run's attribution: reused when the run directory holds it from the same parameters,
    Datanet and checkpoints, otherwise scored, rolled up and recorded (building and training
    first when the run has no model)."""
    dn, trained = datanet(run), train_model(run)
    if manifest.check(run.directory, manifest.ATTRIBUTE, run.params):
        return _load(run)
    scored = score(dn, trained, run.params["attribution_method"], run.params["seed"])
    found = record(run, dn, trained, scored, roll_up(dn, scored.scores, trained.model[0]))
    manifest.write(run.directory, manifest.ATTRIBUTE, run.params)
    return found


def _load(run: Run) -> Attribution:
    folder = run.directory / "attribution"
    ig = np.load(folder / "integrated_gradients.npz")
    return Attribution(
        scores=np.load(folder / "scores.npy"),
        sample_credit=pd.read_csv(folder / "sample_credit.csv"),
        contributor_credit=pd.read_csv(folder / "contributor_credit.csv", index_col="contributor")["attribution"],
        features=attribution.FeatureAttributions(ig["attributions"], ig["targets"], ig["convergence_delta"]),
    )
