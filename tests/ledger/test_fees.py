"""Fees by role and the accrual of contributors' shares (ledger.fees): exact conservation,
remainders carried below one unit, serialisable state, the dust figures, clear errors."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import DEFAULT_ROLE_SHARES, Accrual, LedgerError, measure_dust, split_by_role
from ledger.fees import RESOLUTION, FeeAccount, hamilton, integer_weights
from ledger.payouts import largest_remainder_split

IDS = st.sampled_from([f"c{i}" for i in range(8)])
CREDIT = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.floats(1e-300, 1e-280), st.just(0.0), st.integers(-5, 5))
STREAM = st.lists(st.tuples(st.integers(0, 10**6), st.dictionaries(IDS, CREDIT, max_size=6)), max_size=25)


def exact_shares(pool: int, credit: dict[str, float]) -> dict[str, Fraction]:
    """The naive reference: ``pool * credit / total`` over positive credit, in fractions."""
    positive = {c: Fraction(v) for c, v in credit.items() if v > 0}
    total = sum(positive.values())
    return {c: pool * v / total for c, v in positive.items()}


@given(st.integers(0, 2**53 - 1), st.dictionaries(st.sampled_from(["a", "b", "host", "z9"]), st.integers(0, 10**6), min_size=1))
def test_split_by_role_sums_to_the_fee_within_a_unit_of_each_share(fee, shares):
    if not sum(shares.values()):
        with pytest.raises(LedgerError, match="must sum to more than 0"):
            split_by_role(fee, shares)
        return
    parts = split_by_role(fee, shares)
    assert sum(parts.values()) == fee and set(parts) == set(shares)
    total = sum(shares.values())
    assert all(abs(parts[r] - Fraction(fee * s, total)) < 1 for r, s in shares.items())


def test_split_by_role_default_and_ties():
    assert split_by_role(1000) == {"contributors": 500, "model_host": 200, "stakers": 200, "platform": 100}
    assert split_by_role(1) == {"contributors": 1, "model_host": 0, "stakers": 0, "platform": 0}
    # 7 over (1, 1, 1): 2 each and one left, to the role name that sorts first
    assert split_by_role(7, {"b": 1, "a": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert sum(DEFAULT_ROLE_SHARES.values()) == 100


@pytest.mark.parametrize("fee, shares, message", [
    (-1, DEFAULT_ROLE_SHARES, "must be >= 0 units, got -1"),
    (1.5, DEFAULT_ROLE_SHARES, "must be an integer number of units, got 1.5"),
    (10, {"a": 1.5}, "share of role 'a' must be an integer"),
    (10, {"a": -1}, "share of role 'a' must be an integer in [0,"),
    (10, {"a": True}, "share of role 'a' must be an integer"),
    (10, {"a b": 1}, "role name: actor must match"),
    (10, {"a": 0}, "must sum to more than 0"),
])
def test_split_by_role_refuses_bad_input(fee, shares, message):
    with pytest.raises(LedgerError) as refused:
        split_by_role(fee, shares)
    assert message in str(refused.value)


@given(st.integers(0, 10**9), st.dictionaries(IDS, st.floats(1e-300, 1e6), min_size=1))
def test_integer_hamilton_equals_largest_remainder_split(units, weights):
    assert hamilton(units, integer_weights(weights)) == largest_remainder_split(units, weights)


@settings(max_examples=60, deadline=None)
@given(STREAM, st.sampled_from([None, 1, 10**12]), st.integers(1, 3))
def test_accrual_conserves_exactly_and_carries_less_than_a_unit(stream, resolution, epochs):
    accrual = Accrual(resolution)
    carried_in = Fraction(0)
    for epoch in range(epochs):  # the same stream, paid over several epochs
        for pool, credit in stream:
            shares = accrual.accrue(pool, credit)
            assert sum(shares.values()) == (pool if any(v > 0 for v in credit.values()) else 0)
            for c, share in shares.items():  # each share within one sub-unit of the exact one
                assert abs(share - exact_shares(pool, credit)[c]) < Fraction(1, resolution or 10**30)
        done = accrual.close()
        fees = sum(pool for pool, _ in stream)
        assert done.accrued == fees and done.carried_in == carried_in
        assert done.paid + sum(done.carried.values()) + done.unallocated == carried_in + fees
        assert all(0 < r < 1 for r in done.carried.values()) and all(u > 0 for u in done.payouts.values())
        carried_in = sum(done.carried.values(), Fraction(0))
        assert accrual.balances == done.carried and accrual.accrued == 0 == accrual.unallocated


@settings(max_examples=30, deadline=None)
@given(STREAM)
def test_exact_accrual_pays_the_floor_of_the_exact_totals(stream):
    accrual = Accrual(None)
    totals: dict[str, Fraction] = {}
    for pool, credit in stream:
        accrual.accrue(pool, credit)
        for c, share in exact_shares(pool, credit).items():
            totals[c] = totals.get(c, Fraction(0)) + share
    done = accrual.close()
    assert done.payouts == {c: int(t) for c, t in sorted(totals.items()) if t >= 1}
    assert done.carried == {c: t - int(t) for c, t in sorted(totals.items()) if t != int(t)}


def test_no_positive_credit_leaves_the_pool_unallocated():
    accrual = Accrual()
    assert accrual.accrue(9, {"c0": -1.0, "c1": 0.0}) == {} and accrual.accrue(4, {}) == {}
    assert accrual.accrue(2, {"c0": 1.0}) == {"c0": Fraction(2)}
    done = accrual.close()
    assert (done.unallocated, done.payouts, done.carried, done.accrued) == (13, {"c0": 2}, {}, 15)


def test_state_round_trips_through_json_and_keeps_accruing_identically():
    a, b = Accrual(), Accrual()
    credits = [{"c0": 0.3, "c1": 0.7, "c2": -0.1}, {"c1": 1e-9, "c2": 2.0}, {"c0": 1 / 3}]
    for pool, credit in zip((10, 7, 5), credits):
        a.accrue(pool, credit)
        b.accrue(pool, credit)
    a.close()
    b.close()
    b.accrue(3, {})
    state = json.loads(json.dumps(b.to_state()))
    assert all(type(v) is str and "/" in v for v in state["balances"].values())
    restored = Accrual.from_state(state)
    a.accrue(3, {})
    assert restored.to_state() == a.to_state() == state
    for accrual in (a, restored):
        accrual.accrue(11, credits[0])
    assert restored.close() == a.close()


@pytest.mark.parametrize("change, message", [
    ({"balances": {"c0": "1/0"}}, "balance of 'c0' must be a non-negative fraction written 'n/d'"),
    ({"balances": {"c0": "-1/2"}}, "balance of 'c0' must be a non-negative fraction"),
    ({"balances": {"c0": 0.5}}, "balance of 'c0' must be a non-negative fraction"),
    ({"balances": {"c0": "1/7919"}}, f"is not a whole number of 1/{RESOLUTION} units"),
    ({"balances": {"../x": "1/2"}}, "accrual state: balances: actor must match"),
    ({"accrued": -1}, "'accrued' must be an integer >= 0 units, got -1"),
    ({"unallocated": "1/2"}, "'unallocated' must be an integer >= 0 units"),
    ({"resolution": 0}, "accrual resolution must be an integer >= 1 or None, got 0"),
    ({"extra": 1}, "accrual state must hold exactly"),
])
def test_a_bad_state_is_refused_naming_the_field(change, message):
    state = {**Accrual().to_state(), **change}
    with pytest.raises(LedgerError) as refused:
        Accrual.from_state(state)
    assert message in str(refused.value)


@pytest.mark.parametrize("pool, credit, message", [
    (-1, {"c0": 1.0}, "reward pool must be >= 0 units"),
    (5, {"c0": float("nan")}, "credit of 'c0' must be a finite number, got nan"),
    (5, {"c0": 1.0, "c1": "2"}, "credit of 'c1' must be a finite number, got '2'"),
    (5, {"c 0": 1.0}, "credit: contributor actor must match"),
])
def test_bad_input_to_accrue_changes_nothing(pool, credit, message):
    accrual = Accrual()
    accrual.accrue(3, {"c0": 1.0, "c1": 2.0})
    before = accrual.to_state()
    with pytest.raises(LedgerError) as refused:
        accrual.accrue(pool, credit)
    assert message in str(refused.value) and accrual.to_state() == before


def test_per_inference_floor_loses_units_that_accrual_keeps():
    # Three contributors with equal credit share 10 units per inference: 10/3 each.
    stream = [(10, {"c0": 1.0, "c1": 1.0, "c2": 1.0})] * 30 + [(5, {"c0": -1.0})]
    report = measure_dust(stream)
    assert (report.inferences, report.fee_total, report.unallocated, report.earned) == (31, 305, 5, 300)
    assert report.floor_paid == 30 * 3 * 3 and report.floor_lost == 30  # 1/3 unit each, 30 times, never paid
    assert report.floor_max_short == pytest.approx(10)  # each is 30 * 1/3 short
    assert report.hamilton_moved == pytest.approx(20)  # c0 takes the odd unit every time: +20 over its 100
    assert report.hamilton_max_off == pytest.approx(20)
    assert (report.accrual_paid, report.accrual_carried, report.accrual_lost) == (300, 0.0, 0.0)  # 100 each


@settings(max_examples=30, deadline=None)
@given(STREAM)
def test_dust_figures_against_the_exact_reference(stream):
    exact = measure_dust(stream, resolution=None)
    report = measure_dust(stream)
    totals: dict[str, Fraction] = {}
    floors = 0
    for pool, credit in stream:
        for c, share in exact_shares(pool, credit).items() if any(v > 0 for v in credit.values()) else ():
            totals[c] = totals.get(c, Fraction(0)) + share
            floors += int(share)
    assert exact.floor_paid == report.floor_paid == floors
    assert exact.earned == report.earned == sum(totals.values())
    assert exact.accrual_paid == sum(int(t) for t in totals.values())
    assert exact.accrual_lost == report.accrual_lost == 0
    assert exact.accrual_max_carried <= 1  # < 1 exactly (AccrualClose); 1 - 1e-281 is 1.0 as a float
    # Shares exact to 1/RESOLUTION can land a total just across a whole unit: paid or carried.
    assert report.accrual_paid + report.accrual_carried == pytest.approx(exact.accrual_paid + exact.accrual_carried)
    assert abs(report.accrual_paid - exact.accrual_paid) <= len(totals)
    assert report.hamilton_moved == pytest.approx(exact.hamilton_moved, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(IDS, CREDIT, max_size=6), min_size=1, max_size=12), st.integers(0, 10**6))
def test_charging_a_batch_of_split_parts_equals_charging_each_inference(credits, fee):
    split = split_by_role(fee)
    each, at_once = FeeAccount(), FeeAccount()
    at_once.charge(split, {"c0": 1.0}), each.charge(split, {"c0": 1.0})  # not empty before
    totals: dict[str, int] = {}
    for credit in credits:
        each.charge(split, credit)
        positive = {c: v for c, v in credit.items() if v > 0}
        for c, part in (hamilton(split["contributors"] * RESOLUTION, integer_weights(positive)) if positive else {}).items():
            totals[c] = totals.get(c, 0) + part
    at_once.charge_parts(split, len(credits), totals, sum(not any(v > 0 for v in c.values()) for c in credits))
    assert at_once.to_state() == each.to_state()
    assert at_once.placed() == at_once.fees == fee * (len(credits) + 1)


def test_split_parts_are_refused_by_exact_fractions_or_with_counts_out_of_range():
    with pytest.raises(LedgerError, match="exact fractions"):
        Accrual(None).accrue_parts(5, 1, {"c0": 5}, 0)
    with pytest.raises(LedgerError, match="0 <= unallocated <= count, got 3 of 2"):
        Accrual().accrue_parts(5, 2, {}, 3)
    with pytest.raises(LedgerError, match="reward pool must be >= 0"):
        Accrual().accrue_parts(-5, 2, {}, 0)
