"""Merkle state kept in SQLite beside the entries: every perfect subtree's root, by node id.

A node ``(level, index)`` covers leaves ``[index * 2**level, (index + 1) * 2**level)`` and is
stored under id ``level << 40 | index``. Costs (n leaves):

* append: one leaf hash plus, amortised, one node hash and two row inserts; each transaction
  first reads the ``<= log2 n`` border nodes;
* a subtree root, a tree head at any earlier size, an inclusion or a consistency proof: at most
  ``2 * ceil(log2 n)`` primary-key look-ups in one query, and as many node hashes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from ledger import merkle
from ledger.errors import LedgerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tree (id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS tree_no_update BEFORE UPDATE ON tree
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS tree_no_delete BEFORE DELETE ON tree
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused'); END;
"""


def node_id(level: int, index: int) -> int:
    return level << 40 | index


def _fetch(conn: sqlite3.Connection, nodes: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    nodes = list(dict.fromkeys(nodes))
    ids = {node_id(*n): n for n in nodes}
    rows = conn.execute(f"SELECT id, hash FROM tree WHERE id IN ({','.join('?' * len(ids))})", list(ids)).fetchall()
    found = {ids[i]: bytes(h) for i, h in rows}
    missing = [n for n in nodes if n not in found]
    if missing:
        raise LedgerError(f"Merkle state is missing node(s) (level, index) {missing[:3]}; run `ledger verify`")
    return found


def subtree_roots(conn: sqlite3.Connection, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Roots of the RFC subtrees over leaf ``ranges`` ``[lo, hi)``, from stored perfect nodes."""
    parts = [merkle.perfect_subtrees(lo, hi) for lo, hi in ranges]
    found = _fetch(conn, (n for nodes in parts for n in nodes)) if parts else {}
    return [merkle.fold_subtrees([found[n] for n in nodes]) for nodes in parts]


def root_at(conn: sqlite3.Connection, size: int) -> bytes:
    """Root of the tree of the first ``size`` leaves."""
    return subtree_roots(conn, [(0, size)])[0] if size else merkle.EMPTY_ROOT


def compact_range(conn: sqlite3.Connection, size: int) -> merkle.CompactRange:
    """The border of the stored tree of ``size`` leaves, ready to take more leaves."""
    nodes = merkle.perfect_subtrees(0, size) if size else []
    found = _fetch(conn, nodes) if nodes else {}
    return merkle.CompactRange(size, [found[n] for n in nodes])


def store_nodes(conn: sqlite3.Connection, nodes: Iterable[tuple[int, int, bytes]]) -> None:
    """Insert ``(level, index, hash)`` nodes completed by appends (inside the caller's transaction)."""
    conn.executemany("INSERT INTO tree (id, hash) VALUES (?, ?)", ((node_id(lv, i), h) for lv, i, h in nodes))


def inclusion_proof(conn: sqlite3.Connection, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return subtree_roots(conn, merkle.inclusion_ranges(index, size))


def consistency_proof(conn: sqlite3.Connection, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 consistency proof between the trees of ``old_size`` and ``new_size`` leaves."""
    return subtree_roots(conn, merkle.consistency_ranges(old_size, new_size))
