"""The SQLite store: an append-only table of hash-chained entries.

Each entry has a sequence number (1, 2, ...), a kind, an actor, a timestamp from the injected
clock, a canonical-JSON payload, the previous entry's hash (64 zeros for the first) and its own
hash: SHA-256 of the canonical JSON of all of those fields. Triggers refuse UPDATE and DELETE,
and every append is one ``BEGIN IMMEDIATE`` transaction, so a batch lands whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.canonical import canonical_json
from ledger.clock import Clock, system_clock
from ledger.errors import LedgerError

KINDS = frozenset(
    {
        "contribution",
        "validation",
        "dataset_version",
        "training_run",
        "attribution_run",
        "payout",
        "payout_epoch",
    }
)
GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    payload   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused'); END;
"""


@dataclass(frozen=True)
class Entry:
    """One ledger entry as stored; ``payload`` is the decoded canonical JSON."""

    seq: int
    kind: str
    actor: str
    timestamp: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


def entry_hash(
    seq: int, kind: str, actor: str, timestamp: str, payload: Mapping[str, Any], prev_hash: str
) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry's fields, its own hash excluded."""
    record = {
        "seq": seq,
        "kind": kind,
        "actor": actor,
        "timestamp": timestamp,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(record)).hexdigest()


def connect(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open a ledger database with WAL and ``synchronous=FULL``; autocommit (explicit BEGINs)."""
    path = Path(path)
    if read_only:
        if not path.is_file():
            raise LedgerError(f"no ledger file at {path}")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def row_to_entry(row: tuple) -> Entry:
    """Build an :class:`Entry` from a ``SELECT seq, kind, actor, timestamp, payload, prev_hash, hash`` row."""
    seq, kind, actor, timestamp, payload, prev_hash, digest = row
    return Entry(seq, kind, actor, timestamp, json.loads(payload), prev_hash, digest)


_COLUMNS = "seq, kind, actor, timestamp, payload, prev_hash, hash"


class Ledger:
    """An append-only ledger in one SQLite file.

    Args:
        path: the database file; created with its schema when missing.
        clock: where entry timestamps come from (default: wall clock). Pass
            :func:`ledger.fixed_clock` for a run whose hashes must reproduce.
    """

    def __init__(self, path: str | Path, clock: Clock = system_clock) -> None:
        self.path = Path(path)
        self._clock = clock
        try:
            self._conn = connect(self.path)
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc

    def append(self, kind: str, actor: str, payload: Mapping[str, Any]) -> Entry:
        """Append one entry; see :meth:`append_many`."""
        return self.append_many([(kind, actor, payload)])[0]

    def append_many(self, records: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Entry]:
        """Append ``(kind, actor, payload)`` records in one transaction: all land, or none.

        Raises:
            LedgerError: an unknown kind, an empty actor or a payload that is not a
                canonical-JSON object; nothing is written.
        """
        records = list(records)
        for index, (kind, actor, payload) in enumerate(records):
            _check_record(index, kind, actor, payload)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev_hash = head if head else (0, GENESIS_HASH)
            written = []
            for kind, actor, payload in records:
                seq += 1
                timestamp = self._clock()
                payload_text = canonical_json(payload).decode("utf-8")
                digest = entry_hash(seq, kind, actor, timestamp, payload, prev_hash)
                conn.execute(
                    f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq, kind, actor, timestamp, payload_text, prev_hash, digest),
                )
                written.append(Entry(seq, kind, actor, timestamp, json.loads(payload_text), prev_hash, digest))
                prev_hash = digest
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return written

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        """The entries in sequence order, optionally only those of one ``kind``."""
        if kind is None:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq")
        else:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE kind = ? ORDER BY seq", (kind,))
        return (row_to_entry(row) for row in rows)

    def head(self) -> Entry | None:
        """The last entry, or ``None`` for an empty ledger."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return row_to_entry(row) if row else None

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_record(index: int, kind: str, actor: str, payload: Mapping[str, Any]) -> None:
    if kind not in KINDS:
        raise LedgerError(f"record {index}: unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    if not isinstance(actor, str) or not actor:
        raise LedgerError(f"record {index} ({kind}): actor must be a non-empty string, got {actor!r}")
    if not isinstance(payload, Mapping):
        raise LedgerError(f"record {index} ({kind}): payload must be a JSON object, got {type(payload).__name__}")
    try:
        encoded = canonical_json(payload)
    except LedgerError as exc:
        raise LedgerError(f"record {index} ({kind}, actor {actor!r}): {exc}") from exc
    # A whole float >= 2**53 encodes as an integer that JSON readers cannot take back exactly.
    try:
        round_trips = canonical_json(json.loads(encoded)) == encoded
    except LedgerError:
        round_trips = False
    if not round_trips:
        raise LedgerError(f"record {index} ({kind}, actor {actor!r}): payload does not survive a JSON round trip unchanged")
