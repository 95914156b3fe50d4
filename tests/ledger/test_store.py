"""Tests for ledger.store, ledger.verify, ledger.canonical and ledger.clock.

Tampering is done the way an attacker with the file would: straight through sqlite3, after
dropping the append-only triggers. Signatures are checked here with PyNaCl directly and
hashes with ``json.dumps``, not through the encoders under test.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sqlite3
import time

import pytest

from nacl.signing import VerifyKey

from ledger import KINDS, Keystore, Ledger, LedgerError, canonical_json, fixed_clock, keys, system_clock, verify
from ledger.encoding import GENESIS_HASH

CLOCK = fixed_clock("2024-05-01T12:00:00+00:00")

RECORDS = [
    ("contribution", "c00", {"sample_id": "c00-00000", "n": 1}),
    ("validation", "validator", {"sample_id": "c00-00000", "accepted": True}),
    ("dataset_version", "builder", {"version": "dv-abc", "n_accepted": 10}),
    ("training_run", "trainer", {"dataset_version": "dv-abc", "epochs": 3, "lr": 0.05}),
    ("stake", "c00", {"contributor": "c00", "amount": 42}),
]
ACTORS = {**{c: "contributor" for c in ("c00", "c01", "c02", "c03", "c07")}, "validator": "validator", "builder": "curator",
          "trainer": "trainer", "attributor": "attributor", "runner": "runner", "treasury": "payout-authority", "host": "host"}
"""Each actor of these tests with the role it is registered with."""
EPOCH = [("payout", "treasury", {"epoch": 1, "contributor": "c00", "amount": 42}),
         ("payout_epoch", "treasury", {"epoch": 1, "pool": 42, "slashed": 0, "paid": 42, "unallocated": 0})]


def _json(value) -> bytes:
    """Sorted-key compact JSON (equal to RFC 8785 for the values of these tests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _hash_by_hand(seq, kind, actor, timestamp, payload, prev_hash, signature) -> str:
    """SHA-256 of the entry fields, signature included, as sorted-key compact JSON."""
    record = {"seq": seq, "kind": kind, "actor": actor, "timestamp": timestamp, "payload": payload,
              "prev_hash": prev_hash, "signature": signature}
    return hashlib.sha256(_json(record)).hexdigest()


@pytest.fixture
def keystore(tmp_path):
    return Keystore(tmp_path / "keys", seed=b"test_store")


def signed_ledger(path, keystore, clock=CLOCK) -> Ledger:
    """A ledger with the keys of :data:`ACTORS` registered."""
    ledger = Ledger(path, keystore=keystore, clock=clock)
    for actor, role in ACTORS.items():
        ledger.register(actor, role)
    return ledger


@pytest.fixture
def ledger_path(tmp_path, keystore):
    path = tmp_path / "ledger.db"
    with signed_ledger(path, keystore) as ledger:
        ledger.append_many(RECORDS)
    return path


def _tamper(path, *statements):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {trigger}")
        for statement, *params in statements:
            conn.execute(statement, *params)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Appending and reading.


def test_empty_ledger(tmp_path, keystore):
    with Ledger(tmp_path / "l.db", keystore=keystore):
        pass
    with Ledger(tmp_path / "l.db") as ledger:
        assert len(ledger) == 0
        assert ledger.head() is None
        assert list(ledger.entries()) == []
    report = verify(tmp_path / "l.db")
    assert report.ok and report.entries == 0 and report.head_hash is None


def test_append_returns_the_stored_entry(tmp_path, keystore):
    with signed_ledger(tmp_path / "l.db", keystore) as ledger:
        entry = ledger.append("contribution", "c07", {"sample_id": "s", "b": 2, "a": [1, "x"], "nested": {"z": None, "y": True}})
        assert entry.seq == 1
        assert entry.kind == "contribution" and entry.actor == "c07"
        assert entry.timestamp == "2024-05-01T12:00:00+00:00"
        assert entry.payload == {"a": [1, "x"], "b": 2, "nested": {"y": True, "z": None}, "sample_id": "s"}
        assert entry.prev_hash == GENESIS_HASH == "0" * 64
        assert entry.hash == _hash_by_hand(1, "contribution", "c07", entry.timestamp, entry.payload, "0" * 64, entry.signature)
        public = VerifyKey(bytes.fromhex(ledger.public_keys()["c07"]))
        public.verify(_json({"actor": "c07", "kind": "contribution", "payload": entry.payload}), bytes.fromhex(entry.signature))
        assert len(ledger) == 1
        assert ledger.head() == entry
        assert list(ledger.entries()) == [entry]


def test_append_many_chains_the_hashes(tmp_path, keystore):
    with signed_ledger(tmp_path / "l.db", keystore) as ledger:
        written = ledger.append_many(RECORDS)
        more = ledger.append_many(EPOCH)
        stored = list(ledger.entries())
    assert stored == written + more
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5, 6, 7]
    assert [(e.kind, e.actor, e.payload) for e in stored[:5]] == [(k, a, p) for k, a, p in RECORDS]
    prev = "0" * 64
    for e in stored:
        assert e.prev_hash == prev
        assert e.hash == _hash_by_hand(e.seq, e.kind, e.actor, e.timestamp, e.payload, e.prev_hash, e.signature)
        prev = e.hash
    assert len({e.hash for e in stored}) == 7


