"""The four steps of a Datanet Lab run, as the notebooks call them.

Each step reads what earlier steps left in the run directory, and when it is missing (a notebook
run on its own, as nbval runs it) builds it first through the same calls. Each step writes its
outputs into the run directory and records what it did in the run's ledger.

Run directory layout::

    params.yaml  metrics.json  payouts.csv  ledger.sqlite  figures/*.png
    dataset/      meta.json decisions.csv train.npz test.npz     (what validators accepted)
    planted/      ground_truth.csv                               (the scenario's truth, kept apart)
    training/     history.csv checkpoints/epoch_NNN.pt
    attribution/  scores.npy sample_credit.csv (credit, cluster, shared_credit) contributor_credit.csv
                  integrated_gradients.npz
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attribution
import ledger
from datanet import BuiltDatanet, Datanet, build_datanet, load_table, parse_scenario
from datanet.models import build_model
from datanet.training import TrainConfig, TrainResult, load_checkpoint, train
from datanet_lab.params import DEFAULTS
from datanet_lab.provenance import file_sha256

log = logging.getLogger(__name__)

RUN_CLOCK = ledger.fixed_clock("2026-01-01T00:00:00+00:00")
"""Ledger timestamps of a run are fixed so that a seeded run reproduces every hash."""
VALIDATOR, CURATOR, TRAINER, ATTRIBUTOR, PAYOUT_AUTHORITY = "validator", "curator", "trainer", "attributor", "payout-authority"
STAKE_UNITS = 1000
"""Deposit each contributor stakes when it submits; rejected or harmful data forfeits part of it
(rules in :mod:`ledger.epochs`)."""


@dataclass(frozen=True)
class Run:
    """A run directory and the parameters it was made with."""

    directory: Path
    params: dict[str, Any]

    @property
    def ledger_path(self) -> Path:
        return self.directory / "ledger.sqlite"

    def path(self, *parts: str) -> Path:
        """A path inside the run directory; its parent directories are created."""
        target = self.directory.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def keystore(self) -> ledger.Keystore:
        """The run's keystore (``keystore/``, keys 0600). Keys are derived from the run seed so that a
        seeded run reproduces every signature and the ledger head: fine for a reproducible research
        run, never for real money (anyone who knows the seed can sign as every actor)."""
        return ledger.Keystore(self.directory / "keystore", seed=f"datanet-lab run seed {self.params['seed']}".encode())

    def ledger(self) -> ledger.Ledger:
        return ledger.Ledger(self.ledger_path, keystore=self.keystore(), clock=RUN_CLOCK)


def open_run(run_dir: str, **params: Any) -> Run:
    """The run in ``run_dir``; an empty ``run_dir`` (a notebook run on its own) gets a fresh
    temporary directory, deleted at exit. ``params`` are merged over :data:`DEFAULTS`."""
    if run_dir:
        directory = Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
    else:  # removed when the process (the notebook's kernel) exits: nothing is left outside results/
        directory = Path(tempfile.mkdtemp(prefix="datanet-lab-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Run(directory, {**DEFAULTS, **params})


# --- step 1: build the Datanet ------------------------------------------------------------------


def build(run: Run) -> BuiltDatanet:
    """Load the source, deal it among contributors, validate, save, and record it all."""
    p = run.params
    table = load_table(p["dataset"], p["label_column"])
    behaviours = parse_scenario(p["scenario"], p["n_contributors"])
    built = build_datanet(table, behaviours, p["noise_rate"], p["seed"])
    built.datanet.save(run.path("dataset"))
    built.ground_truth.to_csv(run.path("planted", "ground_truth.csv"), index=False)
    decisions = built.datanet.decisions
    records = [
        ("contribution", s.contributor, {"sample_id": s.sample_id, "content_hash": d.content_hash, "datanet": table.name})
        for s, d in zip(built.submissions, decisions.itertuples())
    ]
    records += [
        ("validation", VALIDATOR, {"sample_id": d.sample_id, "accepted": bool(d.accepted), "reason": d.reason})
        for d in decisions.itertuples()
    ]
    records.append(("dataset_version", CURATOR, _version_payload(built.datanet)))
    stakes = [("stake", c, {"contributor": c, "amount": STAKE_UNITS}) for c in built.datanet.contributors]
    roles = {VALIDATOR: "validator", CURATOR: "curator", TRAINER: "trainer", ATTRIBUTOR: "attributor",
             PAYOUT_AUTHORITY: "payout-authority", **{c: "contributor" for c in built.datanet.contributors}}
    with run.ledger() as book:
        for actor, role in roles.items():
            book.register(actor, role)
        book.append_many(stakes + records)
    return built


def datanet(run: Run) -> Datanet:
    """The run's Datanet, built first when the run has none."""
    if not (run.directory / "dataset" / "meta.json").is_file():
        return build(run).datanet
    return Datanet.load(run.directory / "dataset")


