"""The SQLite store: signed, hash-chained entries, their Merkle tree, signed tree heads, public keys.

Each entry has a sequence number (1, 2, ...; entry ``seq`` is Merkle leaf ``seq - 1``), a kind, an
actor, a timestamp from the injected clock, a canonical-JSON payload, the actor's Ed25519 signature
of ``{"actor", "kind", "payload"}``, the previous entry's hash (64 zeros for the first) and its own
hash: SHA-256 of the entry bytes of :mod:`ledger.encoding`, which are also its Merkle leaf.

Every append batch is one ``BEGIN IMMEDIATE`` transaction that writes the entries, the Merkle
nodes they complete (:mod:`ledger.tree`) and a tree head signed by the log's key, so a batch lands
whole or not at all. Every writing connection runs in WAL mode with ``synchronous=FULL``. Triggers
refuse UPDATE and DELETE on every table. An actor signs only once its public key is registered,
and only the kinds its registered role is entitled to; a statement already in the log (a replay)
is refused, and so is a batch whose payloads break their kind's schema or the payout rules
(:mod:`ledger.schemas`, which the verifier applies too). Before each batch the entries written
since this handle last looked are checked against the signing roles and the payout rules, so a
writer does not extend a log whose rows were forged around it. A writer
refuses a file that fails SQLite's integrity check, so no check of an append rests on a damaged
index; readers never use an index to find entries either.

A ledger opened without a keystore is read only and leaves the file byte-identical: no table,
trigger or file is created. SQLite's read-only mode creates the ``-wal`` and ``-shm`` files of a WAL
database that has none (and cannot delete them afterwards), so when no ``-wal`` file exists (no
writer is attached) the file is opened ``immutable``; a writer that checkpoints into it while it is
read is detected (:func:`fingerprint`) and the read refused. When a writer is attached (or one was
killed), its ``-wal`` and ``-shm`` files are read as they are, the ``-shm`` file opened read-only
(SQLite's ``readonly_shm``): a reader never rewrites it, not even the stale index a killed writer
left (SQLite then rebuilds the index from the ``-wal`` in the reader's own memory). Only a ``-wal``
file whose ``-shm`` file is gone gets a new ``-shm`` file, which SQLite needs to read the ``-wal``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ledger import merkle, tree
from ledger.canonical import canonical_json, plain_json
from ledger.clock import Clock, system_clock
from ledger.encoding import GENESIS_HASH, entry_bytes, head_bytes, key_bytes, signed_entry_bytes, statement_bytes
from ledger.errors import LedgerError, LedgerIntegrityError
from ledger.keys import Keystore, check_actor, public_hex, sign, sign_many, signature_ok
from ledger.schemas import KINDS, MONEY_KINDS, SCHEMAS, PayoutRules, payload_problem, role_problem

Prepared = tuple[str, str, str, str, bytes]
"""A record ready to append: ``(kind, actor, payload_text, signature, statement)``, ``statement``
being :func:`ledger.encoding.statement_bytes` of the first three (what ``signature`` signs)."""

LOG_ACTOR = "log"
"""The keystore actor whose key signs tree heads."""

_TABLES = ("entries", "heads", "keys", "meta")
TABLE_COLUMNS = {
    "entries": ("seq", "kind", "actor", "timestamp", "payload", "prev_hash", "signature", "hash"),
    "heads": ("size", "root", "timestamp", "signature"),
    "keys": ("actor", "role", "public_key", "proof"),
    "meta": ("name", "value"),
    "tree": ("id", "hash"),
}
SQLITE_MAGIC = b"SQLite format 3\0"
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    payload   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    signature TEXT NOT NULL UNIQUE,
    hash      TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind);
CREATE TABLE IF NOT EXISTS heads (size INTEGER PRIMARY KEY, root TEXT NOT NULL, timestamp TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (actor TEXT PRIMARY KEY, role TEXT NOT NULL, public_key TEXT NOT NULL, proof TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + "".join(
        f"""CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused'); END;
