"""The inference economy: every fee unit in one place, receipts that say what the attributor and an
exact split say, committed before they are acknowledged, recovered after a crash, provable."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import struct
import threading
import time
from concurrent.futures import Future
from fractions import Fraction
from math import floor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger
from datanet_lab import cli, pipeline
from datanet_lab.serving import economy as economy_module
from datanet_lab.serving import QueryAttributor, RequestError, ServingError, run_test_inputs
from datanet_lab.serving.economy import EARNINGS, InferenceEconomy, earnings_table
from datanet_lab.serving.receipt_check import check_receipts
from datanet_lab.serving.receipts_file import FOLDER, HOST, RECEIPTS
from datanet_lab.serving.tally import STATE
from ledger.canonical import canonical_json
from ledger.fees import RESOLUTION, FeeAccount, fraction_text
from ledger.receipts import build_batch, check_receipt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDS = st.sampled_from([f"c{i}" for i in range(5)])
CREDIT = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(0.0), st.floats(1e-300, 1e-290))
ROLE_SHARES = st.dictionaries(st.sampled_from(["contributors", "host", "stakers"]), st.integers(0, 100), min_size=1).filter(
    lambda s: sum(s.values()) > 0)
OPS = st.lists(st.one_of(st.tuples(st.integers(0, 10**6), st.dictionaries(IDS, CREDIT, max_size=5)), st.just("close")),
               max_size=30)


def positive_shares(part: int, credit: dict[str, float]) -> dict[str, Fraction]:
    """The naive reference: ``part * credit / total`` over positive credit, in exact fractions."""
    positive = {c: Fraction(v) for c, v in credit.items() if v > 0}
    total = sum(positive.values())
    return {c: part * v / total for c, v in positive.items()}


@settings(max_examples=80, deadline=None)
@given(OPS, ROLE_SHARES)
def test_every_unit_is_in_one_place_and_the_paid_units_are_the_floor_of_the_exact_shares(ops, role_shares):
    account = FeeAccount(resolution=None)
    exact: dict[str, Fraction] = {}
    unallocated = charged = 0
    roles: dict[str, int] = {}
    for op in ops:
        if op == "close":
            account.close()
            assert account.paid == {c: floor(v) for c, v in exact.items() if floor(v) > 0}
            assert account.unallocated == unallocated
            assert all(0 <= b < 1 for b in account.accrual.balances.values())
            assert earnings_table(account, ["c0"])["units"].sum() == charged
        else:
            fee, credit = op
            split = ledger.split_by_role(fee, role_shares)
            account.charge(split, credit)
            charged += fee
            part = split.get("contributors", 0)
            shares = positive_shares(part, credit)
            unallocated += 0 if shares else part
            for c, v in shares.items():
                exact[c] = exact.get(c, 0) + v
            for role, units in split.items():
                if role != "contributors":
                    roles[role] = roles.get(role, 0) + units
        assert account.fees == charged == account.placed()
        assert account.roles == roles


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_charging_receipts_again_gives_the_same_state_as_charging_credit(ops):
    charged, replayed, pending = FeeAccount(), FeeAccount(), []
    split = ledger.split_by_role(1000)
    for op in [*ops, "close"]:
        if op == "close":
            replayed.charge_receipts(pending)
            pending = []
            assert replayed.to_state() == charged.to_state()
            charged.close(), replayed.close()
            continue
        fee, credit = op
        split = ledger.split_by_role(fee)
        shares = charged.charge(split, credit)
        pending.append({"fee_split": split, "shares": {c: fraction_text(s) for c, s in shares.items()}})
    assert replayed.to_state() == charged.to_state()
    assert FeeAccount.from_state(json.loads(json.dumps(charged.to_state()))).to_state() == charged.to_state()


def test_a_bad_account_state_is_named():
    state = FeeAccount().to_state()
    with pytest.raises(ledger.LedgerError, match="'paid' must map ids to integers >= 0"):
        FeeAccount.from_state({**state, "paid": {"c0": -1}})
    with pytest.raises(ledger.LedgerError, match="must hold exactly"):
        FeeAccount.from_state({**state, "extra": 1})
    with pytest.raises(ValueError, match="the epoch is open"):
        account = FeeAccount()
        account.charge({"contributors": 5}, {"c0": 1.0})
        earnings_table(account, [])


def _inputs(run_dir: Path, n: int) -> np.ndarray:
    """The run's test inputs cycled to ``n`` rows."""
    x = run_test_inputs(run_dir)
    return x[np.arange(n) % len(x)]


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / FOLDER / RECEIPTS).read_text().splitlines()]


