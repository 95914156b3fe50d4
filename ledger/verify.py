"""Offline verification of a ledger (SQLite file or JSONL export): chain, Merkle tree, signatures.

Checks a SQLite file with SQLite's own integrity check first (a damaged page or index is reported
with the page, table or entry it hits), then every entry's sequence number, link, hash, signature
(under its actor's registered key), its actor's registered role (entitled to sign its kind),
canonical payload and its kind's schema, every key's proof of possession, every signed tree head
(signature and root at its size, the last one covering every entry), the stored Merkle nodes of
a SQLite file, and the payout rules (:mod:`ledger.schemas`). Reports the first bad entry and why.
Reading never writes: see :func:`ledger.store.open_read_only`.

Signature checks dominate (one Ed25519 verify per entry, ~60 µs with libsodium), so large logs
are split into contiguous chunks checked by ``workers`` processes; a large file's integrity check
runs in one more process meanwhile. libsodium releases the GIL, so
threads would share the verifies too, but not the ~6 µs of Python per entry (its bytes, hashes and
Merkle leaf); processes run all of it in parallel.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.connection
import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ledger import merkle, tree
from ledger.canonical import canonical_json
from ledger.encoding import GENESIS_HASH, entry_bytes, key_bytes, statement_bytes
from ledger.errors import LedgerError
from ledger.keys import signature_ok
from ledger.schemas import MONEY_KINDS, PayoutRules, payload_problem, role_problem
from ledger.store import COLUMNS, SQLITE_MAGIC, TABLE_COLUMNS, SignedHead, check_file, check_tables, fingerprint, integrity_problems, open_read_only

PARALLEL_FROM = 4096
"""Logs shorter than this are checked in-process: starting workers costs more than it saves."""

Row = tuple[int, str, str, str, str, str, str, str]
"""``(seq, kind, actor, timestamp, payload_text, prev_hash, signature, hash)``."""
Keys = dict[str, tuple[str, str, str]]
"""``actor -> (role, public_key, proof)``: the registered keys."""
Problem = tuple[int, str]
"""``(position, reason)``: position 1 is the first row; problems are ranked by position."""


@dataclass(frozen=True)
class LogContents:
    """Everything verification reads: entries, signed heads, ``actor -> (role, public_key, proof)``."""

    rows: list[Row]
    heads: list[SignedHead]
    keys: Keys
    log_public_key: str | None
    nodes: dict[int, bytes] | None = field(default=None)  # stored Merkle nodes (SQLite only)


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found. ``first_bad_seq``/``reason`` are set only when ``ok`` is false."""

    ok: bool
    entries: int
    head_hash: str | None
    root: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ledger OK: {self.entries} entries, head {self.head_hash}, Merkle root {self.root}"
        if self.first_bad_seq is None:
            return f"ledger INVALID: {self.reason}"
        return f"ledger INVALID at entry {self.first_bad_seq}: {self.reason}"


def verify(path: str | Path, workers: int = 2) -> VerifyReport:
    """Verify the SQLite ledger or the JSONL export at ``path`` (told apart by the file's header).

    Raises :class:`LedgerError` only when the file is missing or is not a ledger at all; a damaged
    SQLite ledger gets a report naming the page, table or entry where SQLite found the damage.
    """
    path = Path(path)
    if not path.is_file() or not path.stat().st_size:
        check_file(path)  # raises, naming what is there instead
    with path.open("rb") as handle:
        is_sqlite = handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    if is_sqlite:
        return _verify_sqlite(path, workers)
    from ledger.export import read_export  # export imports this module

    return verify_contents(read_export(path), workers)


def _verify_sqlite(path: Path, workers: int, attempts: int = 3) -> VerifyReport:
    """Verify a SQLite ledger, read-only; SQLite's integrity check outranks what the rows show.

    A large file is integrity-checked by a forked process while this one reads and checks the
    rows, so the check mostly fills the core the serial steps leave idle.

    Raises:
        LedgerError: the file is not a ledger, or a writer kept changing it while it was read.
    """
    for _ in range(attempts):
        conn, snapshot = open_read_only(path)
        try:
            report = _schema_damage(conn, path)
            if report is not None:
                return report
            checker = _IntegrityCheck(path) if workers > 1 and path.stat().st_size >= BACKGROUND_CHECK_FROM else None
            damage = None if checker else _damage(conn, path)
            found = damage or _read_rows(conn)
        finally:
            conn.close()
        report = found if isinstance(found, VerifyReport) else verify_contents(found, workers)
        report = (checker.result() if checker else None) or report
        if snapshot is None or fingerprint(path) == snapshot:
            return report
    raise LedgerError(f"{path} was changed by a writer each time it was read ({attempts} times); verify it again")


