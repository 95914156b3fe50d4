"""Inference fees in exact units: a split by role, and the accrual of contributors' shares.

Every served inference carries a fee (integer units). :func:`split_by_role` cuts it into integer
parts per role (largest remainders, so the parts sum to the fee). The contributors' part is then
divided by that inference's positive credit per contributor, a share that is rarely a whole
number of units. Rounding each inference on its own loses the fractions (floor: the dust is never
paid) or moves them between contributors (largest remainders per inference). An :class:`Accrual`
instead keeps each contributor's balance exactly (each share to ``1 / RESOLUTION`` unit, or as
the exact :class:`~fractions.Fraction`, see :class:`Accrual`) and pays the whole units when an
epoch closes, carrying the remainder (< 1 unit each) into the next epoch:
nothing is lost and nobody is paid another's share. :func:`measure_dust` puts numbers on the
three for a stream of inferences. A :class:`FeeAccount` keeps where every fee unit of a stream of
inferences is (roles, paid, unallocated, accrued), exactly, within the ledger's integer range.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import isfinite, lcm
from numbers import Real
from typing import Any

from ledger.errors import LedgerError
from ledger.keys import check_actor
from ledger.payouts import check_pool, split_positive_credit
from ledger.schemas import SAFE_INT

DEFAULT_ROLE_SHARES: dict[str, int] = {"contributors": 50, "model_host": 20, "stakers": 20, "platform": 10}
"""Shares of an inference fee by role, in percent: an example split for experiments, not a claim
about any live system."""
CONTRIBUTORS = "contributors"
"""The role whose part is divided among the contributors by credit."""
RESOLUTION = lcm(*range(1, 21)) * 10**4
"""Default :class:`Accrual` resolution (about 2.3e12): a contributor's share of one inference is
exact to ``1 / RESOLUTION`` unit, and exact when up to 20 contributors share a pool equally."""

CARRIED, UNALLOCATED, CONTRIBUTOR = "carried", "unallocated", "contributor"
"""Row roles of :meth:`FeeAccount.earnings` beside the fee roles."""

FRACTION = re.compile(r"(0|[1-9][0-9]*)/([1-9][0-9]*)")
"""A non-negative fraction as written in states and receipts: ``"n/d"``."""


def split_by_role(fee: int, shares: Mapping[str, int] = DEFAULT_ROLE_SHARES) -> dict[str, int]:
    """Split ``fee`` units over roles in proportion to integer ``shares``.

    Each role gets the floor of its exact share ``fee * share / sum(shares)``; the units left go
    one each to the largest remainders, ties to the role name that sorts first. The parts sum to
    ``fee`` and each is within one unit of its exact share.

    Raises:
        LedgerError: a fee that is not an integer >= 0; a role name that is not an id; a share
            that is not an integer in ``[0, 2**53 - 1]``; shares that sum to 0.
    """
    check_pool(fee)
    for role, share in shares.items():
        try:
            check_actor(role)
        except LedgerError as exc:
            raise LedgerError(f"role name: {exc}") from exc
        if type(share) is not int or not 0 <= share <= SAFE_INT:
            raise LedgerError(f"share of role {role!r} must be an integer in [0, {SAFE_INT}], got {share!r}")
    if not sum(shares.values()):
        raise LedgerError(f"role shares must sum to more than 0, got {dict(shares)}")
    return hamilton(fee, shares)


def checked_fee_split(fee: int, role_shares: Mapping[str, int]) -> dict[str, int]:
    """:func:`split_by_role` of a per-inference ``fee`` of at most ``2**53 - 1`` units (what a
    ledger entry can hold), its errors naming the fee and the shares."""
    try:
        if type(fee) is int and fee > SAFE_INT:
            raise LedgerError(f"a fee must be at most {SAFE_INT} units (2**53 - 1, the largest amount a ledger entry holds)")
        return split_by_role(fee, role_shares)
    except LedgerError as exc:
        raise LedgerError(f"inference fee {fee!r} and role shares {dict(role_shares)!r}: {exc}") from None


def check_charged(fees: int, what: str) -> None:
    """Raise :class:`LedgerError` unless ``fees`` units charged in all (by ``what``) fit a ledger
    entry, ``2**53 - 1``: every amount a :class:`FeeAccount` of these fees produces (a role
    total, a payout, an epoch's pool) is at most its fees."""
    if fees > SAFE_INT:
        raise LedgerError(f"{what} would bring the fees charged to {fees} units, over {SAFE_INT} "
                          f"(2**53 - 1, the largest amount a ledger entry holds); nothing charged")


def hamilton(units: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``units`` in proportion to integer ``weights`` (>= 0, positive sum) by largest
    remainders, ties to the id that sorts first: :func:`ledger.payouts.largest_remainder_split`
    (its reference in the tests) in integer arithmetic, ~20 times faster than its fractions.
    No checks: callers check their input."""
    total = sum(weights.values())
    parts, remainders = {}, {}
    for key, weight in weights.items():
        parts[key], remainders[key] = divmod(units * weight, total)
    for key in sorted(remainders, key=lambda k: (-remainders[k], k))[: units - sum(parts.values())]:
        parts[key] += 1
    return parts


def integer_weights(weights: Mapping[str, float]) -> dict[str, int]:
    """Positive finite float ``weights`` as integers in exactly the same proportions (each float
    is ``n / 2**k``; all are scaled by the largest ``2**k``)."""
    ratios = {key: float(w).as_integer_ratio() for key, w in weights.items()}
    scale = max(d for _, d in ratios.values())
    return {key: n * (scale // d) for key, (n, d) in ratios.items()}


def fraction_text(value: Fraction) -> str:
    """``value`` as ``"numerator/denominator"`` (lowest terms, always with a denominator)."""
    return f"{value.numerator}/{value.denominator}"


def parse_fraction(text: Any, where: str) -> Fraction:
    """The non-negative :class:`Fraction` written ``"n/d"`` in ``text``; ``where`` names it in errors."""
    match = FRACTION.fullmatch(text) if type(text) is str else None
    if match is None:
        raise LedgerError(f"{where} must be a non-negative fraction written 'n/d' (e.g. '3/4'), got {text!r}")
    return Fraction(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class AccrualClose:
    """What an :meth:`Accrual.close` pays and keeps, in units.

    ``payouts``: whole units per contributor (only those > 0); ``carried``: each contributor's
    remainder (``0 < r < 1``), kept for the next epoch; ``unallocated``: the pools of inferences
    with no positive credit (whole pools, never split, so an integer); ``accrued``: the units accrued since the last close; ``carried_in``:
    the remainders the last close carried. Invariant (exact):
    ``sum(payouts) + sum(carried) + unallocated == carried_in + accrued``.
    """

    payouts: dict[str, int]
    carried: dict[str, Fraction]
    unallocated: int
    accrued: int
    carried_in: Fraction

    @property
    def paid(self) -> int:
        return sum(self.payouts.values())


class Accrual:
    """Exact balances of contributors' shares of inference pools, paid in whole units at close.

    Args:
        resolution: a contributor's share of one pool is exact to ``1 / resolution`` unit: the
            pool is split into ``pool * resolution`` sub-units by largest remainders over the
            exact credit ratios (:func:`hamilton`), so the shares of a pool still sum to it
            exactly and balances stay integers of sub-units. ``None`` keeps the exact rational
            share ``pool * credit / total``; its denominators grow with every inference (about
            10 bits each: a 5,000-inference epoch holds 50,000-bit balances, and each accrual
            slows down): fine for tests and short streams, not for a server.
    """

    def __init__(self, resolution: int | None = RESOLUTION) -> None:
        if resolution is not None and (type(resolution) is not int or resolution < 1):
            raise LedgerError(f"accrual resolution must be an integer >= 1 or None, got {resolution!r}")
        self.resolution = resolution
        self._scale = resolution or 1
        # Balances in units of 1 / _scale: int sub-units, or exact Fractions of a unit when resolution is None.
        self._balances: dict[str, int | Fraction] = {}
        self._unallocated = 0  # whole pools: they are never split
        self._accrued = 0
        self._carried_in = Fraction(0)

    @property
    def balances(self) -> dict[str, Fraction]:
        """Each contributor's balance (units), by contributor id."""
        return {c: Fraction(b, self._scale) for c, b in sorted(self._balances.items())}

    @property
    def unallocated(self) -> int:
        """Units accrued since the last close that no positive credit claimed (whole pools)."""
        return self._unallocated

    @property
    def accrued(self) -> int:
        """Units accrued since the last close."""
        return self._accrued

    def accrue(self, pool: int, credit: Mapping[str, float]) -> dict[str, Fraction]:
        """Add ``pool`` units split over the positive ``credit`` (zero or negative credit earns
        nothing); returns each positively credited contributor's share (units). With no positive
        credit the pool goes to :attr:`unallocated` and ``{}`` is returned.

        Raises:
            LedgerError: a pool that is not an integer >= 0, a contributor id that is not an
                actor id, a credit that is not a finite number; nothing changes.
        """
        check_pool(pool)
        positive = {}
        for contributor, value in credit.items():
            try:
                check_actor(contributor)
            except LedgerError as exc:
                raise LedgerError(f"credit: contributor {exc}") from exc
            if not isinstance(value, Real) or type(value) is bool or not isfinite(value):
                raise LedgerError(f"credit of {contributor!r} must be a finite number, got {value!r}")
            if value > 0:
                positive[contributor] = float(value)
        self._accrued += pool
        if not positive:
            self._unallocated += pool
            return {}
        weights = integer_weights(positive)
        if self.resolution is None:
            total = sum(weights.values())
            parts: Mapping[str, int | Fraction] = {c: Fraction(pool * w, total) for c, w in weights.items()}
        else:
            parts = hamilton(pool * self.resolution, weights)
        balances = self._balances
        for contributor, part in parts.items():
            balances[contributor] = balances.get(contributor, 0) + part
        return {c: Fraction(p, self._scale) for c, p in parts.items()}

    def accrue_parts(self, pool: int, count: int, parts: Mapping[str, int], unallocated: int) -> None:
        """Add ``count`` pools of ``pool`` units already split, each as :meth:`accrue` splits it
        (a server splits a micro-batch's pools at once): ``parts`` the sub-units (``1 /
        resolution`` unit) per contributor credited positively by any of them, 0 included;
        ``unallocated`` how many had no positive credit. The caller vouches for the split: only
        the counts are checked.

        Raises:
            LedgerError: exact fractions (``resolution=None``), a bad pool, or counts out of range.
        """
        check_pool(pool)
        if self.resolution is None:
            raise LedgerError("an accrual of exact fractions (resolution None) takes no sub-unit parts")
        if type(count) is not int or type(unallocated) is not int or not 0 <= unallocated <= count:
            raise LedgerError(f"accrue_parts: need integers 0 <= unallocated <= count, got {unallocated!r} of {count!r}")
        balances = self._balances
        for contributor, part in parts.items():
            balances[contributor] = balances.get(contributor, 0) + part
        self._accrued += pool * count
        self._unallocated += pool * unallocated

    def copy(self) -> Accrual:
        """An independent copy (balances are immutable numbers: a shallow copy of each field)."""
        twin = Accrual(self.resolution)
        twin._balances, twin._unallocated = dict(self._balances), self._unallocated
        twin._accrued, twin._carried_in = self._accrued, self._carried_in
        return twin

    def add(self, other: Accrual) -> None:
        """Add ``other``'s balances and counts (an accrual of the same resolution with nothing
        carried in: the charges of a stream not yet closed) to this one."""
        if other._carried_in:
            raise ValueError("only an accrual with nothing carried in can be added")
        if other.resolution != self.resolution:
            raise ValueError(f"accrual resolutions differ: {self.resolution} and {other.resolution}")
        for contributor, balance in other._balances.items():
            self._balances[contributor] = self._balances.get(contributor, 0) + balance
        self._unallocated += other._unallocated
        self._accrued += other._accrued

    def close(self) -> AccrualClose:
        """Pay the whole units of every balance; keep the remainders for the next epoch."""
        payouts, carried, kept = {}, {}, {}
        for contributor, balance in sorted(self._balances.items()):
            units, rest = divmod(balance, self._scale)
            if units:
                payouts[contributor] = int(units)
            if rest:
                carried[contributor], kept[contributor] = Fraction(rest, self._scale), rest
        done = AccrualClose(payouts, carried, self._unallocated, self._accrued, self._carried_in)
        self._balances, self._unallocated, self._accrued = kept, 0, 0
        self._carried_in = sum(carried.values(), Fraction(0))
        return done

    def to_state(self) -> dict[str, Any]:
        """The state as plain JSON (fractions as exact ``"n/d"`` strings), for :meth:`from_state`."""
        return {
            "resolution": self.resolution,
            "balances": {c: fraction_text(b) for c, b in self.balances.items()},
            "unallocated": self._unallocated,
            "accrued": self._accrued,
            "carried_in": fraction_text(self._carried_in),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Accrual:
        """Rebuild an accrual from :meth:`to_state`; raises :class:`LedgerError` naming a bad field."""
        _check_fields("accrual", state, {"resolution", "balances", "unallocated", "accrued", "carried_in"})
        accrual = cls(state["resolution"])
        if type(state["balances"]) is not dict:
            raise LedgerError(f"accrual state: 'balances' must be an object, got {state['balances']!r}")
        for contributor, text in state["balances"].items():
            try:
                check_actor(contributor)
            except LedgerError as exc:
                raise LedgerError(f"accrual state: balances: {exc}") from exc
            balance = parse_fraction(text, f"accrual state: balance of {contributor!r}") * accrual._scale
            if accrual.resolution is not None and balance.denominator != 1:
                raise LedgerError(f"accrual state: balance of {contributor!r} ({text}) is not a whole number of "
                                  f"1/{accrual.resolution} units, the state's resolution")
            accrual._balances[contributor] = balance if accrual.resolution is None else int(balance)
        for name in ("unallocated", "accrued"):
            if type(state[name]) is not int or state[name] < 0:
                raise LedgerError(f"accrual state: {name!r} must be an integer >= 0 units, got {state[name]!r}")
        accrual._unallocated, accrual._accrued = state["unallocated"], state["accrued"]
        accrual._carried_in = parse_fraction(state["carried_in"], "accrual state: 'carried_in'")
        return accrual


class FeeAccount:
    """Where every fee unit of the inferences charged to it is, exactly (no I/O).

    ``fees``: units charged; ``roles``: units per role other than ``contributors``; ``paid``:
    whole units per contributor over closed epochs; ``unallocated``: contributors' parts that no
    positive credit claimed, over closed epochs; ``accrual``: the open epoch (its balances hold
    the carried remainders; its ``unallocated`` the open epoch's). Invariant (exact):
    ``fees == sum(roles) + sum(paid) + unallocated + accrual.unallocated + sum(accrual.balances)``
    (:meth:`placed`). Every amount is at most ``fees``, so an account whose ``fees`` is at most
    ``2**53 - 1`` only produces amounts a ledger entry can hold (:func:`check_charged`).

    Args:
        resolution: the :class:`Accrual` resolution (``None``: exact fractions).
    """

    def __init__(self, resolution: int | None = RESOLUTION) -> None:
        self.accrual = Accrual(resolution)
        self.fees = 0
        self.roles: dict[str, int] = {}
        self.paid: dict[str, int] = {}
        self.unallocated = 0

    def charge(self, fee_split: Mapping[str, int], credit: Mapping[str, float]) -> dict[str, Fraction]:
        """Charge one inference's ``fee_split`` (units by role): the ``contributors`` part is
        accrued by positive ``credit`` (:meth:`Accrual.accrue`, whose shares it returns), the
        other parts added to their roles."""
        shares = self.accrual.accrue(fee_split.get(CONTRIBUTORS, 0), credit)
        self._add_roles(fee_split)
        return shares

    def charge_parts(self, fee_split: Mapping[str, int], count: int, parts: Mapping[str, int], unallocated: int) -> None:
        """Charge ``count`` inferences of one ``fee_split`` at once, their ``contributors`` parts
        already split (:meth:`Accrual.accrue_parts`): the same account as :meth:`charge` of each."""
        self.accrual.accrue_parts(fee_split.get(CONTRIBUTORS, 0), count, parts, unallocated)
        self._add_roles(fee_split, count)

    def charge_receipts(self, receipts: Sequence[Mapping[str, Any]]) -> None:
        """Charge committed receipts again from their exact ``shares`` (the same balances as
        :meth:`charge` gave them: a share does not depend on the balances)."""
        delta = FeeAccount(self.accrual.resolution)
        balances: dict[str, Fraction] = {}
        accrued = unallocated = 0
        for receipt in receipts:
            part = receipt["fee_split"].get(CONTRIBUTORS, 0)
            accrued += part
            if not receipt["shares"]:
                unallocated += part
            for contributor, text in receipt["shares"].items():
                balances[contributor] = balances.get(contributor, 0) + parse_fraction(text, f"share of {contributor!r}")
            delta._add_roles(receipt["fee_split"])
        delta.accrual = Accrual.from_state({
            "resolution": self.accrual.resolution, "balances": {c: fraction_text(Fraction(b)) for c, b in balances.items()},
            "unallocated": unallocated, "accrued": accrued, "carried_in": "0/1"})
        self.absorb(delta)

    def absorb(self, other: FeeAccount) -> None:
        """Add ``other``'s charges (an account with nothing closed: its fees, roles and open
        accrual) to this one."""
        if other.paid or other.unallocated:
            raise ValueError("only an account with nothing closed can be absorbed")
        self.accrual.add(other.accrual)
        self.fees += other.fees
        for role, units in other.roles.items():
            self.roles[role] = self.roles.get(role, 0) + units

    def close(self) -> AccrualClose:
        """Close the open epoch (:meth:`Accrual.close`) and book what it pays."""
        done = self.accrual.close()
        for contributor, units in done.payouts.items():
            self.paid[contributor] = self.paid.get(contributor, 0) + units
        self.unallocated += done.unallocated
        return done

    def placed(self) -> Fraction:
        """The units found in the places of the invariant (equal to :attr:`fees`)."""
        return (sum(self.roles.values()) + sum(self.paid.values()) + self.unallocated + self.accrual.unallocated
                + sum(self.accrual.balances.values(), Fraction(0)))

    def copy(self) -> FeeAccount:
        """An independent copy."""
        twin = FeeAccount(self.accrual.resolution)
        twin.accrual, twin.fees, twin.unallocated = self.accrual.copy(), self.fees, self.unallocated
        twin.roles, twin.paid = dict(self.roles), dict(self.paid)
        return twin

    def earnings(self, contributors: Sequence[str]) -> list[tuple[str, str, int]]:
        """``(id, role, units)`` rows right after a close: each fee role's total (id = role), each
        contributor's paid units (every id of ``contributors`` and of :attr:`paid`, role
        :data:`CONTRIBUTOR`), the :data:`UNALLOCATED` units and the :data:`CARRIED` total. Their
        sum is :attr:`fees`: the carried remainders add up to whole units when every other place
        holds whole units.

        Raises:
            ValueError: the epoch is open (units accrued since the last close).
        """
        if self.accrual.accrued or self.accrual.unallocated:
            raise ValueError(f"the epoch is open ({self.accrual.accrued} units accrued since the last close); close it first")
        carried = sum(self.accrual.balances.values(), Fraction(0))
        if carried.denominator != 1:  # impossible when the invariant holds: every other place is whole
            raise ValueError(f"carried remainders sum to {carried}, not whole units: the account is inconsistent")
        rows = [(role, role, units) for role, units in sorted(self.roles.items())]
        rows += [(c, CONTRIBUTOR, self.paid.get(c, 0)) for c in sorted(set(contributors) | set(self.paid))]
        return rows + [(UNALLOCATED, UNALLOCATED, self.unallocated), (CARRIED, CARRIED, int(carried))]

    def to_state(self) -> dict[str, Any]:
        """Plain JSON for :meth:`from_state`."""
        return {"fees": self.fees, "roles": dict(sorted(self.roles.items())), "paid": dict(sorted(self.paid.items())),
                "unallocated": self.unallocated, "accrual": self.accrual.to_state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeeAccount:
        """The account of :meth:`to_state`; raises :class:`LedgerError` naming a bad field."""
        _check_fields("account", state, {"fees", "roles", "paid", "unallocated", "accrual"})
        account = cls()
        account.accrual = Accrual.from_state(state["accrual"])
        for name in ("fees", "unallocated"):
            if not _units(state[name]):
                raise LedgerError(f"account state: {name!r} must be an integer >= 0 units, got {state[name]!r}")
        for name in ("roles", "paid"):
            if type(state[name]) is not dict or not all(type(k) is str and _units(v) for k, v in state[name].items()):
                raise LedgerError(f"account state: {name!r} must map ids to integers >= 0 units, got {state[name]!r}")
        account.fees, account.unallocated = state["fees"], state["unallocated"]
        account.roles, account.paid = dict(state["roles"]), dict(state["paid"])
        return account

    def _add_roles(self, fee_split: Mapping[str, int], count: int = 1) -> None:
        self.fees += sum(fee_split.values()) * count
        for role, units in fee_split.items():
            if role != CONTRIBUTORS:
                self.roles[role] = self.roles.get(role, 0) + units * count


def _units(value: Any) -> bool:
    return type(value) is int and value >= 0


@dataclass(frozen=True)
class DustReport:
    """Units lost or moved by three ways of paying a stream of inference pools (:func:`measure_dust`).

    ``earned``: what positive credit earns in total (``fee_total - unallocated``: pools with no
    positive credit stay unallocated under every method). Per-inference floor pays
    ``floor_paid`` and loses ``floor_lost = earned - floor_paid`` units, never paid to anyone;
    ``floor_max_short``: the most one contributor is short. Per-inference largest remainders
    pays every unit but moves ``hamilton_moved`` units away from the contributors they belong to
    (the sum of the overpayments, which equals the sum of the underpayments);
    ``hamilton_max_off``: the most one contributor is off. Accrual with one close pays
    ``accrual_paid`` and carries ``accrual_carried`` (each contributor < 1 unit,
    ``accrual_max_carried``) into the next epoch; ``accrual_lost``, what the close neither pays
    nor carries, is 0. Unit counts are exact integers; the amounts measured against the exact
    shares (``*_max_*``, ``hamilton_moved``) are exact to ``inferences / resolution`` unit per
    contributor (exact with ``resolution=None``).
    """

    inferences: int
    fee_total: int
    unallocated: int
    earned: int
    floor_paid: int
    floor_lost: int
    floor_max_short: float
    hamilton_moved: float
    hamilton_max_off: float
    accrual_paid: int
    accrual_carried: float
    accrual_max_carried: float
    accrual_lost: float


def measure_dust(stream: Iterable[tuple[int, Mapping[str, float]]], resolution: int | None = RESOLUTION) -> DustReport:
    """Pay a stream of ``(pool units, credit per contributor)`` inferences three ways (per-inference
    floor, per-inference largest remainders, one :class:`Accrual` closed at the end) and count the
    units each loses or moves (:class:`DustReport`). The accrual's balances before it closes are
    the exact shares the other methods are measured against."""
    accrual = Accrual(resolution)
    floored: dict[str, int] = {}
    hamilton_paid: dict[str, int] = {}
    inferences = 0
    for pool, credit in stream:
        shares = accrual.accrue(pool, credit)  # checks the input
        inferences += 1
        if not shares:
            continue
        weights = integer_weights({c: credit[c] for c in shares})
        total = sum(weights.values())
        for contributor, weight in weights.items():
            floored[contributor] = floored.get(contributor, 0) + pool * weight // total
        for contributor, units in split_positive_credit(pool, credit).payouts.items():
            hamilton_paid[contributor] = hamilton_paid.get(contributor, 0) + units
    exact = accrual.balances
    done = accrual.close()
    earned = done.accrued - done.unallocated
    hamilton_off = [hamilton_paid.get(c, 0) - exact.get(c, 0) for c in set(exact) | set(hamilton_paid)]
    carried = sum(done.carried.values(), Fraction(0))
    return DustReport(
        inferences=inferences,
        fee_total=done.accrued,
        unallocated=done.unallocated,
        earned=earned,
        floor_paid=sum(floored.values()),
        floor_lost=earned - sum(floored.values()),
        floor_max_short=float(max((exact[c] - floored.get(c, 0) for c in exact), default=0)),
        hamilton_moved=float(sum((d for d in hamilton_off if d > 0), Fraction(0))),
        hamilton_max_off=float(max((abs(d) for d in hamilton_off), default=0)),
        accrual_paid=done.paid,
        accrual_carried=float(carried),
        accrual_max_carried=float(max(done.carried.values(), default=0)),
        accrual_lost=float(done.accrued - done.unallocated - done.paid - carried),
    )


def _check_fields(what: str, state: object, expected: set[str]) -> None:
    """Raise :class:`LedgerError` unless ``state`` is a mapping of exactly the ``expected`` keys."""
    if not isinstance(state, Mapping) or set(state) != expected:
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise LedgerError(f"{what} state must hold exactly {sorted(expected)}, got {found}")
