"""Generation step 1, build: the LM Datanet (contributors' documents, validated), saved and recorded.

A generation run lives in its own directory (:func:`generation_run`: ``<run>/generation/``) with
its own manifests, keystore and ledger, so its contributors, stakes and per-generation payments
never mix with the tabular or text Datanets of the same batch run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datanet.text.lm_datanet import LMDatanet, build_lm_datanet
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.build_step import datanet_records, datanet_roles
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.run import Run


def generation_run(run: Run) -> Run:
    """The generation run inside ``run``: ``<run>/generation/`` with the same parameters."""
    return Run(run.directory / "generation", run.params)


def planted_lm_datanet(params: dict[str, Any]) -> LMDatanet:
    """The LM Datanet the ``gen_scenario`` plants in the installed packages' docstrings (not saved
    or recorded): ``gen_per_contributor`` documents per contributor, ``gen_prompts`` prompts."""
    return build_lm_datanet(scenario=params["gen_scenario"], per_contributor=params["gen_per_contributor"],
                            n_prompts=params["gen_prompts"], seed=params["seed"])


def build_generation(run: Run) -> LMDatanet:
    """The generation run's LM Datanet: reused when ``run`` holds it from the same parameters,
    otherwise built, saved to ``dataset/`` and recorded in the run's ledger (actors, stakes, every
    contribution with its content hash, every validation decision with its reason, the dataset
    version with the source packages' versions and corpus hash)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> LMDatanet:
    dn = planted_lm_datanet(run.params)
    dn.save(staging / "dataset")
    return dn


PROCEDURE = Procedure(manifest.GEN_BUILD, _compute, lambda run: LMDatanet.load(run.directory / "dataset"),
                      records=lambda run, dn: datanet_records(dn, {"source": dn.provenance, "prompts": len(dn.prompts),
                                                                   "validation_texts": len(dn.validation_texts)}),
                      roles=lambda run, dn: datanet_roles(dn))
