"""Results files: the figures a long run or a benchmark prints, as small JSON the README is checked against.

The long commands (``datanet-lab run --text``, ``datanet-lab run --generation``) and the
benchmarks the README quotes each write one file with :func:`write`::

    {"command": "...", "parameters": {...}, "environment": {...}, "figures": {"name": value, ...}}

``figures`` is flat (dotted names), holding only what the README shows, in the units it shows
(percentages as percentages); ``environment`` names Python, the platform and the versions of the
packages the figures depend on. ``make run-text``, ``make run-generation`` and ``make bench`` copy
the files into ``docs/results/``, where they are committed, and ``tests/test_readme.py`` checks
every figure of a README block marked ``<!-- checked against docs/results/NAME.json: names -->``
against them. :func:`text_figures` and :func:`generation_figures` read a finished run directory
(its files and its steps' stored outputs: nothing is recomputed).
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PACKAGES = ("numpy", "torch", "transformers", "captum", "scikit-learn", "infini-gram", "tokenizers", "fastapi",
            "uvicorn", "kronfluence")
"""Whose versions a results file records (those not installed are left out)."""
DECIMALS = 6
"""Floats are stored rounded to this many decimals: the README prints at most 4."""


def environment() -> dict[str, Any]:
    """Python, the platform and the installed versions of :data:`PACKAGES`."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