def _host_entries(run_dir: Path, kind: str) -> list[ledger.Entry]:
    with ledger.Ledger(run_dir / "ledger.sqlite") as book:
        return list(book.entries(kind=kind, actor=HOST))


def test_receipts_say_what_the_attributor_and_an_exact_split_say(run_dir):
    x = _inputs(run_dir, 40)
    with InferenceEconomy(run_dir, fee=999, top_k=3) as economy:
        served = economy.serve(x[:25]) + economy.serve(x[25:])
        assert economy.pending == 40 and not (run_dir / FOLDER / RECEIPTS).exists()
        committed = economy.commit()
    result = QueryAttributor.from_run(run_dir).attribute(x)
    split = ledger.split_by_role(999)
    lines = (run_dir / FOLDER / RECEIPTS).read_bytes().splitlines()
    for j, s in enumerate(served):
        receipt = s.receipt
        assert receipt == _lines(run_dir)[j] and receipt["request_id"] == f"req-{j:010d}"
        assert lines[j] == canonical_json(receipt)  # the file holds the Merkle leaves' bytes
        assert (receipt["batch_id"], receipt["index"]) == ("batch-00000000", j)
        assert receipt["input_hash"] == hashlib.sha256(struct.pack("<13d", *x[j])).hexdigest()
        assert receipt["output"]["class"] == result.predictions[j]
        np.testing.assert_allclose(receipt["output"]["probability"], result.probabilities[j].max(), rtol=1e-6)
        np.testing.assert_allclose(list(s.credit.values()), result.contributor_credit[:, j], rtol=1e-5,
                                   atol=1e-6 * np.abs(result.contributor_credit).max())
        ranked = sorted(s.credit.items(), key=lambda item: -item[1])[:3]
        assert [(t["contributor"], t["score"]) for t in receipt["top"]] == ranked
        exact = positive_shares(split["contributors"], s.credit)
        assert set(receipt["shares"]) == set(exact)
        for c, text in receipt["shares"].items():
            assert abs(Fraction(text) - exact[c]) <= Fraction(1, RESOLUTION)
        # the run pays by tracin_captum; its receipts name the code that computed their credit
        assert receipt["fee_split"] == split and receipt["method"] == "tracin_fast"
    assert committed.batch.payload() == build_batch(_lines(run_dir)).payload()
    (entry,) = _host_entries(run_dir, "receipt_batch")
    assert (entry.seq, entry.payload) == (committed.seq, committed.batch.payload())


def test_each_receipt_is_the_reference_receipt_byte_for_byte(run_dir):
    x = _inputs(run_dir, 30)
    split = ledger.split_by_role(999, {"contributors": 7, "host": 2, "stakers": 1})
    with InferenceEconomy(run_dir, fee=999, role_shares={"contributors": 7, "host": 2, "stakers": 1}, top_k=4) as economy:
        served = economy.serve(x[:13]) + economy.serve(x[13:])
        attributor = QueryAttributor.from_run(run_dir)  # the same micro-batches: the same floats
        results = [attributor.attribute(x[:13]), attributor.attribute(x[13:])]
        account = FeeAccount()
        for j, s in enumerate(served):
            result, row = results[j >= 13], j - 13 * (j >= 13)
            reference = ledger.make_receipt(
                request_id=f"req-{j:010d}", batch_id="batch-00000000", index=j, model_version=economy.model_version,
                dataset_version=economy.dataset_version, input_hash=hashlib.sha256(x[j].astype("<f8").tobytes()).hexdigest(),
                output={"class": int(result.predictions[row]), "probability": float(result.probabilities[row].max())},
                fee_split=split, shares=account.charge(split, dict(zip(attributor.contributors, result.contributor_credit[:, row]))),
                top=sorted(s.credit.items(), key=lambda item: -item[1])[:4], method="tracin_fast")
            assert s.leaf == ledger.receipt_leaf(reference) and s.receipt == reference
            assert list(s.credit.values()) == result.contributor_credit[:, row].tolist()
        committed = economy.commit()
        assert economy.account.to_state() == account.to_state()  # the batch's charges are each inference's
    assert committed.batch.payload() == build_batch(_lines(run_dir)).payload()
    assert [committed.batch.receipts[j] for j in (0, 29)] == [served[0].receipt, served[29].receipt]


