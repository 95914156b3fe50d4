"""Step 4, pay: verify the ledger, slash stakes, split the pool by credit, write the payouts."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

import ledger
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.attribute_step import attribute
from datanet_lab.pipeline.build_step import build, submission_counts
from datanet_lab.pipeline.engine import Record, first_difference
from datanet_lab.pipeline.manifest import ManifestError
from datanet_lab.pipeline.run import PAYOUT_AUTHORITY, Run
from datanet_lab.pipeline.train_step import train_model

EPOCH_KINDS = ("slash", "payout", "payout_epoch")
"""The ledger kinds of a payout epoch's entries."""


def pay(run: Run, epoch: int = 1) -> pd.DataFrame:
    """Pay payout ``epoch`` of the run's attribution (:func:`pay_epoch`): slash stakes of rejected
    or harmful data into the pool, split ``reward_pool`` plus the slashed units by positive credit."""
    built, trained, found = build(run), train_model(run), attribute(run)
    behaviours = built.ground_truth.groupby("contributor")["behaviour"].first()
    return pay_epoch(run, manifest.PAY, epoch, built.datanet.version, trained.history, found.contributor_credit,
                     found.sample_credit, submission_counts(built.datanet), behaviours)


def pay_epoch(run: Run, step: manifest.Step, epoch: int, dataset_version: str, history: pd.DataFrame, credit: pd.Series,
              sample_credit: pd.DataFrame, counts: pd.DataFrame, behaviours: pd.Series) -> pd.DataFrame:
    """The pay ``step`` of a run (tabular or text): record payout ``epoch`` in the ledger
    (:func:`settle`), then write ``payouts.csv`` and ``metrics.json`` from the ledger's entries of the
    epoch and the step's manifest; return the payouts table. Paying is an action, never reused: the
    ledger refuses an epoch paid before (:class:`ledger.LedgerError`, nothing changes), and payouts
    of this run directory made with other parameters stop it first
    (:class:`~datanet_lab.pipeline.manifest.ManifestError`). A pay stopped after its ledger append
    (no manifest yet) is finished: the files are written again from the epoch the ledger holds."""
    interrupted = not manifest.manifest_path(run.directory, step).is_file() and _epoch_is_recorded(run, epoch)
    if not interrupted:
        manifest.check(run.directory, step, run.params)  # raises on a mismatch; a match is paid again (refused)
    table = settle(run, epoch, dataset_version, credit, sample_credit, counts, behaviours, resume=interrupted)
    table.to_csv(run.path("payouts.csv"), index=False)
    write_metrics(run, dataset_version, history, table)
    manifest.write(run.directory, step, run.params)
    return table


def settle(run: Run, epoch: int, dataset_version: str, credit: pd.Series, sample_credit: pd.DataFrame,
           counts: pd.DataFrame, behaviours: pd.Series, resume: bool = False) -> pd.DataFrame:
    """Plan payout ``epoch`` of ``dataset_version`` from contributor ``credit`` (indexed by every
    contributor) and ``sample_credit`` (``contributor``, ``shared_credit`` per accepted sample),
    record its slashes, payments and closing in the run's ledger (the ledger refuses an epoch
    paid before; nothing changes) and return the payouts table read back from the ledger's entries
    of the epoch, one row per contributor:
    ``contributor, behaviour, accepted, rejected, attribution, stake, slashed, payout``.

    With ``resume``, the ledger already holds the epoch (a pay stopped after recording it) and
    nothing is appended; it must hold exactly the entries this plan records.

    Raises:
        ManifestError: ``resume`` and the recorded epoch differs from the plan (other credit,
            pool or dataset version); nothing changes.
    """
    magnitude = sample_credit["shared_credit"].abs().groupby(sample_credit["contributor"]).sum()
    with run.ledger() as book:
        stakes = {e.payload["contributor"]: e.payload["amount"] for e in book.entries("stake")}
        plan = ledger.plan_epoch(epoch, run.params["reward_pool"], credit.to_dict(), magnitude.to_dict(), stakes,
                                 (counts["accepted"] + counts["rejected"]).to_dict(), counts["rejected"].to_dict())
        records = ledger.epoch_records(plan, PAYOUT_AUTHORITY, dataset_version=dataset_version)
        if resume:
            _check_recorded(run, epoch, _epoch_entries(book, epoch), records)
        else:
            book.append_many(records)
        recorded = _epoch_entries(book, epoch)
    slashed = dict.fromkeys(counts.index, 0)
    for slash in (e for e in recorded if e.kind == "slash"):
        slashed[slash.payload["contributor"]] += slash.payload["amount"]
    table = counts.join(behaviours.rename("behaviour"))
    table["attribution"] = credit
    table["stake"] = pd.Series(stakes)
    table["slashed"] = pd.Series(slashed)
    table["payout"] = pd.Series({e.payload["contributor"]: e.payload["amount"] for e in recorded if e.kind == "payout"})
    return table.rename_axis("contributor").reset_index()[
        ["contributor", "behaviour", "accepted", "rejected", "attribution", "stake", "slashed", "payout"]
    ]


def _epoch_entries(book: ledger.Ledger, epoch: int) -> list[ledger.Entry]:
    """The ledger's slash, payout and closing entries of payout ``epoch``, in sequence order."""
    return sorted((e for kind in EPOCH_KINDS for e in book.entries(kind) if e.payload["epoch"] == epoch),
                  key=lambda e: e.seq)


def _epoch_is_recorded(run: Run, epoch: int) -> bool:
    """Whether the run's ledger closes payout ``epoch`` (read only; an epoch is recorded whole or not at all)."""
    if not run.ledger_path.is_file():
        return False
    with ledger.Ledger(run.ledger_path) as book:
        return any(e.payload["epoch"] == epoch for e in book.entries("payout_epoch"))


def _check_recorded(run: Run, epoch: int, recorded: list[ledger.Entry], planned: list[Record]) -> None:
    """Raise :class:`ManifestError` at the first record where the ledger's epoch and the plan differ."""
    difference = first_difference([(e.kind, e.actor, e.payload) for e in recorded], planned)
    if difference:
        raise ManifestError(f"pay: {run.ledger_path} records payout epoch {epoch} otherwise than this run would pay it "
                            f"({difference}); use a fresh run directory")


def write_metrics(run: Run, dataset_version: str, history: pd.DataFrame, payouts: pd.DataFrame) -> dict[str, Any]:
    """Write ``metrics.json``: final accuracy of the training ``history``, per-contributor
    attribution and payout, the ledger head."""
    report = ledger.verify(run.ledger_path)
    last = history.iloc[-1]
    metrics = {
        "dataset_version": dataset_version,
        "test_accuracy": float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "attribution": dict(zip(payouts["contributor"], payouts["attribution"].astype(float))),
        "payout": dict(zip(payouts["contributor"], payouts["payout"].astype(int))),
        "ledger": {"entries": report.entries, "head_hash": report.head_hash, "verified": report.ok},
    }
    run.path("metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
