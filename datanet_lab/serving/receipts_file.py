"""The receipts file of payable inference, ``<run>/inference/receipts.jsonl``, and the ledger
entries that commit it.

Format: one receipt per line, the line's bytes (without its newline) being the receipt's Merkle
leaf (RFC 8785 canonical JSON, :func:`ledger.receipts.receipt_leaf`); the receipts of a batch are
consecutive lines in index order, batch after batch in commit order. Each committed batch is one
``receipt_batch`` ledger entry signed by :data:`HOST` whose root is the RFC 9162 root of its
lines. Lines after the last committed batch were never acknowledged (written before an entry
that never came); a line without its newline is a write cut short.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger
from ledger import merkle
from ledger.receipts import KIND, ReceiptBatch

HOST, HOST_ROLE = "inference-host", "host"
"""The actor that signs receipt batches and inference payout epochs, and its registered role."""
FOLDER, RECEIPTS = "inference", "receipts.jsonl"
"""The economy's folder in a run directory, and the receipts file in it."""


@dataclass(frozen=True)
class FileBatch:
    """One batch of a receipts file: its ``receipts``, their lines' bytes (``leaves``, without
    the newline) and the byte offset ``end`` after its last line."""

    receipts: list[dict[str, Any]]
    leaves: list[bytes]
    end: int

    def tree(self) -> ReceiptBatch:
        """The batch's tree over the lines' bytes as they are (what a ledger entry committed)."""
        hashes = tuple(merkle.leaf_hash(leaf) for leaf in self.leaves)
        return ReceiptBatch(self.receipts[0]["batch_id"], tuple(self.receipts), hashes, merkle.root_from_hashes(hashes))


def read_batches(path: Path, start: int = 0) -> Iterator[FileBatch]:
    """The batches of receipts file ``path`` from byte ``start`` (nothing when it is missing): runs
    of lines of one batch id indexed 0, 1, ...; stops at a line that is not a whole receipt (a
    write cut short)."""
    if not path.exists():
        return
    receipts: list[dict[str, Any]] = []
    leaves: list[bytes] = []
    position = start
    with open(path, "rb") as lines:
        lines.seek(start)
        for line in lines:
            try:
                receipt = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                receipt = None
            if not isinstance(receipt, dict) or "batch_id" not in receipt:
                break
            if receipts and (receipt["batch_id"], receipt.get("index")) != (receipts[0]["batch_id"], len(receipts)):
                yield FileBatch(receipts, leaves, position)
                receipts, leaves = [], []
            receipts.append(receipt)
            leaves.append(line[:-1])
            position += len(line)
    if receipts:
        yield FileBatch(receipts, leaves, position)


def batch_entries(book: ledger.Ledger) -> dict[str, int]:
    """The sequence number of each ``receipt_batch`` entry of :data:`HOST`, by batch id."""
    return {e.payload["batch_id"]: e.seq for e in book.entries(kind=KIND, actor=HOST)}


def committed_batches(path: Path, seqs: Mapping[str, int]) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Each batch of receipts file ``path`` with the sequence number of its entry from ``seqs``
    (:func:`batch_entries`), up to the first batch without one (lines not committed)."""
    for batch in read_batches(path):
        if batch.receipts[0]["batch_id"] not in seqs:
            return
        yield batch.receipts, seqs[batch.receipts[0]["batch_id"]]