def test_pipelined_commits_write_what_waiting_commits_write(built, tmp_path):
    x = _inputs(built, 40)
    found = []
    for wait in (True, False):
        run_dir = Path(shutil.copytree(built, tmp_path / f"wait-{wait}"))
        with InferenceEconomy(run_dir) as economy:
            for first in range(0, 40, 9):
                economy.serve(x[first : first + 9])
                assert economy.commit(wait=wait) is None or wait
            landed = economy.land()
            assert (landed is None) == wait and (wait or landed.batch.batch_id == "batch-00000004")
            economy.close_epoch()
            state = economy.account.to_state()
        with ledger.Ledger(run_dir / "ledger.sqlite") as book:
            found.append(((run_dir / FOLDER / RECEIPTS).read_bytes(), [e.payload for e in book.entries(actor=HOST)], state))
    assert found[0] == found[1]
    assert check_receipts(run_dir).ok and ledger.verify(run_dir / "ledger.sqlite").ok


def _refuse_next_batch(patch: pytest.MonkeyPatch) -> None:
    real = ledger.Ledger.append

    def refuse(book, kind, actor, payload):
        patch.setattr(ledger.Ledger, "append", real)
        raise ledger.LedgerError("disk full")

    patch.setattr(ledger.Ledger, "append", refuse)


def test_a_pipelined_commit_that_fails_gives_its_receipts_back_or_drops_those_served_after_it(run_dir, monkeypatch):
    x = _inputs(run_dir, 20)
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:4]), economy.commit(wait=False), economy.land()
        size = (run_dir / FOLDER / RECEIPTS).stat().st_size
        economy.serve(x[4:8])
        with monkeypatch.context() as patch:
            _refuse_next_batch(patch)
            economy.commit(wait=False)
            with pytest.raises(ledger.LedgerError, match="disk full"):
                economy.land()
        assert (run_dir / FOLDER / RECEIPTS).stat().st_size == size and economy.pending == 4  # given back
        economy.commit(wait=False), economy.land()
        with monkeypatch.context() as patch:
            _refuse_next_batch(patch)
            economy.serve(x[8:12]), economy.commit(wait=False)
            served = economy.serve(x[12:15])  # numbered after the batch in flight
            assert served[0].receipt["request_id"] == "req-0000000012"
            with pytest.raises(ledger.LedgerError, match="disk full"):
                economy.commit(wait=False)
        assert economy.pending == 0 and economy.account.fees == 8 * 1000  # nothing served after it was acknowledged
        again = economy.serve(x[15:])
        assert (again[0].receipt["request_id"], again[0].receipt["batch_id"]) == ("req-0000000008", "batch-00000002")
        economy.commit()
    assert [r["request_id"] for r in _lines(run_dir)] == [f"req-{i:010d}" for i in range(13)]
    _check_every_committed_receipt(run_dir, 14)


