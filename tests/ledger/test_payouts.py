"""Property tests for ledger.payouts: exact integer splits by largest remainders."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LedgerError, PayoutSplit, largest_remainder_split, split_positive_credit

ids = st.text(alphabet="abcxyz019", min_size=1, max_size=4)
weights_values = st.one_of(
    st.integers(0, 1000),
    st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 0.1, 1 / 3, 5e-324, 1e-300]),
)
pools = st.one_of(st.integers(0, 100), st.integers(0, 10**18))
credit_values = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.integers(-50, 50),
    st.sampled_from([0.0, -0.0, 1e-310, -1e-310]),
)
SETTINGS = settings(max_examples=150, deadline=None)


def _exact_shares(pool: int, weights: dict) -> dict[str, Fraction]:
    total = sum((Fraction(w) for w in weights.values()), Fraction(0))
    return {c: Fraction(pool) * Fraction(w) / total for c, w in weights.items()}


def _check_hamilton(pool: int, weights: dict, parts: dict) -> None:
    """Parts sum to the pool, sit at floor or ceil of the exact share, and the rounded-up ones
    have the largest remainders (ties to the smaller id)."""
    assert set(parts) == set(weights)
    assert sum(parts.values()) == pool
    shares = _exact_shares(pool, weights)
    up, down = [], []
    for c, part in parts.items():
        assert type(part) is int
        assert part >= 0
        assert math.floor(shares[c]) <= part <= math.ceil(shares[c])
        assert abs(part - shares[c]) < 1
        if shares[c] == 0:
            assert part == 0
        (up if part > math.floor(shares[c]) else down).append(c)
    remainder = {c: shares[c] - math.floor(shares[c]) for c in parts}
    for a in up:
        for b in down:
            assert remainder[a] > remainder[b] or (remainder[a] == remainder[b] and a < b), (a, b)


# ---------------------------------------------------------------------------
# largest_remainder_split.


@SETTINGS
@given(pool=pools, weights=st.dictionaries(ids, weights_values, min_size=1, max_size=8))
def test_largest_remainder_properties(pool, weights):
    if not any(weights.values()):
        weights = {**weights, "zz": 1.0}
    parts = largest_remainder_split(pool, weights)
    _check_hamilton(pool, weights, parts)
    # Deterministic, and independent of the mapping's insertion order.
    assert largest_remainder_split(pool, weights) == parts
    assert largest_remainder_split(pool, dict(reversed(list(weights.items())))) == parts


@SETTINGS
@given(pool=st.integers(0, 1000), n=st.integers(1, 9), data=st.data())
def test_equal_weights_ties_go_to_the_smallest_ids(pool, n, data):
    names = data.draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    weight = data.draw(st.sampled_from([1, 0.3, 7.0, 1e-9]))
    parts = largest_remainder_split(pool, {c: weight for c in names})
    base, extra = divmod(pool, n)
    lucky = sorted(names)[:extra]
    assert parts == {c: base + (1 if c in lucky else 0) for c in names}


def test_pool_of_one_among_equal_weights_goes_to_the_smallest_id():
    assert largest_remainder_split(1, {"c02": 1.0, "c00": 1.0, "c01": 1.0}) == {"c00": 1, "c01": 0, "c02": 0}
    assert largest_remainder_split(2, {"b": 5, "c": 5, "a": 5}) == {"a": 1, "b": 1, "c": 0}


def test_worked_example():
    # Shares 100 * (0.5, 0.3, 0.2) / 1 -> exact; 10 * (1/3 each) -> 3.33.. -> one extra to "a".
    assert largest_remainder_split(100, {"x": 0.5, "y": 0.3, "z": 0.2}) == {"x": 50, "y": 30, "z": 20}
    assert largest_remainder_split(10, {"c": 1, "b": 1, "a": 1}) == {"a": 4, "b": 3, "c": 3}
    # 7 * (2/7, 5/7) with weights 2, 5 -> exactly 2 and 5.
    assert largest_remainder_split(7, {"p": 2, "q": 5}) == {"p": 2, "q": 5}
    # 5 * (0.45, 0.35, 0.2) -> 2.25, 1.75, 1.0 -> floors 2, 1, 1; leftover 1 to q (.75).
    assert largest_remainder_split(5, {"p": 45, "q": 35, "r": 20}) == {"p": 2, "q": 2, "r": 1}


def test_float_weights_are_used_exactly():
    # 0.1 + 0.2 as floats is not 0.3; exact Fractions keep the split honest and summing.
    parts = largest_remainder_split(10**17, {"a": 0.1, "b": 0.2, "c": 0.3})
    assert sum(parts.values()) == 10**17
    _check_hamilton(10**17, {"a": 0.1, "b": 0.2, "c": 0.3}, parts)


def test_zero_pool_and_zero_weights():
    assert largest_remainder_split(0, {"a": 1.0, "b": 2.0}) == {"a": 0, "b": 0}
    assert largest_remainder_split(9, {"a": 0.0, "b": 2.0}) == {"a": 0, "b": 9}


@pytest.mark.parametrize("pool", [-1, -(10**9)])
def test_negative_pool_is_refused(pool):
    with pytest.raises(LedgerError, match=str(pool)):
        largest_remainder_split(pool, {"a": 1.0})
    with pytest.raises(LedgerError, match=str(pool)):
        split_positive_credit(pool, {"a": 1.0})


@pytest.mark.parametrize("pool", [1.0, 10.5, "10", None, Fraction(10), Decimal(10), float("nan"), True, False])
def test_non_integer_or_bool_pool_is_refused(pool):
    with pytest.raises(LedgerError, match="integer"):
        largest_remainder_split(pool, {"a": 1.0})
    with pytest.raises(LedgerError, match="integer"):
        split_positive_credit(pool, {"a": 1.0})


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf"), -1.0, -1e-300, -1])
def test_bad_weight_is_refused(weight):
    with pytest.raises(LedgerError, match="'bad'"):
        largest_remainder_split(10, {"good": 1.0, "bad": weight})


@pytest.mark.parametrize("weights", [{}, {"a": 0.0}, {"a": 0, "b": 0.0}])
def test_all_zero_weights_are_refused(weights):
    with pytest.raises(LedgerError, match="zero"):
        largest_remainder_split(10, weights)


# ---------------------------------------------------------------------------
# split_positive_credit.


@SETTINGS
@given(pool=pools, credit=st.dictionaries(ids, credit_values, max_size=8))
def test_positive_credit_properties(pool, credit):
    split = split_positive_credit(pool, credit)
    assert isinstance(split, PayoutSplit)
    assert split.pool == pool
    assert set(split.payouts) == set(credit)
    assert sum(split.payouts.values()) + split.unallocated == pool
    assert all(type(v) is int and v >= 0 for v in split.payouts.values())
    positive = {c: v for c, v in credit.items() if v > 0}
    for c, v in credit.items():
        if v <= 0:
            assert split.payouts[c] == 0
    if positive:
        assert split.unallocated == 0
        _check_hamilton(pool, positive, {c: split.payouts[c] for c in positive})
    else:
        assert split.unallocated == pool
    assert split_positive_credit(pool, credit) == split
    assert split_positive_credit(pool, dict(reversed(list(credit.items())))) == split


def test_negative_credit_gets_nothing():
    split = split_positive_credit(100, {"good": 3.0, "harm": -5.0, "meh": 0.0, "ok": 1.0})
    assert split == PayoutSplit(100, {"good": 75, "harm": 0, "meh": 0, "ok": 25}, 0)


@pytest.mark.parametrize("credit", [{}, {"a": 0.0}, {"a": -1.0, "b": -0.0, "c": -1e-300}])
def test_no_positive_credit_leaves_everything_unallocated(credit):
    split = split_positive_credit(1000, credit)
    assert split.unallocated == 1000
    assert split.payouts == {c: 0 for c in credit}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_credit_is_refused(value):
    with pytest.raises(LedgerError, match="'x'"):
        split_positive_credit(10, {"a": 1.0, "x": value})


def test_one_unit_tie_goes_to_the_smallest_id():
    split = split_positive_credit(1, {"c03": 2.5, "c01": 2.5, "c02": -1.0})
    assert split.payouts == {"c03": 0, "c01": 1, "c02": 0}
    assert split.unallocated == 0
