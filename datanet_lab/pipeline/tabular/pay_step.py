"""Step 4, pay: slash stakes, split the pool by credit, record the epoch, write the payouts from the ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import ledger
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular import attribute_step, build_step, train_step
from datanet_lab.pipeline.tabular.attribute_step import attribute
from datanet_lab.pipeline.tabular.build_step import build, submission_counts
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.pipeline.run import PAYOUT_AUTHORITY, Run
from datanet_lab.pipeline.tabular.train_step import train_model

EPOCH = 1
"""The payout epoch a run's pay step closes (serving a finished run closes the later ones)."""
EPOCH_KINDS = ("slash", "payout", "payout_epoch")
"""The ledger kinds of a payout epoch's entries."""
PAYOUT_COLUMNS = ["contributor", "behaviour", "accepted", "rejected", "attribution", "stake", "slashed", "payout"]


@dataclass(frozen=True)
class Payable:
    """What a pay step reads from the steps before it: the Datanet's version, the training
    history, contributor ``credit`` (indexed by every contributor; positive = helped), the
    roll-up's ``sample_credit`` (``contributor``, ``shared_credit`` per accepted sample), the
    ``counts`` of accepted and rejected submissions and the planted ``behaviours`` (both indexed
    by contributor)."""

    dataset_version: str
    history: pd.DataFrame
    credit: pd.Series
    sample_credit: pd.DataFrame
    counts: pd.DataFrame
    behaviours: pd.Series


@dataclass(frozen=True)
class Planned:
    """A pay step's epoch as planned (the ledger records it makes) and what it was planned from."""

    payable: Payable
    stakes: dict[str, int]
    records: list[Record]


def pay(run: Run) -> pd.DataFrame:
    """The run's payouts (payout epoch :data:`EPOCH`): reused when the run directory holds them
    from the same parameters and inputs, otherwise planned (stakes of rejected or harmful data
    slashed into the pool, ``reward_pool`` plus the slashed units split by positive credit),
    recorded in the ledger and written from the recorded epoch (``payouts.csv``,
    ``metrics.json``; :func:`~datanet_lab.pipeline.engine.run_step`). A pay killed anywhere
    finishes when run again, the epoch recorded once."""
    return run_step(run, PROCEDURE)


def _tabular_payable(run: Run) -> Payable:
    built, trained, found = build(run), train_model(run), attribute(run)
    return Payable(built.datanet.version, trained.history, found.contributor_credit, found.sample_credit,
                   submission_counts(built.datanet), built.ground_truth.groupby("contributor")["behaviour"].first())


def pay_procedure(step: manifest.Step, payable: Callable[[Run], Payable],
                  requires: tuple[Procedure[Any, Any], ...]) -> Procedure[Planned, pd.DataFrame]:
    """The pay step of a tabular or text run: plans the epoch over ``payable(run)``, records it,
    then writes ``payouts.csv`` and ``metrics.json`` from the ledger's entries of the epoch."""
    return Procedure(step, lambda run, staging: plan(run, payable(run)), read_payouts,
                     records=lambda run, planned: planned.records, from_ledger=write_payouts, requires=requires)


def plan(run: Run, payable: Payable) -> Planned:
    """Payout epoch :data:`EPOCH` of ``payable`` against the stakes the run's ledger holds
    (:func:`ledger.plan_epoch`), as ledger records (:func:`ledger.epoch_records`)."""
    credit, samples, counts = payable.credit, payable.sample_credit, payable.counts
    magnitude = samples["shared_credit"].abs().groupby(samples["contributor"]).sum()
    with ledger.Ledger(run.ledger_path) as book:  # read only
        stakes = stakes_left(book, EPOCH)
    epoch = ledger.plan_epoch(EPOCH, run.params["reward_pool"], credit.to_dict(), magnitude.to_dict(), stakes,
                              (counts["accepted"] + counts["rejected"]).to_dict(), counts["rejected"].to_dict())
    return Planned(payable, stakes, ledger.epoch_records(epoch, PAYOUT_AUTHORITY, dataset_version=payable.dataset_version))