def test_every_unit_is_accounted_for_in_the_ledger_and_earnings_and_the_epoch_follows_the_paid_ones(run_dir):
    pipeline.pay(pipeline.open_run(str(run_dir), **json.loads((run_dir / "manifests" / "attribute.json").read_text())["params"]))
    x = run_test_inputs(run_dir)
    with InferenceEconomy(run_dir, fee=1001, role_shares={"contributors": 3, "model_host": 1, "platform": 1}) as economy:
        for first in range(0, len(x), 7):
            economy.serve(x[first : first + 7])
            economy.commit()
        closed = economy.close_epoch()
        assert economy.close_epoch() is None  # nothing accrued since
        account = economy.account
    fees = 1001 * len(x)
    assert account.fees == fees == account.placed()
    assert closed.epoch == 2  # the run's own payout is epoch 1
    batches = _host_entries(run_dir, "receipt_batch")
    by_role = pd.DataFrame([e.payload["fee_by_role"] for e in batches]).sum()
    assert by_role.sum() == fees and by_role.drop("contributors").to_dict() == account.roles
    payouts = {e.payload["contributor"]: e.payload["amount"] for e in _host_entries(run_dir, "payout")}
    assert payouts == account.paid == closed.close.payouts
    (epoch,) = _host_entries(run_dir, "payout_epoch")
    assert epoch.payload["paid"] + epoch.payload["unallocated"] == epoch.payload["pool"]
    carried = sum(account.accrual.balances.values(), Fraction(0))
    assert epoch.payload["pool"] + carried == by_role["contributors"]  # nothing carried in to the first epoch
    earnings = pd.read_csv(run_dir / FOLDER / EARNINGS)
    assert earnings["units"].sum() == fees
    assert earnings.set_index("id").loc["carried", "units"] == carried
    assert ledger.verify(run_dir / "ledger.sqlite").ok


def test_restarting_continues_ids_and_state(run_dir):
    x = _inputs(run_dir, 30)
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:10]), economy.commit()
        economy.serve(x[10:20])  # committed by the clean exit
    state = economy.account.to_state()
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.to_state() == state
        (again,) = economy.serve(x[:1])
        assert (again.receipt["request_id"], again.receipt["batch_id"]) == ("req-0000000020", "batch-00000002")
        economy.close_epoch()
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.accrual.accrued == 0 and economy.serve(x[:1])[0].receipt["batch_id"] == "batch-00000003"
        economy.close()
    assert [r["request_id"] for r in _lines(run_dir)] == [f"req-{i:010d}" for i in range(22)]


def test_a_crash_before_the_ledger_entry_leaves_nothing_acknowledged_behind(run_dir):
    x = _inputs(run_dir, 12)
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:6]), economy.commit()
        state = economy.account.to_state()
    committed = (run_dir / FOLDER / RECEIPTS).read_bytes()
    with open(run_dir / FOLDER / RECEIPTS, "ab") as out:  # a batch written, the entry never appended, a torn line
        out.write(committed + committed[:40])
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.to_state() == state
        assert (run_dir / FOLDER / RECEIPTS).read_bytes() == committed
        assert economy.serve(x[:1])[0].receipt["request_id"] == "req-0000000006"


@pytest.mark.parametrize("step", ["commit", "close"])
def test_a_crash_after_the_ledger_entry_is_replayed_from_the_receipts(run_dir, step):
    x = _inputs(run_dir, 20)
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:8])
    before = (run_dir / FOLDER / STATE).read_bytes()  # written by the close
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[8:])
        economy.commit() if step == "commit" else economy.close_epoch()
    after = economy.account.to_state()
    (run_dir / FOLDER / STATE).write_bytes(before)  # the state file never caught up
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.to_state() == after
        assert json.loads((run_dir / FOLDER / STATE).read_text())["account"] == after  # saved when recovered
        assert economy.serve(x[:1])[0].receipt["request_id"] == "req-0000000020"


def test_committed_receipts_are_provable_before_any_checkpoint_and_each_close_writes_one(run_dir):
    x = _inputs(run_dir, 9)
    state = run_dir / FOLDER / STATE
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:4]), economy.commit()
        assert not state.exists()
        assert check_receipts(run_dir).checked == 4
        economy.close_epoch()
        assert json.loads(state.read_text())["requests"] == 4
        economy.serve(x[4:]), economy.commit()
        assert json.loads(state.read_text())["requests"] == 4
    assert json.loads(state.read_text())["requests"] == 9


