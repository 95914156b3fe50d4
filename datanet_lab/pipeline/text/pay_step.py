"""Text step 5, pay: the tabular run's payout rules (:func:`~datanet_lab.pipeline.pay_step.settle`)
over the text Datanet's attribution."""

from __future__ import annotations

import pandas as pd

from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.build_step import submission_counts
from datanet_lab.pipeline.pay_step import settle, write_metrics
from datanet_lab.pipeline.run import Run
from datanet_lab.pipeline.text.attribute_step import attribute_text
from datanet_lab.pipeline.text.build_step import build_text
from datanet_lab.pipeline.text.train_step import train_text


def pay_text(run: Run, epoch: int = 1) -> pd.DataFrame:
    """Pay the text run's payout ``epoch`` (slashes, payments, closing in its ledger), write
    ``payouts.csv`` and ``metrics.json`` and return the payouts table. Never reused: the ledger
    refuses an epoch paid before, and payouts made with other parameters stop it first
    (:class:`~datanet_lab.pipeline.manifest.ManifestError`)."""
    built, trained, found = build_text(run), train_text(run), attribute_text(run)
    manifest.check(run.directory, manifest.TEXT_PAY, run.params)  # raises on a mismatch; a match is paid again (refused)
    dn = built.datanet
    behaviours = built.ground_truth.groupby("contributor")["behaviour"].first()
    table = settle(run, epoch, dn.version, found.contributor_credit, found.sample_credit, submission_counts(dn), behaviours)
    table.to_csv(run.path("payouts.csv"), index=False)
    write_metrics(run, dn.version, trained.history, table)
    manifest.write(run.directory, manifest.TEXT_PAY, run.params)
    return table
