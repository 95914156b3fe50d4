"""Text step 5, pay: the tabular run's pay step (:func:`~datanet_lab.pipeline.pay_step.pay_epoch`)
over the text Datanet's attribution."""

from __future__ import annotations

import pandas as pd

from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.build_step import submission_counts
from datanet_lab.pipeline.pay_step import pay_epoch
from datanet_lab.pipeline.run import Run
from datanet_lab.pipeline.text.attribute_step import attribute_text
from datanet_lab.pipeline.text.build_step import build_text
from datanet_lab.pipeline.text.train_step import train_text


def pay_text(run: Run, epoch: int = 1) -> pd.DataFrame:
    """Pay the text run's payout ``epoch`` (slashes, payments, closing in its ledger), write
    ``payouts.csv`` and ``metrics.json`` and return the payouts table. Never reused: the ledger
    refuses an epoch paid before, and payouts made with other parameters stop it first
    (:class:`~datanet_lab.pipeline.manifest.ManifestError`); a pay stopped after its ledger append
    finishes when run again."""
    built, trained, found = build_text(run), train_text(run), attribute_text(run)
    dn = built.datanet
    behaviours = built.ground_truth.groupby("contributor")["behaviour"].first()
    return pay_epoch(run, manifest.TEXT_PAY, epoch, dn.version, trained.history, found.contributor_credit,
                     found.sample_credit, submission_counts(dn), behaviours)
