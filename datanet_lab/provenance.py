"""What a run's record pins: the code (git commit and source hash), the installed packages and the
output hashes."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import ledger

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT_FILE = "environment.json"
"""Where a run directory records the environment it ran in (:func:`environment_record`)."""
SIGNED = ("keystore/*", "rounds/*/head.json", "rounds/*/consistency.json", "manifests/pay.json", "metrics.json")
"""Outputs that hold keys, signatures or a head hash: a run signs with its own random keys, so
these differ between two runs of the same parameters (``metrics.json`` is compared metric by
metric instead, less :data:`SIGNED_METRICS`)."""
SIGNED_METRICS = ("ledger.head_hash",)
UNHASHED = ("*.ipynb", "ledger.sqlite*", ENVIRONMENT_FILE, *SIGNED)
"""Left out of output hashes: executed notebooks hold timings, SQLite pages are not canonical
(the run ledger is pinned by its entries' content instead), the environment is compared apart,
and :data:`SIGNED` outputs depend on the run's keys."""
LOCK_FILE = "requirements.lock"
LEDGER_ENTRIES = "ledger.sqlite#entries"
PACKAGES = ("datanet", "attribution", "ledger", "datanet_lab")


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """``HEAD``'s commit of the checkout at ``root``, or ``None`` outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def installed_packages() -> dict[str, str]:
    """``{name: version}`` of every installed distribution, names lower-cased, sorted by name."""
    return dict(sorted({d.metadata["Name"].lower(): d.version for d in metadata.distributions()}.items()))


def packages_sha256() -> str:
    """SHA-256 of the sorted ``name==version`` lines of every installed distribution."""
    lines = [f"{name}=={version}" for name, version in installed_packages().items()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def environment_record(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Where a run executes: Python, platform, the code (commit and source hash), the lock file's
    hash and the exact version of every installed package."""
    lock = root / LOCK_FILE
    return {"python": platform.python_version(), "platform": platform.platform(), "git_commit": git_commit(root),
            "code_sha256": code_sha256(root), "lock_sha256": file_sha256(lock) if lock.is_file() else None,
            "packages": installed_packages()}


def write_environment(run_dir: Path) -> dict[str, Any]:
    """Record :func:`environment_record` in ``run_dir/environment.json`` and return it."""
    record = environment_record()
    (Path(run_dir) / ENVIRONMENT_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def package_differences(recorded: dict[str, str], current: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """``{name: (recorded version, current version)}`` for every package installed on one side only
    or at another version (``None`` = not installed)."""
    return {name: (recorded.get(name), current.get(name)) for name in sorted(set(recorded) | set(current))
            if recorded.get(name) != current.get(name)}


def code_sha256(root: Path = REPO_ROOT) -> str:
    """SHA-256 over the path and bytes of every ``.py`` file of the project's packages: unlike the
    commit, it sees uncommitted edits."""
    digest = hashlib.sha256()
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_hashes(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every output file of ``run_dir`` by relative path (see :data:`UNHASHED`), plus
    :func:`ledger_entries_sha256` of the run ledger under :data:`LEDGER_ENTRIES` when it has one."""
    hashes = {p.relative_to(run_dir).as_posix(): file_sha256(p) for p in sorted(run_dir.rglob("*"))
              if p.is_file() and not any(p.match(pattern) for pattern in UNHASHED)}
    if (run_dir / "ledger.sqlite").is_file():
        hashes[LEDGER_ENTRIES] = ledger_entries_sha256(run_dir / "ledger.sqlite")
    return hashes


def ledger_entries_sha256(path: Path) -> str:
    """SHA-256 of the canonical JSON of every entry's kind, actor, timestamp and payload, in log
    order: what two runs of the same parameters share whatever keys signed them. The ledger must
    verify first (a :class:`ledger.LedgerIntegrityError` otherwise)."""
    report = ledger.verify(path)
    if not report.ok:
        raise ledger.LedgerIntegrityError(f"run ledger {path}: {report}")
    with ledger.Ledger(path) as book:
        content = [[e.kind, e.actor, e.timestamp, e.payload] for e in book.entries()]
    return hashlib.sha256(ledger.canonical_json(content)).hexdigest()