def test_lost_or_altered_committed_receipts_are_named(run_dir):
    with InferenceEconomy(run_dir) as economy:
        economy.serve(_inputs(run_dir, 5))
    path = run_dir / FOLDER / RECEIPTS
    lines = path.read_bytes().splitlines(keepends=True)
    missing = r"entry \d+ commits batch 'batch-00000000', which .*receipts.jsonl does not hold at byte 0"
    path.write_bytes(b"".join(lines[1:]))
    with pytest.raises(ServingError, match=missing):
        InferenceEconomy(run_dir)
    altered = json.loads(lines[0])
    altered["output"]["class"] += 1
    path.write_bytes(canonical_json(altered) + b"\n" + b"".join(lines[1:]))
    with pytest.raises(ServingError, match=missing):
        InferenceEconomy(run_dir)


def test_a_refused_commit_cuts_the_file_back_and_keeps_the_receipts_pending(run_dir, monkeypatch):
    x = _inputs(run_dir, 9)
    with InferenceEconomy(run_dir) as economy:
        economy.serve(x[:4]), economy.commit()
        size = (run_dir / FOLDER / RECEIPTS).stat().st_size
        economy.serve(x[4:])

        def refuse(*_):
            raise ledger.LedgerError("disk full")

        with monkeypatch.context() as patch:
            patch.setattr(ledger.Ledger, "append", refuse)
            with pytest.raises(ledger.LedgerError, match="disk full"):
                economy.commit()
        assert (run_dir / FOLDER / RECEIPTS).stat().st_size == size and economy.pending == 5
        assert economy.commit().batch.receipts[0]["request_id"] == "req-0000000004"


def test_bad_input_and_arguments_change_nothing(run_dir):
    with pytest.raises(ledger.LedgerError, match="inference fee -1 and role shares .*: reward pool must be >= 0"):
        InferenceEconomy(run_dir, fee=-1)
    with pytest.raises(ledger.LedgerError, match="role shares must sum to more than 0"):
        InferenceEconomy(run_dir, role_shares={"contributors": 0})
    with pytest.raises(ServingError, match="top_k must be an integer >= 1, got 0"):
        InferenceEconomy(run_dir, top_k=0)
    assert not (run_dir / FOLDER).exists()
    x = _inputs(run_dir, 3)
    x[2, 1] = np.inf
    with InferenceEconomy(run_dir) as economy:
        with pytest.raises(RequestError, match="data row 3, field 1 is inf"):
            economy.serve(x)
        assert economy.pending == 0 and economy.account.fees == 0 and economy.commit() is None
        with pytest.raises(ServingError, match="another inference economy serves this run"):
            InferenceEconomy(run_dir)


def test_receipts_are_provable_and_a_tampered_one_is_not(run_dir):
    x = _inputs(run_dir, 60)
    with InferenceEconomy(run_dir) as economy:
        for first in range(0, 60, 16):
            economy.serve(x[first : first + 16]), economy.commit()
        document = economy.proof("req-0000000037")
        with pytest.raises(ServingError, match="no committed receipt has request id 'req-0000000099'"):
            economy.proof("req-0000000099")
    assert document["receipt"]["index"] == 37 - 32
    with ledger.Ledger(run_dir / "ledger.sqlite") as book:
        key = book.log_public_key
    assert check_receipt(document, key).ok
    document["receipt"]["output"]["class"] += 1
    assert check_receipt(document, key).status == "wrong-root"
    found = check_receipts(run_dir, sample=10, seed=1)
    assert (found.checked, found.total, found.ok) == (10, 60, True)


def test_check_receipts_reports_a_tampered_receipts_file_naming_each_request(run_dir):
    with InferenceEconomy(run_dir) as economy:
        economy.serve(_inputs(run_dir, 5))
    path = run_dir / FOLDER / RECEIPTS
    lines = path.read_bytes().splitlines(keepends=True)
    altered = json.loads(lines[2])
    altered["output"]["class"] += 1
    path.write_bytes(b"".join(lines[:2]) + canonical_json(altered) + b"\n" + b"".join(lines[3:]))
    found = check_receipts(run_dir)
    assert (found.ok, found.checked, found.total) == (False, 5, 5)
    # The batch no longer hashes to the root its entry committed: none of its receipts is provable.
    assert [f.split(": ")[:2] for f in found.failures] == [[f"req-{i:010d}", "unprovable"] for i in range(5)], found
    assert "no receipt_batch entry commits batch 'batch-00000000'" in found.failures[2], found


