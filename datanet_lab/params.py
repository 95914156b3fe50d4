"""The batch's parameters: their defaults, types and the checks run before anything is written.

Every notebook's ``parameters`` cell declares a subset of :data:`DEFAULTS` with the same default
values (tests/test_notebooks.py checks it), plus ``run_dir``, which the runner injects.
"""

from __future__ import annotations

from typing import Any

from attribution import METHODS
from datanet import DatanetError, load_table, parse_scenario
from datanet.data import Table, split_test
from datanet.datanet import TEST_FRACTION
from datanet.models import MODELS

RUN_DIR = "run_dir"
DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "label_column": "",
    "n_contributors": 10,
    "scenario": "honest:6,noisy:2,duplicate:1,out_of_domain:1",
    "noise_rate": 0.2,
    "model": "logreg",
    "epochs": 10,
    "seed": 0,
    "reward_pool": 1_000_000,
    "attribution_method": "tracin_captum",
    "compare_noise_rate": 0.05,
    "compare_l2": 0.01,
    "lds_subsets": 100,
    "mlp_seeds": 3,
    "mlp_models": 10,
}


class ParameterError(DatanetError):
    """A batch parameter is unknown, of the wrong type or out of range."""


def coerce(name: str, text: str) -> Any:
    """Parse the command-line text of parameter ``name`` into its default's type."""
    if name not in DEFAULTS:
        raise ParameterError(f"unknown parameter {name!r}; known: {sorted(DEFAULTS)}")
    kind = type(DEFAULTS[name])
    try:
        return kind(text) if kind is not int else int(text, 10)
    except ValueError:
        raise ParameterError(f"parameter {name!r} must be {kind.__name__}, got {text!r}") from None


def check(params: dict[str, Any]) -> Table:
    """Check every parameter's meaning (loading the dataset) and return the loaded table.

    Raises:
        DatanetError: the first problem found, naming the parameter and its value.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    full = {**DEFAULTS, **params}
    if full["model"] not in MODELS:
        raise ParameterError(f"unknown model {full['model']!r}; expected one of {list(MODELS)}")
    if full["epochs"] < 1:
        raise ParameterError(f"epochs must be >= 1, got {full['epochs']}")
    if not 0.0 <= full["noise_rate"] <= 1.0:
        raise ParameterError(f"noise_rate must be in [0, 1], got {full['noise_rate']}")
    if not 0.0 <= full["compare_noise_rate"] <= 1.0:
        raise ParameterError(f"compare_noise_rate must be in [0, 1], got {full['compare_noise_rate']}")
    if full["compare_l2"] <= 0:
        raise ParameterError(f"compare_l2 must be > 0 (a unique optimum), got {full['compare_l2']}")
    if full["lds_subsets"] < 2:
        raise ParameterError(f"lds_subsets must be >= 2, got {full['lds_subsets']}")
    if full["mlp_seeds"] < 2:
        raise ParameterError(f"mlp_seeds must be >= 2 (the ground truth averages retrain seeds; two give its ceiling), got {full['mlp_seeds']}")
    if full["mlp_models"] < 1:
        raise ParameterError(f"mlp_models must be >= 1, got {full['mlp_models']}")
    if full["attribution_method"] not in METHODS:
        raise ParameterError(f"unknown attribution_method {full['attribution_method']!r}; expected one of {sorted(METHODS)}")
    if full["reward_pool"] < 0:
        raise ParameterError(f"reward_pool must be >= 0 units, got {full['reward_pool']}")
    behaviours = parse_scenario(full["scenario"], full["n_contributors"])
    table = load_table(full["dataset"], full["label_column"])
    pool, _ = split_test(table, TEST_FRACTION, full["seed"])
    submitting = sum(b != "duplicate" for b in behaviours.values())
    if submitting > len(pool):
        raise ParameterError(
            f"n_contributors={full['n_contributors']}: {submitting} contributors need a sample each, "
            f"but dataset {full['dataset']!r} leaves only {len(pool)} training samples"
        )
    return table