def write_payouts(run: Run, staging: Path, planned: Planned) -> None:
    """``payouts.csv`` (:func:`payouts_table`) and ``metrics.json`` (:func:`metrics`) under
    ``staging``, from the epoch the run's ledger records."""
    with ledger.Ledger(run.ledger_path) as book:  # read only
        recorded = epoch_entries(book, EPOCH)
    table = payouts_table(planned, recorded)
    table.to_csv(staging / "payouts.csv", index=False)
    text = json.dumps(metrics(run, planned.payable, table), indent=2, sort_keys=True) + "\n"
    (staging / "metrics.json").write_text(text)


def payouts_table(planned: Planned, recorded: list[ledger.Entry]) -> pd.DataFrame:
    """One row per contributor (:data:`PAYOUT_COLUMNS`): submissions, credit, stake, and the
    units slashed and paid as the ledger's ``recorded`` epoch entries say."""
    payable = planned.payable
    slashed, paid = epoch_units(recorded)
    table = payable.counts.join(payable.behaviours.rename("behaviour"))
    table["attribution"] = payable.credit
    table["stake"] = pd.Series(planned.stakes)
    table["slashed"] = pd.Series(dict.fromkeys(payable.counts.index, 0) | slashed)
    table["payout"] = pd.Series(paid)
    return table.rename_axis("contributor").reset_index()[PAYOUT_COLUMNS]


def epoch_units(recorded: list[ledger.Entry]) -> tuple[dict[str, int], dict[str, int]]:
    """Units slashed (summed over a contributor's slashes) and paid per contributor, as an
    epoch's recorded entries (:func:`epoch_entries`) say; contributors without either are absent."""
    slashed: dict[str, int] = {}
    for slash in (e for e in recorded if e.kind == "slash"):
        slashed[slash.payload["contributor"]] = slashed.get(slash.payload["contributor"], 0) + slash.payload["amount"]
    return slashed, {e.payload["contributor"]: e.payload["amount"] for e in recorded if e.kind == "payout"}


def read_payouts(run: Run) -> pd.DataFrame:
    """The payouts table a pay step wrote (``payouts.csv``)."""
    return pd.read_csv(run.directory / "payouts.csv", keep_default_na=False)


def stakes_left(book: ledger.Ledger, epoch: int) -> dict[str, int]:
    """Units each contributor has at stake when payout ``epoch`` opens: its stakes less the
    slashes of the epochs before it (not of ``epoch`` itself, which a stopped pay may have recorded)."""
    left: dict[str, int] = {}
    for entry in book.entries("stake"):
        left[entry.payload["contributor"]] = left.get(entry.payload["contributor"], 0) + entry.payload["amount"]
    for entry in book.entries("slash"):
        if entry.payload["epoch"] < epoch:
            left[entry.payload["contributor"]] -= entry.payload["amount"]
    return left


def epoch_entries(book: ledger.Ledger, epoch: int) -> list[ledger.Entry]:
    """The ledger's slash, payout and closing entries of payout ``epoch``, in sequence order."""
    return sorted((e for kind in EPOCH_KINDS for e in book.entries(kind) if e.payload["epoch"] == epoch),
                  key=lambda e: e.seq)


def metrics(run: Run, payable: Payable, payouts: pd.DataFrame) -> dict[str, Any]:
    """The run's summary (``metrics.json``): final accuracy of the training history,
    per-contributor attribution and payout, and the ledger's size and head after the epoch."""
    report = ledger.verify(run.ledger_path)
    last = payable.history.iloc[-1]
    return {
        "dataset_version": payable.dataset_version,
        "test_accuracy": float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "attribution": dict(zip(payouts["contributor"], payouts["attribution"].astype(float))),
        "payout": dict(zip(payouts["contributor"], payouts["payout"].astype(int))),
        "ledger": {"entries": report.entries, "head_hash": report.head_hash, "verified": report.ok},
    }


PROCEDURE = pay_procedure(manifest.PAY, _tabular_payable,
                          (build_step.PROCEDURE, train_step.PROCEDURE, attribute_step.PROCEDURE))
