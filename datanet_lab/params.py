"""The batch's parameters: their defaults, types and the checks run before anything is written.

Every notebook's ``parameters`` cell declares a subset of :data:`DEFAULTS` with the same default
values (tests/test_notebooks.py checks it), plus ``run_dir``, which the runner injects.

Checks come in three layers, so that a sweep can run each once per distinct value:
:func:`check_value` judges one parameter alone, :func:`resolve` the full set without I/O, and
:func:`check_fits` the set against its dataset's size. :func:`check` runs all three.
"""

from __future__ import annotations

import math
from typing import Any


from attribution import METHODS
from datanet import DatanetError, load_table
from datanet.data import FLOAT32_MAX, Table, split_test
from datanet.datanet import TEST_FRACTION
from datanet.models import MODELS
from datanet.scenario import scaled_scenario, scenario_counts
from datanet.text.behaviours import DEFAULT_TEXT_SCENARIO, TEXT_BEHAVIOURS
from datanet.text.files import load_text_file
from datanet.text.lm_datanet import DEFAULT_LM_SCENARIO, LM_BEHAVIOURS

RUN_DIR = "run_dir"
DOCSTRINGS = "docstrings"
"""``text_dataset`` naming the docstrings of the installed scientific packages (else a file path)."""
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
    "text_dataset": DOCSTRINGS,
    "text_column": "text",
    "text_label_column": "label",
    "text_scenario": DEFAULT_TEXT_SCENARIO,
    "text_per_package": 60,
    "text_max_tokens": 64,
    "text_epochs": 2,
    "text_attribution_method": "tracin_fast",
    "text_ig_examples": 2,
    "text_lds_subsets": 8,
    "gen_scenario": DEFAULT_LM_SCENARIO,
    "gen_per_contributor": 6,
    "gen_epochs": 10,
    "gen_width": 64,
    "gen_vocab_size": 2048,
    "gen_prompts": 8,
    "gen_max_new_tokens": 48,
    "gen_temperature": 0.7,
    "gen_min_span": 6,
    "gen_max_count": 100,
    "generation_fee": 1000,
    "gen_loco_seeds": 1,
    "inference_requests": 2000,
    "inference_fee": 1000,
    "rounds": 4,
    "round_rows": 30,
}
MINILM_POSITIONS = 512
"""The longest input MiniLM's position embeddings cover."""
MAX_UNITS = 2**53 - 1
"""The largest integer the ledger's canonical JSON (RFC 8785) carries exactly."""
STAKE_UNITS = 1000
"""Deposit each contributor stakes when it submits; rejected or harmful data forfeits part of it
(rules in :mod:`ledger.epochs`), and the forfeits join the reward pool."""
MAX_SEED = 2**32 - 1
"""scikit-learn's ``random_state`` takes seeds in ``[0, 2**32 - 1]``."""

MINIMA: dict[str, tuple[int, str]] = {
    "n_contributors": (2, " (payouts and the method comparisons weigh contributors against each other)"),
    "epochs": (1, ""),
    "lds_subsets": (2, ""),
    "mlp_seeds": (2, " (the ground truth averages retrain seeds; two give its ceiling)"),
    "mlp_models": (1, ""),
    "text_per_package": (1, ""),
    "text_epochs": (1, ""),
    "text_ig_examples": (0, ""),
    "text_lds_subsets": (2, ""),
    "gen_per_contributor": (1, ""),
    "gen_epochs": (1, ""),
    "gen_width": (8, " (GPT-2 width, a multiple of its 4 heads)"),
    "gen_vocab_size": (257, " (a byte-level BPE holds the 256 bytes and the end-of-text token)"),
    "gen_prompts": (1, ""),
    "gen_max_new_tokens": (1, ""),
    "gen_min_span": (2, " tokens (one shared token is no evidence of copying)"),
    "gen_max_count": (1, ""),
    "generation_fee": (0, " units"),
    "gen_loco_seeds": (1, ""),
    "inference_requests": (1, ""),
    "inference_fee": (0, " units"),
    "rounds": (3, " (the rounds plan's last event happens in round 3)"),
    "round_rows": (1, ""),
    "reward_pool": (0, " units"),
}
"""The integer parameters' lower bounds, each with the tail of its message."""


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


def same_type(value: Any, default: Any) -> bool:
    """``value`` has the type of ``default``; an int passes for a float, a bool never for an int."""
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    return isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))


