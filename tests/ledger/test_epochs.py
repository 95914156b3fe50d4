"""Payout epochs with stakes and slashing (ledger.epochs): properties, idempotence, replay detection.

Expected shares are computed here with Fraction from the inputs, not by the code under test.
Largest remainders are *not* monotone in the pool size (the Alabama paradox), so no property
below claims that.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Keystore, Ledger, LedgerError, epoch_records, fixed_clock, plan_epoch, verify

SETTINGS = settings(max_examples=120, deadline=None)
contributors = st.lists(st.sampled_from([f"c{i:02d}" for i in range(12)]), min_size=1, max_size=8, unique=True)


@st.composite
def epochs(draw):
    """Random epoch inputs: credit within each contributor's magnitude, stakes, rejections."""
    ids = draw(contributors)
    magnitude = {c: draw(st.floats(0.0, 1e6, allow_nan=False)) for c in ids}
    credit = {c: draw(st.floats(-1.0, 1.0)) * magnitude[c] for c in ids}
    submitted = {c: draw(st.integers(0, 50)) for c in ids}
    rejected = {c: draw(st.integers(0, submitted[c])) for c in ids}
    stakes = {c: draw(st.integers(0, 10**6)) for c in ids}
    pool = draw(st.one_of(st.integers(0, 1000), st.integers(0, 10**15)))
    return pool, credit, magnitude, stakes, submitted, rejected


def _plan(args, epoch=1):
    pool, credit, magnitude, stakes, submitted, rejected = args
    return plan_epoch(epoch, pool, credit, magnitude, stakes, submitted, rejected)


@SETTINGS
@given(epochs())
def test_conservation_non_negativity_and_one_unit_of_the_exact_share(args):
    pool, credit, magnitude, stakes, submitted, rejected = args
    plan = _plan(args)
    total = pool + plan.slashed
    assert sum(plan.split.payouts.values()) + plan.split.unallocated == total
    for s in plan.slashes:
        assert 0 < s.amount <= stakes[s.contributor]
    for c in stakes:
        assert sum(s.amount for s in plan.slashes if s.contributor == c) <= stakes[c]
    positive = {c: Fraction(max(v, 0.0)) for c, v in credit.items()}
    weight = sum(positive.values(), Fraction(0))
    for c, part in plan.split.payouts.items():
        assert type(part) is int and part >= 0
        if weight:
            assert abs(part - total * positive[c] / weight) < 1
        else:
            assert part == 0 and plan.split.unallocated == total


@SETTINGS
@given(epochs())
def test_slashing_follows_the_documented_rules(args):
    pool, credit, magnitude, stakes, submitted, rejected = args
    plan = _plan(args)
    for c in stakes:
        mine = [s for s in plan.slashes if s.contributor == c]
        by_rejection = stakes[c] * rejected[c] // submitted[c] if submitted[c] else 0
        left = stakes[c] - by_rejection
        by_harm = left // 2 if credit[c] < -0.05 * magnitude[c] else 0
        assert [s.amount for s in mine] == [a for a in (by_rejection, by_harm) if a]


@SETTINGS
@given(epochs(), st.randoms(use_true_random=False))
def test_determinism_whatever_the_input_order(args, rng):
    pool, credit, magnitude, stakes, submitted, rejected = args
    order = list(credit)
    rng.shuffle(order)
    shuffled = plan_epoch(1, pool, {c: credit[c] for c in order}, magnitude,
                          {c: stakes[c] for c in order}, submitted, rejected)
    assert shuffled == _plan(args)
    assert epoch_records(shuffled, "pa") == epoch_records(_plan(args), "pa")


@SETTINGS
@given(epochs(), st.data())
def test_monotone_in_a_contributors_own_score(args, data):
    pool, credit, magnitude, stakes, submitted, rejected = args
    c = data.draw(st.sampled_from(sorted(credit)))
    higher = data.draw(st.floats(credit[c], max(credit[c], magnitude[c])))
    before = _plan(args).split.payouts[c]
    after = _plan((pool, {**credit, c: higher}, magnitude, stakes, submitted, rejected)).split.payouts[c]
    assert after >= before


@pytest.mark.parametrize("bad, match", [
    ({"epoch": 0}, "epoch must be"), ({"pool": -1}, "pool"), ({"stakes": {"c0": -5}}, "stake of 'c0'"),
    ({"credit": {"c0": float("nan")}}, "credit of 'c0'"),
])
def test_bad_epoch_inputs_are_refused(bad, match):
    args = {"epoch": 1, "pool": 10, "credit": {"c0": 1.0}, "magnitude": {"c0": 1.0}, "stakes": {"c0": 5},
            "submitted": {"c0": 1}, "rejected": {"c0": 0}, **bad}
    with pytest.raises(LedgerError, match=match):
        plan_epoch(**args)


