"""A run directory, the parameters it is made with, its keystore and its ledger."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger
from datanet_lab.params import DEFAULTS, STAKE_UNITS  # the stake bounds the reward pool, so params checks it

RUN_CLOCK = ledger.fixed_clock("2026-01-01T00:00:00+00:00")
"""Ledger timestamps of a run are fixed so that a seeded run reproduces every hash."""
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
        """The run's keystore (``keystore/``, keys 0600). Keys are derived from the run seed so that a
        seeded run reproduces every signature and the ledger head: fine for a reproducible research
        run, never for real money (anyone who knows the seed can sign as every actor)."""
        return ledger.Keystore(self.directory / "keystore", seed=f"datanet-lab run seed {self.params['seed']}".encode())

    def ledger(self) -> ledger.Ledger:
        return ledger.Ledger(self.ledger_path, keystore=self.keystore(), clock=RUN_CLOCK)


def open_run(run_dir: str, **params: Any) -> Run:
    """The run in ``run_dir``; an empty ``run_dir`` (a notebook run on its own) gets a fresh
    temporary directory, deleted at exit. ``params`` are merged over :data:`DEFAULTS`."""
    if run_dir:
        directory = Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
    else:  # removed when the process (the notebook's kernel) exits: nothing is left outside results/
        directory = Path(tempfile.mkdtemp(prefix="datanet-lab-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Run(directory, {**DEFAULTS, **params})
