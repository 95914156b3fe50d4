"""One engine for every pipeline step: reuse, or compute, record, move into place, write the manifest.

A step (:class:`Procedure`) declares its :class:`~datanet_lab.pipeline.manifest.Step`, how to
compute its outputs into a staging directory laid out like the run directory, the ledger records
that computation makes, and how to read its finished outputs. :func:`run_step` then

1. returns the loaded outputs when the step's manifest matches (:func:`manifest.check`);
2. otherwise computes into a fresh ``<run>/.staging/<step>/`` (one left over is removed first);
3. appends the records to the ledger in one batch (:meth:`ledger.Ledger.append_many`, atomic),
   unless the ledger already holds exactly these records as its last entries of their kinds (a
   step stopped after its append: a deterministic step recomputes the same payloads);
4. writes the outputs read back from the ledger into staging (``from_ledger``: a pay step's
   payouts are what its recorded epoch says);
5. moves each output from staging into place (:func:`os.replace`), writes the manifest and
   removes the staging directory.

A step stopped at any point therefore finishes when run again: before the manifest is written it
is not finished, and everything up to it is done again or found done. Loaded results are kept per
run directory and step for the process (:func:`load`), while the manifest and the outputs' sizes
and modification times stay the same.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.manifest import ManifestError
from datanet_lab.pipeline.run import Run
from datanet_lab.provenance import file_sha256

STAGING = ".staging"
"""The folder of a run directory where a step computes its outputs before they are moved into place."""
CACHE_SIZE = 32
"""How many loaded step results a process keeps (least recently used dropped first)."""

Record = tuple[str, str, dict[str, Any]]
Computed = TypeVar("Computed")
Result = TypeVar("Result")


def _no_records(run: Run, computed: Any) -> list[Record]:
    return []


def _no_roles(run: Run, computed: Any) -> dict[str, str]:
    return {}


def _from_the_start(run: Run) -> int:
    return 0


@dataclass(frozen=True)
class Procedure(Generic[Computed, Result]):
    """A step as :func:`run_step` runs it, after the steps it ``requires`` (its inputs).

    ``compute(run, staging_dir)`` writes the step's outputs under ``staging_dir`` (laid out like
    the run directory) and returns what ``records(run, computed)`` turns into ledger records
    ``(kind, actor, payload)``; ``roles(run, computed)`` names the actors (actor: role) to register
    before they are appended; ``from_ledger(run, staging_dir, computed)``, when given, writes the
    outputs that are read back from the ledger once the records are in it; ``load(run)`` reads
    the finished outputs from the run directory. ``since(run)`` is the ledger sequence number
    after which the step's records go (0: the step alone writes its kinds; a step run once per
    round starts after the previous round's entries)."""

    step: manifest.Step
    compute: Callable[[Run, Path], Computed]
    load: Callable[[Run], Result]
    records: Callable[[Run, Computed], list[Record]] = _no_records
    roles: Callable[[Run, Computed], dict[str, str]] = _no_roles
    requires: tuple[Procedure[Any, Any], ...] = ()
    from_ledger: Callable[[Run, Path, Computed], None] | None = None
    since: Callable[[Run], int] = _from_the_start


_LOADED: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], Any]] = OrderedDict()
"""Loaded results by (run directory, step name), each with the :func:`_signature` it was loaded at."""


def run_step(run: Run, procedure: Procedure[Computed, Result]) -> Result:
    """The step's result, after running or checking the steps it requires: loaded when the run
    directory holds its outputs from the same parameters and inputs, otherwise computed, recorded,
    moved into place and loaded (module docstring).

    Raises:
        ManifestError: outputs made from other parameters or inputs, or altered since
            (:func:`manifest.check`); or, for a step without a manifest, a ledger that already
            holds other records of the step's kinds than this computation makes.
    """
    step = procedure.step
    for upstream in procedure.requires:  # run or checked first, as a step on its own needs them
        run_step(run, upstream)
    if manifest.manifest_path(run.directory, step).is_file():
        return load(run, procedure)
    staging = fresh_staging(run, step)
    computed = procedure.compute(run, staging)
    try:
        append_once(run, procedure, computed)
    except ManifestError:
        _remove_staging(staging)
        raise
    if procedure.from_ledger is not None:
        procedure.from_ledger(run, staging, computed)
    for name in step.outputs:
        move_into_place(staging / name, run.directory / name)
    manifest.write(run.directory, step, run.params)
    _remove_staging(staging)
    return load(run, procedure)