BACKGROUND_CHECK_FROM = 4 << 20
"""Files from this size (about 5,000 entries) are integrity-checked in a background process."""


class _IntegrityCheck:
    """:func:`_damage` of a file, computed by a forked process (started on construction)."""

    def __init__(self, path: Path) -> None:
        context = multiprocessing.get_context("fork")
        self._path = path
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_send_damage, args=(path, send), daemon=True)
        self._process.start()
        send.close()

    def result(self) -> VerifyReport | None:
        try:
            found = self._receive.recv()
        except EOFError:  # the checker died: check here instead
            conn, _ = open_read_only(self._path)
            try:
                found = _damage(conn, self._path)
            finally:
                conn.close()
        self._process.join()
        return found


def _send_damage(path: Path, send: multiprocessing.connection.Connection) -> None:
    conn, _ = open_read_only(path)
    try:
        send.send(_damage(conn, path))
    finally:
        conn.close()
        send.close()


def _schema_damage(conn: sqlite3.Connection, path: Path) -> VerifyReport | None:
    """A report when SQLite cannot read the schema; raises :class:`LedgerError` for a non-ledger."""
    try:
        check_tables(conn, path)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        return _damaged(None, _truncation(path) or f"SQLite cannot read the database schema (sqlite_master, rooted at page 1): {_text(exc)}")
    return None


def _damage(conn: sqlite3.Connection, path: Path) -> VerifyReport | None:
    """SQLite's integrity check of the file, as a report naming where it found damage, or ``None``."""
    try:
        problems = integrity_problems(conn)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        truncated = _truncation(path)
        return _damaged(None, truncated) if truncated else _damaged(*_unreadable_row(conn, exc))
    if not problems:
        return None
    seq, where = _locate(conn, problems[0])
    if not where and not re.search(r"page \d+", problems[0]):  # no place named: find the first unreadable row
        seq, found = _unreadable_row(conn, None)
        where = "" if found is None else f"{found}; "
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return _damaged(seq, f"SQLite integrity check: {where}{problems[0]}{more}")


def _read_rows(conn: sqlite3.Connection) -> LogContents | VerifyReport:
    """Everything verification reads from the file, or a report naming the first unreadable row."""
    try:
        rows = conn.execute(f"SELECT {COLUMNS} FROM entries ORDER BY seq").fetchall()
        heads = [SignedHead(*r) for r in conn.execute("SELECT size, root, timestamp, signature FROM heads ORDER BY size")]
        keys = {a: (r, k, p) for a, r, k, p in conn.execute("SELECT actor, role, public_key, proof FROM keys")}
        meta = conn.execute("SELECT value FROM meta WHERE +name = 'log_public_key'").fetchone()
        nodes = {i: h if isinstance(h, bytes) else str(h).encode() for i, h in conn.execute("SELECT id, hash FROM tree")}
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        return _damaged(*_unreadable_row(conn, exc))
    return LogContents(rows, heads, keys, meta[0] if meta else None, nodes)


def _damaged(seq: int | None, reason: str) -> VerifyReport:
    return VerifyReport(False, 0, None, None, seq, reason)


def _text(exc: BaseException) -> str:
    return str(exc) if not isinstance(exc, UnicodeDecodeError) else "an error message that is not UTF-8 (a damaged schema?)"


