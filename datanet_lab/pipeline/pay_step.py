"""Step 4, pay: verify the ledger, slash stakes, split the pool by credit, write the payouts."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

import ledger
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.attribute_step import attribute
from datanet_lab.pipeline.build_step import build, submission_counts
from datanet_lab.pipeline.run import PAYOUT_AUTHORITY, Run
from datanet_lab.pipeline.train_step import train_model


def pay(run: Run, epoch: int = 1) -> pd.DataFrame:
    """Pay payout ``epoch``: slash stakes of rejected or harmful data into the pool, split
    ``reward_pool`` plus the slashed units by positive credit, record every slash, payment and the
    epoch in the ledger, write ``payouts.csv`` and ``metrics.json``. Paying is an action, never
    reused: the ledger refuses an epoch paid before (:class:`ledger.LedgerError`, nothing changes),
    and payouts of this run directory made with other parameters stop it first
    (:class:`~datanet_lab.pipeline.manifest.ManifestError`)."""
    built, trained, found = build(run), train_model(run), attribute(run)
    manifest.check(run.directory, manifest.PAY, run.params)  # raises on a mismatch; a match is paid again (refused)
    behaviours = built.ground_truth.groupby("contributor")["behaviour"].first()
    table = settle(run, epoch, built.datanet.version, found.contributor_credit, found.sample_credit,
                   submission_counts(built.datanet), behaviours)
    table.to_csv(run.path("payouts.csv"), index=False)
    write_metrics(run, built.datanet.version, trained.history, table)
    manifest.write(run.directory, manifest.PAY, run.params)
    return table


def settle(run: Run, epoch: int, dataset_version: str, credit: pd.Series, sample_credit: pd.DataFrame,
           counts: pd.DataFrame, behaviours: pd.Series) -> pd.DataFrame:
    """Plan payout ``epoch`` of ``dataset_version`` from contributor ``credit`` (indexed by every
    contributor) and ``sample_credit`` (``contributor``, ``shared_credit`` per accepted sample),
    record its slashes, payments and closing in the run's ledger (the ledger refuses an epoch
    paid before; nothing changes) and return the payouts table, one row per contributor:
    ``contributor, behaviour, accepted, rejected, attribution, stake, slashed, payout``."""
    magnitude = sample_credit["shared_credit"].abs().groupby(sample_credit["contributor"]).sum()
    with run.ledger() as book:
        stakes = {e.payload["contributor"]: e.payload["amount"] for e in book.entries("stake")}
        plan = ledger.plan_epoch(epoch, run.params["reward_pool"], credit.to_dict(), magnitude.to_dict(), stakes,
                                 (counts["accepted"] + counts["rejected"]).to_dict(), counts["rejected"].to_dict())
        book.append_many(ledger.epoch_records(plan, PAYOUT_AUTHORITY, dataset_version=dataset_version))
    slashed = dict.fromkeys(counts.index, 0)
    for slash in plan.slashes:
        slashed[slash.contributor] += slash.amount
    table = counts.join(behaviours.rename("behaviour"))
    table["attribution"] = credit
    table["stake"] = pd.Series(stakes)
    table["slashed"] = pd.Series(slashed)
    table["payout"] = pd.Series(plan.split.payouts)
    return table.rename_axis("contributor").reset_index()[
        ["contributor", "behaviour", "accepted", "rejected", "attribution", "stake", "slashed", "payout"]
    ]


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
