"""``datanet-lab reproduce runs/<sweep>/<run_id>``: re-execute a recorded run and compare.

The run is rebuilt from its last ``ok`` entry in the sweep ledger (parameters, notebook chain,
kernel), never from files of the run directory, into a fresh directory, the same way a sweep
executes it. Every metric and output hash must equal the recorded one; the git commit, the
installed-packages hash and the notebooks' hashes are compared and reported as the environment.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import ledger
from datanet import DatanetError
from datanet_lab import provenance
from datanet_lab.batch.executors import open_executor
from datanet_lab.batch.runner import make_directory
from datanet_lab.sweeps.sweep import KIND
from datanet_lab.sweeps.sweep_task import Outcome, Task, execute

COLUMNS = ["kind", "name", "recorded", "reproduced", "match"]


@dataclass(frozen=True)
class Comparison:
    """Recorded vs reproduced values, one row each; ``kind`` is metric, output, signed (a
    :data:`provenance.SIGNED_METRICS` value) or environment."""

    run_id: str
    directory: Path
    rows: pd.DataFrame
    failure: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """The run succeeded and every metric and output hash matches (the environment and what
        the run's own random keys signed may differ)."""
        checked = self.rows[~self.rows["kind"].isin(["environment", "signed"])]
        return self.failure is None and bool(checked["match"].all())


def find_record(run_path: Path) -> dict[str, Any]:
    """The last ``ok`` ``sweep_run`` payload of ``run_path``'s run id in its sweep's ledger.

    Raises:
        DatanetError: no sweep ledger beside the run, or no finished run of that id in it.
        LedgerIntegrityError: the sweep ledger fails verification.
    """
    run_path = Path(run_path)
    book_path = run_path.parent / "ledger.sqlite"
    if not book_path.is_file():
        raise DatanetError(f"no sweep ledger at {book_path}: is {run_path} a run of a sweep?")
    report = ledger.verify(book_path)
    if not report.ok:
        raise ledger.LedgerIntegrityError(f"sweep ledger {book_path}: {report}")
    with ledger.Ledger(book_path) as book:
        records = [e.payload for e in book.entries(KIND) if e.payload["run_id"] == run_path.name and e.payload["status"] == "ok"]
    if not records:
        raise DatanetError(f"{book_path} records no finished run {run_path.name!r}")
    return records[-1]


def reproduce(run_path: str | Path, out: str | Path | None = None) -> Comparison:
    """Re-execute the run at ``run_path`` into ``out`` (default: a new temporary directory) and
    compare it with its record. ``out`` must not exist or be empty."""
    record = find_record(Path(run_path))
    if out is not None and Path(out).is_dir() and any(Path(out).iterdir()):
        raise DatanetError(f"--out {out} is not empty; reproduce needs a fresh directory")
    if out is None:
        target = Path(tempfile.mkdtemp(prefix=f"reproduce-{record['run_id']}-"))
    else:
        target = make_directory(Path(out), "reproduce")
    notebooks = tuple(Path(record["notebook_dir"]) / nb["name"] for nb in record["notebooks"])
    task = Task(record["run_id"], record["params"], notebooks, target.resolve(), record["kernel"])
    with open_executor("local", 1) as pool:
        outcome = pool.submit(execute, task).result()
    recorded, reproduced = _flat(record["metrics"]), _flat(outcome.metrics)
    signed = {name: recorded.pop(name, None) for name in provenance.SIGNED_METRICS}
    rows = [*_compare("metric", recorded, {k: v for k, v in reproduced.items() if k not in signed}),
            *_compare("signed", signed, {name: reproduced.get(name) for name in signed}),
            *_compare("output", record["outputs"], outcome.outputs),
            *_compare("environment", _environment(record), _environment_now(outcome, notebooks))]
    return Comparison(record["run_id"], target / record["run_id"], pd.DataFrame(rows, columns=COLUMNS), outcome.failure)


def _flat(metrics: dict[str, Any] | None) -> dict[str, Any]:
    return pd.json_normalize(metrics).iloc[0].to_dict() if metrics else {}


def _environment(record: dict[str, Any]) -> dict[str, Any]:
    return {"git_commit": record["git_commit"], "code_sha256": record["code_sha256"], "packages_sha256": record["packages_sha256"],
            **{f"notebook {nb['name']}": nb["sha256"] for nb in record["notebooks"]},
            **_package_rows(record.get("packages", {}))}


def _environment_now(outcome: Outcome, notebooks: tuple[Path, ...]) -> dict[str, Any]:
    return {"git_commit": outcome.git_commit, "code_sha256": outcome.code_sha256, "packages_sha256": outcome.packages_sha256,
            **{f"notebook {nb.name}": provenance.file_sha256(nb) for nb in notebooks if nb.is_file()},
            **_package_rows(outcome.packages)}


def _package_rows(packages: dict[str, str]) -> dict[str, str]:
    """One ``package NAME`` environment row per installed package: its exact version."""
    return {f"package {name}": version for name, version in packages.items()}


def _compare(kind: str, recorded: dict[str, Any], reproduced: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per name in either mapping; a name missing on one side does not match."""
    names = sorted(set(recorded) | set(reproduced))
    return [{"kind": kind, "name": n, "recorded": recorded.get(n), "reproduced": reproduced.get(n),
             "match": n in recorded and n in reproduced and recorded[n] == reproduced[n]} for n in names]
