"""Experiments on a run (method comparisons) as steps of the step engine, keyed by their parameters.

An experiment's result (a dataclass) is saved under ``<run>/<folder>/<key>/``, where ``key`` is
the first 16 hex digits of the SHA-256 of its parameters' canonical JSON, with the manifest
``manifests/<folder>-<key>.json``: the parameters and the hashes of the run steps' manifests it
read (``inputs``). Asked again with the same parameters on the same inputs, the result is read back
(:func:`~datanet_lab.pipeline.engine.run_step`); with other parameters it is another step beside
the first, so an exploration is never refused and never answered from another parameter set's
result; an input changed since raises :class:`~datanet_lab.pipeline.manifest.ManifestError`.
Caches shared across parameter sets (retrained models' losses) stay outside the result, each
entry keyed on what produced it (:class:`attribution.groundtruth.RetrainCache`).

A result's fields are saved by type (:func:`save_result`): DataFrames as Parquet, arrays as
``.npy``, mappings of arrays as ``.npz`` (in order), everything else in ``fields.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.run import Run

Result = TypeVar("Result")
FIELDS = "fields.json"


def run_experiment(run: Run, folder: str, params: Mapping[str, Any], inputs: tuple[str, ...],
                   compute: Callable[[Path], Result], kind: type[Result]) -> Result:
    """The result of ``compute(scratch)`` (a ``kind`` dataclass) for ``params`` (JSON values):
    read back when ``run`` holds it from the same ``params`` and ``inputs`` (names of the run's
    steps whose outputs it reads), otherwise computed and saved (module docstring).
    ``scratch`` is ``<run>/<folder>/``, for caches shared by every parameter set.

    Raises:
        ManifestError: an input step's outputs changed since the result was saved.
        TypeError: a parameter is not a JSON value.
    """
    canonical = json.loads(json.dumps(dict(params), allow_nan=False))
    key = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    named = {f"{folder}.{name}": value for name, value in canonical.items()}
    step = manifest.Step(f"{folder}-{key}", tuple(named), inputs, (f"{folder}/{key}",))

    def _compute(keyed: Run, staging: Path) -> Result:
        result = compute(run.directory / folder)
        save_result(result, staging / folder / key)
        return result

    procedure = Procedure(step, _compute, lambda keyed: load_result(kind, keyed.directory / folder / key))
    return run_step(Run(run.directory, {**run.params, **named}), procedure)


def save_result(result: Any, folder: Path) -> None:
    """Save the dataclass ``result`` field by field in the new ``folder`` (module docstring).

    Raises:
        TypeError: a field ``fields.json`` cannot hold (named).
    """
    folder.mkdir(parents=True)
    plain = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, pd.DataFrame):
            value.to_parquet(folder / f"{field.name}.parquet")
        elif isinstance(value, np.ndarray):
            np.save(folder / f"{field.name}.npy", value, allow_pickle=False)
        elif isinstance(value, Mapping) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            np.savez(folder / f"{field.name}.npz", **value)
        else:
            plain[field.name] = value
    try:
        text = json.dumps(plain, default=_json_number, indent=2, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"{type(result).__qualname__}: a field {FIELDS} cannot hold ({error})") from None
    (folder / FIELDS).write_text(text + "\n")


def load_result(kind: type[Result], folder: Path) -> Result:
    """The ``kind`` dataclass :func:`save_result` saved in ``folder``."""
    plain = json.loads((folder / FIELDS).read_text())
    values = {}
    for field in dataclasses.fields(kind):
        stem = folder / field.name
        if stem.with_suffix(".parquet").is_file():
            values[field.name] = pd.read_parquet(stem.with_suffix(".parquet"))
        elif stem.with_suffix(".npy").is_file():
            values[field.name] = np.load(stem.with_suffix(".npy"), allow_pickle=False)
        elif stem.with_suffix(".npz").is_file():
            with np.load(stem.with_suffix(".npz"), allow_pickle=False) as stored:
                values[field.name] = {name: stored[name] for name in stored.files}
        else:
            values[field.name] = plain[field.name]
    return kind(**values)


def _json_number(value: Any) -> Any:
    """NumPy scalars as Python numbers (``fields.json``); anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__qualname__} value {value!r} is not a JSON value")
