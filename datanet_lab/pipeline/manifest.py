"""Step manifests: what each pipeline step was made from and what it wrote.

After a step has written its outputs and recorded them in the ledger, it writes
``manifests/<step>.json`` (atomically: a temporary file renamed over the target)::

    {"step": "train",
     "params": {"dataset": "digits", ..., "model": "logreg", "epochs": 10},  (only those it depends on)
     "params_sha256": "...",                      (of the canonical JSON of "params")
     "inputs": {"build": "<sha256 of manifests/build.json>"},
     "outputs": {"training/history.csv": "<sha256>", "training/checkpoints/epoch_001.pt": ...}}

A step reuses what a run directory holds only when all three match: the parameters it depends on,
its upstream manifests, and the bytes of every output file (no file missing, none added). Any
mismatch raises :class:`ManifestError` naming the step and the parameter, input or file with its
old and new value; the step never recomputes over them. Outputs already fed the run's ledger (a
training run record, an attribution record, payouts), so overwriting them would leave a ledger
that records one thing and a directory that holds another: a run with other parameters needs a
fresh run directory. Outputs without a manifest are refused the same way by :func:`check`; the
step engine (:func:`~datanet_lab.pipeline.engine.run_step`) finishes such a step instead when the
ledger holds exactly the records its recomputation makes (a step stopped before its manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datanet import DatanetError
from datanet_lab.provenance import file_sha256

MANIFEST_DIR = "manifests"


class ManifestError(DatanetError):
    """A run directory holds a step's outputs made from other parameters or inputs, altered
    since, or left without a manifest."""


@dataclass(frozen=True)
class Step:
    """A pipeline step: the run parameters it depends on, the steps whose outputs it reads, and
    the paths (files or folders, relative to the run directory) it writes."""

    name: str
    params: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


BUILD = Step("build", ("dataset", "label_column", "n_contributors", "scenario", "noise_rate", "seed"), (),
             ("dataset", "planted"))
TRAIN = Step("train", (*BUILD.params, "model", "epochs"), ("build",), ("training",))
ATTRIBUTE = Step("attribute", (*TRAIN.params, "attribution_method"), ("build", "train"), ("attribution",))
PAY = Step("pay", (*ATTRIBUTE.params, "reward_pool"), ("build", "train", "attribute"), ("payouts.csv", "metrics.json"))

# A text run's steps (in its own directory, ``<run>/text/``); ``encode`` caches the frozen encoder's outputs.
TEXT_BUILD = Step("build", ("text_dataset", "text_column", "text_label_column", "text_scenario", "text_per_package",
                            "text_max_tokens", "noise_rate", "seed"), (), ("dataset", "planted"))
TEXT_ENCODE = Step("encode", TEXT_BUILD.params, ("build",), ("features",))
TEXT_TRAIN = Step("train", (*TEXT_BUILD.params, "text_epochs"), ("build", "encode"), ("training",))
TEXT_ATTRIBUTE = Step("attribute", (*TEXT_TRAIN.params, "text_attribution_method", "text_ig_examples"),
                      ("build", "encode", "train"), ("attribution",))
TEXT_PAY = Step("pay", (*TEXT_ATTRIBUTE.params, "reward_pool"), ("build", "encode", "train", "attribute"),
                ("payouts.csv", "metrics.json"))

# A generation run's steps (``<run>/generation/``): an LM Datanet, a GPT-2 trained on it, the span
# index of its training documents, seeded generations, and their payments by span credit.
GEN_BUILD = Step("build", ("gen_scenario", "gen_per_contributor", "gen_prompts", "seed"), (), ("dataset",))
GEN_TRAIN = Step("train", (*GEN_BUILD.params, "gen_epochs", "gen_width", "gen_vocab_size", "lm_model", "lm_lora_rank"),
                 ("build",), ("training",))
GEN_INDEX = Step("index", GEN_TRAIN.params, ("build", "train"), ("index",))
GEN_GENERATE = Step("generate", (*GEN_TRAIN.params, "gen_max_new_tokens", "gen_temperature"), ("build", "train"),
                    ("generations.jsonl",))
GEN_PAY = Step("pay", (*GEN_GENERATE.params, "gen_min_span", "gen_max_count", "generation_fee"),
               ("build", "train", "index", "generate"), ("credit",))


def manifest_path(run_dir: Path, step: Step | str) -> Path:
    return Path(run_dir) / MANIFEST_DIR / f"{step if isinstance(step, str) else step.name}.json"


def output_files(run_dir: Path, step: Step) -> dict[str, str]:
    """SHA-256 of every file the step's outputs hold now, by run-relative POSIX path."""
    run_dir = Path(run_dir)
    files: list[Path] = []
    for name in step.outputs:
        target = run_dir / name
        files += sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target] if target.is_file() else []
    return {p.relative_to(run_dir).as_posix(): file_sha256(p) for p in files}


