"""Offline verification of a ledger (SQLite file or JSONL export): chain, Merkle tree, signatures.

Checks every entry's sequence number, link, hash and signature (under its actor's registered key),
every key's proof of possession, every signed tree head (signature and root at its size, the
last one covering every entry), the stored Merkle nodes of a SQLite file, and the payout rules of
:func:`ledger.epochs.epoch_problem`. Reports the first bad entry and why.

Signature checks dominate (one Ed25519 verify per entry, ~60 µs with libsodium), so large logs
are split into contiguous chunks checked by ``workers`` processes. libsodium releases the GIL, so
threads would share the verifies too, but not the ~6 µs of Python per entry (its bytes, hashes and
Merkle leaf); processes run all of it in parallel.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ledger import merkle, tree
from ledger.canonical import canonical_json
from ledger.encoding import GENESIS_HASH, entry_bytes, key_bytes, statement_bytes
from ledger.epochs import epoch_problem
from ledger.errors import LedgerError
from ledger.keys import signature_ok
from ledger.store import COLUMNS, SignedHead, connect

PARALLEL_FROM = 4096
"""Logs shorter than this are checked in-process: starting workers costs more than it saves."""

Row = tuple[int, str, str, str, str, str, str, str]
"""``(seq, kind, actor, timestamp, payload_text, prev_hash, signature, hash)``."""
Problem = tuple[int, str]
"""``(position, reason)``: position 1 is the first row; problems are ranked by position."""


@dataclass(frozen=True)
class LogContents:
    """Everything verification reads: entries, signed heads, ``actor -> (role, public_key, proof)``."""

    rows: list[Row]
    heads: list[SignedHead]
    keys: dict[str, tuple[str, str, str]]
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
        return f"ledger INVALID at entry {self.first_bad_seq}: {self.reason}"


def verify(path: str | Path, workers: int = 2) -> VerifyReport:
    """Verify the SQLite ledger or the JSONL export at ``path`` (told apart by the file's header).

    Raises :class:`LedgerError` only when the file is missing or is not a ledger at all.
    """
    path = Path(path)
    if not path.is_file():
        raise LedgerError(f"no ledger file at {path}")
    with path.open("rb") as handle:
        is_sqlite = handle.read(16) == b"SQLite format 3\0"
    if is_sqlite:
        return verify_contents(read_sqlite(path), workers)
    from ledger.export import read_export  # export imports this module

    return verify_contents(read_export(path), workers)


def read_sqlite(path: Path) -> LogContents:
    """Read a SQLite ledger (read-only)."""
    try:
        conn = connect(path, read_only=True)
        try:
            rows = conn.execute(f"SELECT {COLUMNS} FROM entries ORDER BY seq").fetchall()
            heads = [SignedHead(*r) for r in conn.execute("SELECT size, root, timestamp, signature FROM heads ORDER BY size")]
            keys = {a: (r, k, p) for a, r, k, p in conn.execute("SELECT actor, role, public_key, proof FROM keys")}
            meta = conn.execute("SELECT value FROM meta WHERE name = 'log_public_key'").fetchone()
            nodes = {i: bytes(h) for i, h in conn.execute("SELECT id, hash FROM tree")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # not a database file, or not a ledger's tables
        raise LedgerError(f"{path} is not a readable ledger: {exc}") from exc
    return LogContents(rows, heads, keys, meta[0] if meta else None, nodes)


def verify_contents(log: LogContents, workers: int = 2) -> VerifyReport:
    """Verify what :func:`read_sqlite` or :func:`ledger.export.read_export` read."""
    public = {actor: key for actor, (_, key, _) in log.keys.items()}
    leaves, entry_problems = _check_entries(log.rows, public, workers)
    root, tree_problems = _tree_problems(log, leaves)
    epoch = epoch_problem([(position, r[1], r[4]) for position, r in enumerate(log.rows, 1)])
    # At one position, a broken link explains more than a hash, a hash more than a tree head.
    ranked = [_chain_problems(log.rows), entry_problems, _key_problems(log), tree_problems, [epoch] if epoch else []]
    problems = [(position, rank, reason) for rank, found in enumerate(ranked) for position, reason in found]
    if problems:
        position, _, reason = min(problems, key=lambda p: p[:2])
        seq = log.rows[position - 1][0] if 1 <= position <= len(log.rows) else position
        return VerifyReport(False, len(log.rows), None, None, seq, reason)
    return VerifyReport(True, len(log.rows), log.rows[-1][7] if log.rows else None, root.hex())


def _check_entries(rows: list[Row], public: dict[str, str], workers: int) -> tuple[list[bytes], list[Problem]]:
    """Leaf hashes of all entries and the first hash/signature problem, over ``workers`` processes."""
    if workers <= 1 or len(rows) < PARALLEL_FROM:
        leaves, problem = _check_chunk(rows, public, 0)
        return leaves, [problem] if problem else []
    step = -(-len(rows) // workers)
    starts = range(0, len(rows), step)
    # Forked workers inherit the rows (under fork, initargs are not pickled): only ranges travel.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(starts), mp_context=context, initializer=_inherit, initargs=(rows, public)) as pool:
        results = list(pool.map(_check_range, starts, [step] * len(starts)))
    return [leaf for leaves, _ in results for leaf in leaves], [p for _, p in results if p]


_inherited: tuple[Sequence[Row], dict[str, str]] = ((), {})
"""The rows and keys a worker process checks ranges of (set once per worker by :func:`_inherit`)."""


def _inherit(rows: Sequence[Row], public: dict[str, str]) -> None:
    global _inherited
    _inherited = (rows, public)


def _check_range(start: int, length: int) -> tuple[list[bytes], Problem | None]:
    rows, public = _inherited
    return _check_chunk(rows[start : start + length], public, start)


def _check_chunk(rows: Sequence[Row], public: dict[str, str], offset: int) -> tuple[list[bytes], Problem | None]:
    leaves, problem = [], None
    for position, (seq, kind, actor, timestamp, payload_text, prev_hash, signature, stored_hash) in enumerate(rows, offset + 1):
        try:
            raw = entry_bytes(seq, kind, actor, timestamp, payload_text, prev_hash, signature)
        except (TypeError, ValueError) as exc:
            raw, reason = b"", f"malformed entry fields: {exc}"
        else:  # past the first problem only the leaves matter: the report names the first one
            reason = None if problem else _entry_reason(raw, kind, actor, payload_text, signature, stored_hash, public)
        leaves.append(merkle.leaf_hash(raw))
        if reason and problem is None:
            problem = (position, reason)
    return leaves, problem


def _entry_reason(
    raw: bytes, kind: str, actor: str, payload_text: str, signature: str, stored_hash: str, public: dict[str, str]
) -> str | None:
    recomputed = hashlib.sha256(raw).hexdigest()
    if recomputed != stored_hash:
        try:
            canonical = canonical_json(json.loads(payload_text)).decode("utf-8")
        except (ValueError, LedgerError) as exc:
            return f"payload is not valid JSON: {exc}"
        if canonical != payload_text:
            return "payload is not in canonical JSON form"
        return f"hash mismatch: stored {str(stored_hash)[:16]}…, recomputed {recomputed[:16]}… (entry content changed)"
    if actor not in public:
        return f"actor {actor!r} has no registered public key (unknown key)"
    if not signature_ok(public[actor], signature, statement_bytes(kind, actor, payload_text)):
        return f"signature does not verify under actor {actor!r}'s registered key"
    return None


def _chain_problems(rows: list[Row]) -> list[Problem]:
    """First broken sequence number or link, and the first replayed statement."""
    problems: list[Problem] = []
    prev_hash, seen = GENESIS_HASH, {}
    for expected, (seq, *_, stored_prev, signature, stored_hash) in enumerate(rows, 1):
        if seq != expected:
            problems.append((expected, f"sequence number {seq} where {expected} was expected (entry missing or inserted)"))
            break
        if stored_prev != prev_hash:
            problems.append((expected, f"prev_hash {str(stored_prev)[:16]}… does not match the previous entry's hash {prev_hash[:16]}…"))
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
