"""Inference receipts (ledger.receipts): a batch is one signed entry, each receipt is proven with
two inclusion levels and checked offline against a log key the checker chose; every tampering
fails with the status that names it."""

from __future__ import annotations

import copy
import hashlib
import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Accrual, Keystore, Ledger, LedgerError, canonical_json, fixed_clock, split_by_role, verify
from ledger.cli import main
from ledger.encoding import head_bytes
from ledger.keys import public_hex, sign
from ledger.proofs import inclusion_document
from ledger.receipts import build_batch, check_receipt, commit_receipts, make_receipt, receipt_leaf, receipt_proof, request_proof

CONTRIBUTORS = [f"c{i}" for i in range(5)]


def receipts(batch_id: str, count: int, accrual: Accrual | None = None) -> list[dict]:
    """``count`` receipts of batch ``batch_id``, fees split by role and shares accrued."""
    accrual = accrual or Accrual()
    made = []
    for index in range(count):
        credit = {c: ((index + 1) * (k + 3) % 7 - 2) / 3 for k, c in enumerate(CONTRIBUTORS)}
        split = split_by_role(100 + index)
        made.append(make_receipt(
            request_id=f"{batch_id}-r{index}", batch_id=batch_id, index=index, model_version="m-1",
            dataset_version="dv-1", input_hash=hashlib.sha256(f"input {index}".encode()).hexdigest(),
            output={"label": index % 3, "p": 0.25 + index / 1000}, fee_split=split,
            shares=accrual.accrue(split["contributors"], credit),
            top=sorted(credit.items(), key=lambda kv: (-kv[1], kv[0]))[:3], method="tracin"))
    return made


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keystore(tmp_path_factory.mktemp("keys") / "keys", seed=b"receipts")


def build(path, keys):
    """A ledger with contributions, then batches of 1, 5 and 13 receipts, then one more entry."""
    with Ledger(path, keystore=keys, clock=fixed_clock()) as book:
        for actor in CONTRIBUTORS:
            book.register(actor, "contributor")
        book.register("server", "host")
        book.append_many([("contribution", c, {"sample_id": f"s-{c}"}) for c in CONTRIBUTORS])
        batches = [commit_receipts(book, receipts(f"b{n}", n), "server") for n in (1, 5, 13)]
        book.append("contribution", "c0", {"sample_id": "s-late"})
    return path, batches


@pytest.fixture(scope="module")
def committed(tmp_path_factory, keys):
    """:func:`build`, shared by the tests that only read it."""
    return build(tmp_path_factory.mktemp("ledger") / "l.db", keys)


@pytest.fixture
def own(tmp_path, keys):
    """:func:`build`, for a test that writes to it."""
    return build(tmp_path / "l.db", keys)


def test_every_receipt_of_every_batch_verifies_offline(committed):
    path, batches = committed
    assert verify(path).ok
    with Ledger(path) as book:
        for entry, batch in batches:
            assert entry.kind == "receipt_batch" and entry.payload["count"] == len(batch.receipts)
            for index in range(len(batch.receipts)):
                doc = json.loads(json.dumps(receipt_proof(book, batch.receipts, index)))  # as a file holds it
                check = check_receipt(doc, log_key=book.log_public_key)
                assert check.ok and check.status == "included", check
            assert receipt_proof(book, batch, 0, seq=entry.seq) == receipt_proof(book, batch.receipts, 0)


def test_the_batch_entry_totals_the_fees_by_role(committed):
    _, batches = committed
    entry, batch = batches[2]
    by_role: dict[str, int] = {}
    for index in range(13):
        for role, units in split_by_role(100 + index).items():
            by_role[role] = by_role.get(role, 0) + units
    assert entry.payload["fee_by_role"] == by_role and entry.payload["fee_total"] == sum(range(100, 113))
    leaves = [hashlib.sha256(b"\0" + canonical_json(r)).digest() for r in batch.receipts]
    assert entry.payload["root"] == batch.root.hex() and list(batch.leaf_hashes) == leaves


def _proof(committed, batch=2, index=6):
    path, batches = committed
    with Ledger(path) as book:
        return receipt_proof(book, batches[batch][1].receipts, index), book.log_public_key


def _resign_head(doc, keys, **change):
    head = doc["batch_entry"]["head"]
    head.update(change)
    head["signature"] = sign(keys.key("log"), head_bytes(head["size"], head["root"], head["timestamp"]))


