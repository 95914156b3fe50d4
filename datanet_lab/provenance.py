"""What a run's record pins: the code (git commit and source hash), the installed packages and the
output hashes."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

import ledger

REPO_ROOT = Path(__file__).resolve().parents[1]
UNHASHED = ("*.ipynb", "ledger.sqlite*")
"""Left out of output hashes: executed notebooks hold timings, and SQLite pages are not canonical
(the run ledger is pinned by its head hash instead)."""
LEDGER_HEAD = "ledger.sqlite#head"
PACKAGES = ("datanet", "attribution", "ledger", "datanet_lab")


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """``HEAD``'s commit of the checkout at ``root``, or ``None`` outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def packages_sha256() -> str:
    """SHA-256 of the sorted ``name==version`` lines of every installed distribution."""
    lines = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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
    the run ledger's head hash under :data:`LEDGER_HEAD` when it has one."""
    hashes = {p.relative_to(run_dir).as_posix(): file_sha256(p) for p in sorted(run_dir.rglob("*"))
              if p.is_file() and not any(p.match(pattern) for pattern in UNHASHED)}
    if (run_dir / "ledger.sqlite").is_file():
        hashes[LEDGER_HEAD] = ledger.verify(run_dir / "ledger.sqlite").head_hash
    return hashes

