"""Exact integer payouts: split a pool of smallest money units by largest remainders.

Shares are computed with exact rational arithmetic (``fractions.Fraction``), so the parts sum to
the pool exactly and each part is within one unit of its exact share. Ties among equal
remainders go to the contributor id that sorts first, so the split is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import numbers
from fractions import Fraction
from math import floor, isfinite

from ledger.errors import LedgerError


@dataclass(frozen=True)
class PayoutSplit:
    """Integer payouts per contributor; ``unallocated`` is what no positive credit claimed.

    Invariant: ``sum(payouts.values()) + unallocated == pool``.
    """

    pool: int
    payouts: dict[str, int]
    unallocated: int


def largest_remainder_split(pool: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``pool`` units in proportion to non-negative ``weights`` (Hamilton's method).

    Each contributor gets the floor of its exact share; the units left over go one each to the
    largest fractional remainders, ties broken by contributor id (ascending).

    Raises:
        LedgerError: a negative or non-integer pool, a negative or non-finite weight, or weights
            that are all zero.
    """
    check_pool(pool)
    for contributor, weight in weights.items():
        if not isfinite(weight) or weight < 0:
            raise LedgerError(f"weight of {contributor!r} must be finite and >= 0, got {weight!r}")
    exact = {c: Fraction(float(w)) for c, w in weights.items()}
    total = sum(exact.values(), Fraction(0))
    if total == 0:
        raise LedgerError("cannot split a pool by weights that are all zero")
    pool = int(pool)
    shares = {c: pool * w / total for c, w in exact.items()}
    parts = {c: floor(s) for c, s in shares.items()}
    left_over = pool - sum(parts.values())
    by_remainder = sorted(shares, key=lambda c: (-(shares[c] - parts[c]), c))
    for contributor in by_remainder[:left_over]:
        parts[contributor] += 1
    return parts


def split_positive_credit(pool: int, credit: Mapping[str, float]) -> PayoutSplit:
    """Pay ``pool`` for positive credit only: harmful (negative) or zero credit earns nothing.

    When no contributor has positive credit the whole pool stays ``unallocated``.
    """
    check_pool(pool)
    for contributor, value in credit.items():
        if not isfinite(value):
            raise LedgerError(f"credit of {contributor!r} must be finite, got {value!r}")
    positive = {c: max(v, 0.0) for c, v in credit.items()}
    if not any(positive.values()):
        return PayoutSplit(pool, {c: 0 for c in credit}, pool)
    return PayoutSplit(pool, largest_remainder_split(pool, positive), 0)


def check_pool(pool: int) -> None:
    """Raise :class:`LedgerError` unless ``pool`` is an integer >= 0 (units)."""
    if isinstance(pool, bool) or not isinstance(pool, numbers.Integral):
        raise LedgerError(f"reward pool must be an integer number of units, got {pool!r}")
    if pool < 0:
        raise LedgerError(f"reward pool must be >= 0 units, got {pool}")
