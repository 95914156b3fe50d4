"""One run of a sweep, as a worker executes it: a picklable task in, a picklable outcome out.

The run is built in ``DIR/.partial-<run_id>`` and renamed to ``DIR/<run_id>`` when every notebook
succeeded, or to ``DIR/<run_id>.failed`` (executed notebooks kept) when a cell raised. A kernel
that fails to start or dies restarts the whole run in a fresh directory, up to ``attempts`` times.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from datanet_lab import provenance
from datanet_lab.batch.runner import NotebookFailed, execute_chain

ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
"""Each run's kernels compute on one thread: runs in parallel do not oversubscribe the cores, and
every executor (a Dask nanny sets the same) gives bit-identical numbers."""
KERNEL_ERRORS = (RuntimeError, TimeoutError)
"""What papermill lets through when a kernel fails to start or dies: retried. Cell errors arrive
as :class:`NotebookFailed`; anything else (an unknown kernel name is a ``KeyError``) fails the run
at once."""


@dataclass(frozen=True)
class Task:
    """Run ``params`` through ``notebooks`` into ``directory/<run_id>``."""

    run_id: str
    params: dict[str, Any]
    notebooks: tuple[Path, ...]
    directory: Path
    kernel: str = "python3"
    attempts: int = 3


@dataclass(frozen=True)
class Outcome:
    """What became of a task: ``failure`` is ``None`` for a finished run."""

    run_id: str
    started: str
    seconds: float
    attempts: int
    git_commit: str | None
    packages_sha256: str
    code_sha256: str
    packages: dict[str, str] = field(default_factory=dict)
    """``{name: version}`` of every installed package (:func:`provenance.installed_packages`)."""
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def execute(task: Task) -> Outcome:
    """Execute ``task`` (in a worker process) and describe what happened; never raises for a
    failing notebook or kernel."""
    os.environ.update(ONE_THREAD)
    started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    partial = task.directory / f".partial-{task.run_id}"
    failure = None
    for attempt in range(1, task.attempts + 1):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "params.yaml").write_text(yaml.safe_dump(task.params, sort_keys=True))
        provenance.write_environment(partial)
        try:
            execute_chain(task.notebooks, task.params, partial, task.kernel)
            failure = None
            break
        except NotebookFailed as exc:
            failure = {"notebook": exc.notebook, "cell_index": exc.cell_index, "ename": exc.ename, "evalue": exc.evalue}
            break
        except Exception as exc:  # the kernel failed: retried when it is one of KERNEL_ERRORS
            failure = {"notebook": _last_notebook(partial, task.notebooks), "cell_index": None,
                       "ename": type(exc).__name__, "evalue": str(exc)}
            if not isinstance(exc, KERNEL_ERRORS):
                break
    final = task.directory / (task.run_id if failure is None else f"{task.run_id}.failed")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    metrics_path = final / "metrics.json"
    return Outcome(
        run_id=task.run_id, started=started, seconds=round(time.perf_counter() - clock, 3), attempts=attempt,
        **environment(), outputs=provenance.output_hashes(final) if failure is None else {},
        metrics=json.loads(metrics_path.read_text()) if failure is None and metrics_path.is_file() else None,
        failure=failure,
    )


def environment() -> dict[str, Any]:
    """The :class:`Outcome` fields that describe where a run executed."""
    return {"git_commit": provenance.git_commit(), "packages_sha256": provenance.packages_sha256(),
            "code_sha256": provenance.code_sha256(), "packages": provenance.installed_packages()}


def _last_notebook(run_dir: Path, notebooks: tuple[Path, ...]) -> str:
    """The notebook that was executing: the last one of the chain with an output in ``run_dir``."""
    started = [nb.name for nb in notebooks if (run_dir / nb.name).is_file()]
    return started[-1] if started else notebooks[0].name