def write(path: str | Path, figures: dict[str, Any], command: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the results file ``path`` (sorted keys, indent 2) and return what it holds.

    Raises:
        ValueError: a figure is neither a number, a string nor a bool, or is not finite.
    """
    record = {"command": command, "parameters": _plain(parameters or {}), "environment": environment(),
              "figures": {name: _figure(name, value) for name, value in sorted(figures.items())}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read(path: str | Path) -> dict[str, Any]:
    """A results file's content, as :func:`write` wrote it.

    Raises:
        ValueError: the file lacks ``command`` or ``figures``.
    """
    record = json.loads(Path(path).read_text())
    missing = {"command", "figures"} - set(record)
    if missing:
        raise ValueError(f"{path} is not a results file: no {sorted(missing)}")
    return record


def _figure(name: str, value: Any) -> float | int | str | bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"figure {name!r} is {value!r}: a results file holds finite figures only")
        return round(float(value), DECIMALS)
    if isinstance(value, str):
        return value
    raise ValueError(f"figure {name!r} is a {type(value).__name__}: a results file holds numbers and strings")


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers (JSON-serialisable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _run_params(run_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((Path(run_dir) / "params.yaml").read_text())


def _table_figures(table: pd.DataFrame, keys: list[str], columns: list[str]) -> dict[str, Any]:
    """``{"<key values>.<column>": value}`` for each row of ``table``."""
    return {".".join([*(str(row[k]) for k in keys), column]): row[column]
            for _, row in table.iterrows() for column in columns if pd.notna(row[column])}


def _ceiling(directory: Path) -> dict[str, float]:
    """``{"ceiling": the seed ceiling}`` from ``ceiling.json``; empty with one retrain seed (no ceiling)."""
    ceiling = json.loads((directory / "ceiling.json").read_text())["ceiling"]
    return {} if ceiling is None else {"ceiling": ceiling}


# The text run (notebook 07, `make run-text`)

TEXT_TARGETS = {"exact_influence_lds": 0.95, "fine_tuned_margin": 0.1, "backdoor_precision_at_10": 0.9,
                "sybil_gain": 1.1, "noisy_auc": 0.95}
"""The text run's targets its figures are measured against (the README's targets table)."""
BACKDOOR_TOP = 50
"""How many of the highest-ranked training rows the backdoor figures look at (``precision_at_50``)."""


def text_figures(run_dir: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of a finished text run ``run_dir`` (the run directory, holding ``text/``; run
    with ``params``, default its ``params.yaml``): data counts, test accuracies, the comparison
    table, the seed ceiling (with two or more retrain seeds), the backdoor forensics, the
    paraphrase sybil's gain and the trigger's share of token IG."""
    import attribution
    from datanet.models import encoders
    from datanet.text.behaviours import DEFAULT_TRIGGER
    from datanet_lab import pipeline
    from datanet_lab.experiments import compare_text
    from datanet_lab.pipeline import text

    run_dir = Path(run_dir)
    run = text.text_run(pipeline.open_run(str(run_dir), **(params or _run_params(run_dir))))
    built, trained, found = text.build_text(run), text.train_text(run), text.attribute_text(run)
    dn, truth = built.datanet, built.ground_truth
    figures: dict[str, Any] = {"texts.accepted": len(dn.train_texts), "texts.test": len(dn.test_texts),
                               "classes": dn.n_classes, "compare.test_texts": compare_text.COMPARE_TEST}
    models = trained.models.set_index("model")["test_accuracy"]
    figures |= {f"accuracy.{model}": float(acc) for model, acc in models.items()}
    figures["accuracy.standard_error"] = max(math.sqrt(p * (1 - p) / len(dn.test_texts)) for p in models)

    directory = run.directory
    table = pd.read_csv(directory / "comparison.csv")
    shown = table[~table["method"].isin(["random", "grad_dot"])]  # random and the frozen model's gradient dot
    figures |= _table_figures(shown, ["model", "method"], ["lds_sample", "lds_sample_ci95", "lds_contributor",
                                                            "noisy_auc", "noisy_sample_auc", "seconds", "peak_mib"])
    figures |= _table_figures(table[table["method"].isin(["random", "grad_dot"])], ["model", "method"], ["lds_sample"])
    figures |= {f"target.{name}": value for name, value in TEXT_TARGETS.items()}
    lds = table.set_index(["model", "method"])["lds_sample"]
    figures |= _ceiling(directory)
    figures["target.exact_influence_shortfall"] = TEXT_TARGETS["exact_influence_lds"] - lds["minilm_frozen", "influence_exact"]
    tuned = lds["minilm"].drop(["grad_dot_fast", "random"], errors="ignore")
    figures["target.fine_tuned_best"] = tuned.idxmax()
    figures["target.fine_tuned_margin"] = tuned.max() - lds["minilm", "grad_dot_fast"]
    figures["target.fine_tuned_shortfall"] = TEXT_TARGETS["fine_tuned_margin"] - figures["target.fine_tuned_margin"]

    backdoor = pd.read_csv(directory / "backdoor.csv").set_index("method").loc["tracin_fast"]
    figures |= {f"backdoor.{name}": backdoor[name] for name in (
        "auc", "precision_at_10", "normalized_auc", "normalized_precision_at_10")}
    figures["backdoor.poisoned_rows"] = int(backdoor["poisoned_rows"])
    figures["backdoor.attack_success_pct"] = 100 * backdoor["attack_success"]
    figures["backdoor.top"] = BACKDOOR_TOP
    figures["backdoor.normalized_top_poisoned"] = round(BACKDOOR_TOP * backdoor[f"normalized_precision_at_{BACKDOOR_TOP}"])
    counts = pipeline.submission_counts(dn).join(truth.groupby("contributor")["behaviour"].first())
    figures["backdoor.rejected"] = int(counts.loc[counts["behaviour"] == "backdoor", "rejected"].sum())

    gain = compare_text.sybil_gain(built, found.contributor_credit)
    sybils = truth[truth["behaviour"] == "paraphrase_sybil"]
    figures["sybil.gain"] = float(gain["gain"].max())
    figures["sybil.copies"] = len(sybils)
    figures["sybil.accepted_copies"] = int(gain["accepted_copies"].sum())
    figures["sybil.rejected_copies"] = len(sybils) - figures["sybil.accepted_copies"]
    figures["target.sybil_gain_excess"] = figures["sybil.gain"] - TEXT_TARGETS["sybil_gain"]

    tokenizer = encoders.load_tokenizer()
    ig, triggered = found.explained.ig, found.explained.triggered
    trigger = tokenizer(DEFAULT_TRIGGER, add_special_tokens=False)["input_ids"]
    mass = attribution.trigger_mass(ig.attributions, ig.input_ids, trigger)[triggered]
    share = len(trigger) / ig.attention_mask[triggered].sum(axis=1)
    figures |= {"ig.trigger_mass_pct.min": 100 * mass.min(), "ig.trigger_mass_pct.max": 100 * mass.max(),
                "ig.trigger_tokens_pct.min": 100 * share.min(), "ig.trigger_tokens_pct.max": 100 * share.max()}
    n_params = sum(p.numel() for p in trained.model.parameters() if p.requires_grad)
    figures["fine_tuned.gradient_mib"] = 4 * n_params / 2**20
    return figures