def test_check_receipts_reports_a_batch_entry_altered_in_the_ledger(run_dir):
    with InferenceEconomy(run_dir) as economy:
        economy.serve(_inputs(run_dir, 3))
    seq = _host_entries(run_dir, "receipt_batch")[0].seq
    conn = sqlite3.connect(run_dir / "ledger.sqlite")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET signature = ? WHERE seq = ?", ("00" * 64, seq))
    conn.commit()
    conn.close()
    found = check_receipts(run_dir)
    assert (found.ok, found.checked) == (False, 3)
    assert [f.split(": ")[:2] for f in found.failures] == [[f"req-{i:010d}", "bad-entry"] for i in range(3)], found
    assert f"entry {seq}: its fields do not hash to its hash" in found.failures[0], found


def test_threads_share_one_economy(run_dir):
    x = _inputs(run_dir, 96)
    with InferenceEconomy(run_dir) as economy:
        def client(offset: int) -> None:
            for first in range(offset, offset + 24, 8):
                economy.serve(x[first : first + 8])
                economy.commit()

        threads = [threading.Thread(target=client, args=(24 * k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert economy.account.fees == 96 * 1000 == economy.account.placed()
    ids = [r["request_id"] for r in _lines(run_dir)]
    assert ids == [f"req-{i:010d}" for i in range(96)]
    assert check_receipts(run_dir).ok
    assert ledger.verify(run_dir / "ledger.sqlite").ok



# --- an interrupt or an error at any point of a commit or a close --------------------------------------------------

def _once(patch: pytest.MonkeyPatch, owner: object, name: str, *, error: type[BaseException] = KeyboardInterrupt,
          after: bool = False, kind: str | None = None) -> None:
    """Make ``owner.name`` raise ``error`` once (``after`` it ran; only for records of ``kind`` when
    it is the ledger's ``append_many``), then behave."""
    real, armed = getattr(owner, name), [True]

    def once(*args, **kwargs):
        if kind is not None:
            args = (args[0], list(args[1]), *args[2:])
        if not armed[0] or (kind is not None and not any(record[0] == kind for record in args[1])):
            return real(*args, **kwargs)
        armed[0] = False
        if after:
            real(*args, **kwargs)
        raise error("interrupted")

    patch.setattr(owner, name, once)


def _torn_write(patch: pytest.MonkeyPatch) -> None:
    """Half the batch's lines reach the receipts file, then the process is interrupted."""
    real = economy_module.write_at

    def torn(path, offset, data):
        patch.setattr(economy_module, "write_at", real)
        real(path, offset, data[: len(data) // 2])
        raise KeyboardInterrupt

    patch.setattr(economy_module, "write_at", torn)


def _interrupted_wait(patch: pytest.MonkeyPatch, kind: str) -> None:
    """The caller is interrupted while it waits for the ledger's thread, which goes on to write
    the entries of ``kind`` a moment later."""
    real_append, real_result, armed = ledger.Ledger.append_many, Future.result, [True]

    def slow_append(book, records):
        records = list(records)
        if any(record[0] == kind for record in records):
            time.sleep(0.3)
        return real_append(book, records)

    def interrupted(future, timeout=None):
        if armed.pop() if armed else False:
            raise KeyboardInterrupt
        return real_result(future, timeout)

    patch.setattr(ledger.Ledger, "append_many", slow_append)
    patch.setattr(Future, "result", interrupted)


BATCH, EPOCH = "receipt_batch", "payout_epoch"
STAGES = {  # stage -> (what is interrupted, how)
    "before the receipts are written": ("commit", lambda p: _once(p, economy_module, "write_at")),
    "half the receipts written": ("commit", _torn_write),
    "the ledger refuses the batch": ("commit", lambda p: _once(p, ledger.Ledger, "append_many", kind=BATCH,
                                                               error=ledger.LedgerError)),
    "while the batch entry is written": ("commit", lambda p: _interrupted_wait(p, BATCH)),
    "right after the batch entry": ("commit", lambda p: _once(p, ledger.Ledger, "append_many", kind=BATCH, after=True)),
    "in the bookkeeping after the entry": ("commit", lambda p: _once(p, economy_module, "_Books")),
    "before the epoch is written": ("close", lambda p: _once(p, ledger.Ledger, "append_many", kind=EPOCH)),
    "while the epoch is written": ("close", lambda p: _interrupted_wait(p, EPOCH)),
    "right after the epoch entries": ("close", lambda p: _once(p, ledger.Ledger, "append_many", kind=EPOCH, after=True)),
    "writing the checkpoint after the epoch": ("close", lambda p: _once(p, economy_module, "write_atomic")),
}


def _interrupt(economy: InferenceEconomy, patch: pytest.MonkeyPatch, stage: str, x: np.ndarray) -> None:
    """Commit 4 receipts, serve 4 more, then interrupt the commit of these (or, with the 8
    committed, the epoch's close) at ``stage``."""
    step, arm = STAGES[stage]
    economy.serve(x[:4]), economy.commit()
    economy.serve(x[4:8])
    if step == "close":
        economy.commit()
    arm(patch)
    with pytest.raises((KeyboardInterrupt, ledger.LedgerError)):
        economy.commit() if step == "commit" else economy.close_epoch()


def _check_every_committed_receipt(run_dir: Path, extra: int) -> None:
    """Every receipt the ledger commits is in the file and provable; reopening works, continues
    the ids after them, closes an epoch, and leaves a valid ledger."""
    committed = sum(e.payload["count"] for e in _host_entries(run_dir, "receipt_batch"))
    found = check_receipts(run_dir)
    assert found.ok and found.checked == found.total == committed
    with InferenceEconomy(run_dir) as economy:
        assert len(_lines(run_dir)) == committed  # any uncommitted tail is cut off
        assert economy.account.fees == 1000 * committed == economy.account.placed()
        assert economy.serve(_inputs(run_dir, extra)[-1:])[0].receipt["request_id"] == f"req-{committed:010d}"
        economy.close_epoch()
    assert check_receipts(run_dir).total == committed + 1
    assert ledger.verify(run_dir / "ledger.sqlite").ok


@pytest.mark.parametrize("stage", STAGES)
def test_an_interrupt_at_any_point_of_a_commit_or_close_loses_no_committed_receipt(run_dir, monkeypatch, stage):
    x = _inputs(run_dir, 8)
    with pytest.raises((KeyboardInterrupt, ledger.LedgerError)):
        with InferenceEconomy(run_dir) as economy, monkeypatch.context() as patch:
            _interrupt(economy, patch, stage, x)
            raise KeyboardInterrupt  # the process stops here: the economy is left by the exception
    assert sum(e.payload["count"] for e in _host_entries(run_dir, "receipt_batch")) in (4, 8)
    _check_every_committed_receipt(run_dir, 9)


@pytest.mark.parametrize("stage", STAGES)
def test_an_economy_goes_on_after_an_interrupted_commit_or_close(run_dir, monkeypatch, stage):
    x = _inputs(run_dir, 12)
    with InferenceEconomy(run_dir) as economy:
        with monkeypatch.context() as patch:
            _interrupt(economy, patch, stage, x)
        economy.serve(x[8:]), economy.commit()
        economy.close_epoch()
        state = economy.account.to_state()
    assert [r["request_id"] for r in _lines(run_dir)] == [f"req-{i:010d}" for i in range(12)]
    batches = [e.payload["batch_id"] for e in _host_entries(run_dir, "receipt_batch")]
    assert len(batches) == len(set(batches))
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.to_state() == state
    _check_every_committed_receipt(run_dir, 13)



def test_a_reconciliation_that_could_not_run_at_once_runs_before_the_next_serve(run_dir, monkeypatch):
    x = _inputs(run_dir, 12)
    real, failed = InferenceEconomy._settle, []

    def settle_fails_once(economy):
        if economy._unsettled and not failed:
            failed.append(True)
            raise OSError("disk gone for a moment")
        real(economy)

    with InferenceEconomy(run_dir) as economy:
        with monkeypatch.context() as patch:
            patch.setattr(InferenceEconomy, "_settle", settle_fails_once)
            _interrupt(economy, patch, "right after the batch entry", x)  # the batch got in; nobody knows yet
        assert failed
        served = economy.serve(x[8:])
        economy.commit()
    assert [s.receipt["request_id"] for s in served] == [f"req-{i:010d}" for i in range(8, 12)]
    assert [r["request_id"] for r in _lines(run_dir)] == [f"req-{i:010d}" for i in range(12)]
    _check_every_committed_receipt(run_dir, 13)

# --- the state comes from the ledger ---------------------------------------------------------------------------------

@pytest.mark.parametrize("into", ["balance", "paid"])
def test_an_edited_checkpoint_is_refused_naming_its_field_and_rebuilt_once_deleted(run_dir, into):
    x = _inputs(run_dir, 6)
    with InferenceEconomy(run_dir, fee=10**6) as economy:
        economy.serve(x[:3]), economy.close_epoch()
        economy.serve(x[3:])
    honest = economy.account.to_state()
    path = run_dir / FOLDER / STATE
    state = json.loads(path.read_text())
    account = state["account"]
    contributor = next(iter(account["paid"]))
    account["roles"]["model_host"] -= 200_000  # 200,000 units moved from the host to a contributor
    if into == "balance":
        balances = account["accrual"]["balances"]
        balances[contributor] = fraction_text(Fraction(balances.get(contributor, "0/1")) + 200_000)
        field = f"account.accrual.balances.{contributor}"
    else:
        account["paid"][contributor] += 200_000
        field = f"account.paid.{contributor}"
    assert FeeAccount.from_state(account).placed() == account["fees"]  # a consistent account, yet a false one
    path.write_text(json.dumps(state))
    edited = path.read_bytes()
    with pytest.raises(ServingError, match=rf"accrual\.json: field '{field}' is .*, but the ledger's entries of "
                                           rf"'inference-host' and the receipts file make it .*\(delete it to rebuild"):
        InferenceEconomy(run_dir)
    assert path.read_bytes() == edited
    path.unlink()
    with InferenceEconomy(run_dir) as economy:
        assert economy.account.to_state() == honest
    assert json.loads(path.read_text())["account"] == honest


# --- amounts within the ledger's integer range -----------------------------------------------------------------------

def test_fees_beyond_the_safe_integer_range_are_refused_before_anything_is_charged(run_dir):
    with pytest.raises(ledger.LedgerError, match=r"inference fee 9007199254740992 .*at most 9007199254740991 units"):
        InferenceEconomy(run_dir, fee=2**53)
    x = _inputs(run_dir, 3)
    too_much = r"2 more inferences at 4503599627370496 units each would bring the fees charged to 9007199254740992 units"
    with InferenceEconomy(run_dir, fee=2**52) as economy:
        with pytest.raises(ledger.LedgerError, match=too_much):
            economy.serve(x[:2])
        assert economy.pending == 0 and economy.account.fees == 0
        economy.serve(x[:1])
        with pytest.raises(ledger.LedgerError, match="1 more inferences at 4503599627370496 units each .* 9007199254740992"):
            economy.serve(x[1:2])
        assert economy.pending == 1
        assert economy.close_epoch().close.accrued == 2**51  # the pool fits a ledger entry
    with InferenceEconomy(run_dir, fee=1000) as economy:  # the directory goes on
        economy.serve(x), economy.close_epoch()
        assert economy.account.fees == 2**52 + 3000 == economy.account.placed()
    assert ledger.verify(run_dir / "ledger.sqlite").ok


def test_serve_sim_checks_the_fees_of_all_its_requests_before_writing_anything(run_dir, capsys):
    with ledger.Ledger(run_dir / "ledger.sqlite") as book:
        head = book.head()
    args = ["serve-sim", str(run_dir), "--fee", str(2**52), "--batch-size", "1", "--requests", "8"]
    assert cli.main(args) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "8 inferences at 4503599627370496 units each would bring the fees charged to 36028797018963968 units" in line
    assert not (run_dir / FOLDER).exists()
    with ledger.Ledger(run_dir / "ledger.sqlite") as book:
        assert book.head() == head
    assert cli.main([*args[:3], "1000", *args[4:]]) == 0
    assert check_receipts(run_dir).total == 8
