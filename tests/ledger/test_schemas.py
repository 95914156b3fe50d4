"""Payload schemas, signing roles and payout rules (ledger.schemas): the store refuses what the
verifier rejects.

Each bad batch is first offered to the store, which must refuse it and write nothing; then an
attacker holding every key writes it anyway (the ``forge`` fixture: a store with the checks off)
and the verifier must name the same problem at the first bad entry.
"""

from __future__ import annotations

import re

import pytest

from ledger import Keystore, Ledger, LedgerError, LedgerIntegrityError, SignedRecord, canonical_json, fixed_clock, verify
from ledger.encoding import statement_bytes
from ledger.keys import sign
from ledger.schemas import SAFE_INT, payload_problem

CONTRIBUTORS = ("c00", "c01")
ROLES = {"c00": "contributor", "c01": "contributor", "pa": "payout-authority", "ih": "host", "sr": "runner"}
"""The actors of these tests and their registered roles."""


@pytest.fixture
def keys(tmp_path):
    return Keystore(tmp_path / "keys", seed=b"schemas")


@pytest.fixture
def paid(tmp_path, keys):
    """Stakes (entries 1-2), then epoch 1 paid in one batch (entries 3-5)."""
    path = tmp_path / "l.db"
    with Ledger(path, keystore=keys, clock=fixed_clock()) as book:
        for actor, role in ROLES.items():
            book.register(actor, role)
        book.append_many([("stake", c, {"contributor": c, "amount": 100}) for c in CONTRIBUTORS])
        book.append_many([("payout", "pa", {"epoch": 1, "contributor": "c00", "amount": 7}),
                          ("payout", "pa", {"epoch": 1, "contributor": "c01", "amount": 3}),
                          ("payout_epoch", "pa", {"epoch": 1, "pool": 10, "slashed": 0, "paid": 10, "unallocated": 0})])
    assert verify(path).ok
    return path


def _epoch(epoch, payouts, pool=None):
    """A whole epoch batch paying ``payouts`` (contributor -> amount)."""
    total = sum(payouts.values())
    return [("payout", "pa", {"epoch": epoch, "contributor": c, "amount": a}) for c, a in payouts.items()] + [
        ("payout_epoch", "pa", {"epoch": epoch, "pool": total if pool is None else pool, "slashed": 0, "paid": total, "unallocated": 0})]


def _generation(payouts, unallocated=0, fee=10):
    return {"generation_id": "g-1", "fee": fee, "payouts": payouts, "unallocated": unallocated,
            "rule": "span credit", "evidence": {"spans": [[0, 4]], "documents": ["d1"]}}


def _receipt_batch(**change):
    return {"batch_id": "b-1", "root": "ab" * 32, "count": 2, "fee_total": 10,
            "fee_by_role": {"contributors": 5, "platform": 5}, **change}


