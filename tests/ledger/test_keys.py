"""ledger.keys against the Ed25519 test vectors of RFC 8032, section 7.1 (TEST 1-3).

A key file holds the RFC's 32-byte secret key, so a keystore must give the RFC's public key and
signatures byte for byte (as any conforming implementation, OpenSSL's included, does): this is
what keeps ledgers signed before the switch to libsodium reproducible.
"""

from __future__ import annotations

import stat

import pytest

from ledger import Keystore, LedgerError, keys
from ledger.keys import public_hex, sign, signature_ok

# (secret key, public key, message, signature), hex, from https://www.rfc-editor.org/rfc/rfc8032#section-7.1
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
     "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
     "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
     "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]
ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the Ed25519 base point: a signature's S must be below it (RFC 8032, 5.1.7)."""


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_a_key_file_signs_as_rfc8032_says(tmp_path, secret, public, message, signature):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice.key").write_bytes(bytes.fromhex(secret))
    key = Keystore(tmp_path / "keys").key("alice")
    assert public_hex(key) == public
    assert sign(key, bytes.fromhex(message)) == signature
    assert signature_ok(public, signature, bytes.fromhex(message))


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_an_altered_or_malleated_signature_does_not_verify(secret, public, message, signature):
    message = bytes.fromhex(message)
    assert not signature_ok(public, signature, message + b"\0")
    flipped = bytes.fromhex(signature)
    flipped = (flipped[:5] + bytes([flipped[5] ^ 1]) + flipped[6:]).hex()
    assert not signature_ok(public, flipped, message)
    # Same point R, S + L: the same equation holds mod L, but the encoding is not canonical.
    r, s = signature[:64], int.from_bytes(bytes.fromhex(signature[64:]), "little")
    assert not signature_ok(public, r + (s + ORDER).to_bytes(32, "little").hex(), message)


@pytest.mark.parametrize(
    ("public", "signature"),
    [("zz" * 32, "00" * 64), ("00" * 31, "00" * 64), ("00" * 32, "00" * 63), (None, "00" * 64), ("00" * 32, None)],
)
def test_malformed_keys_and_signatures_do_not_verify(public, signature):
    assert not signature_ok(public, signature, b"message")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sign_many_signs_in_order_whatever_the_threads(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(keys, "SIGN_THREADS", threads)
    store = Keystore(tmp_path / "keys", seed=b"many")
    pairs = [(store.key(f"a{i % 3}"), f"message {i}".encode()) for i in range(keys.PARALLEL_SIGN_FROM + 101)]
    signatures = keys.sign_many(pairs)
    assert signatures == [sign(key, message) for key, message in pairs]
    assert all(signature_ok(public_hex(key), s, message) for (key, message), s in zip(pairs, signatures))
    assert keys.sign_many(pairs[:5]) == signatures[:5] and keys.sign_many([]) == []


def test_the_small_order_identity_key_signs_nothing():
    # With A = R = the identity point and S = 0, [S]B = R + [k]A holds for every message, so a
    # verifier that does not refuse small-order points (OpenSSL's does not) accepts it for any text.
    identity = "01" + "00" * 31
    assert not signature_ok(identity, identity + "00" * 32, b"any message")


def test_a_keystore_without_a_seed_draws_random_keys_and_keeps_them_private(tmp_path):
    first, second = Keystore(tmp_path / "a"), Keystore(tmp_path / "b")
    assert public_hex(first.key("alice")) != public_hex(second.key("alice"))
    assert public_hex(Keystore(tmp_path / "a").key("alice")) == public_hex(first.key("alice"))  # reopened: reused
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "alice.key").stat().st_mode) == 0o600
    assert not (tmp_path / "a" / keys.SEED_FILE).exists()


def test_a_seeded_keystore_records_its_seed_and_stays_seeded_when_reopened(tmp_path):
    Keystore(tmp_path / "keys", seed=b"s1").key("alice")
    assert (tmp_path / "keys" / keys.SEED_FILE).read_bytes() == b"s1"
    assert stat.S_IMODE((tmp_path / "keys" / keys.SEED_FILE).stat().st_mode) == 0o600
    reopened = Keystore(tmp_path / "keys")  # no seed given: the recorded one derives a new actor's key
    expected = Keystore(tmp_path / "elsewhere", seed=b"s1").key("bob")
    assert public_hex(reopened.key("bob")) == public_hex(expected)


def test_a_keystore_refuses_a_seed_it_was_not_made_with_and_writes_nothing(tmp_path):
    Keystore(tmp_path / "seeded", seed=b"s1").key("alice")
    Keystore(tmp_path / "random").key("alice")
    with pytest.raises(LedgerError, match="derives its keys from another seed"):
        Keystore(tmp_path / "seeded", seed=b"s2")
    with pytest.raises(LedgerError, match="holds random keys: it cannot derive keys from a seed"):
        Keystore(tmp_path / "random", seed=b"s1")
    assert sorted(p.name for p in (tmp_path / "random").iterdir()) == ["alice.key"]
