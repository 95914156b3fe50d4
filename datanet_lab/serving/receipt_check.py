"""The offline check of a served run's receipts: each committed receipt of
``inference/receipts.jsonl`` proven against the run's ledger and the proof checked with the log's
key pinned, as an outsider holding the proof would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ledger
from ledger.proofs import ProofCheck
from ledger.receipts import build_batch, check_receipt, receipt_proof
from datanet_lab.pipeline.run import Run
from datanet_lab.serving.receipts_file import FOLDER, RECEIPTS, batch_entries, committed_batches


@dataclass(frozen=True)
class ReceiptCheck:
    """What :func:`check_receipts` found: receipts ``checked`` of ``total``, and the first few
    ``failures`` (request id and the check's status and message)."""

    checked: int
    total: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def check_receipts(run: str | Path | Run, sample: int | None = None, seed: int = 0) -> ReceiptCheck:
    """Prove committed receipts of ``run``'s ``inference/receipts.jsonl`` against its ledger and
    check each proof offline with the log's key pinned (:func:`~ledger.receipts.receipt_proof`,
    :func:`~ledger.receipts.check_receipt`): all of them, or ``sample`` drawn with ``seed``. A
    receipt that fails is reported in ``failures``, one whose batch in the file no longer matches
    its entry as ``unprovable``."""
    directory = run.directory if isinstance(run, Run) else Path(run)
    path = directory / FOLDER / RECEIPTS
    failures, checked = [], 0
    with ledger.Ledger(directory / "ledger.sqlite") as book:
        seqs, key = batch_entries(book), book.log_public_key
        batches = list(committed_batches(path, seqs))
        sizes = [len(receipts) for receipts, _ in batches]
        total = sum(sizes)
        chosen = np.arange(total) if sample is None or sample >= total else np.sort(
            np.random.default_rng(seed).choice(total, sample, replace=False))
        starts = np.cumsum([0, *sizes])
        for number, (receipts, seq) in enumerate(batches):
            picked = chosen[(chosen >= starts[number]) & (chosen < starts[number + 1])] - starts[number]
            if not len(picked):
                continue
            indices = picked.tolist()
            for index, result in zip(indices, _check_batch(book, receipts, seq, indices, key)):
                checked += 1
                if not result.ok and len(failures) < 10:
                    failures.append(f"{receipts[index].get('request_id')}: {result.status}: {result.message}")
    return ReceiptCheck(checked, total, tuple(failures))


def _check_batch(book: ledger.Ledger, receipts: list[dict[str, Any]], seq: int, indices: list[int],
                 key: str) -> list[ProofCheck]:
    """The check of each receipt ``indices`` of a batch of the receipts file, proven against its
    entry ``seq``; all ``unprovable`` when the batch is not what the entry committed (altered)."""
    try:
        batch = build_batch(receipts)
        documents = [receipt_proof(book, batch, index, seq) for index in indices]
    except ledger.LedgerError as exc:
        return [ProofCheck(False, "unprovable", str(exc))] * len(indices)
    return [check_receipt(document, key) for document in documents]