def test_a_batch_signed_on_threads_writes_the_rows_and_head_of_one_by_one_appends(tmp_path, keystore, monkeypatch):
    monkeypatch.setattr(keys, "SIGN_THREADS", 3)
    monkeypatch.setattr(keys, "PARALLEL_SIGN_FROM", 4)
    records = [(kind, actor, {**payload, "i": i}) for i in range(9) for kind, actor, payload in RECORDS[:4]] + EPOCH
    with signed_ledger(tmp_path / "one.db", keystore) as one:
        for record in records[:-2]:
            one.append(*record)
        one.append_many(EPOCH)  # an epoch opens and closes in one batch
    with signed_ledger(tmp_path / "batch.db", keystore) as batch:
        batch.append_many(records[:5])
        batch.append_many(records[5:])
    tables = {}
    for name in ("one", "batch"):
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        tables[name] = [conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in ("entries", "tree", "keys")]
        tables[name].append(conn.execute("SELECT * FROM heads ORDER BY size DESC LIMIT 1").fetchone())
        conn.close()
    assert len(tables["one"][0]) == len(records) and tables["one"][3][0] == len(records)
    assert tables["batch"] == tables["one"]
    assert verify(tmp_path / "batch.db").ok


def test_entries_by_kind_and_reopening(ledger_path, keystore):
    with Ledger(ledger_path, keystore=keystore, clock=CLOCK) as ledger:
        assert len(ledger) == 5
        assert [e.seq for e in ledger.entries("validation")] == [2]
        assert list(ledger.entries("payout_epoch")) == []
        head = ledger.head()
        assert head.seq == 5 and head.kind == "stake"
        # Appending after reopening continues the chain.
        e = ledger.append_many(EPOCH)[0]
        assert e.seq == 6 and e.prev_hash == head.hash
        assert [e.seq for e in ledger.entries(actor="treasury")] == [6, 7]
    assert verify(ledger_path).ok


def test_append_many_of_nothing(tmp_path, keystore):
    with Ledger(tmp_path / "l.db", keystore=keystore) as ledger:
        assert ledger.append_many([]) == []
        assert len(ledger) == 0


def test_two_handles_on_one_file_share_one_chain(tmp_path, keystore):
    path = tmp_path / "l.db"
    with signed_ledger(path, keystore) as a, Ledger(path, keystore=keystore, clock=CLOCK) as b:
        a.append("contribution", "c00", {"sample_id": "s1"})
        b.append("contribution", "c01", {"sample_id": "s2"})
        a.append("contribution", "c02", {"sample_id": "s3"})
        assert len(a) == len(b) == 3
    report = verify(path)
    assert report.ok and report.entries == 3