def behaviours(run: Run) -> pd.Series:
    """Planted behaviour per contributor id (from the scenario's ground truth, researchers only)."""
    if not (run.directory / "planted" / "ground_truth.csv").is_file():
        datanet(run)
    truth = pd.read_csv(run.directory / "planted" / "ground_truth.csv", keep_default_na=False)
    return truth.groupby("contributor")["behaviour"].first()


def submission_counts(dn: Datanet) -> pd.DataFrame:
    """``accepted`` and ``rejected`` counts per contributor (all contributors, in id order)."""
    counts = dn.decisions.groupby("contributor")["accepted"].agg(accepted="sum", submitted="count")
    counts = counts.reindex(list(dn.contributors), fill_value=0)
    counts["rejected"] = counts.pop("submitted") - counts["accepted"]
    return counts.astype(int)


def _version_payload(dn: Datanet) -> dict[str, Any]:
    counts = submission_counts(dn)
    return {
        "version": dn.version,
        "datanet": dn.name,
        "accepted": int(counts["accepted"].sum()),
        "rejected": int(counts["rejected"].sum()),
        "contributors": len(dn.contributors),
        "test_samples": len(dn.test_y),
    }


# --- step 2: train ------------------------------------------------------------------------------


def train_config(run: Run) -> TrainConfig:
    return TrainConfig(model=run.params["model"], epochs=run.params["epochs"], seed=run.params["seed"])


def train_model(run: Run) -> TrainResult:
    """Train on the accepted set with a checkpoint per epoch; record the training run."""
    dn = datanet(run)
    config = train_config(run)
    result = train(dn, config, run.directory / "training" / "checkpoints")
    result.history.to_csv(run.path("training", "history.csv"), index=False)
    last = result.history.iloc[-1]
    payload = {
        "dataset_version": dn.version,
        "config": config.to_dict(),
        "checkpoints": [{"file": p.name, "sha256": file_sha256(p)} for p in result.checkpoints],
        "metrics": {"test_accuracy": float(last["test_accuracy"]), "test_loss": float(last["test_loss"])},
    }
    with run.ledger() as book:
        book.append("training_run", TRAINER, payload)
    return result


def trained(run: Run) -> TrainResult:
    """The run's trained model (rebuilt from its last checkpoint), training first when needed."""
    history_path = run.directory / "training" / "history.csv"
    if not history_path.is_file():
        return train_model(run)
    dn = datanet(run)
    checkpoints = sorted((run.directory / "training" / "checkpoints").glob("epoch_*.pt"))
    model = build_model(run.params["model"], torch.from_numpy(dn.train_x), dn.n_classes)
    load_checkpoint(model, checkpoints[-1])
    return TrainResult(model.eval(), checkpoints, pd.read_csv(history_path))


# --- step 3: attribute --------------------------------------------------------------------------


@dataclass
class Attribution:
    """Method scores ``(n_train, n_test)``, their roll-ups, and IG attributions of test samples."""

    scores: np.ndarray
    sample_credit: pd.DataFrame
    contributor_credit: pd.Series
    features: attribution.FeatureAttributions


