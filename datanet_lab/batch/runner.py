"""The default batch: execute the numbered notebooks in order with papermill into one run directory.

Parameters are checked before anything is written (unknown names, wrong types, bad values). The
run is executed in ``OUT/.partial-<run_id>`` and renamed to ``OUT/<run_id>`` only when every
notebook succeeded, so a run directory is never half-written; a failed run is kept as
``OUT/<run_id>.failed`` with its executed notebooks for inspection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import papermill
import yaml

from datanet import BUILTIN_DATASETS, DatanetError
from datanet_lab import provenance
from datanet_lab.params import DOCSTRINGS, RUN_DIR, ParameterError, check

log = logging.getLogger(__name__)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = ("01_build_datanet.ipynb", "02_train.ipynb", "03_attribute.ipynb", "04_ledger_and_payouts.ipynb",
             "05_compare_methods.ipynb", "06_compare_mlp.ipynb", "09_inference_economy.ipynb")
"""The default batch (tabular Datanets)."""
TEXT_NOTEBOOKS = ("07_text_datanet.ipynb",)
"""The text batch (``datanet-lab run --text``): a text Datanet on MiniLM, in ``<run>/text/``."""
GENERATION_NOTEBOOKS = ("08_generation_credit.ipynb",)
"""The generation batch (``datanet-lab run --generation``): a GPT-2 on an LM Datanet, credit for
its generations by span matching, in ``<run>/generation/``."""


class RunFailed(DatanetError):
    """A notebook of the batch raised; the partial run is kept for inspection."""


class NotebookFailed(DatanetError):
    """A cell of ``notebook`` raised ``ename: evalue``; its executed notebook is kept."""

    def __init__(self, notebook: str, cell_index: int, ename: str, evalue: str) -> None:
        super().__init__(f"{notebook} failed in cell {cell_index}: {ename}: {evalue}")
        self.notebook, self.cell_index, self.ename, self.evalue = notebook, cell_index, ename, evalue

    def __reduce__(self) -> tuple:  # picklable across process and Dask workers
        return type(self), (self.notebook, self.cell_index, self.ename, self.evalue)


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default source text of a notebook's ``parameters`` cell (papermill's parser)."""
    return {name: spec["default"] for name, spec in papermill.inspect_notebook(str(notebook)).items()}


def run_batch(params: dict[str, Any], out: str | Path = "results", notebook_dir: Path = NOTEBOOK_DIR,
              names: Sequence[str] = NOTEBOOKS) -> Path:
    """Check ``params``, execute the notebooks ``names`` (default: the default batch) in order
    into a new run directory and return its path.

    ``params`` (already typed, e.g. by :func:`datanet_lab.params.coerce`), completed by
    :func:`datanet_lab.params.check`, go to each notebook that declares them; ``out/latest`` is
    pointed at the finished run.
    """
    notebooks = [notebook_dir / name for name in names]
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    known = set().union(*declared.values()) - {RUN_DIR}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}: no notebook declares them; known: {sorted(known)}")
    full = check(params)
    if full["dataset"] not in BUILTIN_DATASETS:  # a file path: notebooks run in another directory
        full["dataset"] = str(Path(full["dataset"]).resolve())
    if full["text_dataset"] != DOCSTRINGS:
        full["text_dataset"] = str(Path(full["text_dataset"]).resolve())
    out = make_directory(Path(out), "results")
    run_id = _new_run_id(out, full)
    partial = out / f".partial-{run_id}"
    partial.mkdir()
    (partial / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=True))
    provenance.write_environment(partial)
    try:
        execute_chain(notebooks, full, partial)
    except NotebookFailed as exc:
        failed = partial.rename(out / f"{run_id}.failed")
        raise RunFailed(f"{exc} (executed notebook kept in {failed})") from exc
    final = partial.rename(out / run_id)
    _point_latest(out, run_id)
    return final


def make_directory(path: Path, role: str) -> Path:
    """Create the ``role`` directory ``path`` (and its parents) unless it exists; return it.

    Raises:
        ParameterError: ``path`` is not a directory or cannot be created (the OS's reason given).
    """
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{role} directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create the {role} directory {path}: {exc.strerror or exc}") from None
    return path


def execute_chain(notebooks: Sequence[Path], params: dict[str, Any], run_dir: Path, kernel_name: str = "python3") -> None:
    """Execute ``notebooks`` in order into the existing ``run_dir``, each given the ``params`` it
    declares plus ``run_dir``.

    Raises:
        NotebookFailed: a cell raised; the executed notebook up to that cell is in ``run_dir``.
    """
    for notebook in notebooks:
        declared = declared_parameters(notebook)
        given = {k: v for k, v in params.items() if k in declared}
        log.info("executing %s", notebook.name)
        try:
            papermill.execute_notebook(
                str(notebook), str(run_dir / notebook.name), parameters={**given, RUN_DIR: str(run_dir.resolve())},
                kernel_name=kernel_name, cwd=str(notebook.parent), progress_bar=False,
            )
        except papermill.PapermillExecutionError as exc:
            raise NotebookFailed(notebook.name, exc.cell_index, exc.ename, exc.evalue) from None


def _new_run_id(out: Path, params: dict[str, Any]) -> str:
    """``YYYYmmddTHHMMSSZ-<params hash>``, with a counter when that name is taken."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    base = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{digest}"
    run_id, n = base, 1
    while any((out / name).exists() for name in (run_id, f".partial-{run_id}", f"{run_id}.failed")):
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _point_latest(out: Path, run_id: str) -> None:
    """Atomically point ``out/latest`` at ``run_id`` (a relative symlink)."""
    temporary = out / f".latest-{run_id}"
    temporary.symlink_to(run_id)
    os.replace(temporary, out / "latest")
