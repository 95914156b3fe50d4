"""A run directory, the parameters it is made with, its keystore and its ledger."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger
from datanet_lab.params import DEFAULTS, STAKE_UNITS, ParameterError  # the stake bounds the reward pool, so params checks it

RUN_CLOCK = ledger.fixed_clock("2026-01-01T00:00:00+00:00")
"""Ledger timestamps of a run are fixed so that a run with seeded keys reproduces every hash."""
SIGNING_KEYS = ("random", "seeded")
"""Values of the ``signing_keys`` run option (default ``random``), how a run's new keystore makes
keys: ``random`` keys from the OS, or ``seeded`` keys derived from the run seed, which reproduce
the ledger byte for byte but let anyone who knows the seed sign as every actor (tests only)."""
SHARED_RUN_DIR = "DATANET_LAB_SHARED_RUN_DIR"
"""Environment variable: when it names a directory, notebooks opened with an empty ``run_dir`` all
use it instead of a fresh temporary directory each, so that notebooks executed one by one share
their steps as ``datanet-lab run`` does (the test suite sets it for nbval)."""
VALIDATOR, CURATOR, TRAINER, ATTRIBUTOR, PAYOUT_AUTHORITY = "validator", "curator", "trainer", "attributor", "payout-authority"


@dataclass(frozen=True)
class Run:
    """A run directory and the parameters it was made with."""

    directory: Path
    params: dict[str, Any]

    @property
    def ledger_path(self) -> Path:
        return self.directory / "ledger.sqlite"

    def path(self, *parts: str) -> Path:
        """A path inside the run directory; its parent directories are created."""
        target = self.directory.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def keystore(self) -> ledger.Keystore:
        """The run's keystore (``keystore/``, keys 0600), reused as it was made when it exists, else
        made as the ``signing_keys`` option says (:data:`SIGNING_KEYS`). Either way the same
        parameters give the same payouts and the same entry payloads; only seeded keys also give
        the same signatures and ledger head."""
        seeded = self.params.get("signing_keys", "random") == "seeded"
        return ledger.Keystore(self.directory / "keystore",
                               seed=f"datanet-lab run seed {self.params['seed']}".encode() if seeded else None)

    def ledger(self) -> ledger.Ledger:
        return ledger.Ledger(self.ledger_path, keystore=self.keystore(), clock=RUN_CLOCK)


def open_run(run_dir: str, **params: Any) -> Run:
    """The run in ``run_dir``; an empty ``run_dir`` (a notebook run on its own) gets the directory
    :data:`SHARED_RUN_DIR` names, or else a fresh temporary directory, deleted at exit.
    ``params`` are merged over :data:`DEFAULTS`, and may
    also hold the ``signing_keys`` option (:data:`SIGNING_KEYS`).

    Raises:
        ParameterError: ``signing_keys`` is not one of :data:`SIGNING_KEYS`; nothing is created.
    """
    check_signing_keys(params.get("signing_keys", "random"))
    run_dir = run_dir or os.environ.get(SHARED_RUN_DIR, "")
    if run_dir:
        directory = Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
    else:  # removed when the process (the notebook's kernel) exits: nothing is left outside results/
        directory = Path(tempfile.mkdtemp(prefix="datanet-lab-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Run(directory, {**DEFAULTS, **params})


def check_signing_keys(value: object) -> None:
    """Raise :class:`ParameterError` unless ``value`` is one of :data:`SIGNING_KEYS`."""
    if value not in SIGNING_KEYS:
        raise ParameterError(f"signing_keys must be one of {list(SIGNING_KEYS)}, got {value!r}")
