"""The four steps of a Datanet Lab run, as the notebooks call them.

Each step reads what earlier steps left in the run directory through their manifests
(:mod:`~datanet_lab.pipeline.manifest`), and runs an earlier step first when the run has none of
its outputs (a notebook run on its own, as nbval runs it). A step reuses outputs only when its
manifest matches the parameters it depends on, its inputs and the output files' bytes; otherwise it
stops with :class:`ManifestError` naming the mismatch (a run with other parameters needs a fresh
run directory). Each step records what it did in the run's ledger. Every step (tabular, text and
generation) runs on one engine (:func:`~datanet_lab.pipeline.engine.run_step`): outputs computed
in ``.staging/<step>/``, records appended in one batch, outputs read back from the ledger (the
payouts), outputs moved into place, then the manifest; a step stopped anywhere finishes when run
again.

Run directory layout::

    params.yaml  metrics.json  payouts.csv  ledger.sqlite  figures/*.png
    manifests/    build.json train.json attribute.json pay.json  (parameters, inputs, output hashes)
    dataset/      meta.json decisions.csv train.npz test.npz     (what validators accepted)
    planted/      ground_truth.csv                               (the scenario's truth, kept apart)
    training/     history.csv checkpoints/epoch_NNN.pt
    attribution/  scores.npy sample_credit.csv (credit, cluster, shared_credit) contributor_credit.csv
                  integrated_gradients.npz
"""

from datanet_lab.pipeline.tabular.attribute_step import (Attribution, Rollup, Scores, attribute, roll_up,
                                                         roll_up_samples, score, submission_order)
from datanet_lab.pipeline.tabular.build_step import (Built, behaviours, build, datanet, planted_datanet,
                                                     submission_counts)
from datanet_lab.pipeline.manifest import ManifestError
from datanet_lab.pipeline.tabular.pay_step import pay
from datanet_lab.pipeline.run import ATTRIBUTOR, CURATOR, PAYOUT_AUTHORITY, RUN_CLOCK, STAKE_UNITS, TRAINER, VALIDATOR
from datanet_lab.pipeline.run import Run, open_run
from datanet_lab.pipeline.tabular.train_step import train_config, train_model

__all__ = ["ATTRIBUTOR", "CURATOR", "PAYOUT_AUTHORITY", "RUN_CLOCK", "STAKE_UNITS", "TRAINER", "VALIDATOR", "Attribution",
           "Built", "ManifestError", "Rollup", "Run", "Scores", "attribute", "behaviours", "build",
           "datanet", "open_run", "pay", "planted_datanet", "roll_up", "roll_up_samples", "score", "submission_counts", "submission_order",
           "train_config", "train_model"]
