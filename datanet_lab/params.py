"""The batch's parameters: their defaults, types and the checks run before anything is written.

Every notebook's ``parameters`` cell declares a subset of :data:`DEFAULTS` with the same default
values (tests/test_notebooks.py checks it), plus ``run_dir``, which the runner injects.

Checks come in three layers, so that a sweep can run each once per distinct value:
:func:`check_value` judges one parameter alone, :func:`resolve` the full set without I/O, and
:func:`check_fits` the set against its dataset's size. :func:`check` runs all three.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from attribution import METHODS
from attribution.spans import ENGINES
from datanet import DatanetError, ScenarioError, load_table
from datanet.data import FLOAT32_MAX, Table, split_test
from datanet.datanet import TEST_FRACTION
from datanet.models import MODELS
from datanet.scenario import scaled_scenario, scenario_counts
from datanet.text.behaviours import DEFAULT_TEXT_SCENARIO, TEXT_BEHAVIOURS
from datanet.text.datanet import held_out_count
from datanet.text.docstrings import DEFAULT_PACKAGES
from datanet.text.files import load_text_file
from datanet.text.lm_datanet import (DEFAULT_LM_PACKAGES, DEFAULT_LM_SCENARIO, MAX_PROMPT_BYTES, MEMORISED_COPIES,
                                     docstrings_needed, scenario_plan)

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
    "compare_shapley": False,
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
    "span_engine": "vectorized",
    "generation_fee": 1000,
    "gen_loco_seeds": 1,
    "lm_model": "scratch",
    "lm_lora_rank": 0,
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
GEN_POSITIONS = 128
"""Positions of the generation batch's GPT-2 (``datanet.models.lm.LMConfig``'s default): the
prompt (its ``eot`` and at most ``MAX_PROMPT_BYTES`` tokens) and the generation share them."""
MIN_TEMPERATURE = 0.01
"""The lowest sampling temperature above 0 (greedy): below it sampling is greedy in all but name,
and logits / temperature overflow float32 as the temperature nears 0."""
LM_PACKAGE_DOCSTRINGS = 500
"""Docstrings the generation batch may draw from each of its packages: numpy, the smallest,
holds about 1,200 of 80-2,000 characters."""
OFF_TOPIC_DOCSTRINGS = 300
"""Standard-library docstrings the generation batch may draw for off-topic contributors, 60 from
each of the five packages (``http``, the smallest, holds about 75)."""
MAX_LM_DOCUMENTS = 5000
"""Documents the generation batch's contributors may submit (the default submits 420, and the
GPT-2 trains on them on the CPU, once per leave-one-contributor-out retrain too)."""

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
    "lm_lora_rank": (0, " (0 fine-tunes every parameter)"),
    "inference_requests": (1, ""),
    "inference_fee": (0, " units"),
    "rounds": (3, " (the rounds plan's last event happens in round 3)"),
    "round_rows": (1, ""),
    "reward_pool": (0, " units"),
}
"""The integer parameters' lower bounds, each with the tail of its message."""
MAXIMA: dict[str, tuple[int, str]] = {
    "text_per_package": (1000, " (numpy holds about 1,200 docstrings of 80-2,000 characters, fewer within "
                               "text_max_tokens: a larger value only reads every file of every package)"),
    "gen_width": (1024, " (GPT-2 medium's width: the 2-layer GPT-2 trains on the CPU)"),
    "gen_vocab_size": (65535, " (the span index stores u16 token ids)"),
    "gen_max_new_tokens": (GEN_POSITIONS - 1 - MAX_PROMPT_BYTES,
                           f" (the GPT-2's {GEN_POSITIONS} positions less a prompt's eot and up to "
                           f"{MAX_PROMPT_BYTES} tokens)"),
    "inference_requests": (100_000, " (notebook 09 keeps every inference's credit in memory; "
                                    "datanet-lab serve-sim serves longer streams)"),
    "rounds": (100, " (each round retrains, re-attributes and pays, twice: with and without reputation)"),
}
"""The integer parameters' upper bounds, each with the tail of its message."""


BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
"""Command-line spellings of a bool parameter (``bool("false")`` would be ``True``)."""


class ParameterError(DatanetError):
    """A batch parameter is unknown, of the wrong type or out of range."""


