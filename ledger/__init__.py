"""A small transparency log of a Datanet, embedded in SQLite: signed entries in a hash chain and
an RFC 9162 Merkle tree, signed tree heads, proofs an outsider checks offline, exact payouts.

Stands alone: stdlib, ``rfc8785`` and ``pynacl`` only, nothing from ``datanet`` or
``attribution``, so anyone can verify a ledger without the ML stack.
"""

from ledger.canonical import canonical_json
from ledger.clock import Clock, fixed_clock, system_clock
from ledger.epochs import HARM_THRESHOLD, EpochPlan, Slash, epoch_records, plan_epoch
from ledger.errors import LedgerError, LedgerIntegrityError
from ledger.keys import Keystore
from ledger.payouts import PayoutSplit, largest_remainder_split, split_positive_credit
from ledger.store import KINDS, Entry, Ledger, SignedHead, SignedRecord
from ledger.verify import VerifyReport, verify

__all__ = [
    "HARM_THRESHOLD",
    "KINDS",
    "Clock",
    "Entry",
    "EpochPlan",
    "Keystore",
    "Ledger",
    "LedgerError",
    "LedgerIntegrityError",
    "PayoutSplit",
    "SignedHead",
    "SignedRecord",
    "Slash",
    "VerifyReport",
    "canonical_json",
    "epoch_records",
    "fixed_clock",
    "largest_remainder_split",
    "plan_epoch",
    "split_positive_credit",
    "system_clock",
    "verify",
]