def expected(run_dir: Path, step: Step, params: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields fixed before the step runs: its parameters and its inputs' hashes."""
    mine = {name: params[name] for name in step.params}
    inputs = {}
    for name in step.inputs:
        upstream = manifest_path(run_dir, name)
        if not upstream.is_file():
            raise ManifestError(f"{step.name}: its input step {name!r} has no manifest {upstream}")
        inputs[name] = file_sha256(upstream)
    return {"step": step.name, "params": mine, "params_sha256": _sha256_json(mine), "inputs": inputs}


def check(run_dir: Path, step: Step, params: dict[str, Any]) -> bool:
    """True when ``run_dir`` holds the step's outputs made from ``params`` and the current inputs,
    unaltered; False when it holds none of them (the step is still to run).

    Raises:
        ManifestError: outputs made from other parameters or inputs, altered or missing files,
            files the manifest does not list, or outputs without a manifest.
    """
    path = manifest_path(run_dir, step)
    if not path.is_file():
        present = [name for name in step.outputs if (Path(run_dir) / name).exists()]
        if present:
            raise ManifestError(f"{step.name}: {Path(run_dir)} holds {present} without the step's manifest {path} "
                                f"(an interrupted step or another version's run); use a fresh run directory")
        return False
    try:
        recorded = json.loads(path.read_text())
        fields = {key: recorded[key] for key in ("step", "params", "params_sha256", "inputs", "outputs")}
    except (ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"{step.name}: {path} is not a step manifest ({error!r})") from None
    if fields["params_sha256"] != _sha256_json(fields["params"]):
        raise ManifestError(f"{step.name}: {path} was edited (its params_sha256 does not match its params)")
    now = expected(run_dir, step, params)
    for name in sorted(set(now["params"]) | set(fields["params"])):
        old, new = fields["params"].get(name, "<absent>"), now["params"].get(name, "<absent>")
        if old != new:
            raise ManifestError(f"{step.name}: {Path(run_dir)} was made with {name}={old!r}, this run asks for "
                                f"{name}={new!r}; use a fresh run directory")
    for name in sorted(set(now["inputs"]) | set(fields["inputs"])):
        old, new = fields["inputs"].get(name), now["inputs"].get(name)
        if old != new:
            raise ManifestError(f"{step.name}: its input {MANIFEST_DIR}/{name}.json changed since the step ran "
                                f"(sha256 {old} then, {new} now)")
    _compare_outputs(step, fields["outputs"], output_files(run_dir, step))
    return True


def write(run_dir: Path, step: Step, params: dict[str, Any]) -> dict[str, Any]:
    """Write the step's manifest over the outputs it holds now (atomically); return it."""
    manifest = expected(run_dir, step, params) | {"outputs": output_files(run_dir, step)}
    path = manifest_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return manifest


def _compare_outputs(step: Step, recorded: dict[str, str], found: dict[str, str]) -> None:
    for name in sorted(set(recorded) | set(found)):
        if name not in found:
            raise ManifestError(f"{step.name}: output {name} is missing (the manifest lists it, sha256 {recorded[name]})")
        if name not in recorded:
            raise ManifestError(f"{step.name}: {name} was added after the step ran (not in its manifest)")
        if recorded[name] != found[name]:
            raise ManifestError(f"{step.name}: output {name} was altered after the step ran "
                                f"(sha256 {recorded[name]} recorded, {found[name]} now)")


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
