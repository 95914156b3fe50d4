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
3. A ``payout_epoch`` entry closes the epoch. The store refuses a second epoch of the same number,
   so paying an epoch twice changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


def epoch_records(plan: EpochPlan, authority: str, **context: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """The ledger records of an epoch: slashes, payments, then the epoch entry (with ``context``)."""
    records = [("slash", authority, {"epoch": plan.epoch, "contributor": s.contributor, "amount": s.amount, "reason": s.reason})
               for s in plan.slashes]
    records += [("payout", authority, {"epoch": plan.epoch, "contributor": c, "amount": a})
                for c, a in sorted(plan.split.payouts.items())]
    records.append(("payout_epoch", authority, {
        **context, "epoch": plan.epoch, "pool": plan.pool, "slashed": plan.slashed,
        "paid": plan.split.pool - plan.split.unallocated, "unallocated": plan.split.unallocated,
        "rule": RULE, "harm_threshold": HARM_THRESHOLD,
    }))
    return records


def epoch_problem(rows: Sequence[tuple[int, str, str]]) -> tuple[int, str] | None:
    """The first entry ``(seq, kind, payload_text)`` breaking the payout rules, with the reason.

    Rules: amounts are integers >= 0; a slash never exceeds what its contributor staked; an epoch
    number closes once; payments and slashes of an epoch come before its epoch entry (a payment
    after it is a replay); a contributor is paid once per epoch; the epoch entry's ``paid`` and
    ``slashed`` equal the sums of its entries and ``paid + unallocated == pool + slashed``.
    """
    staked: dict[str, int] = {}
    closed: dict[Any, int] = {}
    open_: dict[Any, dict[str, Any]] = {}
    for seq, kind, text in rows:
        if kind not in {"stake", "slash", "payout", "payout_epoch"}:
            continue
        try:
            p = json.loads(text)
        except ValueError:
            continue  # the entry check reports a payload that is not JSON
        reason = _money_problem(p, kind) or _epoch_step(p, kind, staked, closed, open_, seq)
        if reason:
            return seq, reason
    return None


def _money_problem(p: Any, kind: str) -> str | None:
    fields = ("amount",) if kind != "payout_epoch" else ("pool", "slashed", "paid", "unallocated")
    for name in fields:
        value = p.get(name) if isinstance(p, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{kind} entry: {name} must be an integer >= 0 units, got {value!r}"
    return None


def _epoch_step(p: dict, kind: str, staked: dict, closed: dict, open_: dict, seq: int) -> str | None:
    if kind == "stake":
        staked[p.get("contributor")] = staked.get(p.get("contributor"), 0) + p["amount"]
        return None
    epoch = p.get("epoch")
    if epoch in closed:
        return f"payout epoch {epoch} replayed: it was closed at entry {closed[epoch]}"
    tally = open_.setdefault(epoch, {"paid": 0, "slashed": 0, "payees": set()})
    contributor = p.get("contributor")
    if kind == "slash":
        staked[contributor] = staked.get(contributor, 0) - p["amount"]
        tally["slashed"] += p["amount"]
        return None if staked[contributor] >= 0 else f"slash of {contributor!r} exceeds its remaining stake"
    if kind == "payout":
        if contributor in tally["payees"]:
            return f"contributor {contributor!r} paid twice in epoch {epoch}"
        tally["payees"].add(contributor)
        tally["paid"] += p["amount"]
        return None
    closed[epoch] = seq
    del open_[epoch]
    if (tally["paid"], tally["slashed"]) != (p["paid"], p["slashed"]):
        return f"payout epoch {epoch}: its entries pay {tally['paid']} and slash {tally['slashed']}, the epoch says {p['paid']} and {p['slashed']}"
    if p["paid"] + p["unallocated"] != p["pool"] + p["slashed"]:
        return f"payout epoch {epoch}: paid + unallocated != pool + slashed"
    return None
