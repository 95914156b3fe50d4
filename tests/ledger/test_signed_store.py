"""Signed entries, keys, the stored Merkle state and its proofs (ledger.store, ledger.tree, ledger.proofs).

Expected hashes are rebuilt here with ``json.dumps`` + ``hashlib`` and checked against the pure
reference functions of ledger.merkle (themselves checked against the RFC 6962 vectors).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from nacl.signing import SigningKey

from ledger import Keystore, Ledger, LedgerError, SignedRecord, fixed_clock, merkle, verify
from ledger.proofs import check_document, consistency_document, inclusion_document
from ledger.store import connect

CLOCK = fixed_clock("2024-05-01T12:00:00+00:00")


def _json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _leaf(e) -> bytes:
    return _json({"seq": e.seq, "kind": e.kind, "actor": e.actor, "timestamp": e.timestamp, "payload": e.payload,
                  "prev_hash": e.prev_hash, "signature": e.signature})


@pytest.fixture
def keys(tmp_path):
    return Keystore(tmp_path / "keys", seed=b"signed")


@pytest.fixture
def book(tmp_path, keys):
    with Ledger(tmp_path / "l.db", keystore=keys, clock=CLOCK) as book:
        for actor in ("alice", "bob"):
            book.register(actor, "contributor")
        for batch in (1, 2, 3, 5, 8, 2):  # heads at 1, 3, 6, 11, 19, 21
            start = len(book)
            book.append_many([("contribution", "alice" if i % 3 else "bob", {"sample_id": f"s{start + i}"}) for i in range(batch)])
        yield book


def test_stored_tree_gives_the_reference_root_and_proofs_for_every_size(book):
    entries = list(book.entries())
    leaves = [_leaf(e) for e in entries]
    assert [hashlib.sha256(x).hexdigest() for x in leaves] == [e.hash for e in entries]
    assert [h.size for h in book.heads()] == [1, 3, 6, 11, 19, 21]
    for head in book.heads():
        assert head.root == merkle.root(leaves[: head.size]).hex()
    n = len(leaves)
    for size in range(1, n + 1):
        assert book.root_at(size) == merkle.root(leaves[:size])
        assert book.consistency_proof(size, n) == merkle.consistency_proof(leaves, size)
    for seq in range(1, n + 1):
        assert book.inclusion_proof(seq, n) == merkle.inclusion_proof(leaves, seq - 1)


def test_inclusion_and_consistency_documents_check_offline_and_fail_when_altered(book):
    doc = inclusion_document(book, 7)
    assert check_document(doc, log_key=book.log_public_key).ok and len(doc["proof"]) == 5  # ceil(log2 21)
    assert not check_document(doc, log_key="00" * 32).ok  # pinned to another log key
    for alter in (lambda d: d["proof"].pop(), lambda d: d["proof"].__setitem__(0, "00" * 32),
                  lambda d: d["head"].__setitem__("root", "11" * 32), lambda d: d["entry"].__setitem__("actor", "alice"),
                  lambda d: d.__setitem__("index", 5)):
        bad = json.loads(json.dumps(doc))
        alter(bad)
        assert not check_document(bad, log_key=book.log_public_key).ok
    doc = consistency_document(book, 6)
    assert check_document(doc, log_key=book.log_public_key).ok
    doc["proof"][0] = "22" * 32
    assert not check_document(doc, log_key=book.log_public_key).ok


def test_an_unknown_key_or_a_bad_signature_is_refused_and_nothing_is_written(book, tmp_path):
    size = len(book)
    with pytest.raises(LedgerError, match="unknown key: actor 'carol'"):
        book.append_many([("contribution", "alice", {"sample_id": "s100"}), ("contribution", "carol", {"sample_id": "s1"})])
    mallory = SigningKey.generate()
    statement = _json({"actor": "alice", "kind": "contribution", "payload": {"sample_id": "s101"}})
    with pytest.raises(LedgerError, match="bad signature"):
        book.append_signed([SignedRecord("contribution", "alice", {"sample_id": "s101"}, mallory.sign(statement).signature.hex())])
    assert len(book) == size and verify(book.path).ok
    # Signed elsewhere by alice's own key: accepted.
    alice = Keystore(tmp_path / "keys", seed=b"signed").key("alice")
    entry = book.append_signed([SignedRecord("contribution", "alice", {"sample_id": "s101"}, alice.sign(statement).signature.hex())])[0]
    assert entry.seq == size + 1 and verify(book.path).ok


def test_a_replayed_statement_is_refused(book):
    first = book.append("contribution", "alice", {"sample_id": "once"})
    with pytest.raises(LedgerError, match=f"already entry {first.seq}"):
        book.append("contribution", "alice", {"sample_id": "once"})
    with pytest.raises(LedgerError, match="same signed statement twice"):
        book.append_many([("contribution", "bob", {"sample_id": "x"})] * 2)
    size = len(book)
    with pytest.raises(LedgerError, match=f"already entry {first.seq}"):  # refused as the rows go in: the new one too
        book.append_many([("contribution", "bob", {"sample_id": "new"}), ("contribution", "alice", {"sample_id": "once"})])
    assert len(book) == size and verify(book.path).ok


def test_keys_cannot_be_swapped(book, tmp_path):
    other = SigningKey.generate()
    from ledger.encoding import key_bytes
    from ledger.keys import public_hex

    pub = public_hex(other)
    with pytest.raises(LedgerError, match="already registered"):
        book.register_public_key("alice", "contributor", pub, other.sign(key_bytes("alice", "contributor", pub)).signature.hex())
    with pytest.raises(LedgerError, match="proof of possession"):
        book.register_public_key("carol", "contributor", pub, "00" * 64)
    with pytest.raises(LedgerError, match="not this ledger's log key"):
        Ledger(book.path, keystore=Keystore(tmp_path / "other-keys", seed=b"other"))
    with pytest.raises(LedgerError, match="actor must match"):
        book.register("../etc", "contributor")


def test_keystore_files_are_private_and_seeded_keys_reproduce(tmp_path, keys):
    keys.key("alice")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "alice.key").st_mode) == 0o600
    again = Keystore(tmp_path / "again", seed=b"signed").key("alice")
    assert bytes(again) == bytes(keys.key("alice"))
    assert bytes(Keystore(tmp_path / "r1").key("alice")) != bytes(Keystore(tmp_path / "r2").key("alice"))


def test_private_keys_never_reach_the_ledger_file(book, tmp_path):
    data = b"".join(p.read_bytes() for p in tmp_path.glob("l.db*"))
    for name in ("alice", "bob", "log"):
        raw = (tmp_path / "keys" / f"{name}.key").read_bytes()
        assert raw not in data and raw.hex().encode() not in data


def test_every_writing_connection_uses_wal_and_synchronous_full(book):
    for conn in (book._conn, connect(book.path)):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_ledger_opened_without_a_keystore_reads_but_does_not_write(book, tmp_path):
    book.close()  # its last connection gone, the file holds everything and no -wal file is left
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with Ledger(book.path) as reader:
        assert len(reader) == 21
        with pytest.raises(LedgerError, match="without a keystore"):
            reader.append("contribution", "alice", {"sample_id": "s-1"})
        other = SigningKey.generate()
        from ledger.encoding import key_bytes
        from ledger.keys import public_hex

        proof = other.sign(key_bytes("carol", "contributor", public_hex(other))).signature.hex()
        with pytest.raises(LedgerError, match="read only"):
            reader.register_public_key("carol", "contributor", public_hex(other), proof)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