def attribute(run: Run) -> Attribution:
    """The ``attribution_method`` scores (Captum TracIn over every checkpoint by default) and IG
    on the test set, rolled up to the contributor credit payouts use; save and record them.

    The roll-up is redundancy-aware (:func:`attribution.redundancy_clusters`): near-identical
    samples of the same label, in the standardized features the model sees, share one sample's
    credit, so data accepted again under other identities (perturbed just enough to pass the
    exact-duplicate check) earns nothing extra. ``sample_credit.csv`` keeps each sample's own
    ``credit`` beside its ``cluster`` and ``shared_credit``."""
    dn, result = datanet(run), trained(run)
    train_x, train_y = torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y)
    task = attribution.AttributionTask(result.model, train_x, train_y, result.checkpoints, load_checkpoint)
    method = attribution.make_attributor(run.params["attribution_method"], run.params["seed"])
    scores = method.fit(task).scores(torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y))
    load_checkpoint(result.model, result.checkpoints[-1])  # a method may leave the weights at another checkpoint
    features = attribution.integrated_gradients(result.model, torch.from_numpy(dn.test_x), train_x.mean(dim=0))
    with torch.no_grad():
        model_view = result.model[0](train_x).double().numpy()  # every Datanet model starts with its Standardize layer
    clusters = attribution.redundancy_clusters(model_view, dn.train_y)
    credit = attribution.contributor_credit(scores, dn.train_contributors, dn.contributors, clusters)
    own = attribution.sample_credit(scores)
    samples = pd.DataFrame({"sample_id": dn.train_ids, "contributor": dn.train_contributors, "credit": own,
                            "cluster": clusters, "shared_credit": attribution.shared_credit(own, clusters)})
    np.save(run.path("attribution", "scores.npy"), scores)
    samples.to_csv(run.path("attribution", "sample_credit.csv"), index=False)
    credit.to_csv(run.path("attribution", "contributor_credit.csv"), index_label="contributor")
    np.savez(run.path("attribution", "integrated_gradients.npz"), attributions=features.attributions,
             targets=features.targets, convergence_delta=features.convergence_delta)
    payload = {
        "method": method.name,
        "dataset_version": dn.version,
        "checkpoints": [file_sha256(p) for p in result.checkpoints],
        "scores_shape": list(scores.shape),
        "scores_sha256": hashlib.sha256(scores.tobytes()).hexdigest(),
        "sign": "positive = lowered test loss (helped)",
        "rollup": {"redundancy_radius": attribution.REDUNDANCY_RADIUS,
                   "redundant_samples": int((np.bincount(clusters)[clusters] > 1).sum())},
        "contributor_credit": {c: float(v) for c, v in credit.items()},
        "ig_max_abs_convergence_delta": float(np.abs(features.convergence_delta).max()),
    }
    with run.ledger() as book:
        book.append("attribution_run", ATTRIBUTOR, payload)
    return Attribution(scores, samples, credit, features)


def attributed(run: Run) -> Attribution:
    """The run's attribution, computed first when the run has none."""
    folder = run.directory / "attribution"
    if not (folder / "contributor_credit.csv").is_file():
        return attribute(run)
    ig = np.load(folder / "integrated_gradients.npz")
    return Attribution(
        scores=np.load(folder / "scores.npy"),
        sample_credit=pd.read_csv(folder / "sample_credit.csv"),
        contributor_credit=pd.read_csv(folder / "contributor_credit.csv", index_col="contributor")["attribution"],
        features=attribution.FeatureAttributions(ig["attributions"], ig["targets"], ig["convergence_delta"]),
    )


# --- step 4: verify the ledger and pay ----------------------------------------------------------


def pay(run: Run, epoch: int = 1) -> pd.DataFrame:
    """Pay payout ``epoch``: slash stakes of rejected or harmful data into the pool, split
    ``reward_pool`` plus the slashed units by positive credit, record every slash, payment and the
    epoch in the ledger, write ``payouts.csv`` and ``metrics.json``. Paying an epoch twice raises
    :class:`ledger.LedgerError` and changes nothing."""
    dn, found = datanet(run), attributed(run)
    credit, counts = found.contributor_credit, submission_counts(dn)
    magnitude = found.sample_credit["shared_credit"].abs().groupby(found.sample_credit["contributor"]).sum()
    with run.ledger() as book:
        stakes = {e.payload["contributor"]: e.payload["amount"] for e in book.entries("stake")}
        plan = ledger.plan_epoch(epoch, run.params["reward_pool"], credit.to_dict(), magnitude.to_dict(), stakes,
                                 (counts["accepted"] + counts["rejected"]).to_dict(), counts["rejected"].to_dict())
        book.append_many(ledger.epoch_records(plan, PAYOUT_AUTHORITY, dataset_version=dn.version))
    slashed = dict.fromkeys(counts.index, 0)
    for slash in plan.slashes:
        slashed[slash.contributor] += slash.amount
    table = counts.join(behaviours(run).rename("behaviour"))
    table["attribution"] = credit
    table["stake"] = pd.Series(stakes)
    table["slashed"] = pd.Series(slashed)
    table["payout"] = pd.Series(plan.split.payouts)
    table = table.rename_axis("contributor").reset_index()[
        ["contributor", "behaviour", "accepted", "rejected", "attribution", "stake", "slashed", "payout"]
    ]
    table.to_csv(run.path("payouts.csv"), index=False)
    write_metrics(run, dn, table)
    return table


def write_metrics(run: Run, dn: Datanet, payouts: pd.DataFrame) -> dict[str, Any]:
    """Write ``metrics.json``: accuracy, per-contributor attribution and payout, ledger head."""
    report = ledger.verify(run.ledger_path)
    last = trained(run).history.iloc[-1]
    metrics = {
        "dataset_version": dn.version,
        "test_accuracy": float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "attribution": dict(zip(payouts["contributor"], payouts["attribution"].astype(float))),
        "payout": dict(zip(payouts["contributor"], payouts["payout"].astype(int))),
        "ledger": {"entries": report.entries, "head_hash": report.head_hash, "verified": report.ok},
    }
    run.path("metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
