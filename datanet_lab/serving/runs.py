"""The run a server attributes with: a run directory whose build, train and attribute steps are
done, read through their manifests (:mod:`~datanet_lab.pipeline.manifest`), never recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datanet import DatanetError
from datanet_lab.params import DEFAULTS
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.pipeline.run import Run

STEPS = (manifest.BUILD, manifest.TRAIN, manifest.ATTRIBUTE)
"""The pipeline steps a served run needs, in order."""
_STEP_FUNCTIONS = {"build": "build", "train": "train_model", "attribute": "attribute"}
"""The :mod:`datanet_lab.pipeline` function that runs each step, for error messages."""


class ServingError(DatanetError):
    """A run that cannot be served: a step missing, an attribution method without query-time
    attribution, or outputs that disagree with each other; the message names which."""


def served_run(run: str | Path | Run) -> Run:
    """``run``, or the run in directory ``run`` with the parameters its attribute manifest
    records, once every step of :data:`STEPS` is verified done with unaltered outputs.

    Raises:
        ServingError: no such directory, or a step not run (the first one missing is named).
        ManifestError: a step's outputs altered or made from other parameters.
    """
    if not isinstance(run, Run):
        directory = Path(run)
        if not directory.is_dir():
            raise ServingError(f"run directory not found: {directory}")
        for step in STEPS:
            if not manifest.manifest_path(directory, step).is_file():
                raise _missing(directory, step)
        path = manifest.manifest_path(directory, manifest.ATTRIBUTE)
        try:
            params = json.loads(path.read_text())["params"]
        except (ValueError, KeyError, TypeError) as error:
            raise ServingError(f"{path} is not a step manifest ({error!r})") from None
        run = Run(directory, {**DEFAULTS, **params})
    for step in STEPS:
        if not manifest.check(run.directory, step, run.params):
            raise _missing(run.directory, step)
    return run


def run_test_inputs(run: str | Path | Run) -> np.ndarray:
    """``(n_test, n_features)`` float64 the served run's held-out test inputs, as requests."""
    return datanet(served_run(run)).test_x.astype(np.float64)


def _missing(directory: Path, step: manifest.Step) -> ServingError:
    return ServingError(f"{directory}: the run has no {step.name!r} step (no {manifest.manifest_path(directory, step)}); "
                        f"run it first (datanet-lab run, or datanet_lab.pipeline.{_STEP_FUNCTIONS[step.name]})")
