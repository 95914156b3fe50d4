"""Text step 1, build: load the text source, deal it among contributors, validate, save, record.

A text run lives in its own directory (:func:`text_run`: ``<run>/text/``) with its own manifests,
keystore and ledger, so the text Datanet's contributors, stakes and payout epochs never mix with
the tabular Datanet's of the same batch run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from datanet.models import encoders
from datanet.scenario import parse_scenario, scenario_counts
from datanet.text.behaviours import TEXT_BEHAVIOURS
from datanet.text.datanet import BuiltTextDatanet, TextDatanet, build_text_datanet
from datanet.text.docstrings import DEFAULT_PACKAGES, OFF_TOPIC_PACKAGES, docstring_corpus
from datanet.text.files import load_text_file
from datanet.text.table import TextTable
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.build_step import datanet_records, datanet_roles, read_ground_truth, save_built
from datanet_lab.pipeline.engine import Procedure, Record, run_step
from datanet_lab.params import DOCSTRINGS
from datanet_lab.pipeline.run import Run

@dataclass
class BuiltText:
    """The run's text Datanet and the scenario's planted truth (one row per submission)."""

    datanet: TextDatanet
    ground_truth: pd.DataFrame


def text_run(run: Run) -> Run:
    """The text Datanet's run inside ``run``: ``<run>/text/`` with the same parameters."""
    return Run(run.directory / "text", run.params)


@lru_cache(maxsize=1)
def token_counter() -> Callable[[str], int]:
    """Counts MiniLM tokens (special tokens included): what ``text_max_tokens`` limits."""
    return encoders.count_tokens(encoders.load_tokenizer())


def text_table(params: dict[str, Any]) -> TextTable:
    """The text source ``text_dataset`` names: the installed packages' docstrings that fit
    ``text_max_tokens`` (``text_per_package`` per package), or the user's CSV / Parquet / JSONL file."""
    if params["text_dataset"] == DOCSTRINGS:
        return docstring_corpus(DEFAULT_PACKAGES, params["text_per_package"], params["seed"],
                                max_tokens=params["text_max_tokens"], count_tokens=token_counter())
    return load_text_file(params["text_dataset"], params["text_column"], params["text_label_column"])


def off_topic_table(params: dict[str, Any], table: TextTable) -> TextTable | None:
    """Another domain's text for off-topic contributors (standard-library docstrings), or ``None``
    when the scenario has none."""
    if "off_topic" not in scenario_counts(params["text_scenario"], None, TEXT_BEHAVIOURS):
        return None
    packages = tuple(p for p in OFF_TOPIC_PACKAGES if p not in table.label_set)
    return docstring_corpus(packages, params["text_per_package"], params["seed"],
                            max_tokens=params["text_max_tokens"], count_tokens=token_counter())


def planted_text_datanet(params: dict[str, Any]) -> BuiltTextDatanet:
    """The text Datanet the scenario plants in the text source (not saved or recorded)."""
    table = text_table(params)
    behaviours = parse_scenario(params["text_scenario"], None, TEXT_BEHAVIOURS)
    return build_text_datanet(table, behaviours, params["seed"], count_tokens=token_counter(),
                              max_tokens=params["text_max_tokens"], off_topic=off_topic_table(params, table),
                              noise_rate=params["noise_rate"])


def build_text(run: Run) -> BuiltText:
    """The text run's Datanet: reused when ``run`` holds it from the same parameters, otherwise
    built, saved to ``dataset/`` and ``planted/`` and recorded in the text run's ledger (actors,
    stakes, every contribution, every validation decision with its reason, and the dataset
    version with the source's package versions and corpus hash)."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> BuiltText:
    built = planted_text_datanet(run.params)
    save_built(staging, built.datanet, built.ground_truth)
    return BuiltText(built.datanet, built.ground_truth)


def _records(run: Run, built: BuiltText) -> list[Record]:
    dn = built.datanet
    return datanet_records(dn, {"test_samples": len(dn.test_y), "source": dn.provenance, "max_tokens": dn.max_tokens})


PROCEDURE = Procedure(manifest.TEXT_BUILD, _compute,
                      lambda run: BuiltText(TextDatanet.load(run.directory / "dataset"), read_ground_truth(run)),
                      records=_records, roles=lambda run, built: datanet_roles(built.datanet))