"""
        for t in _TABLES
    )
    + tree.SCHEMA
)
COLUMNS = "seq, kind, actor, timestamp, payload, prev_hash, signature, hash"
WRITER_PRAGMAS = ("PRAGMA wal_autocheckpoint=10000", "PRAGMA cache_size=-32768")
"""Tuning for batched appends; durability is unchanged (``synchronous=FULL``). The random hash and
signature keys of a 1,000-entry batch dirty hundreds of index pages (thousands on a large log).
SQLite's default checkpoint, every 1,000 WAL pages, ran after nearly every batch and rewrote the
same pages each time: every 10,000 pages (~40 MB of WAL) writes a third fewer bytes per batch. A
32 MiB page cache (default 2 MiB) holds the indexes of a ~100k-entry log: a batch then makes about
40% fewer write calls and, on a 60k-entry log, used ~10% less CPU in our measurements."""


@dataclass(frozen=True)
class Entry:
    """One ledger entry as stored; ``payload`` is the decoded canonical JSON."""

    seq: int
    kind: str
    actor: str
    timestamp: str
    payload: dict[str, Any]
    prev_hash: str
    signature: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SignedHead:
    """A tree head ``(size, root, timestamp)`` signed by the log's key (hex ``root`` and ``signature``)."""

    size: int
    root: str
    timestamp: str
    signature: str

    def signed_by(self, public_key: str) -> bool:
        return signature_ok(public_key, self.signature, head_bytes(self.size, self.root, self.timestamp))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SignedRecord:
    """A statement ``(kind, actor, payload)`` with its actor's signature, ready to append."""

    kind: str
    actor: str
    payload: Mapping[str, Any]
    signature: str


def entry_hash(
    seq: int, kind: str, actor: str, timestamp: str, payload: Mapping[str, Any], prev_hash: str, signature: str
) -> str:
    """SHA-256 (hex) of an entry's bytes (:func:`ledger.encoding.entry_bytes`)."""
    payload_text = canonical_json(payload).decode("utf-8")
    return hashlib.sha256(entry_bytes(seq, kind, actor, timestamp, payload_text, prev_hash, signature)).hexdigest()


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a ledger database to write, with WAL and ``synchronous=FULL``; autocommit (explicit BEGINs)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    for pragma in WRITER_PRAGMAS:
        conn.execute(pragma)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def check_file(path: Path) -> None:
    """Raise :class:`LedgerError` unless ``path`` is a non-empty regular file starting like SQLite."""
    if not path.exists():
        raise LedgerError(f"no ledger file at {path}")
    if path.is_dir():
        raise LedgerError(f"{path} is a directory, not a ledger file")
    if not path.is_file():
        raise LedgerError(f"{path} is not a regular file, so not a ledger")
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_MAGIC))
    if not header:
        raise LedgerError(f"{path} is an empty file (0 bytes), not a ledger")
    if header != SQLITE_MAGIC:
        raise LedgerError(f"{path} is not an SQLite database (it does not start with {SQLITE_MAGIC[:-1].decode()!r}), so not a ledger")


def open_read_only(path: str | Path) -> tuple[sqlite3.Connection, tuple[int, ...] | None]:
    """Open the SQLite file ``path`` read only, creating nothing (module docstring).

    Returns the connection and, when the file is opened ``immutable`` (no ``-wal`` file), its
    :func:`fingerprint` before opening: the reads hold only while the fingerprint is unchanged.

    Raises:
        LedgerError: ``path`` is missing, a directory, empty or not an SQLite file.
    """
    path = Path(path)
    check_file(path)
    wal, shm = Path(f"{path}-wal").exists(), Path(f"{path}-shm").exists()
    snapshot = None if wal else fingerprint(path)
    flags = "&immutable=1" if not wal else "&readonly_shm=1" if shm else ""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro{flags}"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0), snapshot