def _locate(conn: sqlite3.Connection, message: str) -> tuple[int | None, str]:
    """The entry (when the message names an entries row) and the table or index a message is about."""
    row = re.search(r"row (\d+) missing from index (\S+)", message)
    index = re.search(r"index (\S+)", message)
    page = re.search(r"[Pp]age (\d+)", message)
    value = re.search(r"(\w+) value in (\w+)\.(\w+)", message)
    try:
        if "header" in message:
            return None, "the SQLite header (the file's first 100 bytes): "
        if value and value.group(2) in TABLE_COLUMNS and value.group(3) in TABLE_COLUMNS[value.group(2)]:
            table, column = value.group(2), value.group(3)
            expected = "blob" if (table, column) == ("tree", "hash") else "integer" if column in ("seq", "size", "id") else "text"
            found = conn.execute(f'SELECT rowid FROM {table} NOT INDEXED WHERE typeof("{column}") != ? ORDER BY rowid LIMIT 1',
                                 (expected,)).fetchone()
            seq = found[0] if found and table == "entries" else None
            return seq, f"table {table}" + (f", row {found[0]}" if found else "") + (f" (entry {seq})" if seq else "") + ": "
        if index:
            table = conn.execute("SELECT tbl_name FROM sqlite_master WHERE name = ?", (index.group(1),)).fetchone()
            seq = int(row.group(1)) if row and table and table[0] == "entries" else None
            return seq, f"table {table[0] if table else '?'}" + (f", entry {seq}" if seq else "") + ": "
        if page:
            owner = conn.execute("SELECT name FROM dbstat WHERE pageno = ?", (int(page.group(1)),)).fetchone()
            return None, f"page {page.group(1)}" + (f" (of {owner[0]})" if owner else "") + ": "
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        pass
    return None, ""


def _truncation(path: Path) -> str:
    """Where the file is cut off, when it is shorter than its SQLite header declares, else ``""``."""
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100:
        return f"the file is truncated: it holds {len(header)} bytes, less than SQLite's 100-byte header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size  # 1 stands for 65,536
    pages, size = int.from_bytes(header[28:32], "big"), path.stat().st_size
    if page_size and pages * page_size > size:
        return (f"the file is truncated: its header declares {pages} pages of {page_size} bytes, it holds "
                f"{size} bytes, so pages {size // page_size + 1} to {pages} are missing or cut short")
    return ""


def _unreadable_row(conn: sqlite3.Connection, exc: BaseException | None) -> tuple[int | None, str | None]:
    """The first row SQLite cannot read back or whose text is not UTF-8, and why; when every row
    and index reads back, ``exc`` (the error that sent us looking) or ``None``."""
    conn.text_factory = bytes
    for table, columns in TABLE_COLUMNS.items():
        last = None
        types = ", ".join(f"typeof({c})" for c in columns)
        try:
            for rowid, *values in conn.execute(f"SELECT rowid, {', '.join(columns)}, {types} FROM {table} ORDER BY rowid"):
                last = rowid
                for column, value, kind in zip(columns, values, values[len(columns):]):
                    if kind == b"text":
                        try:
                            value.decode("utf-8")
                        except UnicodeDecodeError:
                            seq = rowid if table == "entries" else None
                            return seq, f"table {table}, row {rowid}: column {column} is not UTF-8 text"
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
            after = f"after row {last}" if last is not None else "at its first row"
            return (last + 1 if table == "entries" and last is not None else None,
                    f"table {table} is unreadable {after}: {_text(error)}")
    try:
        indexes = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()
        for index, table in ((i.decode(), t.decode()) for i, t in indexes):
            column = conn.execute(f'PRAGMA index_info("{index}")').fetchone()[2].decode()
            try:  # read every key of the index, in index order
                for _ in conn.execute(f'SELECT "{column}" FROM "{table}" INDEXED BY "{index}" ORDER BY "{column}"'):
                    pass
            except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
                pages = [str(n) for (n,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (index,))]
                return None, f"index {index} of table {table} (page(s) {', '.join(pages)}) is unreadable: {_text(error)}"
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        pass
    for table in TABLE_COLUMNS:  # the damage is where no read reaches: which table's b-trees hold it
        try:
            conn.execute(f"PRAGMA integrity_check({table})").fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
            return None, f"table {table} or one of its indexes is damaged: {_text(error)}"
    return None, None if exc is None else f"SQLite cannot read the ledger back: {_text(exc)}"