def check_value(name: str, value: Any) -> None:
    """Check one parameter alone, without I/O.

    Any parameter: a float must be finite and within float32's range, an integer within
    ±:data:`MAX_UNITS` (run ids and ledger records are canonical JSON). A batch parameter (one of
    :data:`DEFAULTS`) must also have its default's type and lie in its own range.

    Raises:
        ParameterError: naming the parameter, its value and what was expected.
    """
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise ParameterError(f"parameter {name!r} must be a finite number within float32's range "
                             f"(magnitude <= {FLOAT32_MAX:.4g}), got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_UNITS:
        raise ParameterError(f"parameter {name!r} = {value} is beyond the integers JSON carries exactly "
                             f"(magnitude <= 2**53-1 = {MAX_UNITS})")
    if name not in DEFAULTS:
        return
    default = DEFAULTS[name]
    if not same_type(value, default):
        raise ParameterError(f"parameter {name!r} must be {type(default).__name__}, got {value!r} ({type(value).__name__})")
    problem = _range_problem(name, value)
    if problem:
        raise ParameterError(problem)


def _range_problem(name: str, value: Any) -> str | None:
    """Why ``value`` of batch parameter ``name`` is out of its range, or ``None``."""
    if name == "model" and value not in MODELS:
        return f"unknown model {value!r}; expected one of {list(MODELS)}"
    if name in ("attribution_method", "text_attribution_method") and value not in METHODS:
        return f"unknown {name} {value!r}; expected one of {sorted(METHODS)}"
    if name == "text_max_tokens" and not 8 <= value <= MINILM_POSITIONS:
        return f"text_max_tokens must be in [8, {MINILM_POSITIONS}] (MiniLM's position limit), got {value}"
    if name in ("noise_rate", "compare_noise_rate") and not 0.0 <= value <= 1.0:
        return f"{name} must be in [0, 1], got {value}"
    if name in MINIMA and value < MINIMA[name][0]:
        return f"{name} must be >= {MINIMA[name][0]}{MINIMA[name][1]}, got {value}"
    if name == "seed" and not 0 <= value <= MAX_SEED:
        return f"seed must be in [0, {MAX_SEED}] (scikit-learn's random_state), got {value}"
    if name == "gen_width" and value % 4:
        return f"gen_width must be a multiple of 4 (the GPT-2's 4 attention heads), got {value}"
    if name == "gen_vocab_size" and value > 65535:
        return f"gen_vocab_size must be <= 65535 (the span index stores u16 token ids), got {value}"
    if name == "gen_temperature" and not 0.0 <= value <= 10.0:
        return f"gen_temperature must be in [0, 10] (0 is greedy), got {value}"
    if name == "compare_l2" and not value > 0:
        return f"compare_l2 must be > 0 (a unique optimum), got {value}"
    return None


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """Every batch parameter, checked without I/O: :data:`DEFAULTS` overridden by ``params``.

    When ``params`` sets ``n_contributors`` but no ``scenario``, the default scenario is scaled to
    that count (:func:`datanet.scenario.scaled_scenario`: largest remainders of 6:2:1:1).

    Raises:
        DatanetError: an unknown name, a value :func:`check_value` refuses, or a scenario that
            does not name ``n_contributors`` contributors.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    for name, value in params.items():
        check_value(name, value)
    full = {**DEFAULTS, **params}
    if "scenario" not in params:
        full["scenario"] = scaled_scenario(DEFAULTS["scenario"], full["n_contributors"])
    scenario_counts(full["scenario"], full["n_contributors"])
    scenario_counts(full["text_scenario"], None, TEXT_BEHAVIOURS)
    scenario_counts(full["gen_scenario"], None, LM_BEHAVIOURS)
    return full


def training_rows(table: Table) -> int:
    """How many rows of ``table`` contributors share: all but the held-out test set (its size
    does not depend on the seed)."""
    pool, _ = split_test(table, TEST_FRACTION, seed=0)
    return len(pool)


def check_fits(full: dict[str, Any], rows: int) -> None:
    """Refuse more contributors than the ``rows`` training rows of ``full``'s dataset, and a
    reward pool that, with every stake slashed into it, would pass :data:`MAX_UNITS`."""
    if full["n_contributors"] > rows:
        raise ParameterError(
            f"n_contributors={full['n_contributors']}: more contributors than the {rows} training samples "
            f"dataset {full['dataset']!r} leaves (each contributor submits at least one)"
        )
    stakes = full["n_contributors"] * STAKE_UNITS
    if full["reward_pool"] + stakes > MAX_UNITS:
        raise ParameterError(
            f"reward_pool={full['reward_pool']} plus the {stakes} units its {full['n_contributors']} contributors stake "
            f"(slashed stakes join the pool) passes the ledger's integer range 2**53-1 = {MAX_UNITS}"
        )


def check(params: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter's meaning (loading the dataset) and return the full parameter set
    (:func:`resolve`).

    Raises:
        DatanetError: the first problem found, naming the parameter and its value.
    """
    full = resolve(params)
    check_fits(full, training_rows(load_table(full["dataset"], full["label_column"])))
    if full["text_dataset"] != DOCSTRINGS:  # the user's text file: readable, with its two columns
        load_text_file(full["text_dataset"], full["text_column"], full["text_label_column"])
    return full
