"""Payout epochs with stakes and slashing, and the rules the verifier holds every epoch to.

A contributor stakes a deposit (a ``stake`` entry, integer units) when it submits. An epoch pays
a pool from one attribution run:

1. Slashing (each slash a ``slash`` entry with its reason; slashed units join the epoch's pool):
   * rejected data: ``stake * rejected // submitted`` units;
   * harmful data: when a contributor's net credit is below ``-HARM_THRESHOLD`` times the
     magnitude of its own data's credit (the sum of its samples' absolute credit), half of what
     is left of its stake (rounded down). The test looks at the contributor's own data only, so
     nobody's slash, and hence the pool, moves with another contributor's score.
2. The pool plus the slashed units is split by largest remainders over positive credit
   (:func:`ledger.payouts.split_positive_credit`), one ``payout`` entry per contributor.
3. A ``payout_epoch`` entry closes the epoch. :mod:`ledger.schemas` holds the rules every epoch
   in a ledger obeys (the store refuses a batch that breaks them), so paying an epoch twice
   changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

from ledger.errors import LedgerError
from ledger.payouts import PayoutSplit, check_pool, split_positive_credit

HARM_THRESHOLD = 0.05
"""Net credit below ``-HARM_THRESHOLD`` times the contributor's own credit magnitude is harmful."""
RULE = "largest remainder over positive credit; slashed stakes join the pool"


@dataclass(frozen=True)
class Slash:
    contributor: str
    amount: int
    reason: str


@dataclass(frozen=True)
class EpochPlan:
    """What an epoch will record: slashes, then the split of ``pool + slashed``."""

    epoch: int
    pool: int
    slashes: tuple[Slash, ...]
    split: PayoutSplit

    @property
    def slashed(self) -> int:
        return sum(s.amount for s in self.slashes)


def plan_slashes(
    stakes: Mapping[str, int],
    submitted: Mapping[str, int],
    rejected: Mapping[str, int],
    credit: Mapping[str, float],
    magnitude: Mapping[str, float],
    threshold: float = HARM_THRESHOLD,
) -> tuple[Slash, ...]:
    """Slashes by the rules of the module docstring, in contributor order; never above a stake.

    ``magnitude[c]`` is the sum of the absolute credit of ``c``'s samples (>= ``|credit[c]|``).
    """
    slashes = []
    for c in sorted(stakes):
        stake = stakes[c]
        if isinstance(stake, bool) or not isinstance(stake, int) or stake < 0:
            raise LedgerError(f"stake of {c!r} must be an integer >= 0 units, got {stake!r}")
        if submitted.get(c, 0) and rejected.get(c, 0):
            amount = stake * rejected[c] // submitted[c]
            slashes.append(Slash(c, amount, f"{rejected[c]} of {submitted[c]} submissions rejected by validators"))
            stake -= amount
        if credit.get(c, 0.0) < -threshold * magnitude.get(c, 0.0):
            slashes.append(Slash(c, stake // 2, f"net attribution {credit[c]:.6g} below -{threshold} x its data's |credit| {magnitude[c]:.6g} (harmful)"))
    return tuple(s for s in slashes if s.amount > 0)


def plan_epoch(
    epoch: int,
    pool: int,
    credit: Mapping[str, float],
    magnitude: Mapping[str, float],
    stakes: Mapping[str, int],
    submitted: Mapping[str, int],
    rejected: Mapping[str, int],
) -> EpochPlan:
    """Slash (:func:`plan_slashes`), then split ``pool`` plus the slashed units over positive ``credit``."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise LedgerError(f"epoch must be an integer >= 1, got {epoch!r}")
    for c, v in credit.items():
        if not isfinite(v):
            raise LedgerError(f"credit of {c!r} must be finite, got {v!r}")
    check_pool(pool)
    slashes = plan_slashes(stakes, submitted, rejected, credit, magnitude)
    return EpochPlan(epoch, pool, slashes, split_positive_credit(pool + sum(s.amount for s in slashes), credit))


def epoch_records(plan: EpochPlan, authority: str, rule: str = RULE, **context: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """The ledger records of an epoch: slashes, payments, then the epoch entry (with ``context``
    and the split ``rule`` in words)."""
    records = [("slash", authority, {"epoch": plan.epoch, "contributor": s.contributor, "amount": s.amount, "reason": s.reason})
               for s in plan.slashes]
    records += [("payout", authority, {"epoch": plan.epoch, "contributor": c, "amount": a})
                for c, a in sorted(plan.split.payouts.items())]
    records.append(("payout_epoch", authority, {
        **context, "epoch": plan.epoch, "pool": plan.pool, "slashed": plan.slashed,
        "paid": plan.split.pool - plan.split.unallocated, "unallocated": plan.split.unallocated,
        "rule": rule, "harm_threshold": HARM_THRESHOLD,
    }))
    return records
