"""Proof documents (JSON) an outsider checks offline, and checkpoints (saved signed heads).

* inclusion: an entry, its actor's public key, the latest signed head and the RFC 9162 audit path;
* consistency: two signed heads of the log and the RFC 9162 consistency proof between them;
* :func:`check_head`: does the log still extend a saved head? Otherwise it names the rollback
  (the log is shorter than a head it signed) or the equivocation (two validly signed heads of
  the same size with different roots).

Checking needs only this module, :mod:`ledger.merkle` and the log's public key, chosen by the
checker (``log_key``): the key a document carries proves nothing, since anyone can sign a head
with a key of their own. A document or ledger under another key is a ``key-mismatch`` naming both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ledger import merkle
from ledger.canonical import canonical_json
from ledger.encoding import entry_bytes, statement_bytes
from ledger.errors import LedgerError
from ledger.keys import signature_ok
from ledger.store import Ledger, SignedHead


@dataclass(frozen=True)
class ProofCheck:
    """Result of checking a proof document or a checkpoint; ``status`` names the outcome."""

    ok: bool
    status: str
    message: str

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAILED'} ({self.status}): {self.message}"


def head_document(book: Ledger, size: int | None = None) -> dict[str, Any]:
    """A signed head of ``book`` (default: the latest) with the log's public key: a checkpoint."""
    return {**book.signed_head(size).to_dict(), "log_public_key": book.log_public_key}


def inclusion_document(book: Ledger, seq: int) -> dict[str, Any]:
    """Everything needed to check offline that entry ``seq`` is in the log's latest signed head."""
    entry, head = book.entry(seq), book.signed_head()
    return {
        "type": "inclusion",
        "entry": entry.to_dict(),
        "actor_public_key": book.public_keys()[entry.actor],
        "index": seq - 1,
        "head": head.to_dict(),
        "log_public_key": book.log_public_key,
        "proof": [h.hex() for h in book.inclusion_proof(seq, head.size)],
    }


def consistency_document(book: Ledger, old_size: int) -> dict[str, Any]:
    """The consistency proof from the signed head of ``old_size`` entries to the latest one."""
    old, new = book.signed_head(old_size), book.signed_head()
    return {
        "type": "consistency",
        "old_head": old.to_dict(),
        "new_head": new.to_dict(),
        "log_public_key": book.log_public_key,
        "proof": [h.hex() for h in book.consistency_proof(old.size, new.size)],
    }


def check_document(doc: dict[str, Any], log_key: str) -> ProofCheck:
    """Check an inclusion or consistency document offline (no ledger file needed) against the log
    key ``log_key`` (hex) the checker chose, never the document's own: ``key-mismatch`` when the
    document is under another key."""
    try:
        key = log_key
        mismatch = _key_mismatch("the document", doc["log_public_key"], key)
        if mismatch:
            return mismatch
        proof = [bytes.fromhex(h) for h in doc["proof"]]
        if doc["type"] == "inclusion":
            return _check_inclusion(doc, key, proof)
        if doc["type"] == "consistency":
            return _check_consistency(doc, key, proof)
        return ProofCheck(False, "malformed", f"unknown proof type {doc['type']!r}")
    except (KeyError, TypeError, ValueError, LedgerError) as exc:
        return ProofCheck(False, "malformed", f"unreadable proof document: {exc!r}")


def _key_mismatch(what: str, found: Any, log_key: str) -> ProofCheck | None:
    """``key-mismatch`` naming both keys when ``what`` is under log key ``found``, not ``log_key``."""
    if found == log_key:
        return None
    return ProofCheck(False, "key-mismatch", f"{what} is under log key {found}, the log key chosen to check it is {log_key}")


def _signed(head: dict[str, Any], key: str) -> SignedHead | None:
    signed = SignedHead(head["size"], head["root"], head["timestamp"], head["signature"])
    return signed if signed.signed_by(key) else None


def _check_inclusion(doc: dict[str, Any], key: str, proof: list[bytes]) -> ProofCheck:
    head, e = _signed(doc["head"], key), doc["entry"]
    if head is None:
        return ProofCheck(False, "bad-head", "the tree head's signature does not verify under the log key")
    text = canonical_json(e["payload"]).decode("utf-8")
    raw = entry_bytes(e["seq"], e["kind"], e["actor"], e["timestamp"], text, e["prev_hash"], e["signature"])
    if hashlib.sha256(raw).hexdigest() != e["hash"] or doc["index"] != e["seq"] - 1:
        return ProofCheck(False, "bad-entry", f"entry {e['seq']}: its fields do not hash to its hash or index")
    if not signature_ok(doc["actor_public_key"], e["signature"], statement_bytes(e["kind"], e["actor"], text)):
        return ProofCheck(False, "bad-signature", f"entry {e['seq']}: the actor's signature does not verify")
    if not merkle.verify_inclusion(raw, doc["index"], head.size, proof, bytes.fromhex(head.root)):
        return ProofCheck(False, "bad-proof", f"entry {e['seq']} is not proven in the tree of size {head.size}")
    return ProofCheck(True, "included", f"entry {e['seq']} ({e['kind']} by {e['actor']}) is in the signed tree of size {head.size}, root {head.root}")


def _check_consistency(doc: dict[str, Any], key: str, proof: list[bytes]) -> ProofCheck:
    old, new = _signed(doc["old_head"], key), _signed(doc["new_head"], key)
    if old is None or new is None:
        return ProofCheck(False, "bad-head", "a tree head's signature does not verify under the log key")
    if not merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof):
        return ProofCheck(False, "bad-proof", f"the tree of size {new.size} is not proven to extend the tree of size {old.size}")
    return ProofCheck(True, "consistent", f"the signed tree of size {new.size} extends the signed tree of size {old.size}")


def check_head(book: Ledger, saved: dict[str, Any], log_key: str) -> ProofCheck:
    """Does ``book`` still extend the saved signed head ``saved`` (a :func:`head_document`)? Both
    must be under the log key ``log_key`` (hex) the checker chose."""
    ledger_key = book.log_public_key
    try:
        mismatch = (_key_mismatch("the saved head", saved["log_public_key"], log_key)
                    or _key_mismatch(f"the ledger {book.path}", ledger_key, log_key))
        if mismatch:
            return mismatch
        head = _signed(saved, log_key)
    except (KeyError, TypeError, ValueError, LedgerError) as exc:
        return ProofCheck(False, "malformed", f"unreadable head: {exc!r}")
    if head is None:
        return ProofCheck(False, "bad-head", "the saved head's signature does not verify under the log key")
    size = len(book)
    if head.size > size:
        return ProofCheck(False, "rollback", f"the log holds {size} entries, fewer than the {head.size} of a head it signed")
    root_now = book.root_at(head.size).hex()
    if root_now != head.root:
        return ProofCheck(False, "equivocation", f"the log's tree of size {head.size} has root {root_now}, but it signed root {head.root} for that size")
    latest = book.signed_head()
    proof = book.consistency_proof(head.size, latest.size)
    if not merkle.verify_consistency(head.size, latest.size, bytes.fromhex(head.root), bytes.fromhex(latest.root), proof):
        return ProofCheck(False, "inconsistent", f"no valid consistency proof from size {head.size} to {latest.size}")
    return ProofCheck(True, "extends", f"the log (signed head of size {latest.size}) extends the saved head of size {head.size} ({len(proof)}-hash consistency proof)")
