"""Text step 5, pay: the tabular run's pay step (:func:`~datanet_lab.pipeline.tabular.pay_step.pay_procedure`)
over the text Datanet's attribution."""

from __future__ import annotations

import pandas as pd

from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.build_step import submission_counts
from datanet_lab.pipeline.engine import run_step
from datanet_lab.pipeline.tabular.pay_step import Payable, pay_procedure
from datanet_lab.pipeline.run import Run
from datanet_lab.pipeline.text import attribute_step as text_attribute
from datanet_lab.pipeline.text import build_step as text_build
from datanet_lab.pipeline.text import train_step as text_train


def pay_text(run: Run) -> pd.DataFrame:
    """The text run's payouts (payout epoch 1: slashes, payments, closing in its ledger;
    ``payouts.csv`` and ``metrics.json`` written from the recorded epoch), reused when the run
    directory holds them from the same parameters and inputs; a pay killed anywhere finishes
    when run again (:func:`~datanet_lab.pipeline.tabular.pay_step.pay`)."""
    return run_step(run, PROCEDURE)


def _text_payable(run: Run) -> Payable:
    built, trained, found = text_build.build_text(run), text_train.train_text(run), text_attribute.attribute_text(run)
    dn = built.datanet
    return Payable(dn.version, trained.history, found.contributor_credit, found.sample_credit, submission_counts(dn),
                   built.ground_truth.groupby("contributor")["behaviour"].first())


PROCEDURE = pay_procedure(manifest.TEXT_PAY, _text_payable,
                          (text_build.PROCEDURE, text_train.ENCODE, text_train.TRAIN, text_attribute.PROCEDURE))