TAMPERING = {
    "the receipt's output": (lambda d, k: d["receipt"].update(output={"label": 2}), "wrong-root"),
    "a share moved between contributors": (lambda d, k: d["receipt"]["shares"].update(c0="0/1"), "bad-receipt"),
    "the receipt's request id": (lambda d, k: d["receipt"].update(request_id="other"), "wrong-root"),
    "the receipt's batch id": (lambda d, k: d["receipt"].update(batch_id="b5"), "bad-receipt"),
    "the receipt's index": (lambda d, k: d.update(index=7), "bad-receipt"),
    "a hash of the batch path": (lambda d, k: d["batch_path"].__setitem__(1, "00" * 32), "wrong-root"),
    "the batch path cut short": (lambda d, k: d["batch_path"].pop(), "wrong-root"),
    "the batch root in the entry": (lambda d, k: d["batch_entry"]["entry"]["payload"].update(root="ab" * 32), "bad-entry"),
    "the batch count in the entry": (lambda d, k: d["batch_entry"]["entry"]["payload"].update(count=14), "bad-entry"),
    "the actor's key": (lambda d, k: d["batch_entry"].update(actor_public_key=public_hex(k.key("c0"))), "bad-signature"),
    "a hash of the log path": (lambda d, k: d["batch_entry"]["proof"].__setitem__(0, "00" * 32), "bad-proof"),
    "the head's root": (lambda d, k: d["batch_entry"]["head"].update(root="cd" * 32), "bad-head"),
    "the head's root, re-signed by the log": (lambda d, k: _resign_head(d, k, root="cd" * 32), "bad-proof"),
    "the head's size, re-signed by the log": (lambda d, k: _resign_head(d, k, size=8), "bad-proof"),
    "the log key": (lambda d, k: d["batch_entry"].update(log_public_key=public_hex(k.key("c1"))), "key-mismatch"),
    "the document type": (lambda d, k: d.update(type="inclusion"), "malformed"),
    "the batch path as text": (lambda d, k: d.update(batch_path="00"), "malformed"),
    "the batch entry removed": (lambda d, k: d.pop("batch_entry"), "malformed"),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampering_fails_with_the_status_that_names_it(committed, keys, name):
    doc, log_key = _proof(committed)
    tamper, status = TAMPERING[name]
    tamper(doc, keys)
    check = check_receipt(doc, log_key)
    assert not check.ok and check.status == status, check


def test_a_pinned_log_key_refuses_a_document_of_another_log_naming_both_keys(committed, keys):
    doc, log_key = _proof(committed)
    assert check_receipt(doc, log_key=log_key).ok
    other = public_hex(keys.key("c2"))
    check = check_receipt(doc, log_key=other)
    assert not check.ok and check.status == "key-mismatch" and log_key in check.message and other in check.message, check


def test_a_deeply_nested_receipt_is_malformed(committed):
    doc, log_key = _proof(committed)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    doc["receipt"]["output"] = deep
    check = check_receipt(doc, log_key)
    assert (check.ok, check.status) == (False, "malformed") and "RecursionError" in check.message, check


def test_an_entry_that_is_not_a_batch_is_refused(committed):
    path, _ = committed
    doc, log_key = _proof(committed)
    with Ledger(path) as book:
        doc["batch_entry"] = inclusion_document(book, 1)  # a contribution
    check = check_receipt(doc, log_key)
    assert not check.ok and check.status == "not-a-batch", check


def test_a_forged_batch_of_a_contributor_fails_against_the_ledgers_keys(own, keys, forge):
    """Rows written around the store: a batch signed by contributor c0 under a validly signed head
    passes with the log key alone; the ledger's registered roles name the signer."""
    path, _ = own
    invented = receipts("b-forged", 3)
    forge(path, keys, [("receipt_batch", "c0", build_batch(invented).payload())])
    with Ledger(path) as book:
        doc, log_key, registered = receipt_proof(book, invented, 1), book.log_public_key, book.key_records()
    assert check_receipt(doc, log_key).ok  # the log's signature alone cannot tell
    check = check_receipt(doc, log_key, registered)
    assert (check.ok, check.status) == (False, "bad-signer"), check
    assert "receipt_batch signed by 'c0', whose role 'contributor' may not sign it" in check.message
    registered = {**registered, "c0": (registered["server"][0], registered["server"][1], "")}
    assert "the ledger registers" in check_receipt(doc, log_key, registered).message


def test_a_receipt_against_a_tampered_ledger_fails(own, keys, forge):
    path, batches = own
    entry, batch = batches[1]
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_update")
    payload = json.dumps({**entry.payload, "root": "ef" * 32}, sort_keys=True, separators=(",", ":"))
    conn.execute("UPDATE entries SET payload = ? WHERE seq = ?", (payload, entry.seq))
    conn.commit()
    conn.close()
    with Ledger(path) as book:
        with pytest.raises(LedgerError, match="no receipt_batch entry commits batch 'b5'"):
            receipt_proof(book, batch, 2)
        with pytest.raises(LedgerError, match="no receipt_batch entry commits batch 'b5'"):
            receipt_proof(book, batch, 2, seq=entry.seq)
        # the honest path against the tampered entry: the entry no longer hashes to its hash
        doc = {"type": "receipt", "receipt": batch.receipts[2], "index": 2,
               "batch_path": [h.hex() for h in batch.path(2)], "batch_entry": inclusion_document(book, entry.seq)}
        log_key = book.log_public_key
    assert check_receipt(doc, log_key).status == "bad-entry"
    # an attacker holding every key commits another batch b5 in a validly extended log
    forged = forge(path.with_name("forged.db"), keys, [("receipt_batch", "server", build_batch(receipts("b5", 5)).payload())])
    with Ledger(path.with_name("forged.db")) as other:
        doc["batch_entry"] = inclusion_document(other, forged[0].seq)
    doc["receipt"] = {**batch.receipts[2], "output": {"label": 0}}
    assert check_receipt(doc, log_key).status == "wrong-root"


def test_a_bad_batch_is_refused_and_nothing_is_written(own, keys):
    path, _ = own
    good = receipts("b9", 3)
    bad_split = copy.deepcopy(good)
    bad_split[1]["fee_split"]["platform"] += 1
    bad_shares = copy.deepcopy(good)
    bad_shares[2]["shares"]["c1"] = "1/2"
    cases = [
        ([], "a receipt batch needs at least one receipt"),
        ([good[0], {**good[1], "batch_id": "b8"}], "receipt 1: batch_id 'b8', the batch is 'b9'"),
        ([good[0], good[2]], "receipt 1: index 2, its position in the batch is 1"),
        (bad_split, "receipt 1 payload: fee_split sums to 102 units, fee is 101"),
        (bad_shares, "receipt 2 payload: shares sum to"),
        ([{**good[0], "input_hash": "XYZ"}], "field 'input_hash' must be a SHA-256 digest"),
        ([{**good[0], "top": [{"contributor": "c0", "score": float("nan")}]}], "field 'top' must be a list of"),
        ([{**good[0], "fee": -1}], "field 'fee' must be money units"),
        ([{k: v for k, v in good[0].items() if k != "method"}], "required field 'method' is missing"),
        ([{**good[0], "output": {"n": 2**60}}], "receipt 0: payload is not canonical-JSON encodable"),
    ]
    with Ledger(path, keystore=keys, clock=fixed_clock()) as book:
        size = len(book)
        for batch, message in cases:
            with pytest.raises(LedgerError) as refused:
                commit_receipts(book, batch, "server")
            assert message in str(refused.value), refused.value
        with pytest.raises(LedgerError, match="unknown key"):
            commit_receipts(book, good, "nobody")
        assert len(book) == size
        with pytest.raises(LedgerError, match="receipt index 3 is outside batch 'b9' of 3 receipts"):
            receipt_proof(book, good, 3)
        with pytest.raises(LedgerError, match="no receipt_batch entry commits batch 'b9'"):
            receipt_proof(book, good, 0)
    assert verify(path).ok


def test_make_receipt_refuses_bad_fields():
    base = receipts("b", 1)[0]
    args = dict(request_id="r", batch_id="b", index=0, model_version="m", dataset_version="d",
                input_hash=base["input_hash"], output=None, fee_split={"contributors": 2, "platform": 1},
                shares={}, top=[("c0", 0.5)], method="x")
    assert make_receipt(**args)["fee"] == 3
    for change, message in [({"shares": {"c0": 0.5}}, "receipt shares must be Fractions or integers"),
                            ({"top": [("c0",)]}, "receipt top must be (contributor, score) pairs"),
                            ({"index": -1}, "field 'index' must be a position"),
                            ({"shares": {"c0": 1}}, "shares sum to 1/1 units, the 'contributors' part of fee_split is 2")]:
        with pytest.raises(LedgerError) as refused:
            make_receipt(**{**args, **change})
        assert message in str(refused.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_receipt_leaf_is_the_canonical_json(value):
    assert receipt_leaf(value) == canonical_json(value)


def test_receipt_leaf_writes_floats_as_rfc8785_does():
    value = {"z": [1e21, 1e20, 1e-7, 1e-6, 123.0, -0.0, 5e-324, 0.1], "\u20ac": 2.5, "\U0001f600": -1.5e300, "a\0": 0.5}
    assert receipt_leaf(value) == canonical_json(value)


def test_cli_verify_receipt_exit_codes(committed, tmp_path, capsys):
    doc, log_key = _proof(committed)
    good, bad = tmp_path / "r.json", tmp_path / "bad.json"
    good.write_text(json.dumps(doc))
    assert main(["verify-receipt", str(good), "--log-key", log_key]) == 0
    assert "OK (included): receipt 6 of batch 'b13'" in capsys.readouterr().out
    doc["receipt"]["output"] = {"label": 1}
    bad.write_text(json.dumps(doc))
    assert main(["verify-receipt", str(bad), "--log-key", log_key]) == 1
    assert "FAILED (wrong-root)" in capsys.readouterr().out
    assert main(["verify-receipt", str(tmp_path / "none.json"), "--log-key", log_key]) == 2
    assert "no file at" in capsys.readouterr().err


def test_cli_verify_receipt_takes_the_log_key_from_a_ledger_or_a_saved_head(committed, tmp_path, capsys):
    path, _ = committed
    doc, _ = _proof(committed)
    receipt, head = tmp_path / "r.json", tmp_path / "head.json"
    receipt.write_text(json.dumps(doc))
    assert main(["head", str(path), "--out", str(head)]) == 0
    assert main(["verify-receipt", str(receipt), "--ledger", str(path)]) == 0
    assert main(["verify-receipt", str(receipt), "--head", str(head)]) == 0
    assert capsys.readouterr().out.count("OK (included): receipt 6 of batch 'b13'") == 2


def test_cli_verify_receipt_never_trusts_the_documents_own_key(committed, tmp_path, capsys):
    """A forger's log of their own, with invented receipts: its proof holds together under the
    forger's key, so without a key chosen by the checker it is refused, not passed."""
    path, _ = committed
    forger = Keystore(tmp_path / "forger-keys", seed=b"forger")
    with Ledger(tmp_path / "forged.db", keystore=forger, clock=fixed_clock()) as book:
        book.register("server", "host")
        invented = receipts("b13", 13)
        commit_receipts(book, invented, "server")
        forged = receipt_proof(book, invented, 6)
    assert check_receipt(forged, public_hex(forger.key("log"))).ok
    receipt = tmp_path / "forged.json"
    receipt.write_text(json.dumps(forged))
    assert main(["verify-receipt", str(receipt)]) == 2
    out, err = capsys.readouterr()
    assert "OK" not in out and err.count("\n") == 1 and "needs a log key you chose" in err, err
    assert main(["verify-receipt", str(receipt), "--ledger", str(path)]) == 1
    out = capsys.readouterr().out
    with Ledger(path) as book:
        real = book.log_public_key
    assert out.startswith("FAILED (key-mismatch)") and real in out and public_hex(forger.key("log")) in out, out
    assert main(["verify-receipt", str(receipt), "--log-key", "ABC"]) == 2
    assert "the log key must be 64 lower-case hex digits, got 'ABC'" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["verify-receipt", "check-head", "verify-proof"])
@pytest.mark.parametrize("document", ["deeply nested JSON", "a directory"])
def test_cli_a_deep_or_unreadable_document_is_one_line_and_exit_2(committed, tmp_path, capsys, tool, document):
    path, _ = committed
    given = tmp_path / "doc.json"
    if document == "a directory":
        given.mkdir()
    else:
        given.write_text("[" * 100_000 + "]" * 100_000)
    args = {"verify-receipt": [tool, str(given)], "check-head": [tool, str(path), str(given)],
            "verify-proof": [tool, str(given)]}[tool] + ["--ledger", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    expected = "is a directory, not a JSON file" if document == "a directory" else "JSON nested too deeply to read"
    assert err.count("\n") == 1 and str(given) in err and expected in err, err