ONE_OF_EACH_KIND = [
    ("stake", "c00", {"contributor": "c00", "amount": 100}),
    ("contribution", "c00", {"sample_id": "c00-1", "content_hash": "ab" * 32}),
    ("validation", "validator", {"sample_id": "c00-1", "accepted": True, "reason": ""}),
    ("dataset_version", "builder", {"version": "dv-1", "accepted": 1}),
    ("training_run", "trainer", {"dataset_version": "dv-1", "config": {"epochs": 2}}),
    ("attribution_run", "attributor", {"method": "tracin", "dataset_version": "dv-1", "contributor_credit": {"c00": 0.5}}),
    ("sweep_run", "runner", {"run_id": "r1", "status": "ok", "params": {"seed": 0}}),
    ("slash", "treasury", {"epoch": 1, "contributor": "c00", "amount": 10, "reason": "rejected data"}),
    ("payout", "treasury", {"epoch": 1, "contributor": "c00", "amount": 5}),
    ("payout_epoch", "treasury", {"epoch": 1, "pool": 0, "slashed": 10, "paid": 5, "unallocated": 5}),
    ("generation_payment", "treasury", {"generation_id": "g1", "fee": 3, "payouts": {"c00": 2}, "unallocated": 1,
                                        "rule": "span credit", "evidence": {}}),
    ("receipt_batch", "host", {"batch_id": "b1", "root": "ab" * 32, "count": 1, "fee_total": 3}),
]


def test_every_kind_is_accepted(tmp_path, keystore):
    with signed_ledger(tmp_path / "l.db", keystore) as ledger:
        ledger.append_many(ONE_OF_EACH_KIND)
        assert [e.kind for e in ledger.entries()] == [k for k, _, _ in ONE_OF_EACH_KIND]
    assert {k for k, _, _ in ONE_OF_EACH_KIND} == KINDS
    assert verify(tmp_path / "l.db").ok


# ---------------------------------------------------------------------------
# Verification and tampering.


def test_verify_ok(ledger_path):
    report = verify(ledger_path)
    assert report.ok
    assert report.entries == 5
    with Ledger(ledger_path) as ledger:
        assert report.head_hash == ledger.head().hash
    assert report.first_bad_seq is None and report.reason is None
    assert "OK" in str(report)


