"""Append-only, hash-chained provenance log of a Datanet, embedded in SQLite.

Stands alone: stdlib, ``rfc8785`` and ``cryptography`` only, nothing from ``datanet`` or
``attribution``, so anyone can verify a ledger without the ML stack.
"""

from ledger.canonical import canonical_json
from ledger.clock import Clock, fixed_clock, system_clock
from ledger.errors import LedgerError, LedgerIntegrityError
from ledger.payouts import PayoutSplit, largest_remainder_split, split_positive_credit
from ledger.store import KINDS, Entry, Ledger
from ledger.verify import VerifyReport, verify

__all__ = [
    "KINDS",
    "Clock",
    "Entry",
    "Ledger",
    "LedgerError",
    "LedgerIntegrityError",
    "PayoutSplit",
    "VerifyReport",
    "canonical_json",
    "fixed_clock",
    "largest_remainder_split",
    "split_positive_credit",
    "system_clock",
    "verify",
]
