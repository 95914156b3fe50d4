"""Datanets: real data dealt among contributors with known behaviour, validated, versioned, trained on.

Knows nothing of attribution or the ledger.
"""

from datanet.contributors import Submission, deal
from datanet.data import BUILTIN_DATASETS, Table, load_table
from datanet.datanet import BuiltDatanet, Datanet, build_datanet
from datanet.errors import DatanetError, DataSourceError, ScenarioError
from datanet.mlp_retrain import MLPRetrainer
from datanet.scenario import BEHAVIOURS, parse_scenario
from datanet.validation import Decision, Schema, validate

__all__ = [
    "BEHAVIOURS",
    "BUILTIN_DATASETS",
    "BuiltDatanet",
    "DataSourceError",
    "Datanet",
    "DatanetError",
    "Decision",
    "MLPRetrainer",
    "ScenarioError",
    "Schema",
    "Submission",
    "Table",
    "build_datanet",
    "deal",
    "load_table",
    "parse_scenario",
    "validate",
]