def coerce(name: str, text: str) -> Any:
    """Parse the command-line text of parameter ``name`` into its default's type."""
    if name not in DEFAULTS:
        raise ParameterError(f"unknown parameter {name!r}; known: {sorted(DEFAULTS)}")
    kind = type(DEFAULTS[name])
    if kind is bool:
        if text.lower() not in BOOLEANS:
            raise ParameterError(f"parameter {name!r} must be one of {sorted(BOOLEANS)}, got {text!r}")
        return BOOLEANS[text.lower()]
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
    if name in MAXIMA and value > MAXIMA[name][0]:
        return f"{name} must be <= {MAXIMA[name][0]}{MAXIMA[name][1]}, got {value}"
    if name == "seed" and not 0 <= value <= MAX_SEED:
        return f"seed must be in [0, {MAX_SEED}] (scikit-learn's random_state), got {value}"
    if name == "gen_width" and value % 4:
        return f"gen_width must be a multiple of 4 (the GPT-2's 4 attention heads), got {value}"
    if name == "gen_temperature" and not (value == 0 or MIN_TEMPERATURE <= value <= 10.0):
        return (f"gen_temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, 10] (lower, sampling is greedy and "
                f"logits / temperature overflow float32), got {value}")
    if name == "lm_model" and not value:
        return "lm_model must be 'scratch', 'pretrained' or a local model directory, got ''"
    if name == "span_engine" and value not in ENGINES:
        return f"unknown span_engine {value!r}; expected one of {list(ENGINES)}"
    if name == "compare_l2" and not value > 0:
        return f"compare_l2 must be > 0 (a unique optimum), got {value}"
    return None


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """Every batch parameter, checked without I/O: :data:`DEFAULTS` overridden by ``params``.

    When ``params`` sets ``n_contributors`` but no ``scenario``, the default scenario is scaled to
    that count (:func:`datanet.scenario.scaled_scenario`: largest remainders of 6:2:1:1).

    Raises:
        DatanetError: an unknown name, a value :func:`check_value` refuses, a scenario that does
            not name ``n_contributors`` contributors, or parameters that do not fit together
            (:func:`check_together`).
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
    check_together(full)
    return full


def check_together(full: dict[str, Any]) -> None:
    """Refuse parameters of ``full`` that are valid alone but not together: a text scenario with
    more contributors than the docstring corpus leaves texts, a generation scenario the LM
    Datanet cannot serve, and inference fees that pass :data:`MAX_UNITS` in all."""
    if full["text_dataset"] == DOCSTRINGS:
        check_text_fits(full, len(DEFAULT_PACKAGES) * full["text_per_package"],
                        f"text_dataset {DOCSTRINGS!r} with text_per_package={full['text_per_package']} "
                        f"({len(DEFAULT_PACKAGES)} packages)")
    else:
        text_contributors(full["text_scenario"])
    _check_generation_plan(full["gen_scenario"], full["gen_per_contributor"])
    if full["lm_lora_rank"] and full["lm_model"] == "scratch":
        raise ParameterError(f"lm_lora_rank={full['lm_lora_rank']}: LoRA adapters fine-tune a base model, but lm_model "
                             f"is 'scratch'; give lm_model 'pretrained' or a model directory, or lm_lora_rank 0")
    total = full["inference_fee"] * full["inference_requests"]
    if total > MAX_UNITS:
        raise ParameterError(
            f"inference_fee={full['inference_fee']} x inference_requests={full['inference_requests']} = {total} units "
            f"(the epoch pays them all, split by role) passes the ledger's integer range 2**53-1 = {MAX_UNITS}")


def check_text_fits(full: dict[str, Any], rows: int, source: str) -> None:
    """Refuse a ``text_scenario`` naming more contributors than the ``rows`` texts of ``source``
    leave for training once the test texts are held out (each contributor submits at least one)."""
    named = text_contributors(full["text_scenario"])
    pool = rows - held_out_count(rows) if rows >= 2 else 0
    if named > pool:
        raise ParameterError(f"text_scenario {full['text_scenario']!r} names {named} contributors but {source} leaves "
                             f"at most {pool} training texts (each contributor submits at least one)")


def text_contributors(spec: str) -> int:
    """How many contributors ``text_scenario`` ``spec`` names.

    Raises:
        ParameterError: naming ``text_scenario`` and what is wrong with ``spec``.
    """
    try:
        return sum(scenario_counts(spec, None, TEXT_BEHAVIOURS).values())
    except ScenarioError as exc:
        raise ParameterError(f"text_scenario: {exc}") from None


def _check_generation_plan(scenario: str, per_contributor: int) -> None:
    """Refuse a ``gen_scenario`` the LM Datanet cannot serve (see
    :func:`datanet.text.lm_datanet.scenario_plan`) or that, with ``gen_per_contributor``, draws
    or submits more documents than the bounds above allow."""
    try:
        counts = scenario_plan(scenario, DEFAULT_LM_PACKAGES)
    except ScenarioError as exc:
        raise ParameterError(f"gen_scenario: {exc}") from None
    per_package, off_topic = docstrings_needed(counts, per_contributor, len(DEFAULT_LM_PACKAGES))
    submitted = (sum(counts.values()) - counts["memorised"]) * per_contributor + counts["memorised"] * MEMORISED_COPIES
    where = f"gen_scenario {scenario!r} with gen_per_contributor={per_contributor}"
    for what, count, bound in ((f"docstrings from each of its {len(DEFAULT_LM_PACKAGES)} packages", per_package,
                                LM_PACKAGE_DOCSTRINGS),
                               ("off-topic docstrings", off_topic, OFF_TOPIC_DOCSTRINGS),
                               ("submitted documents", submitted, MAX_LM_DOCUMENTS)):
        if count > bound:
            raise ParameterError(f"{where} needs {count} {what}; at most {bound}")


LM_MODELS = ("scratch", "pretrained")
"""``lm_model``'s named settings: a GPT-2 trained from scratch on the LM Datanet, or the kit's base
GPT-2 (:mod:`datanet.models.lm_base`) fine-tuned on it; any other value is a local model directory."""


def check_lm_model(value: str) -> None:
    """Refuse an ``lm_model`` that is neither a named setting nor a local directory holding a saved
    causal LM with its tokenizer: nothing is ever downloaded, so a hub name is refused too."""
    if value in LM_MODELS:
        return
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ParameterError(f"lm_model {value!r} is not {' or '.join(map(repr, LM_MODELS))} nor a local directory "
                             f"(models are never downloaded: give a directory written by save_pretrained)")
    missing = [n for n in ("config.json", "tokenizer.json") if not (path / n).is_file()]
    if missing:
        raise ParameterError(f"lm_model {value!r}: the directory lacks {missing} (a causal LM saved with "
                             f"save_pretrained, with its fast tokenizer)")


def training_rows(table: Table) -> int:
    """How many rows of ``table`` contributors share: all but the held-out test set (its size
    does not depend on the seed)."""
    pool, _ = split_test(table, TEST_FRACTION, seed=0)
    return len(pool)


def check_fits(full: dict[str, Any], rows: int) -> None:
    """Refuse more contributors than the ``rows`` training rows of ``full``'s dataset, a reward
    pool that, with every stake slashed into it, would pass :data:`MAX_UNITS`, and rounds (notebook
    09) that the dataset cannot serve even with one row per batch, or batches larger than it."""
    from datanet_lab.experiments.rounds import rows_needed  # datanet_lab.experiments.rounds imports this module

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
    if rows_needed(full["rounds"], 1) > rows:
        raise ParameterError(f"rounds={full['rounds']}: dataset {full['dataset']!r} leaves {rows} training rows, fewer "
                             f"than the plan draws with one row per batch ({rows_needed(full['rounds'], 1)})")
    if full["round_rows"] > rows:
        raise ParameterError(f"round_rows={full['round_rows']}: more rows per batch than the {rows} training rows "
                             f"dataset {full['dataset']!r} leaves")


def check(params: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter's meaning (loading the dataset, reading the text file and ``lm_model``'s
    directory) and return the full parameter set (:func:`resolve`).

    Raises:
        DatanetError: the first problem found, naming the parameter and its value.
    """
    full = resolve(params)
    check_fits(full, training_rows(load_table(full["dataset"], full["label_column"])))
    if full["text_dataset"] != DOCSTRINGS:  # the user's text file: readable, with its two columns
        table = load_text_file(full["text_dataset"], full["text_column"], full["text_label_column"])
        check_text_fits(full, len(table), f"text file {full['text_dataset']} ({len(table)} rows)")
    check_lm_model(full["lm_model"])
    return full
