"""Ed25519 keys: a keystore directory of private keys (mode 0600) and hex-encoded signatures.

Private keys never enter the ledger; only public keys (64 hex digits) do. A keystore made with a
``seed`` derives each actor's key as SHA-256(seed || 0x00 || actor): anyone who knows the seed can
sign as every actor, so seeded keys are only for reproducible research runs (a seeded run then
reproduces every signature, Ed25519 being deterministic); a keystore without a seed draws random
keys from the OS.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import LedgerError

ACTOR_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
"""Actor ids: this alphabet keeps them safe as file names and plain (escape-free) JSON strings."""


def check_actor(actor: object) -> str:
    """Return ``actor`` when it is a valid actor id, else raise :class:`LedgerError` naming it."""
    if not isinstance(actor, str) or not ACTOR_PATTERN.fullmatch(actor):
        raise LedgerError(f"actor must match {ACTOR_PATTERN.pattern}, got {actor!r}")
    return actor


def public_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key of ``key`` as 64 hex digits."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Ed25519 signature of ``message`` as 128 hex digits."""
    return key.sign(message).hex()


def signature_ok(public_key: str, signature: str, message: bytes) -> bool:
    """True iff ``signature`` (hex) is a valid Ed25519 signature of ``message`` by ``public_key`` (hex)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Keystore:
    """Private keys of actors, one ``<actor>.key`` file (raw 32 bytes, mode 0600) each.

    Args:
        directory: created with mode 0700 when missing.
        seed: derive keys from this seed (reproducible runs only, see the module docstring);
            ``None`` draws random keys.
    """

    def __init__(self, directory: str | Path, seed: bytes | None = None) -> None:
        self.directory = Path(directory)
        self._seed = seed
        self._cache: dict[str, Ed25519PrivateKey] = {}

    def key(self, actor: str) -> Ed25519PrivateKey:
        """The private key of ``actor``, created (and written 0600) on first use."""
        if actor in self._cache:
            return self._cache[actor]
        path = self.directory / f"{check_actor(actor)}.key"
        if path.is_file():
            raw = path.read_bytes()
            if len(raw) != 32:
                raise LedgerError(f"key file {path} holds {len(raw)} bytes, expected a raw 32-byte Ed25519 key")
        else:
            raw = os.urandom(32) if self._seed is None else hashlib.sha256(self._seed + b"\0" + actor.encode()).digest()
            self._write(path, raw)
        self._cache[actor] = Ed25519PrivateKey.from_private_bytes(raw)
        return self._cache[actor]

    def _write(self, path: Path, raw: bytes) -> None:
        """Write a key file atomically with mode 0600 (never readable by others, even briefly)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial-{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