def verify_contents(log: LogContents, workers: int = 2) -> VerifyReport:
    """Verify what was read from a SQLite file or by :func:`ledger.export.read_export`."""
    leaves, entry_problems = _check_entries(log.rows, log.keys, workers)
    root, tree_problems = _tree_problems(log, leaves)
    # At one position, a broken link explains more than a hash, a hash more than a tree head.
    ranked = [_chain_problems(log.rows), entry_problems, _key_problems(log), tree_problems, _payout_problems(log)]
    problems = [(position, rank, reason) for rank, found in enumerate(ranked) for position, reason in found]
    if problems:
        position, _, reason = min(problems, key=lambda p: p[:2])
        stored = log.rows[position - 1][0] if 1 <= position <= len(log.rows) else position
        seq = stored if type(stored) is int else position  # a damaged row may hold no sequence number
        return VerifyReport(False, len(log.rows), None, None, seq, reason)
    return VerifyReport(True, len(log.rows), log.rows[-1][7] if log.rows else None, root.hex())


def _payout_problems(log: LogContents) -> list[Problem]:
    """The first entry breaking the payout rules; an epoch must close before the batch that
    opened it ends (a signed head's size marks a batch's end)."""
    rules, ends = PayoutRules(), {head.size for head in log.heads}
    for position, (_, kind, _, _, text, *_) in enumerate(log.rows, 1):
        if kind in MONEY_KINDS:
            try:
                payload = json.loads(text)
            except (TypeError, ValueError, RecursionError):
                payload = None
            if payload_problem(kind, payload) is None:  # otherwise the entry check reports it
                reason = rules.step(position, kind, payload, log.keys)
                if reason:
                    return [(position, reason)]
        if position in ends and rules.batch_end_problem():
            return [rules.batch_end_problem()]
    unclosed = rules.batch_end_problem()
    return [unclosed] if unclosed else []


