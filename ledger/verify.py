"""Offline verification of a ledger file: every hash, link and sequence number, in order."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ledger.canonical import canonical_json
from ledger.errors import LedgerError
from ledger.store import GENESIS_HASH, connect, entry_hash


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found. ``first_bad_seq``/``reason`` are set only when ``ok`` is false."""

    ok: bool
    entries: int
    head_hash: str | None
    first_bad_seq: int | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ledger OK: {self.entries} entries, head {self.head_hash}"
        return f"ledger INVALID at entry {self.first_bad_seq}: {self.reason}"


def verify(path: str | Path) -> VerifyReport:
    """Check the whole chain of the ledger at ``path`` (opened read-only).

    Returns a report naming the first bad entry and why; raises :class:`LedgerError` only when
    the file is missing or is not a ledger database at all.
    """
    try:
        conn = connect(path, read_only=True)
        try:
            rows = conn.execute(
                "SELECT seq, kind, actor, timestamp, payload, prev_hash, hash FROM entries ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # not a database file, or no entries table
        raise LedgerError(f"{path} is not a readable ledger: {exc}") from exc
    prev_hash = GENESIS_HASH
    for expected_seq, (seq, kind, actor, timestamp, payload_text, stored_prev, stored_hash) in enumerate(rows, 1):
        problem = _entry_problem(expected_seq, seq, kind, actor, timestamp, payload_text, stored_prev, stored_hash, prev_hash)
        if problem:
            return VerifyReport(False, len(rows), None, first_bad_seq=seq, reason=problem)
        prev_hash = stored_hash
    return VerifyReport(True, len(rows), rows[-1][6] if rows else None)


def _entry_problem(
    expected_seq: int,
    seq: int,
    kind: str,
    actor: str,
    timestamp: str,
    payload_text: str,
    stored_prev: str,
    stored_hash: str,
    prev_hash: str,
) -> str | None:
    """Why one stored entry fails, or ``None`` when it holds."""
    if seq != expected_seq:
        return f"sequence number {seq} where {expected_seq} was expected (entry missing or inserted)"
    if stored_prev != prev_hash:
        return f"prev_hash {stored_prev[:16]}… does not match the previous entry's hash {prev_hash[:16]}…"
    try:
        payload = json.loads(payload_text)
        canonical = canonical_json(payload).decode("utf-8")
    except (ValueError, LedgerError) as exc:
        return f"payload is not valid JSON: {exc}"
    if canonical != payload_text:
        return "payload is not in canonical JSON form"
    recomputed = entry_hash(seq, kind, actor, timestamp, payload, stored_prev)
    if recomputed != stored_hash:
        return f"hash mismatch: stored {stored_hash[:16]}…, recomputed {recomputed[:16]}… (entry content changed)"
    return None