CASES = {
    # name: (batch appended after entry 5, record index the store names, what both say)
    "a second epoch numbered '1' (a string) paying 10**15": (
        _epoch("1", {"c00": 10**15}), 0, "field 'epoch' must be an epoch number, an integer in [1, 9007199254740991], got '1' (str)"),
    "epoch true (bool is not an int)": (_epoch(True, {"c00": 1}), 0, "got True (bool)"),
    "an epoch never closed paying 2**53-1 to an unregistered payee": (
        [("payout", "pa", {"epoch": 2, "contributor": "mallory", "amount": SAFE_INT})], 0,
        "payout of contributor 'mallory', who has no registered key (unregistered payee)"),
    "an epoch never closed": (
        [("payout", "pa", {"epoch": 2, "contributor": "c00", "amount": 5})], 0, "payout epoch 2 opened at entry 6 is not closed in its batch"),
    "a payout into the closed epoch 1": (_epoch(1, {"c00": 1}), 0, "payout epoch 1 was already paid (closed at entry 5)"),
    "a payout into an epoch never opened": (_epoch(3, {"c00": 1}), 0, "payout epoch 3 was never opened: the next epoch is 2"),
    "two epochs open at once": (
        [("payout", "pa", {"epoch": 2, "contributor": "c00", "amount": 1}), *_epoch(3, {"c01": 1})], 1,
        "payout epoch 3 while epoch 2 (opened at entry 6) is open: one epoch at a time"),
    "a contributor paid twice in one epoch": (
        [("payout", "pa", {"epoch": 2, "contributor": "c00", "amount": 1}), *_epoch(2, {"c00": 2})], 1,
        "contributor 'c00' paid twice in payout epoch 2"),
    "a slash above the stake left": (
        [("slash", "pa", {"epoch": 2, "contributor": "c01", "amount": 101, "reason": "x"}), *_epoch(2, {}, pool=0)], 0,
        "slash of 101 units exceeds the 100 units 'c01' has left at stake"),
    "an unknown field in a payout": (
        [("payout", "pa", {"epoch": 2, "contributor": "c00", "amount": 1, "currency": "EUR"}), *_epoch(2, {})], 0,
        "payout payload: unknown field(s) ['currency']"),
    "a negative amount": (_epoch(2, {"c00": -1}), 0, "field 'amount' must be money units, an integer in [0, 9007199254740991], got -1 (int)"),
    "a float amount": (_epoch(2, {"c00": 0.5}), 0, "field 'amount' must be money units"),
    "a stake of nobody registered": ([("stake", "c00", {"contributor": "ghost", "amount": 5})], 0,
                                     "stake of contributor 'ghost', who has no registered key"),
    "a sweep run of unknown status": ([("sweep_run", "sr", {"run_id": "r", "status": "maybe", "params": {}})], 0,
                                      "field 'status' must be 'ok' or 'failed', got 'maybe' (str)"),
    "a contribution without a sample id": ([("contribution", "c00", {"content_hash": "ab"})], 0,
                                           "contribution payload: required field 'sample_id' is missing"),
    "a generation payment whose payouts and unallocated miss its fee": (
        [("generation_payment", "pa", _generation({"c00": 6}, unallocated=3))], 0,
        "generation_payment payload: payouts + unallocated total 9 units, fee is 10"),
    "a generation payment to an unregistered payee": (
        [("stake", "c00", {"contributor": "c00", "amount": 1}), ("generation_payment", "pa", _generation({"c00": 5, "mallory": 5}))], 1,
        "generation_payment pays ['mallory'], who have no registered key (unregistered payee)"),
    "a generation payment of negative units": (
        [("generation_payment", "pa", _generation({"c00": 11, "c01": -1}))], 0, "field 'payouts' must be a JSON object mapping ids"),
    "a generation payment without evidence": (
        [("generation_payment", "pa", {k: v for k, v in _generation({"c00": 10}).items() if k != "evidence"})], 0,
        "required field 'evidence' is missing"),
    "a receipt batch whose role totals miss its fee total": (
        [("receipt_batch", "ih", _receipt_batch(fee_by_role={"contributors": 5, "platform": 4}))], 0,
        "receipt_batch payload: fee_by_role total 9 units, fee_total is 10"),
    "a receipt batch whose root is no digest": (
        [("receipt_batch", "ih", _receipt_batch(root="AB" * 32))], 0, "field 'root' must be a SHA-256 digest, 64 lower-case hex digits"),
    "a receipt batch of no receipts": ([("receipt_batch", "ih", _receipt_batch(count=0))], 0, "field 'count' must be a count"),
    "a receipt batch with an unknown field": (
        [("receipt_batch", "ih", _receipt_batch(paid=3))], 0, "receipt_batch payload: unknown field(s) ['paid']"),
    "a receipt batch signed by a contributor": (
        [("receipt_batch", "c00", _receipt_batch())], 0,
        "receipt_batch signed by 'c00', whose role 'contributor' may not sign it (only ['host'])"),
    "a whole epoch paying 10**15 signed by a contributor": (
        [(kind, "c00", payload) for kind, _, payload in _epoch(2, {"c00": 10**15})], 0,
        "payout signed by 'c00', whose role 'contributor' may not sign it (only ['host', 'payout-authority'])"),
    "a generation payment signed by the inference host": (
        [("generation_payment", "ih", _generation({"c00": 10}))], 0,
        "generation_payment signed by 'ih', whose role 'host' may not sign it (only ['payout-authority'])"),
    "a stake signed by the payout authority": (
        [("stake", "pa", {"contributor": "c00", "amount": 5})], 0, "stake signed by 'pa', whose role 'payout-authority' may not sign it"),
    "a contribution signed by the log's key": (
        [("contribution", "log", {"sample_id": "s"})], 0, "contribution signed by 'log', whose role 'log' may not sign it"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_store_refuses_and_the_verifier_rejects_the_same_problem(name, paid, keys, forge):
    batch, index, problem = CASES[name]
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        with pytest.raises(LedgerError) as refused:
            book.append_many(batch)
        assert len(book) == 5
    assert f"record {index} " in str(refused.value) and problem in str(refused.value), refused.value
    assert verify(paid).ok  # nothing written
    forge(paid, keys, batch)
    report = verify(paid)
    assert not report.ok and report.first_bad_seq == 6 + index, report
    assert problem in report.reason, report.reason


@pytest.mark.parametrize("name", ["a receipt batch signed by a contributor", "a whole epoch paying 10**15 signed by a contributor"])
def test_a_contributors_key_alone_commits_no_receipt_batch_and_pays_no_epoch(name, paid, keys, forge):
    """An operator appends statements signed with contributor c00's key alone (append_signed): refused.
    Written anyway, the verifier names the entry and a writer refuses to extend the log."""
    batch, _, problem = CASES[name]
    key = keys.key("c00")
    signed = [SignedRecord(kind, actor, payload, sign(key, statement_bytes(kind, actor, canonical_json(payload).decode())))
              for kind, actor, payload in batch]
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        with pytest.raises(LedgerError, match="record 0 .*" + re.escape(problem)):
            book.append_signed(signed)
        assert len(book) == 5
    forge(paid, keys, batch)
    report = verify(paid)
    assert (report.ok, report.first_bad_seq) == (False, 6) and problem in report.reason, report
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        with pytest.raises(LedgerIntegrityError, match=re.escape(f"stored entry 6 breaks the signing roles ({batch[0][0]} signed by 'c00'")):
            book.append("contribution", "c00", {"sample_id": "s-after"})
        assert len(book) == 5 + len(batch)


def test_a_whole_second_epoch_is_accepted(paid, keys):
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        book.append_many([("slash", "pa", {"epoch": 2, "contributor": "c01", "amount": 100, "reason": "x"}),
                          ("payout", "pa", {"epoch": 2, "contributor": "c00", "amount": 60}),
                          ("payout", "pa", {"epoch": 2, "contributor": "c01", "amount": 40}),
                          ("payout_epoch", "pa", {"epoch": 2, "pool": 0, "slashed": 100, "paid": 100, "unallocated": 0})])
    assert verify(paid).ok and verify(paid).entries == 9


def test_generation_payments_and_receipt_batches_are_accepted(paid, keys):
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        book.append_many([("generation_payment", "pa", _generation({"c00": 7, "c01": 2}, unallocated=1)),
                          ("generation_payment", "pa", _generation({}, unallocated=10)),
                          ("receipt_batch", "ih", _receipt_batch()),
                          ("receipt_batch", "ih", {k: v for k, v in _receipt_batch().items() if k != "fee_by_role"})])
    assert verify(paid).ok and verify(paid).entries == 9


def test_a_tampered_ledger_is_not_appended_to(paid, keys, forge):
    forge(paid, keys, _epoch(1, {"c00": 1}))  # epoch 1 paid again
    with Ledger(paid, keystore=keys, clock=fixed_clock()) as book:
        with pytest.raises(LedgerError, match="stored entry 6 breaks the payout rules"):
            book.append("contribution", "c00", {"sample_id": "s"})


@pytest.mark.parametrize("kind, payload, problem", [
    ("payout", {"epoch": 1, "contributor": "c0", "amount": SAFE_INT + 1}, "got 9007199254740992 (int)"),
    ("payout", {"epoch": 0, "contributor": "c0", "amount": 1}, "field 'epoch' must be an epoch number"),
    ("payout", {"epoch": 1, "contributor": "../x", "amount": 1}, "field 'contributor' must be an actor id"),
    ("payout", {"epoch": 1, "amount": 1}, "required field 'contributor' is missing"),
    ("payout", [1], "payout payload must be a JSON object, got [1] (list)"),
    ("payout_epoch", {"epoch": 1, "pool": 0, "slashed": 0, "paid": 0, "unallocated": 0, "harm_threshold": "0.05"}, "'harm_threshold'"),
    ("validation", {"sample_id": "s", "accepted": 1}, "field 'accepted' must be true or false, got 1 (int)"),
    ("transfer", {}, "unknown kind 'transfer'"),
])
def test_payload_problems(kind, payload, problem):
    assert problem in payload_problem(kind, payload)


def test_record_kinds_keep_their_own_details():
    assert payload_problem("training_run", {"dataset_version": "dv", "config": {"lr": 0.1}, "anything": [1]}) is None
    assert payload_problem("payout_epoch", {"epoch": 1, "pool": 0, "slashed": 0, "paid": 0, "unallocated": 0,
                                            "rule": "r", "harm_threshold": 0.05, "dataset_version": "dv"}) is None