def _check_entries(rows: list[Row], keys: Keys, workers: int) -> tuple[list[bytes], list[Problem]]:
    """Leaf hashes of all entries and the first hash/signature problem, over ``workers`` processes."""
    if workers <= 1 or len(rows) < PARALLEL_FROM:
        leaves, problem = _check_chunk(rows, keys, 0)
        return leaves, [problem] if problem else []
    step = -(-len(rows) // workers)
    starts = range(0, len(rows), step)
    # Forked workers inherit the rows (under fork, initargs are not pickled): only ranges travel.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(starts), mp_context=context, initializer=_inherit, initargs=(rows, keys)) as pool:
        results = list(pool.map(_check_range, starts, [step] * len(starts)))
    return [leaf for leaves, _ in results for leaf in leaves], [p for _, p in results if p]


_inherited: tuple[Sequence[Row], Keys] = ((), {})
"""The rows and keys a worker process checks ranges of (set once per worker by :func:`_inherit`)."""


def _inherit(rows: Sequence[Row], keys: Keys) -> None:
    global _inherited
    _inherited = (rows, keys)


def _check_range(start: int, length: int) -> tuple[list[bytes], Problem | None]:
    rows, keys = _inherited
    return _check_chunk(rows[start : start + length], keys, start)


def _check_chunk(rows: Sequence[Row], keys: Keys, offset: int) -> tuple[list[bytes], Problem | None]:
    leaves, problem = [], None
    for position, (seq, kind, actor, timestamp, payload_text, prev_hash, signature, stored_hash) in enumerate(rows, offset + 1):
        try:
            raw = entry_bytes(seq, kind, actor, timestamp, payload_text, prev_hash, signature)
        except (TypeError, ValueError) as exc:
            raw, reason = b"", f"malformed entry fields: {exc}"
        else:  # past the first problem only the leaves matter: the report names the first one
            reason = None if problem else _entry_reason(raw, kind, actor, payload_text, signature, stored_hash, keys)
        leaves.append(merkle.leaf_hash(raw))
        if reason and problem is None:
            problem = (position, reason)
    return leaves, problem


def _entry_reason(
    raw: bytes, kind: str, actor: str, payload_text: str, signature: str, stored_hash: str, keys: Keys
) -> str | None:
    try:
        payload = json.loads(payload_text)
        canonical = canonical_json(payload).decode("utf-8")
    except RecursionError:
        return "payload is not valid JSON: nested too deeply"
    except (TypeError, ValueError, LedgerError) as exc:
        return f"payload is not valid JSON: {exc}"
    recomputed = hashlib.sha256(raw).hexdigest()
    if canonical != payload_text:  # e.g. a key twice in one object, of which JSON readers keep one
        return "payload is not in canonical JSON form"
    if recomputed != stored_hash:
        return f"hash mismatch: stored {str(stored_hash)[:16]}…, recomputed {recomputed[:16]}… (entry content changed)"
    if actor not in keys:
        return f"actor {actor!r} has no registered public key (unknown key)"
    role, public_key, _ = keys[actor]
    if not signature_ok(public_key, signature, statement_bytes(kind, actor, payload_text)):
        return f"signature does not verify under actor {actor!r}'s registered key"
    return role_problem(kind, actor, role) or payload_problem(kind, payload)


def _chain_problems(rows: list[Row]) -> list[Problem]:
    """First broken sequence number or link, and the first replayed statement."""
    problems: list[Problem] = []
    prev_hash, seen = GENESIS_HASH, {}
    for expected, (seq, *_, stored_prev, signature, stored_hash) in enumerate(rows, 1):
        if seq != expected:
            problems.append((expected, f"sequence number {seq} where {expected} was expected (entry missing or inserted)"))
            break
        if stored_prev != prev_hash:
            problems.append((expected, f"prev_hash {stored_prev} does not match the previous entry's hash {prev_hash}"))
            break
        prev_hash = stored_hash
    for position, (seq, *_, signature, _) in enumerate(rows, 1):
        if signature in seen:
            problems.append((position, f"replay: the signed statement of entry {seen[signature]} appears again"))
            break
        seen[signature] = seq
    return problems


def _key_problems(log: LogContents) -> list[Problem]:
    """Keys whose proof of possession fails, reported at their actor's first entry (0 if none)."""
    first = {}
    for position, (_, _, actor, *_) in reversed(list(enumerate(log.rows, 1))):
        first[actor] = position
    problems = []
    for actor, (role, key, proof) in log.keys.items():
        if not signature_ok(key, proof, key_bytes(actor, role, key)):
            problems.append((first.get(actor, 0), f"public key of actor {actor!r}: proof of possession does not verify (key replaced?)"))
    log_key = log.keys.get("log", ("", None, ""))[1]
    if log.log_public_key is not None and log_key != log.log_public_key:
        problems.append((0, "the log's public key differs from the key registered for actor 'log'"))
    return problems


def _tree_problems(log: LogContents, leaves: list[bytes]) -> tuple[bytes, list[Problem]]:
    """Rebuild the tree; check every signed head and, for SQLite, every stored node."""
    n, problems = len(leaves), []
    heads: dict[int, SignedHead] = {}
    for head in log.heads:
        if heads.setdefault(head.size, head) != head:
            problems.append((max(head.size, 1), f"two different signed tree heads of size {head.size} (equivocation)"))
    if n and not heads:
        problems.append((1, "no signed tree head covers the entries"))
    elif n and max(heads) < n:
        problems.append((max(heads) + 1, f"entries after {max(heads)} are not covered by any signed tree head"))
    if heads and max(heads) > n:
        problems.append((n + 1, f"a signed tree head covers {max(heads)} entries but the log holds {n} (tail truncated)"))
    for size, head in heads.items():
        if log.log_public_key is None or not head.signed_by(log.log_public_key):
            problems.append((max(size, 1), f"signed tree head of size {size}: signature does not verify under the log key"))
    compact, recomputed = merkle.CompactRange(), {}
    for index, leaf in enumerate(leaves):
        for level, node_index, digest in compact.append(leaf):
            recomputed[tree.node_id(level, node_index)] = (index + 1, digest)
        head = heads.get(index + 1)
        if head is not None and head.root != compact.root().hex():
            problems.append((index + 1, f"signed tree head of size {index + 1}: root {head.root[:16]}… is not the entries' root {compact.root().hex()[:16]}…"))
    if log.nodes is not None:
        problems += _node_problems(log.nodes, recomputed, n)
    return compact.root(), problems


def _node_problems(stored: dict[int, bytes], recomputed: dict[int, tuple[int, bytes]], n: int) -> list[Problem]:
    for node, (seq, digest) in recomputed.items():
        if stored.get(node) != digest:
            return [(seq, f"stored Merkle node {node:#x} differs from the entries' (proofs from it would be wrong)")]
    extra = len(set(stored) - set(recomputed))
    return [(n + 1, f"{extra} stored Merkle node(s) beyond the entries")] if extra else []
