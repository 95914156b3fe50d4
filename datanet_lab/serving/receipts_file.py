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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger
from ledger import merkle
from ledger.receipts import KIND, ReceiptBatch
from ledger.receipts import read_batches as read_file_batches

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
        """The batch's tree over its lines' bytes as they are (what a ledger entry committed;
        without :func:`~ledger.receipts.build_batch`'s checks: the entry's root vouches for them)."""
        hashes = tuple(merkle.leaf_hash(leaf) for leaf in self.leaves)
        return ReceiptBatch(self.receipts[0]["batch_id"], tuple(self.receipts), hashes, merkle.root_from_hashes(hashes))


def read_batches(path: Path, start: int = 0) -> Iterator[FileBatch]:
    """The batches :func:`ledger.receipts.read_batches` finds in receipts file ``path`` from byte
    ``start``, with their lines' bytes; nothing when the file is missing."""
    if not path.exists():
        return
    with open(path, "rb") as raw:
        raw.seek(start)
        for receipts, end in read_file_batches(path, start):
            yield FileBatch(receipts, raw.read(end - raw.tell()).split(b"\n")[:-1], end)


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