# --- in a ledger ----------------------------------------------------------------------------------


@pytest.fixture
def book_path(tmp_path):
    path = tmp_path / "l.db"
    with Ledger(path, keystore=Keystore(tmp_path / "keys", seed=b"epochs"), clock=fixed_clock()) as book:
        for actor in ("c00", "c01", "c02"):
            book.register(actor, "contributor")
        book.register("pa", "payout-authority")
        book.append_many([("stake", c, {"contributor": c, "amount": 100}) for c in ("c00", "c01", "c02")])
    return path


def _pay(path, epoch=1, pool=1000, credit=None):
    credit = credit or {"c00": 3.0, "c01": 1.0, "c02": -2.0}
    plan = plan_epoch(epoch, pool, credit, {c: abs(v) for c, v in credit.items()}, {c: 100 for c in credit},
                      {"c00": 4, "c01": 4, "c02": 4}, {"c00": 0, "c01": 1, "c02": 0})
    with Ledger(path, keystore=Keystore(path.parent / "keys", seed=b"epochs"), clock=fixed_clock()) as book:
        return book.append_many(epoch_records(plan, "pa", dataset_version="dv-x"))


def test_an_epoch_records_slashes_payments_and_the_epoch(book_path):
    written = _pay(book_path)
    kinds = [e.kind for e in written]
    assert kinds == ["slash", "slash", "payout", "payout", "payout", "payout_epoch"]
    slashes = {e.payload["contributor"]: e.payload for e in written if e.kind == "slash"}
    assert slashes["c01"]["amount"] == 25 and "1 of 4 submissions rejected" in slashes["c01"]["reason"]
    assert slashes["c02"]["amount"] == 50 and "harmful" in slashes["c02"]["reason"]
    paid = {e.payload["contributor"]: e.payload["amount"] for e in written if e.kind == "payout"}
    assert paid == {"c00": 806, "c01": 269, "c02": 0}  # 1075 units split 3:1 by largest remainder
    closing = written[-1].payload
    assert [closing[k] for k in ("epoch", "pool", "slashed", "paid", "unallocated")] == [1, 1000, 75, 1075, 0]
    assert verify(book_path).ok


def test_paying_an_epoch_twice_is_refused_and_changes_nothing(book_path):
    _pay(book_path)
    before = verify(book_path)
    with pytest.raises(LedgerError, match="epoch 1 was already paid"):
        _pay(book_path, credit={"c00": 1.0, "c01": 1.0, "c02": 1.0})  # even with other amounts
    with pytest.raises(LedgerError, match="epoch 1 was already paid"):
        _pay(book_path)
    assert verify(book_path) == before  # same entries, head hash and Merkle root
    _pay(book_path, epoch=2)
    assert verify(book_path).ok


def test_a_replayed_epoch_is_caught_by_the_verifier(book_path, tmp_path, forge):
    """Pay epoch 1 again (re-signed by the authority, new head signed by the log): every hash and
    signature holds, only the payout rules catch it."""
    _pay(book_path)
    with Ledger(book_path) as book:
        epoch = [e for e in book.entries() if e.kind in {"slash", "payout", "payout_epoch"}]
    keys = Keystore(tmp_path / "keys", seed=b"epochs")
    with Ledger(book_path, keystore=keys, clock=fixed_clock()) as book:
        # The store refuses the replay, also with other payloads; an attacker holding the keys writes around it.
        with pytest.raises(LedgerError, match="already paid"):
            book.append_many([(e.kind, e.actor, {**e.payload, "amount": 1}) for e in epoch[2:5]])
    forge(book_path, keys, [(e.kind, e.actor, {**e.payload, "amount": 1}) for e in epoch[2:5]])
    report = verify(book_path)
    assert not report.ok and report.first_bad_seq == 10
    assert "payout epoch 1 was already paid (closed at entry 9)" in report.reason


def test_payments_that_do_not_add_up_are_refused_and_caught(book_path, tmp_path, forge):
    keys = Keystore(tmp_path / "keys", seed=b"epochs")
    records = [("payout", "pa", {"epoch": 1, "contributor": "c00", "amount": 10}),
               ("payout_epoch", "pa", {"epoch": 1, "pool": 10, "slashed": 0, "paid": 9, "unallocated": 1})]
    with Ledger(book_path, keystore=keys, clock=fixed_clock()) as book:
        with pytest.raises(LedgerError, match="record 1 .*entries pay 10"):
            book.append_many(records)
        assert len(book) == 3
    forge(book_path, keys, records)
    report = verify(book_path)
    assert not report.ok and report.first_bad_seq == 5 and "entries pay 10" in report.reason
