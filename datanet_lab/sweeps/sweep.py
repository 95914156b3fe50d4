"""``datanet-lab sweep``: execute a checked sweep's runs on an executor, resumably.

Runs land in ``OUT/<sweep>/<run_id>/``. A run whose directory exists is finished and skipped, so
a sweep killed or interrupted midway resumes where it stopped; failed and half-done runs are run
again. Each outcome is appended to the sweep ledger ``OUT/<sweep>/ledger.sqlite`` as a
``sweep_run`` entry (parameters and their hash, notebook hashes, executor, times, status, git
commit, source and installed-packages hashes, output hashes, metrics), signed with the sweep's
own keystore ``OUT/<sweep>/keys/``; the failed runs of this invocation are listed in
``OUT/<sweep>/failures.csv``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import Future, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

import ledger
from datanet_lab import provenance
from datanet_lab.batch.executors import open_executor
from datanet_lab.batch.runner import make_directory
from datanet_lab.sweeps.sweep_config import Run, Sweep
from datanet_lab.sweeps.sweep_task import Outcome, Task, environment, execute

log = logging.getLogger(__name__)

ACTOR = "sweep-runner"
KIND = "sweep_run"
FAILURE_COLUMNS = ["run_id", "notebook", "cell_index", "ename", "evalue"]


@dataclass(frozen=True)
class SweepResult:
    """Where the sweep went, how many runs it skipped as finished, and this invocation's failures."""

    directory: Path
    skipped: int
    done: int
    failures: pd.DataFrame


def run_sweep(sweep: Sweep, out: str | Path = "runs", executor: str = "local", workers: int = 1,
              scheduler: str | None = None, attempts: int = 3) -> SweepResult:
    """Execute every unfinished run of ``sweep`` on ``executor`` and record each outcome."""
    directory = Path(out).resolve() / sweep.name  # absolute: workers may run elsewhere
    notebooks = [{"name": nb.name, "sha256": provenance.file_sha256(nb)} for nb in sweep.notebooks]
    context = {"notebook_dir": str(sweep.notebooks[0].parent), "notebooks": notebooks, "kernel": sweep.kernel,
               "executor": executor}
    with open_executor(executor, workers, scheduler) as pool:
        make_directory(directory.parent, "runs")
        make_directory(directory, "sweep")
        with open_ledger(directory) as book:
            finished = {run.run_id for run in sweep.runs if (directory / run.run_id).is_dir()}
            _record_unrecorded(book, [r for r in sweep.runs if r.run_id in finished], directory, context)
            todo = [run for run in sweep.runs if run.run_id not in finished]
            futures = {pool.submit(execute, Task(run.run_id, run.params, sweep.notebooks, directory, sweep.kernel,
                                                 attempts)): run for run in todo}
            failures: list[dict[str, Any]] = []
            bar = tqdm(total=len(sweep.runs), initial=len(finished), desc=sweep.name, unit="run")
            bar.set_postfix(done=len(finished), failed=0, left=len(todo))
            try:
                for n, future in enumerate(as_completed(futures), start=1):
                    run = futures[future]
                    outcome = _outcome(future, run)
                    book.append(KIND, ACTOR, record(run, outcome, context))
                    if not outcome.ok:
                        failures.append({"run_id": run.run_id, **outcome.failure})
                        log.warning("run %s failed: %s", run.run_id, outcome.failure)
                    bar.update()
                    bar.set_postfix(done=len(finished) + n - len(failures), failed=len(failures), left=len(todo) - n)
            finally:
                bar.close()
                _write_failures(directory / "failures.csv", failures)
    return SweepResult(directory, len(finished), len(todo) - len(failures), pd.DataFrame(failures, columns=FAILURE_COLUMNS))


def open_ledger(directory: Path) -> ledger.Ledger:
    """The sweep ledger of ``directory``, signing with the sweep's own keystore ``keys/``."""
    book = ledger.Ledger(directory / "ledger.sqlite", keystore=ledger.Keystore(directory / "keys"))
    book.register(ACTOR, "runner")
    return book


def record(run: Run, outcome: Outcome, context: dict[str, Any]) -> dict[str, Any]:
    """The ``sweep_run`` ledger payload of ``run``'s ``outcome``."""
    fields = asdict(outcome)
    return {
        **fields, **context, "status": "ok" if outcome.ok else "failed", "params": run.params,
        "params_sha256": hashlib.sha256(ledger.canonical_json(run.params)).hexdigest(),
    }


def _outcome(future: Future, run: Run) -> Outcome:
    """The future's outcome; a worker that died (or a broken pool) becomes a failed outcome."""
    try:
        return future.result()
    except Exception as exc:  # the executor's own failure, not the run's: recorded, and the sweep goes on
        return Outcome(run.run_id, started="", seconds=0.0, attempts=0, **environment(),
                       failure={"notebook": None, "cell_index": None, "ename": type(exc).__name__, "evalue": str(exc)})


def _record_unrecorded(book: ledger.Ledger, finished: list[Run], directory: Path, context: dict[str, Any]) -> None:
    """Record finished runs that have no ``ok`` entry (the sweep died between the two steps)."""
    recorded = {e.payload["run_id"] for e in book.entries(KIND) if e.payload["status"] == "ok"}
    records = []
    for run in (r for r in finished if r.run_id not in recorded):
        metrics = directory / run.run_id / "metrics.json"
        outcome = Outcome(run.run_id, started="", seconds=0.0, attempts=0, **environment(),
                          outputs=provenance.output_hashes(directory / run.run_id),
                          metrics=json.loads(metrics.read_text()) if metrics.is_file() else None)
        records.append((KIND, ACTOR, record(run, outcome, context)))
    book.append_many(records)


def _write_failures(path: Path, failures: list[dict[str, Any]]) -> None:
    """Write ``failures.csv`` whole (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(failures, columns=FAILURE_COLUMNS).to_csv(temporary, index=False)
    os.replace(temporary, path)
