"""Ed25519 keys: a keystore directory of private keys (mode 0600) and hex-encoded signatures.

Private keys never enter the ledger; only public keys (64 hex digits) do. A keystore without a
seed draws random keys from the OS. A keystore made with a ``seed`` derives each actor's key as
SHA-256(seed || 0x00 || actor): anyone who knows the seed can sign as every actor, and so rewrite
a ledger and re-sign it so that it verifies; seeded keys are only for research runs whose ledgers
must reproduce byte for byte (Ed25519 being deterministic). A keystore keeps how it was made: a
seeded one records its seed in :data:`SEED_FILE`, so reopening it derives the same keys.

Ed25519 is PyNaCl's (libsodium): it signs about 1.5x and verifies about 2x as fast as
``cryptography``'s (OpenSSL) on the same core, and releases the GIL while it works. A key file holds
the RFC 8032 32-byte private key (the seed), so signatures are byte-identical across conforming
implementations. libsodium is stricter than OpenSSL about degenerate input (small-order or
non-canonically encoded points), which an honest signer never produces.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nacl.bindings import crypto_sign, crypto_sign_BYTES
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ledger.errors import LedgerError

ACTOR_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
"""Actor ids: this alphabet keeps them safe as file names and plain (escape-free) JSON strings."""


def check_actor(actor: object) -> str:
    """Return ``actor`` when it is a valid actor id, else raise :class:`LedgerError` naming it."""
    if not isinstance(actor, str) or not ACTOR_PATTERN.fullmatch(actor):
        raise LedgerError(f"actor must match {ACTOR_PATTERN.pattern}, got {actor!r}")
    return actor


def public_hex(key: SigningKey) -> str:
    """The raw 32-byte public key of ``key`` as 64 hex digits."""
    return bytes(key.verify_key).hex()


def sign(key: SigningKey, message: bytes) -> str:
    """Ed25519 signature of ``message`` as 128 hex digits."""
    return key.sign(message).signature.hex()


SIGN_THREADS = min(4, os.cpu_count() or 1)
"""Threads that sign a large batch: libsodium releases the GIL, so they sign in parallel."""
PARALLEL_SIGN_FROM = 256
"""Batches smaller than this are signed on the calling thread alone."""


def sign_many(pairs: Sequence[tuple[SigningKey, bytes]]) -> list[str]:
    """``[sign(key, message) for key, message in pairs]``, split over :data:`SIGN_THREADS` threads.

    Signs through libsodium's ``crypto_sign`` directly with each key's 64-byte secret key (its
    seed, then its public key), skipping the objects PyNaCl's ``SigningKey.sign`` wraps each
    signature in; the bytes are the same."""
    secrets: dict[int, bytes] = {}
    for key, _ in pairs:
        if id(key) not in secrets:
            secrets[id(key)] = bytes(key) + bytes(key.verify_key)
    jobs = [(secrets[id(key)], message) for key, message in pairs]
    if SIGN_THREADS < 2 or len(jobs) < PARALLEL_SIGN_FROM:
        return _sign_chunk(jobs)
    step = -(-len(jobs) // SIGN_THREADS)
    with ThreadPoolExecutor(SIGN_THREADS - 1) as pool:
        later = pool.map(_sign_chunk, [jobs[i : i + step] for i in range(step, len(jobs), step)])
        chunks = [_sign_chunk(jobs[:step]), *later]  # this thread signs the first chunk meanwhile
    return [signature for chunk in chunks for signature in chunk]


def _sign_chunk(jobs: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """Hex signatures of ``(secret_key, message)`` jobs; ``crypto_sign`` returns signature + message."""
    return [crypto_sign(message, secret)[:crypto_sign_BYTES].hex() for secret, message in jobs]


def signature_ok(public_key: str, signature: str, message: bytes) -> bool:
    """True iff ``signature`` (hex) is a valid Ed25519 signature of ``message`` by ``public_key`` (hex)."""
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(message, bytes.fromhex(signature))
    except (BadSignatureError, ValueError, TypeError):  # also bad hex, a key or signature of the wrong length
        return False
    return True


SEED_FILE = "seed"
"""The file (mode 0600) in which a seeded keystore records its seed."""


class Keystore:
    """Private keys of actors, one ``<actor>.key`` file (raw 32 bytes, mode 0600) each.

    Args:
        directory: created with mode 0700 when missing. A keystore already there is reused as it
            was made: seeded by the seed it records, else random.
        seed: derive new keys from this seed (reproducible research runs only, see the module
            docstring); ``None`` draws random ones unless the keystore records a seed.

    Raises:
        LedgerError: ``seed`` differs from the seed the keystore records, or the keystore already
            holds random keys; nothing is written.
    """

    def __init__(self, directory: str | Path, seed: bytes | None = None) -> None:
        self.directory = Path(directory)
        stored = self.directory / SEED_FILE
        has_keys = any(self.directory.glob("*.key"))  # before the seed: a seeded keystore writes it before any key
        recorded = stored.read_bytes() if stored.is_file() else None
        if seed is not None and recorded is None and has_keys:
            raise LedgerError(f"keystore {self.directory} holds random keys: it cannot derive keys from a seed")
        if seed is not None and recorded is not None and seed != recorded:
            raise LedgerError(f"keystore {self.directory} derives its keys from another seed ({stored})")
        self._seed = recorded if recorded is not None else seed
        self._cache: dict[str, SigningKey] = {}

    def key(self, actor: str) -> SigningKey:
        """The private key of ``actor``, created (and written 0600) on first use."""
        if actor in self._cache:
            return self._cache[actor]
        path = self.directory / f"{check_actor(actor)}.key"
        if path.is_file():
            raw = path.read_bytes()
            if len(raw) != 32:
                raise LedgerError(f"key file {path} holds {len(raw)} bytes, expected a raw 32-byte Ed25519 key")
        else:
            if self._seed is not None and not (self.directory / SEED_FILE).is_file():
                self._write(self.directory / SEED_FILE, self._seed)  # before its first key: reopened, it stays seeded
            raw = os.urandom(32) if self._seed is None else hashlib.sha256(self._seed + b"\0" + actor.encode()).digest()
            self._write(path, raw)
        self._cache[actor] = SigningKey(raw)
        return self._cache[actor]

    def _write(self, path: Path, raw: bytes) -> None:
        """Write a key (or seed) file atomically with mode 0600 (never readable by others, even briefly)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial-{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
