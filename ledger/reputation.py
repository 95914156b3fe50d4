"""Contributor reputation over payout rounds, and an epoch split that weighs credit by it.

A contributor's history is one :class:`RoundRecord` per payout round: its submissions accepted and
rejected that round, the units slashed from its stake in that round's epoch, and the realised
influence of the rows it submitted that round. :func:`reputation_weight` turns a history into a
weight in ``[0, 1]``; :func:`reputation_plan` splits an epoch over ``credit × weight`` instead of
credit. Stdlib only, like the rest of :mod:`ledger`: the weights are floats computed from what the
ledger records, the money stays integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from math import isfinite

from ledger.epochs import EpochPlan
from ledger.errors import LedgerError
from ledger.payouts import split_positive_credit

SLASH_PENALTY = 0.5
"""Fraction of the weight a slash takes away in the round it happens."""
SLASH_RECOVERY = 0.8
"""Per clean round after the last slash, what is left of its penalty (0.8: 4 rounds later 41%)."""
HARM_MEMORY = 0.9
"""Per round after a harmful batch, what is left of its penalty (0.9: 10 rounds later 35%)."""
INFLUENCE_TOLERANCE = 1e-9
"""Relative slack of ``|influence| <= magnitude`` for sums rounded in floating point."""


@dataclass(frozen=True)
class RoundRecord:
    """What one payout round showed of one contributor.

    ``accepted``/``rejected``: its submissions of the round that validators accepted/rejected;
    ``slashed``: units slashed from its stake in the round's epoch; ``influence``: the realised
    influence of the rows it submitted that round, measured by that round's attribution (sum of
    their credit, positive = helped); ``magnitude``: the sum of those rows' absolute credit
    (``>= |influence|``; 0 when it submitted nothing that scored).

    Raises:
        LedgerError: a count or slash that is not an integer >= 0, a non-finite influence, or a
            magnitude below 0 or below ``|influence|``.
    """

    accepted: int = 0
    rejected: int = 0
    slashed: int = 0
    influence: float = 0.0
    magnitude: float = 0.0

    def __post_init__(self) -> None:
        for name in ("accepted", "rejected", "slashed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LedgerError(f"round record: {name} must be an integer >= 0, got {value!r}")
        for name in ("influence", "magnitude"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not isfinite(value):
                raise LedgerError(f"round record: {name} must be a finite number, got {value!r}")
        if abs(self.influence) > self.magnitude * (1 + INFLUENCE_TOLERANCE):
            raise LedgerError(f"round record: magnitude {self.magnitude!r} must be >= 0 and >= |influence| "
                              f"= {abs(self.influence)!r} (it sums the rows' absolute credit)")


def reputation_weight(history: Sequence[RoundRecord], slash_penalty: float = SLASH_PENALTY,
                      slash_recovery: float = SLASH_RECOVERY, harm_memory: float = HARM_MEMORY) -> float:
    """A contributor's weight in ``[0, 1]`` after rounds ``t = 1..T`` of ``history`` (``T = len(history)``)::

        w_T = A_T · S_T · H_T
        A_T = (1 + Σ_t accepted_t) / (2 + Σ_t accepted_t + Σ_t rejected_t)
        S_T = 1 - slash_penalty · slash_recovery^(T - s)   s = the last round with slashed_s > 0
                                                              (S_T = 1 when there is none)
        H_T = min_t (1 - h_t · harm_memory^(T - t))         h_t = max(0, -influence_t / magnitude_t)
                                                              (h_t = 0 when magnitude_t = 0)

    ``A`` is the acceptance rate with one accepted and one rejected submission of prior (Laplace),
    so a newcomer starts at 1/2 and a record of many accepted rows approaches 1. ``S`` halves the
    weight (default) in the round of a slash and recovers slowly over clean rounds after it.
    ``H`` remembers the worst batch: ``h_t`` in ``[0, 1]`` is how much of a round's own rows'
    credit was harm (1 = all of it), and a minimum, not an average, keeps good earlier rounds from
    diluting it: a contributor whose newest batch is harmful loses that share of its weight in
    that very round, and gets it back only as ``harm_memory^(rounds since)``. An empty history
    gives the prior, 1/2. Rounds before a contributor joined may be left out or given as empty
    records: neither changes the weight.

    Raises:
        LedgerError: a parameter outside ``[0, 1]``.
    """
    for name, value in (("slash_penalty", slash_penalty), ("slash_recovery", slash_recovery), ("harm_memory", harm_memory)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise LedgerError(f"{name} must be a number in [0, 1], got {value!r}")
    last = len(history)
    accepted = sum(r.accepted for r in history)
    acceptance = (1 + accepted) / (2 + accepted + sum(r.rejected for r in history))
    slashes = [t for t, r in enumerate(history, start=1) if r.slashed > 0]
    slash = 1.0 - slash_penalty * slash_recovery ** (last - slashes[-1]) if slashes else 1.0
    harm = min((1.0 - min(1.0, max(0.0, -r.influence / r.magnitude)) * harm_memory ** (last - t)
                for t, r in enumerate(history, start=1) if r.magnitude > 0), default=1.0)
    return acceptance * slash * harm


REPUTATION_RULE = ("largest remainder over positive credit x reputation weight (ledger.reputation); "
                   "slashes rest on the raw credit; slashed stakes join the pool")
"""The split rule a reputation-weighted epoch records in its ``payout_epoch`` entry."""


def reputation_plan(plan: EpochPlan, credit: Mapping[str, float], weights: Mapping[str, float]) -> EpochPlan:
    """``plan`` with ``pool + slashed`` split over ``credit[c] × weights[c]`` instead of credit.

    The slashes stay as planned (they rest on the raw credit, the evidence); only the split
    changes: largest remainders over positive weighted credit
    (:func:`ledger.payouts.split_positive_credit`), so the payouts still add up to ``pool + slashed``
    (or all of it stays unallocated when no weighted credit is positive). A weight moves shares
    between contributors; it never shrinks what the epoch pays out.

    Raises:
        LedgerError: ``weights`` and ``credit`` name different contributors, or a weight that is
            not a number in ``[0, 1]``.
    """
    if set(weights) != set(credit):
        raise LedgerError(f"weights name {sorted(weights)} but credit names {sorted(credit)}: one weight per contributor")
    for c, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise LedgerError(f"weight of {c!r} must be a number in [0, 1], got {w!r}")
    return replace(plan, split=split_positive_credit(plan.split.pool, {c: v * weights[c] for c, v in credit.items()}))
