"""A small transparency log of a Datanet, embedded in SQLite: signed entries in a hash chain and
an RFC 9162 Merkle tree, signed tree heads, proofs an outsider checks offline, exact payouts,
inference fees split by role and accrued without dust, and per-inference receipts.

Stands alone: stdlib, ``rfc8785`` and ``pynacl`` only, nothing from ``datanet`` or
``attribution``, so anyone can verify a ledger without the ML stack.
"""

from ledger.canonical import canonical_json
from ledger.clock import Clock, fixed_clock, system_clock
from ledger.epochs import HARM_THRESHOLD, EpochPlan, Slash, epoch_records, plan_epoch
from ledger.errors import LedgerError, LedgerIntegrityError
from ledger.fees import DEFAULT_ROLE_SHARES, Accrual, AccrualClose, DustReport, measure_dust, split_by_role
from ledger.keys import Keystore
from ledger.payouts import PayoutSplit, largest_remainder_split, split_positive_credit
from ledger.receipts import ReceiptBatch, check_receipt, commit_receipts, make_receipt, receipt_leaf, receipt_proof
from ledger.store import KINDS, Entry, Ledger, SignedHead, SignedRecord
from ledger.verify import VerifyReport, verify

__all__ = [
    "DEFAULT_ROLE_SHARES",
    "HARM_THRESHOLD",
    "KINDS",
    "Accrual",
    "AccrualClose",
    "Clock",
    "DustReport",
    "Entry",
    "EpochPlan",
    "Keystore",
    "Ledger",
    "LedgerError",
    "LedgerIntegrityError",
    "PayoutSplit",
    "ReceiptBatch",
    "SignedHead",
    "SignedRecord",
    "Slash",
    "VerifyReport",
    "canonical_json",
    "check_receipt",
    "commit_receipts",
    "epoch_records",
    "fixed_clock",
    "largest_remainder_split",
    "make_receipt",
    "measure_dust",
    "plan_epoch",
    "receipt_leaf",
    "receipt_proof",
    "split_by_role",
    "split_positive_credit",
    "system_clock",
    "verify",
]
