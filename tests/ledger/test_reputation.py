"""Reputation weights (ledger.reputation): hand-computed histories, bounds, the sleeper, the weighted split.

Expected weights are worked out by hand from the formula in reputation_weight's docstring
(defaults: slash penalty 0.5, recovery 0.8, harm memory 0.9); expected shares with Fraction.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LedgerError, plan_epoch
from ledger.reputation import RoundRecord, reputation_plan, reputation_weight

R = RoundRecord


@pytest.mark.parametrize(("history", "expected"), [
    ([], 1 / 2),  # the prior: one accepted, one rejected
    ([R(accepted=8)], 9 / 10),
    ([R(accepted=3, rejected=1, slashed=100)], 4 / 6 * 0.5),  # slashed this round: half
    ([R(accepted=3, rejected=1, slashed=100), R(accepted=4)], 8 / 10 * (1 - 0.5 * 0.8)),  # one clean round since
    ([R(accepted=0, rejected=30, slashed=1000), R(rejected=30), R(rejected=30)], 1 / 92 * (1 - 0.5 * 0.8**2)),
    ([R(10, 0, 0, 5.0, 5.0), R(10, 0, 0, -3.0, 4.0)], 21 / 22 * (1 - 0.75)),  # newest batch 3/4 harm
    ([R(10, 0, 0, 5.0, 5.0), R(10, 0, 0, -3.0, 4.0), R(10, 0, 0, 2.0, 2.0)], 31 / 32 * (1 - 0.75 * 0.9)),
    ([R(10, 0, 0, 1.0, 3.0)], 11 / 12),  # net positive: no harm term
    ([R(10), R(), R(10)], 21 / 22),  # an empty round (nothing submitted) changes nothing
    ([R(10, 0, 0, -2.0, 2.0), R(10), R(10)], 31 / 32 * (1 - 0.9**2)),  # no new batch scored: memory still fades
])
def test_weights_of_hand_computed_histories(history, expected):
    assert reputation_weight(history) == pytest.approx(expected, rel=1e-12)


def test_a_harmful_batch_is_not_erased_by_earlier_good_rounds():
    good = [R(30, 0, 0, 6.0, 6.5)] * 9
    sleeper = good + [R(30, 0, 0, -4.0, 5.0)]
    assert reputation_weight(good) == pytest.approx(271 / 272)
    # 1 - 4/5 = 0.2 of the acceptance term, however long the good record before it.
    assert reputation_weight(sleeper) == pytest.approx(301 / 302 * 0.2)
    assert reputation_weight(sleeper) == pytest.approx(reputation_weight([R(300, 0, 0, -4.0, 5.0)]), rel=1e-12)


def test_the_sleeper_loses_weight_in_the_round_it_turns_harmful():
    history = [R(30, 0, 0, 5.0, 5.5), R(30, 0, 0, 3.0, 3.4), R(30, 0, 0, -3.3, 3.5), R(30, 0, 0, -3.2, 3.3)]
    weights = [reputation_weight(history[:t]) for t in range(1, 5)]
    assert weights[1] > weights[0]  # more accepted data
    assert weights[2] < 0.1 * weights[1]  # the first harmful batch
    assert weights[3] < weights[2]  # still harmful


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 2000),
                          st.floats(-1.0, 1.0), st.floats(0.0, 1e6)), max_size=8),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_weights_lie_in_zero_one(rows, penalty, recovery, memory):
    history = [R(a, r, s, f * m, m) for a, r, s, f, m in rows]
    assert 0.0 <= reputation_weight(history, penalty, recovery, memory) <= 1.0


@pytest.mark.parametrize(("fields", "named"), [
    ({"accepted": -1}, "accepted"),
    ({"rejected": 1.0}, "rejected"),
    ({"slashed": True}, "slashed"),
    ({"influence": float("nan")}, "influence"),
    ({"magnitude": float("inf")}, "magnitude"),
    ({"influence": -2.0, "magnitude": 1.0}, "magnitude"),
    ({"magnitude": -1.0}, "magnitude"),
])
def test_bad_records_are_refused_by_name(fields, named):
    with pytest.raises(LedgerError, match=named):
        R(**fields)


@pytest.mark.parametrize("name", ["slash_penalty", "slash_recovery", "harm_memory"])
@pytest.mark.parametrize("value", [-0.1, 1.5, True])
def test_parameters_outside_zero_one_are_refused(name, value):
    with pytest.raises(LedgerError, match=name):
        reputation_weight([R(1)], **{name: value})


def _plan():
    credit = {"a": 4.0, "b": 3.0, "c": -1.0, "d": 2.0}
    magnitude = {"a": 5.0, "b": 3.0, "c": 1.5, "d": 2.0}
    stakes = dict.fromkeys(credit, 1000)
    return credit, plan_epoch(2, 1_000_001, credit, magnitude, stakes, {"a": 10, "d": 10}, {"d": 1})


def test_the_weighted_split_pays_credit_times_weight_and_keeps_slashes():
    credit, plan = _plan()
    weights = {"a": 1.0, "b": 0.25, "c": 1.0, "d": 0.5}
    weighted = reputation_plan(plan, credit, weights)
    assert weighted.slashes == plan.slashes and weighted.pool == plan.pool and weighted.epoch == 2
    total = 1_000_001 + 100 + 500  # d: 1 of 10 rejected -> 100; c: harmful -> half of its 1000
    assert plan.slashed == 600 and weighted.split.pool == total
    assert sum(weighted.split.payouts.values()) == total and weighted.split.unallocated == 0
    share = {"a": Fraction(4), "b": Fraction(3, 4), "c": Fraction(0), "d": Fraction(1)}
    for c, part in weighted.split.payouts.items():
        assert abs(part - total * share[c] / sum(share.values())) < 1
    assert reputation_plan(plan, credit, dict.fromkeys(credit, 1.0)) == plan


def test_zero_weights_leave_the_pool_unallocated():
    credit, plan = _plan()
    weighted = reputation_plan(plan, credit, dict.fromkeys(credit, 0.0))
    assert weighted.split.unallocated == plan.split.pool and not any(weighted.split.payouts.values())


@pytest.mark.parametrize(("weights", "named"), [
    ({"a": 1.0, "b": 1.0, "c": 1.0}, "one weight per contributor"),
    ({"a": 1.0, "b": 1.5, "c": 1.0, "d": 1.0}, "'b'"),
    ({"a": 1.0, "b": float("nan"), "c": 1.0, "d": 1.0}, "'b'"),
])
def test_bad_weights_are_refused(weights, named):
    credit, plan = _plan()
    with pytest.raises(LedgerError, match=named):
        reputation_plan(plan, credit, weights)