@pytest.mark.parametrize(
    "statement, params, bad_seq, reason",
    [
        ("UPDATE entries SET payload = ? WHERE seq = 3", ('{"n_accepted":11,"version":"dv-abc"}',), 3, "hash mismatch"),
        ("UPDATE entries SET payload = ? WHERE seq = 2", ('{"accepted": true, "sample_id": "c00-00000"}',), 2, "canonical"),
        ("UPDATE entries SET payload = ? WHERE seq = 2", ("{not json",), 2, "not valid JSON"),
        ("UPDATE entries SET actor = 'mallory' WHERE seq = 4", (), 4, "hash mismatch"),
        ("UPDATE entries SET kind = 'payout' WHERE seq = 1", (), 1, "hash mismatch"),
        ("UPDATE entries SET timestamp = '2030-01-01T00:00:00+00:00' WHERE seq = 5", (), 5, "hash mismatch"),
        ("UPDATE entries SET hash = ? WHERE seq = 3", ("f" * 64,), 3, "hash mismatch"),
        ("UPDATE entries SET prev_hash = ? WHERE seq = 2", ("1" * 64,), 2, "prev_hash"),
        ("UPDATE entries SET prev_hash = ? WHERE seq = 1", ("1" * 64,), 1, "prev_hash"),
        ("DELETE FROM entries WHERE seq = 3", (), 4, "sequence number 4 where 3 was expected"),
        ("DELETE FROM entries WHERE seq = 1", (), 2, "sequence number 2 where 1 was expected"),
        ("UPDATE entries SET seq = 9 WHERE seq = 5", (), 9, "sequence number 9 where 5 was expected"),
        ("UPDATE entries SET signature = ? WHERE seq = 2", ("ab" * 64,), 2, "hash mismatch"),
        ("UPDATE heads SET root = ? WHERE size = 5", ("cd" * 32,), 5, "signed tree head of size 5"),
        ("UPDATE heads SET signature = ? WHERE size = 5", ("ab" * 64,), 5, "signature does not verify under the log key"),
        ("UPDATE tree SET hash = ? WHERE id = 3", (b"x" * 32,), 4, "stored Merkle node"),
        ("UPDATE keys SET public_key = ? WHERE actor = 'trainer'", ("11" * 32,), 4, "actor 'trainer'"),
        ("DELETE FROM entries WHERE seq = 5", (), 5, "tail truncated"),
        ("UPDATE entries SET payload = CAST(X'7BFF7D' AS TEXT) WHERE seq = 3", (), 3, "table entries, row 3: column payload is not UTF-8"),
    ],
)
def test_tampering_is_found_at_the_tampered_entry(ledger_path, statement, params, bad_seq, reason):
    assert verify(ledger_path).ok
    _tamper(ledger_path, (statement, params))
    report = verify(ledger_path)
    assert not report.ok
    assert report.first_bad_seq == bad_seq
    assert reason in report.reason
    assert report.head_hash is None
    assert f"entry {bad_seq}" in str(report) and "INVALID" in str(report)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize(
    "tampering",
    [
        [],
        [("UPDATE entries SET payload = ? WHERE seq = 4", ('{"epochs":4,"lr":0.05}',))],
        [("UPDATE entries SET signature = ? WHERE seq = 5", ("ab" * 64,)), ("UPDATE entries SET kind = 'slash' WHERE seq = 3", ())],
    ],
)
def test_worker_processes_report_what_one_process_reports(ledger_path, monkeypatch, workers, tampering):
    monkeypatch.setattr(importlib.import_module("ledger.verify"), "PARALLEL_FROM", 1)  # 5 entries: 2 or 3 chunks
    _tamper(ledger_path, *tampering)
    alone = verify(ledger_path, workers=1)
    assert alone.ok == (not tampering)
    assert verify(ledger_path, workers=workers) == alone


def test_a_rollback_with_its_heads_is_invisible_to_verify_but_not_to_a_saved_head(tmp_path, keystore):
    # Deleting the last entry *and* every head that covers it leaves a valid shorter log; only a
    # checkpoint (a signed head saved elsewhere) catches it.
    from ledger.proofs import check_head, head_document

    ledger_path = tmp_path / "l.db"
    with signed_ledger(ledger_path, keystore) as ledger:
        ledger.append_many(RECORDS[:4])
        ledger.append_many(RECORDS[4:])
        saved = head_document(ledger)
    _tamper(ledger_path, ("DELETE FROM entries WHERE seq = 5", ()), ("DELETE FROM heads WHERE size = 5", ()),
            ("DELETE FROM tree WHERE id IN (4, ?)", (2 << 40 | 1,)))
    assert verify(ledger_path).ok
    with Ledger(ledger_path) as ledger:
        check = check_head(ledger, saved, saved["log_public_key"])  # the key of the checker's own checkpoint
    assert not check.ok and check.status == "rollback"


def test_swapping_two_entries_is_found(ledger_path):
    _tamper(
        ledger_path,
        ("UPDATE entries SET seq = -2 WHERE seq = 2", ()),
        ("UPDATE entries SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE entries SET seq = 3 WHERE seq = -2", ()),
    )
    report = verify(ledger_path)
    assert not report.ok
    assert report.first_bad_seq == 2
    assert "prev_hash" in report.reason