def fingerprint(path: Path) -> tuple[int, ...]:
    """What changes when a writer writes the file itself (not its ``-wal``): inode, size, times."""
    status = os.stat(path)
    return status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def check_tables(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`LedgerError` unless the database holds the ledger's tables and columns."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in TABLE_COLUMNS if t not in tables]
    if len(missing) == len(TABLE_COLUMNS):
        found = ", ".join(sorted(tables)) if tables else "none"
        raise LedgerError(f"{path} is an SQLite database but not a ledger: none of its tables ({found}) is a ledger table")
    if missing:
        raise LedgerError(f"{path} is not a whole ledger: table(s) {', '.join(missing)} missing")
    for table, expected in TABLE_COLUMNS.items():
        columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
        if table == "entries" and "signature" not in columns:
            raise LedgerError(f"{path} is an unsigned ledger of an older format; rebuild it")
        if columns != expected:
            raise LedgerError(f"{path}: table {table} has columns {list(columns)}, a ledger's has {list(expected)}")


def row_to_entry(row: tuple) -> Entry:
    """Build an :class:`Entry` from a ``SELECT`` of :data:`COLUMNS`."""
    seq, kind, actor, timestamp, payload, prev_hash, signature, digest = row
    return Entry(seq, kind, actor, timestamp, json.loads(payload), prev_hash, signature, digest)


class Ledger:
    """An append-only, signed Merkle log in one SQLite file.

    Args:
        path: the database file; created with its schema when missing (with a keystore).
        keystore: private keys of the actors who append and of the log (:data:`LOG_ACTOR`), which
            signs tree heads. ``None`` opens the ledger read only, to read and prove: the file
            must be a ledger and stays byte-identical (module docstring).
        clock: where entry and tree-head timestamps come from (default: wall clock). Pass
            :func:`ledger.fixed_clock` for a run whose hashes must reproduce.
    """

    def __init__(self, path: str | Path, keystore: Keystore | None = None, clock: Clock = system_clock) -> None:
        self.path = Path(path)
        self._clock = clock
        self._keystore = keystore
        self._rules, self._ruled = PayoutRules(), 0  # the payout state after entry ``_ruled``
        self._snapshot: tuple[int, ...] | None = None  # the file as a read-only handle found it
        if keystore is not None:
            self._conn = _open_writer(self.path)
            self._claim_log_key(public_hex(keystore.key(LOG_ACTOR)))
            return
        self._conn, self._snapshot = open_read_only(self.path)
        try:
            check_tables(self._conn, self.path)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            self._conn.close()
            raise LedgerError(f"{self.path} is not a readable ledger: {exc}; `ledger verify` says where") from exc
        except LedgerError:
            self._conn.close()
            raise

    # --- keys ----------------------------------------------------------------------------------

    def _claim_log_key(self, public_key: str) -> None:
        stored = self.log_public_key
        if stored is None:
            self.register(LOG_ACTOR, "log")
            with self._transaction() as conn:
                conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('log_public_key', ?)", (public_key,))
            stored = self.log_public_key
        if stored != public_key:
            raise LedgerError(f"{self.path}: the keystore's log key {public_key[:16]}… is not this ledger's log key {stored[:16]}…")

    @property
    def log_public_key(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE +name = 'log_public_key'").fetchone()
        return row[0] if row else None

    def register(self, actor: str, role: str) -> str:
        """Register the keystore's key of ``actor`` (idempotent); returns the public key (hex)."""
        key = self._require_keystore("register a key").key(actor)
        public_key = public_hex(key)
        self.register_public_key(actor, role, public_key, sign(key, key_bytes(actor, role, public_key)))
        return public_key

    def register_public_key(self, actor: str, role: str, public_key: str, proof: str) -> None:
        """Register ``public_key`` for ``actor``; ``proof`` is its signature of :func:`key_bytes`.

        Raises:
            LedgerError: a read-only handle, a bad actor or role, a proof that does not verify, or
                an actor already registered with another key; nothing is written.
        """
        self._require_keystore("register a key")
        check_actor(actor)
        check_actor(role)
        if not signature_ok(public_key, proof, key_bytes(actor, role, public_key)):
            raise LedgerError(f"key of actor {actor!r}: the proof of possession does not verify; not registered")
        with self._transaction() as conn:
            row = conn.execute("SELECT role, public_key FROM keys WHERE actor = ?", (actor,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?)", (actor, role, public_key, proof))
            elif row != (role, public_key):
                raise LedgerError(f"actor {actor!r} is already registered with role {row[0]!r} and key {row[1][:16]}…")

    def public_keys(self) -> dict[str, str]:
        """Registered public key (hex) per actor."""
        return dict(self._conn.execute("SELECT actor, public_key FROM keys"))

    def _registered(self) -> dict[str, tuple[str, str]]:
        """``actor -> (role, public_key)`` for every registered key."""
        return {actor: (role, key) for actor, role, key in self._conn.execute("SELECT actor, role, public_key FROM keys")}

    def key_records(self) -> dict[str, tuple[str, str, str]]:
        """``actor -> (role, public_key, proof)`` for every registered key."""
        return {a: (r, k, p) for a, r, k, p in self._conn.execute("SELECT actor, role, public_key, proof FROM keys ORDER BY actor")}

    def _require_keystore(self, action: str) -> Keystore:
        if self._keystore is None:
            raise LedgerError(f"{self.path} was opened without a keystore (read only): cannot {action}")
        return self._keystore

    # --- appends -------------------------------------------------------------------------------

    def append(self, kind: str, actor: str, payload: Mapping[str, Any]) -> Entry:
        """Append one entry signed with the keystore's key of ``actor``; see :meth:`append_many`."""
        return self.append_many([(kind, actor, payload)])[0]

    def append_many(self, records: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Entry]:
        """Sign ``(kind, actor, payload)`` records with the keystore and append them in one transaction.

        Raises:
            LedgerError: an unknown kind, a bad actor, an actor whose registered key is not the
                keystore's or whose role may not sign the kind, or a payload that is not a
                canonical-JSON object; nothing is written.
        """
        keystore = self._require_keystore("sign entries")
        checked = [(kind, actor, *_check_record(index, kind, actor, payload)) for index, (kind, actor, payload) in enumerate(records)]
        statements = [statement_bytes(kind, actor, text) for kind, actor, text, _ in checked]
        signatures = sign_many([(keystore.key(c[1]), statement) for c, statement in zip(checked, statements)])
        prepared = [(kind, actor, text, signature, statement)
                    for (kind, actor, text, _), signature, statement in zip(checked, signatures, statements)]
        registered = self._registered()
        for actor in {p[1] for p in prepared}:
            if actor in registered and registered[actor][1] != public_hex(keystore.key(actor)):
                raise LedgerError(f"the keystore's key of actor {actor!r} is not its registered key; nothing written")
        return self._append(prepared, [c[3] for c in checked], registered, check_signatures=False)

    def append_signed(self, records: Iterable[SignedRecord]) -> list[Entry]:
        """Append statements signed elsewhere by their actors, in one transaction.

        Raises:
            LedgerError: as :meth:`append_many`, or an actor with no registered key (unknown key),
                or a signature that does not verify; nothing is written.
        """
        prepared, payloads = [], []
        for index, record in enumerate(records):
            text, payload = _check_record(index, record.kind, record.actor, record.payload)
            prepared.append((record.kind, record.actor, text, record.signature, statement_bytes(record.kind, record.actor, text)))
            payloads.append(payload)
        return self._append(prepared, payloads, self._registered(), check_signatures=True)

    def _append(self, prepared: list[Prepared], payloads: list[Any], registered: dict[str, tuple[str, str]],
                check_signatures: bool) -> list[Entry]:
        """Append prepared records whose ``payloads`` are their texts decoded; ``registered``:
        ``actor -> (role, public_key)`` (keys never change once registered).

        The batch's rows, leaf hashes and Merkle nodes are computed in memory from each record's
        statement (the signed bytes, the entry's first fields) and written by one ``executemany``
        per table."""
        if not prepared:
            return []
        log_key = self._require_keystore("sign tree heads").key(LOG_ACTOR)
        for index, (kind, actor, _, signature, statement) in enumerate(prepared):
            if actor not in registered:
                raise LedgerError(f"record {index} ({kind}): unknown key: actor {actor!r} has no registered public key; nothing written")
            role, public_key = registered[actor]
            problem = role_problem(kind, actor, role)
            if problem:
                raise LedgerError(f"record {index} ({kind}, actor {actor!r}): {problem}; nothing written")
            if check_signatures and not signature_ok(public_key, signature, statement):
                raise LedgerError(f"record {index} ({kind}, actor {actor!r}): bad signature; nothing written")
        with self._transaction() as conn:
            rules = self._checked_rules(conn, prepared, payloads, registered)  # first: paying an epoch again says so
            _refuse_replays(conn, prepared)
            head = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev_hash = head if head else (0, GENESIS_HASH)
            border = tree.compact_range(conn, seq)
            written, rows, leaves = [], [], []
            for (kind, actor, text, signature, statement), payload in zip(prepared, payloads):
                seq += 1
                timestamp = self._clock()
                raw = signed_entry_bytes(statement, seq, timestamp, prev_hash, signature)
                digest = hashlib.sha256(raw).hexdigest()
                rows.append((seq, kind, actor, timestamp, text, prev_hash, signature, digest))
                leaves.append(merkle.leaf_hash(raw))
                written.append(Entry(seq, kind, actor, timestamp, payload, prev_hash, signature, digest))
                prev_hash = digest
            conn.executemany(f"INSERT INTO entries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            tree.store_nodes(conn, border.extend(leaves))
            root, timestamp = border.root().hex(), self._clock()
            conn.execute("INSERT INTO heads VALUES (?, ?, ?, ?)",
                         (seq, root, timestamp, sign(log_key, head_bytes(seq, root, timestamp))))
        self._rules, self._ruled = rules, seq
        return written

    def _checked_rules(self, conn: sqlite3.Connection, prepared: list[Prepared],
                       payloads: list[Any], keys: Mapping[str, Any]) -> PayoutRules:
        """The payout state after the batch; raises when the log or the batch breaks the rules, or
        a stored entry the signing roles.

        Entries appended since this handle last looked (by other handles) are read by sequence
        number, not through an index."""
        self._refuse_stored_role_breach(conn)
        rows = conn.execute(
            "SELECT seq, kind, payload FROM entries WHERE seq > ? AND +kind IN ('stake', 'slash', 'payout', 'payout_epoch') ORDER BY seq",
            (self._ruled,))
        for seq, kind, text in rows:
            try:
                payload = json.loads(text)
            except (TypeError, ValueError, RecursionError) as exc:
                payload = exc
            problem = payload_problem(kind, payload) or self._rules.step(seq, kind, payload, keys)
            if problem:
                self._rules, self._ruled = PayoutRules(), 0
                raise LedgerIntegrityError(f"{self.path}: stored entry {seq} breaks the payout rules ({problem}); "
                                           "run `ledger verify`; nothing written")
        self._ruled = max(self._ruled, len(self))
        rules = self._rules.copy()
        first = self._ruled + 1
        for index, ((kind, actor, *_), payload) in enumerate(zip(prepared, payloads)):
            problem = rules.step(first + index, kind, payload, keys) if kind in MONEY_KINDS else None
            if problem:
                raise LedgerError(f"record {index} ({kind}, actor {actor!r}): {problem}; nothing written")
        unclosed = rules.batch_end_problem()
        if unclosed:
            raise LedgerError(f"record {unclosed[0] - first} ({prepared[unclosed[0] - first][0]}): {unclosed[1]}; nothing written")
        return rules

    def _refuse_stored_role_breach(self, conn: sqlite3.Connection) -> None:
        """Raise :class:`LedgerIntegrityError` at the first entry since this handle last looked whose
        actor's registered role may not sign its kind (SQLite finds it; every pair is allowed once)."""
        allowed = [(kind, role) for kind, schema in SCHEMAS.items() for role in schema.roles]
        row = conn.execute(
            "SELECT e.seq, e.kind, e.actor, coalesce(k.role, '') FROM entries AS e LEFT JOIN keys AS k ON k.actor = e.actor "
            f"WHERE e.seq > ? AND (e.kind, coalesce(k.role, '')) NOT IN (VALUES {', '.join(['(?, ?)'] * len(allowed))}) "
            "ORDER BY e.seq LIMIT 1", (self._ruled, *(v for pair in allowed for v in pair))).fetchone()
        if row:
            seq, kind, actor, role = row
            problem = role_problem(kind, actor, role) if role else f"actor {actor!r} has no registered public key"
            self._rules, self._ruled = PayoutRules(), 0
            raise LedgerIntegrityError(f"{self.path}: stored entry {seq} breaks the signing roles ({problem or f'unknown kind {kind!r}'}); "
                                       "run `ledger verify`; nothing written")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # --- reading and proving -------------------------------------------------------------------

    def entries(self, kind: str | None = None, actor: str | None = None) -> Iterator[Entry]:
        """The entries in sequence order, optionally only those of one ``kind`` and/or ``actor``
        (filtered while reading the table itself: no index, so a damaged one hides nothing)."""
        where = [(c, v) for c, v in (("kind", kind), ("actor", actor)) if v is not None]
        clause = (" WHERE " + " AND ".join(f"+{c} = ?" for c, _ in where)) if where else ""
        rows = self._conn.execute(f"SELECT {COLUMNS} FROM entries{clause} ORDER BY seq", [v for _, v in where])
        return (row_to_entry(row) for row in rows)

    def entry(self, seq: int) -> Entry:
        """Entry ``seq`` (1 to ``len(self)``)."""
        size = len(self)
        row = self._conn.execute(f"SELECT {COLUMNS} FROM entries WHERE seq = ?", (seq,)).fetchone() if _in(seq, 1, size) else None
        if row is None:
            raise LedgerError(f"{self.path} has no entry {seq!r}: its entries are numbered 1 to {size}")
        return row_to_entry(row)

    def head(self) -> Entry | None:
        """The last entry, or ``None`` for an empty ledger."""
        row = self._conn.execute(f"SELECT {COLUMNS} FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return row_to_entry(row) if row else None

    def heads(self) -> list[SignedHead]:
        """Every signed tree head, by size."""
        return [SignedHead(*row) for row in self._conn.execute("SELECT size, root, timestamp, signature FROM heads ORDER BY size")]

    def signed_head(self, size: int | None = None) -> SignedHead:
        """The signed head of ``size`` entries (default: the latest)."""
        if size is None:
            row = self._conn.execute("SELECT size, root, timestamp, signature FROM heads ORDER BY size DESC LIMIT 1").fetchone()
        elif _in(size, 0, len(self)):
            row = self._conn.execute("SELECT size, root, timestamp, signature FROM heads WHERE size = ?", (size,)).fetchone()
        else:
            row = None
        if row is None:
            raise LedgerError(f"{self.path} has no signed tree head" + ("" if size is None else f" of size {size}"))
        return SignedHead(*row)

    def root_at(self, size: int) -> bytes:
        """Merkle root of the first ``size`` entries, from the stored Merkle state."""
        return tree.root_at(self._conn, size)

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``seq`` in the tree of the first ``size`` entries."""
        return tree.inclusion_proof(self._conn, seq - 1, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof from the first ``old_size`` entries to the first ``new_size``."""
        return tree.consistency_proof(self._conn, old_size, new_size)

    def __len__(self) -> int:
        row = self._conn.execute("SELECT MAX(seq) FROM entries").fetchone()
        return row[0] or 0

    def close(self) -> None:
        """Close the database; a read-only handle raises if a writer changed the file meanwhile."""
        self._conn.close()
        if self._snapshot is not None and fingerprint(self.path) != self._snapshot:
            raise LedgerError(f"{self.path} was changed by a writer while it was read; read it again")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the exception in flight says more than a changed file
            self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _refuse_replays(conn: sqlite3.Connection, prepared: list[Prepared]) -> None:
    """Refuse a statement already in the log or twice in the batch."""
    signatures = [p[3] for p in prepared]
    if len(set(signatures)) != len(signatures):
        raise LedgerError("replay refused: the batch holds the same signed statement twice; nothing written")
    marks = ",".join("?" * len(signatures))
    row = conn.execute(f"SELECT seq FROM entries WHERE signature IN ({marks}) LIMIT 1", signatures).fetchone()
    if row:
        raise LedgerError(f"replay refused: a statement of the batch is already entry {row[0]}; nothing written")


def _in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _open_writer(path: Path) -> sqlite3.Connection:
    """Open (or create) the ledger at ``path`` to append: refuse what is not a ledger, or a ledger
    that fails SQLite's integrity check; create the schema of a new one (and any missing trigger)."""
    if path.exists() and not (path.is_file() and path.stat().st_size == 0):
        check_file(path)  # an empty file becomes a new ledger
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            check_tables(conn, path)
            problems = integrity_problems(conn)
            if problems:
                raise LedgerIntegrityError(f"{path} fails SQLite's integrity check ({problems[0]}); "
                                           "run `ledger verify`; not appending to it")
        conn.close()
        conn = connect(path)
        conn.executescript(SCHEMA)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        conn.close()
        raise LedgerError(f"cannot open ledger {path}: {exc}; `ledger verify` says where") from exc
    except LedgerError:
        conn.close()
        raise
    return conn


def integrity_problems(conn: sqlite3.Connection, limit: int = 10) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` messages (at most ``limit``), empty when it finds none."""
    messages = [row[0] for row in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    return [] if messages == ["ok"] else [m for text in messages for m in text.splitlines() if not m.startswith("*** in database")]


def _check_record(index: int, kind: str, actor: str, payload: Mapping[str, Any]) -> tuple[str, Any]:
    """Check one record; return its payload's canonical JSON text and that text decoded."""
    if kind not in KINDS:
        raise LedgerError(f"record {index}: unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    try:
        check_actor(actor)
    except LedgerError as exc:
        raise LedgerError(f"record {index} ({kind}): {exc}") from exc
    if not isinstance(payload, Mapping):
        raise LedgerError(f"record {index} ({kind}): payload must be a JSON object, got {type(payload).__name__}")
    encoded = plain_json(payload)  # plain payloads (no floats) always survive a JSON round trip
    if encoded is None:
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
    text = encoded.decode("utf-8")
    decoded = json.loads(text)
    problem = payload_problem(kind, decoded)
    if problem:
        raise LedgerError(f"record {index} ({kind}, actor {actor!r}): {problem}; nothing written")
    return text, decoded
