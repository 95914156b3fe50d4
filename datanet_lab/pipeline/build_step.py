"""Step 1, build: load the source, deal it among contributors, validate, save, record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from datanet import BuiltDatanet, Datanet, build_datanet, load_table, parse_scenario
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.run import ATTRIBUTOR, CURATOR, PAYOUT_AUTHORITY, STAKE_UNITS, TRAINER, VALIDATOR, Run

if TYPE_CHECKING:
    from datanet.text.datanet import TextDatanet


@dataclass
class Built:
    """The run's Datanet and the scenario's planted truth (one row per submission)."""

    datanet: Datanet
    ground_truth: pd.DataFrame


def planted_datanet(dataset: str, label_column: str, scenario: str, n_contributors: int, noise_rate: float,
                    seed: int) -> BuiltDatanet:
    """The Datanet a scenario plants in a dataset (not saved or recorded): what :func:`build`
    saves, and what the method comparison builds with its own noise rate."""
    return build_datanet(load_table(dataset, label_column), parse_scenario(scenario, n_contributors), noise_rate, seed)


def build(run: Run) -> Built:
    """The run's Datanet: reused when the run directory holds it from the same parameters
    (:mod:`~datanet_lab.pipeline.manifest`), otherwise built, saved to ``dataset/`` and
    ``planted/``, and recorded (actors, stakes, every contribution and validation decision, the
    dataset version) in the ledger."""
    if manifest.check(run.directory, manifest.BUILD, run.params):
        return Built(Datanet.load(run.directory / "dataset"),
                     pd.read_csv(run.directory / "planted" / "ground_truth.csv", keep_default_na=False))
    built = planted_datanet(**{name: run.params[name] for name in manifest.BUILD.params})  # all it depends on
    built.datanet.save(run.path("dataset"))
    built.ground_truth.to_csv(run.path("planted", "ground_truth.csv"), index=False)
    record_datanet(run, built.datanet, {"test_samples": len(built.datanet.test_y)})
    manifest.write(run.directory, manifest.BUILD, run.params)
    return Built(built.datanet, built.ground_truth)


def record_datanet(run: Run, dn: Datanet | TextDatanet, version_details: dict[str, Any]) -> None:
    """Record a freshly built Datanet in ``run``'s ledger, in one batch: every actor with its role,
    each contributor's stake, every contribution (its content hash) and validation decision (with
    its reason), then the ``dataset_version`` entry (counts plus ``version_details``)."""
    decisions = dn.decisions
    records = [("contribution", d.contributor, {"sample_id": d.sample_id, "content_hash": d.content_hash, "datanet": dn.name})
               for d in decisions.itertuples()]
    records += [("validation", VALIDATOR, {"sample_id": d.sample_id, "accepted": bool(d.accepted), "reason": d.reason})
                for d in decisions.itertuples()]
    counts = submission_counts(dn)
    records.append(("dataset_version", CURATOR, {
        "version": dn.version, "datanet": dn.name, "accepted": int(counts["accepted"].sum()),
        "rejected": int(counts["rejected"].sum()), "contributors": len(dn.contributors), **version_details}))
    stakes = [("stake", c, {"contributor": c, "amount": STAKE_UNITS}) for c in dn.contributors]
    roles = {VALIDATOR: "validator", CURATOR: "curator", TRAINER: "trainer", ATTRIBUTOR: "attributor",
             PAYOUT_AUTHORITY: "payout-authority", **{c: "contributor" for c in dn.contributors}}
    with run.ledger() as book:
        for actor, role in roles.items():
            book.register(actor, role)
        book.append_many(stakes + records)


def datanet(run: Run) -> Datanet:
    """The run's Datanet (:func:`build`)."""
    return build(run).datanet


def behaviours(run: Run) -> pd.Series:
    """Planted behaviour per contributor id (from the scenario's ground truth, researchers only)."""
    return build(run).ground_truth.groupby("contributor")["behaviour"].first()


def submission_counts(dn: Datanet | TextDatanet) -> pd.DataFrame:
    """``accepted`` and ``rejected`` counts per contributor (all contributors, in id order) of a
    tabular or text Datanet."""
    counts = dn.decisions.groupby("contributor")["accepted"].agg(accepted="sum", submitted="count")
    counts = counts.reindex(list(dn.contributors), fill_value=0)
    counts["rejected"] = counts.pop("submitted") - counts["accepted"]
    return counts.astype(int)