def load(run: Run, procedure: Procedure[Any, Result]) -> Result:
    """The step's finished outputs (``procedure.load``), read once per process while its manifest,
    parameters, inputs and output files (by size and modification time) stay the same; checked
    against the manifest (:func:`manifest.check`) when read."""
    key = (str(run.directory.resolve()), procedure.step.name)
    signature = _signature(run, procedure.step)
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == signature:
        _LOADED.move_to_end(key)
        return cached[1]
    manifest.check(run.directory, procedure.step, run.params)
    result = procedure.load(run)
    _LOADED[key] = (signature, result)
    _LOADED.move_to_end(key)
    while len(_LOADED) > CACHE_SIZE:
        _LOADED.popitem(last=False)
    return result


def fresh_staging(run: Run, step: manifest.Step) -> Path:
    """An empty ``<run>/.staging/<step>/`` (what a stopped run left there removed)."""
    staging = run.directory / STAGING / step.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def append_once(run: Run, procedure: Procedure[Computed, Any], computed: Computed) -> None:
    """Register the step's actors and append its records to the run's ledger in one batch, unless
    the ledger's last entries of the records' kinds (after ``procedure.since``) are these records
    already.

    Raises:
        ManifestError: the ledger holds other entries of these kinds; nothing is appended.
    """
    records = [(kind, actor, _canonical(payload)) for kind, actor, payload in procedure.records(run, computed)]
    if not records:
        return
    kinds = {kind for kind, _, _ in records}
    since = procedure.since(run)
    with run.ledger() as book:
        found = sorted((e for kind in kinds for e in book.entries(kind) if e.seq > since), key=lambda e: e.seq)
        if not found:
            for actor, role in procedure.roles(run, computed).items():
                book.register(actor, role)
            book.append_many(records)
            return
    _check_recorded(run, procedure.step, [(e.kind, e.actor, e.payload) for e in found][-len(records):], records)


def move_into_place(staged: Path, target: Path) -> None:
    """Move ``staged`` (a file or folder) to ``target``, replacing what a stopped run left there."""
    if not staged.exists():
        return
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


def _check_recorded(run: Run, step: manifest.Step, found: list[Record], planned: list[Record]) -> None:
    """Raise :class:`ManifestError` at the first record where the ledger and this computation differ."""
    difference = first_difference(found, planned)
    if difference:
        raise ManifestError(f"{step.name}: {run.ledger_path} already records this step otherwise than this run "
                            f"computes it ({difference}); use a fresh run directory")


def first_difference(found: list[Record], planned: list[Record]) -> str | None:
    """Where the records a ledger holds (``found``) first differ from the ``planned`` ones, in
    words (``record k of n: the ledger holds ..., this run makes ...``); ``None`` where they agree."""
    if found == planned:
        return None
    k = next((i for i, (a, b) in enumerate(zip(found, planned)) if a != b), min(len(found), len(planned)))
    return (f"record {k} of {len(planned)}: the ledger holds {_describe(found, k)}, "
            f"this run makes {_describe(planned, k)}")


def _describe(records: list[Record], k: int) -> str:
    return f"{records[k][0]} by {records[k][1]} {records[k][2]}" if k < len(records) else "nothing more"


def _canonical(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` as the ledger gives it back (JSON types: lists for tuples)."""
    return json.loads(json.dumps(payload))


def _signature(run: Run, step: manifest.Step) -> tuple[Any, ...]:
    """What a loaded result depends on: the manifest's bytes, the parameters and inputs the step
    would be checked against, and every output file's size and modification time."""
    files = []
    for name in step.outputs:
        target = run.directory / name
        paths = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        files += [(p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file()]
    expected = manifest.expected(run.directory, step, run.params)
    return (file_sha256(manifest.manifest_path(run.directory, step)), json.dumps(expected, sort_keys=True), tuple(files))


def _remove_staging(staging: Path) -> None:
    """Remove a step's staging directory, and ``.staging/`` with it when no other step's is left."""
    shutil.rmtree(staging)
    try:
        staging.parent.rmdir()
    except OSError:  # another step's staging is still there
        pass