# The generation run (notebook 08, `make run-generation`)

def generation_figures(run_dir: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of a finished generation run ``run_dir`` (the run directory, holding
    ``generation/``; run with ``params``, default its ``params.yaml``): data and training, the
    comparison with LOCO and its seed ceiling (with two or more retrain seeds), the
    memorised passage's payment and LOCO drop, the generations span credit cannot pay, the most
    shared generation's payments and the duplicate's earnings."""
    from datanet_lab import pipeline
    from datanet_lab.pipeline import generation as gen

    run_dir = Path(run_dir)
    params = params or _run_params(run_dir)
    run = gen.generation_run(pipeline.open_run(str(run_dir), **params))
    directory = run.directory
    behaviours = pd.Series(gen.build_generation(run).behaviours)
    summary = json.loads((directory / "training" / "summary.json").read_text())
    figures: dict[str, Any] = {
        "documents": summary["train_documents"], "tokens": summary["train_tokens"],
        "training.seconds": summary["seconds"], "training.tokens_per_second": summary["tokens_per_second"],
        "perplexity.validation": summary["validation_perplexity"], "perplexity.unigram": summary["unigram_perplexity"]}
    if summary.get("base_validation_perplexity") is not None:  # fine-tuned: the base before it
        figures["perplexity.base"] = summary["base_validation_perplexity"]

    table = pd.read_csv(directory / "comparison.csv")
    figures |= _table_figures(table, ["method"], ["spearman", "ci_low", "ci_high", "generations", "undefined"])
    figures |= _ceiling(directory)

    paid = pd.read_csv(directory / "credit" / "generation_credit.csv")
    units = paid.pivot_table(index="contributor", columns="generation", values="units", aggfunc="sum", fill_value=0)
    n_generations = params["gen_prompts"]
    figures["generations"] = n_generations
    memorised = behaviours[behaviours == "memorised"].index[0]
    first = gen.generation_id(0)  # its prompt opens the memorised passage
    figures["memorised.units"] = int(units.loc[memorised, first]) if memorised in units.index else 0
    loco = pd.read_csv(directory / "loco.csv", index_col="contributor")[first]
    figures["memorised.loco_drop"] = float(loco[memorised])
    figures["memorised.next_loco_drop"] = float(loco.drop(memorised).max())

    spans = pd.read_csv(directory / "credit" / "spans.csv")
    figures["generations_without_span"] = n_generations - spans["generation"].nunique()
    shared = (units > 0).sum(axis=0)
    example = shared[shared == shared.max()].index[0]  # the first generation paying the most contributors
    paid_units = units[example][units[example] > 0].sort_values(ascending=False, kind="stable")
    figures["shared.generation"] = example
    figures["shared.contributors"] = len(paid_units)
    figures |= {f"shared.units.{k}": int(v) for k, v in enumerate(paid_units)}
    figures["shared.behaviours"] = ", ".join(sorted(set(behaviours[paid_units.index])))
    duplicate = behaviours[behaviours == "duplicate"].index
    figures["duplicate.units"] = int(units.reindex(duplicate, fill_value=0).to_numpy().sum())
    return figures
