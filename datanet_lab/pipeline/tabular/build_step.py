"""Step 1, build: load the source, deal it among contributors, validate, save, record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from datanet import BuiltDatanet, Datanet, build_datanet, load_table, parse_scenario
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.run import ATTRIBUTOR, CURATOR, PAYOUT_AUTHORITY, STAKE_UNITS, TRAINER, VALIDATOR, Run

if TYPE_CHECKING:
    from datanet.text.datanet import TextDatanet
    from datanet.text.lm_datanet import LMDatanet


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
    dataset version) in the ledger (:func:`~datanet_lab.pipeline.engine.run_step`)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> Built:
    built = planted_datanet(**{name: run.params[name] for name in manifest.BUILD.params})  # all it depends on
    save_built(staging, built.datanet, built.ground_truth)
    return Built(built.datanet, built.ground_truth)


def save_built(staging: Path, dn: Datanet | TextDatanet, ground_truth: pd.DataFrame) -> None:
    """Save a built Datanet to ``dataset/`` and its planted truth to ``planted/`` under ``staging``."""
    dn.save(staging / "dataset")
    (staging / "planted").mkdir()
    ground_truth.to_csv(staging / "planted" / "ground_truth.csv", index=False)


def _load(run: Run) -> Built:
    return Built(Datanet.load(run.directory / "dataset"), read_ground_truth(run))


def read_ground_truth(run: Run) -> pd.DataFrame:
    """The planted truth a build step saved (``planted/ground_truth.csv``)."""
    return pd.read_csv(run.directory / "planted" / "ground_truth.csv", keep_default_na=False)


def datanet_records(dn: Datanet | TextDatanet | LMDatanet, version_details: dict[str, Any]) -> list[Record]:
    """The ledger records of a freshly built Datanet, in one batch: each contributor's stake, every
    contribution (its content hash) and validation decision (with its reason), then the
    ``dataset_version`` entry (counts plus ``version_details``)."""
    counts = submission_counts(dn)
    version = {"version": dn.version, "datanet": dn.name, "accepted": int(counts["accepted"].sum()),
               "rejected": int(counts["rejected"].sum()), "contributors": len(dn.contributors), **version_details}
    return [*stake_records(dn.contributors), *submission_records(dn.decisions.itertuples(), dn.name),
            ("dataset_version", CURATOR, version)]


def stake_records(contributors: Iterable[str]) -> list[Record]:
    """Each contributor's stake of :data:`~datanet_lab.params.STAKE_UNITS` units."""
    return [("stake", c, {"contributor": c, "amount": STAKE_UNITS}) for c in contributors]


def submission_records(decisions: Iterable[Any], datanet_name: str, **context: Any) -> list[Record]:
    """Every contribution (its content hash, signed by its contributor) then every validation
    decision (with its reason) of ``decisions`` (objects with ``sample_id``, ``contributor``,
    ``content_hash``, ``accepted``, ``reason``); ``context`` (e.g. the round) joins each contribution."""
    decisions = list(decisions)
    records = [("contribution", d.contributor, {"sample_id": d.sample_id, "content_hash": d.content_hash,
                                                "datanet": datanet_name, **context}) for d in decisions]
    return records + [("validation", VALIDATOR, {"sample_id": d.sample_id, "accepted": bool(d.accepted), "reason": d.reason})
                      for d in decisions]


def datanet_roles(dn: Datanet | TextDatanet | LMDatanet) -> dict[str, str]:
    """Every actor of a run with a Datanet ``dn``, with its role."""
    return {VALIDATOR: "validator", CURATOR: "curator", TRAINER: "trainer", ATTRIBUTOR: "attributor",
            PAYOUT_AUTHORITY: "payout-authority", **{c: "contributor" for c in dn.contributors}}


PROCEDURE = Procedure(manifest.BUILD, _compute, _load,
                      records=lambda run, built: datanet_records(built.datanet, {"test_samples": len(built.datanet.test_y)}),
                      roles=lambda run, built: datanet_roles(built.datanet))


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