def test_a_rehashed_edit_breaks_the_next_link(ledger_path):
    """An attacker who edits entry 3 and recomputes its hash is caught at entry 3 by its signature."""
    conn = sqlite3.connect(ledger_path)
    seq, kind, actor, timestamp, _, prev_hash = conn.execute(
        "SELECT seq, kind, actor, timestamp, payload, prev_hash FROM entries WHERE seq = 3"
    ).fetchone()
    signature = conn.execute("SELECT signature FROM entries WHERE seq = 3").fetchone()[0]
    conn.close()
    forged = {"n_accepted": 1000, "version": "dv-abc"}
    forged_hash = _hash_by_hand(seq, kind, actor, timestamp, forged, prev_hash, signature)
    _tamper(
        ledger_path,
        ("UPDATE entries SET payload = ?, hash = ? WHERE seq = 3", (json.dumps(forged, separators=(",", ":")), forged_hash)),
    )
    report = verify(ledger_path)
    assert not report.ok
    assert report.first_bad_seq == 3  # the builder's signature no longer matches its statement
    assert "signature does not verify" in report.reason


def test_an_inserted_entry_is_found(ledger_path):
    _tamper(
        ledger_path,
        ("INSERT INTO entries VALUES (6, 'payout', 'mallory', 't', '{}', ?, ?, ?)", ("2" * 64, "4" * 128, "3" * 64)),
    )
    report = verify(ledger_path)
    assert not report.ok and report.first_bad_seq == 6


def test_triggers_refuse_update_and_delete(ledger_path):
    conn = sqlite3.connect(ledger_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only: UPDATE refused"):
            conn.execute("UPDATE entries SET actor = 'mallory' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM entries WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM entries")
        conn.rollback()
    finally:
        conn.close()
    report = verify(ledger_path)
    assert report.ok and report.entries == 5


# ---------------------------------------------------------------------------
# Atomic batches.


@pytest.mark.parametrize(
    "bad, match",
    [
        (("transfer", "c00", {"x": 1}), "unknown kind 'transfer'"),
        (("payout", "c00", {"x": float("nan")}), "canonical"),
        (("payout", "c00", {"x": float("inf")}), "canonical"),
        (("payout", "c00", {"x": 2**60}), "canonical"),
        (("payout", "c00", {1: "non-string key"}), "canonical"),
        (("payout", "c00", {"x": object()}), "canonical"),
        (("payout", "", {"x": 1}), "actor"),
        (("payout", None, {"x": 1}), "actor"),
        (("payout", "c00", [1, 2]), "payload must be a JSON object"),
        (("payout", "c00", "text"), "payload must be a JSON object"),
    ],
)
def test_a_batch_with_one_bad_record_writes_nothing(ledger_path, keystore, bad, match):
    head_before = verify(ledger_path).head_hash
    batch = [("contribution", "c01", {"sample_id": "s1"}), ("contribution", "c02", {"sample_id": "s2"}), bad,
             ("contribution", "c03", {"sample_id": "s3"})]
    with Ledger(ledger_path, keystore=keystore, clock=CLOCK) as ledger:
        with pytest.raises(LedgerError, match=match) as info:
            ledger.append_many(batch)
        assert "record 2" in str(info.value)
        assert len(ledger) == 5
        # The ledger stays usable.
        assert ledger.append("contribution", "c01", {"sample_id": "s1"}).seq == 6
    report = verify(ledger_path)
    assert report.ok and report.entries == 6


def test_a_failure_midway_through_a_batch_rolls_back(ledger_path, keystore):
    calls = []

    def flaky_clock():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("clock died")
        return "2024-05-01T12:00:00+00:00"

    with Ledger(ledger_path, keystore=keystore, clock=flaky_clock) as ledger:
        with pytest.raises(RuntimeError, match="clock died"):
            ledger.append_many([("contribution", f"c{i:02d}", {"sample_id": f"s{i}"}) for i in range(4)])
        assert len(calls) == 3  # two entries were inserted before the failure...
        assert len(ledger) == 5  # ...and rolled back
    with Ledger(ledger_path, clock=CLOCK) as ledger:
        assert len(ledger) == 5
    assert verify(ledger_path).ok


# ---------------------------------------------------------------------------
# Clocks.


def test_fixed_clock_makes_hashes_reproducible(tmp_path, keystore):
    heads = []
    for name in ("a.db", "b.db"):
        with signed_ledger(tmp_path / name, keystore, clock=fixed_clock()) as ledger:
            ledger.append_many(RECORDS)
            heads.append(ledger.head())
    assert heads[0].hash == heads[1].hash
    assert heads[0].timestamp == "1970-01-01T00:00:00+00:00"


def test_system_clock_makes_hashes_differ(tmp_path, keystore):
    heads = []
    for name in ("a.db", "b.db"):
        with signed_ledger(tmp_path / name, keystore, clock=system_clock) as ledger:
            ledger.append_many(RECORDS)
            heads.append(ledger.head())
        time.sleep(0.002)
    assert heads[0].timestamp != heads[1].timestamp
    assert heads[0].hash != heads[1].hash
    for head in heads:
        assert head.timestamp.endswith("+00:00")


def test_the_default_clock_is_the_system_clock(tmp_path, keystore):
    with Ledger(tmp_path / "l.db", keystore=keystore) as ledger:
        ledger.register("c00", "contributor")
        entry = ledger.append("contribution", "c00", {"sample_id": "s"})
    assert entry.timestamp != "1970-01-01T00:00:00+00:00"
    assert entry.timestamp.startswith(("20", "21"))


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01", ""])
def test_fixed_clock_refuses_a_malformed_timestamp(bad):
    with pytest.raises(ValueError):
        fixed_clock(bad)


# ---------------------------------------------------------------------------
# Files that are not ledgers.


def test_verify_missing_file(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(LedgerError, match="absent.db"):
        verify(path)
    assert not path.exists()


def test_verify_non_database_file(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is plain text, not SQLite\n" * 200)
    with pytest.raises(LedgerError, match="notes.db"):
        verify(path)


def test_verify_database_without_entries(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="other.db"):
        verify(path)


def test_verify_a_directory(tmp_path):
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(LedgerError, match="folder.db"):
        verify(folder)


def test_opening_a_non_database_file_as_a_ledger(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"\x00junk" * 1000)
    with pytest.raises(LedgerError, match="junk.db"):
        Ledger(path)


# ---------------------------------------------------------------------------
# Canonical JSON.


def test_canonical_json_sorts_keys_and_drops_whitespace():
    value = {"b": 1, "a": [1, 2, {"d": "x", "c": None}], "é": True, "A": False}
    assert canonical_json(value) == '{"A":false,"a":[1,2,{"c":null,"d":"x"}],"b":1,"é":true}'.encode()


def test_canonical_json_numbers():
    assert canonical_json([1.0, 0.5, -0.0, 1e21, 2**53 - 1]) == b"[1,0.5,0,1e+21,9007199254740991]"


def test_canonical_json_is_utf8_without_escapes():
    assert canonical_json({"k": "ü€"}) == '{"k":"ü€"}'.encode("utf-8")


@pytest.mark.parametrize(
    "value", [float("nan"), {"x": float("nan")}, [float("inf")], {"x": -float("inf")}, 2**53, {1: "a"}, {"x": {1, 2}}]
)
def test_canonical_json_refuses_what_json_cannot_carry(value):
    with pytest.raises(LedgerError, match="canonical"):
        canonical_json(value)


def test_a_float_that_cannot_round_trip_is_refused_and_nothing_is_written(tmp_path, keystore):
    path = tmp_path / "l.db"
    with signed_ledger(path, keystore) as ledger:
        ledger.append("training_run", "trainer", {"dataset_version": "dv", "units": 1})
        with pytest.raises(LedgerError, match="round trip"):
            ledger.append("training_run", "trainer", {"dataset_version": "dv", "units": 1e16})
        assert len(ledger) == 1
    assert verify(path).ok
