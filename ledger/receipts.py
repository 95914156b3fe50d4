"""Per-inference receipts: leaves of a per-batch Merkle tree whose root is one signed ledger entry.

A receipt (a JSON object, :data:`RECEIPT`) says what one served inference was and who it pays:
model and dataset version, a hash of the input, the output, the fee split by role, each
contributor's exact share of the contributors' part (``"n/d"`` units), the top contributors with
their scores, the attribution method, the request id, and its batch id and index. A batch of
receipts is committed as ONE ``receipt_batch`` entry (batch id, RFC 9162 root of the receipts'
canonical JSON, count, fee totals by role), so committing costs one signature and one
transaction per batch, and each receipt is hashed once.

A receipt is proven with two levels of inclusion (:func:`receipt_proof`): the receipt in its
batch's tree, and the batch entry in the log's tree under a signed head (the document of
:func:`ledger.proofs.inclusion_document`). :func:`check_receipt` checks both offline, against a log
key the checker chose (the document's own key proves nothing: anyone can sign a head with a key of
their own), and, given the ledger's registered keys, that the batch entry's signer holds a role
entitled to commit receipts. :func:`request_proof` finds a receipt by its request id in a receipts
file (one canonical-JSON receipt per line, batch after batch, as ``serve-sim`` writes it).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import isfinite, lcm
from numbers import Real
from pathlib import Path
from typing import Any

from ledger import merkle
from ledger.canonical import canonical_json, number_text, plain_json
from ledger.errors import LedgerError
from ledger.fees import CONTRIBUTORS, FRACTION, fraction_text
from ledger.proofs import ProofCheck, check_document, inclusion_document
from ledger.schemas import ACTOR, ANY, DIGEST, POSITION, TEXT, UNITS, UNITS_BY_ACTOR, Field, Schema, role_problem, schema_problem
from ledger.store import Entry, Ledger

KIND = "receipt_batch"


def _top_ok(value: Any) -> bool:
    return type(value) is list and all(
        type(item) is dict and set(item) == {"contributor", "score"} and ACTOR.accepts(item["contributor"])
        and type(item["score"]) in (int, float) and isfinite(item["score"]) for item in value)


def _receipt_rule(receipt: Mapping[str, Any]) -> str | None:
    """Each share is ``"n/d"``; the fee split sums to the fee; the shares sum to the contributors'
    part of it (exactly, over a common denominator), unless there are none (the part is unallocated)."""
    parts = []
    for contributor, text in receipt["shares"].items():
        match = FRACTION.fullmatch(text) if type(text) is str else None
        if match is None or not ACTOR.accepts(contributor):
            return f"shares: {contributor!r}: {text!r} must be a contributor id mapped to 'n/d' units"
        parts.append((int(match[1]), int(match[2])))
    split = sum(receipt["fee_split"].values())
    if split != receipt["fee"]:
        return f"fee_split sums to {split} units, fee is {receipt['fee']}"
    part = receipt["fee_split"].get(CONTRIBUTORS, 0)
    if parts:
        common = lcm(*(d for _, d in parts))
        numerator = sum(n * (common // d) for n, d in parts)
        if numerator != part * common:
            return (f"shares sum to {fraction_text(Fraction(numerator, common))} units, the {CONTRIBUTORS!r} part "
                    f"of fee_split is {part}")
    return None


RECEIPT = Schema(
    {
        "request_id": TEXT,
        "batch_id": TEXT,
        "index": POSITION,
        "model_version": TEXT,
        "dataset_version": TEXT,
        "input_hash": DIGEST,
        "output": ANY,
        "fee": UNITS,
        "fee_split": UNITS_BY_ACTOR,
        "shares": Field("a JSON object mapping contributor ids to 'n/d' units", lambda v: type(v) is dict),
        "top": Field("a list of {'contributor': id, 'score': finite number}", _top_ok),
        "method": TEXT,
    },
    closed=False,  # a serving layer may add its own detail (latency, token counts, ...)
    rule=_receipt_rule,
)
"""The fields of a receipt (see the module docstring); :func:`make_receipt` builds one."""


def make_receipt(
    *,
    request_id: str,
    batch_id: str,
    index: int,
    model_version: str,
    dataset_version: str,
    input_hash: str,
    output: Any,
    fee_split: Mapping[str, int],
    shares: Mapping[str, Fraction],
    top: Sequence[tuple[str, float]],
    method: str,
) -> dict[str, Any]:
    """A checked receipt: ``shares`` are exact units (e.g. :meth:`ledger.fees.Accrual.accrue`),
    ``top`` is ``(contributor, score)`` pairs, best first (real scores are written as floats);
    the fee is ``sum(fee_split)``.

    Raises:
        LedgerError: a field breaks :data:`RECEIPT`, naming it.
    """
    if not all(isinstance(s, (Fraction, int)) and type(s) is not bool for s in shares.values()):
        raise LedgerError(f"receipt shares must be Fractions or integers of units, got {dict(shares)!r}")
    if not all(isinstance(pair, Sequence) and len(pair) == 2 for pair in top):
        raise LedgerError(f"receipt top must be (contributor, score) pairs, got {list(top)!r}")
    receipt = {
        "request_id": request_id, "batch_id": batch_id, "index": index, "model_version": model_version,
        "dataset_version": dataset_version, "input_hash": input_hash, "output": output,
        "fee": sum(fee_split.values()), "fee_split": dict(fee_split),
        "shares": {c: fraction_text(Fraction(s)) for c, s in shares.items()},
        "top": [{"contributor": c, "score": float(s) if isinstance(s, Real) and type(s) is not bool else s} for c, s in top],
        "method": method,
    }
    problem = schema_problem("receipt", RECEIPT, receipt)
    if problem:
        raise LedgerError(problem)
    return receipt


def receipt_leaf(receipt: Mapping[str, Any]) -> bytes:
    """The bytes a receipt's Merkle leaf hashes: its RFC 8785 canonical JSON
    (:func:`ledger.canonical.canonical_json`'s bytes, written faster: :func:`_canonical`)."""
    return _canonical(receipt)


def _canonical(value: Any) -> bytes:
    """``canonical_json(value)``, faster for a value whose only non-plain parts are finite floats.

    A receipt's only floats are a few scores, yet one float sends all of it through the pure-Python
    ``rfc8785`` encoder (most of a commit's time). Here each float becomes a placeholder string
    ``"\\u0000<i>\\u0000"``, the now plain value goes through the C encoder
    (:func:`ledger.canonical.plain_json`, same bytes as RFC 8785), and each placeholder is replaced
    by the float as RFC 8785 writes it (:func:`ledger.canonical.number_text`). A value holding a
    NUL character (which could fake a placeholder) or anything else not plain goes to
    ``canonical_json`` itself. The bytes are ``canonical_json``'s (the tests compare them on
    generated values).
    """
    floats: list[float] = []
    swapped = _swap_floats(value, floats)
    encoded = None if swapped is _NOT_PLAIN else plain_json(swapped)
    if encoded is None:
        return canonical_json(value)
    if not floats:
        return encoded
    return _PLACEHOLDER.sub(lambda m: number_text(floats[int(m[1])]).encode(), encoded)


_NOT_PLAIN = object()
_PLACEHOLDER = re.compile(rb'"\\u0000([0-9]+)\\u0000"')


def _swap_floats(value: Any, floats: list[float]) -> Any:
    """``value`` with each finite float replaced by a placeholder string (appended to ``floats``),
    or ``_NOT_PLAIN`` when a string holds a NUL character."""
    kind = type(value)
    if kind is float and isfinite(value):
        floats.append(value)
        return f"\0{len(floats) - 1}\0"
    if kind is str:
        return _NOT_PLAIN if "\0" in value else value
    if kind is dict:
        swapped = {}
        for key, item in value.items():
            if type(key) is str and "\0" in key:
                return _NOT_PLAIN
            swapped[key] = _swap_floats(item, floats)
            if swapped[key] is _NOT_PLAIN:
                return _NOT_PLAIN
        return swapped
    if kind is list:
        items = [_swap_floats(item, floats) for item in value]
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items
    return value


class LeafReceipts(Sequence[dict[str, Any]]):
    """Receipts held as their leaves (canonical JSON bytes, :func:`receipt_leaf`), each decoded
    when it is read: a batch built from leaves need not decode them all."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._leaves = leaves

    def __len__(self) -> int:
        return len(self._leaves)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [json.loads(leaf) for leaf in self._leaves[index]]
        return json.loads(self._leaves[index])


@dataclass(frozen=True)
class ReceiptBatch:
    """A batch's receipts, their RFC 9162 leaf hashes (each receipt hashed once) and root;
    ``fee_totals``, ``(fee_total, fee_by_role)``, when known beforehand (``None``: summed from
    the receipts)."""

    batch_id: str
    receipts: Sequence[dict[str, Any]]
    leaf_hashes: tuple[bytes, ...]
    root: bytes
    fee_totals: tuple[int, dict[str, int]] | None = None

    def payload(self) -> dict[str, Any]:
        """The ``receipt_batch`` entry's payload: id, root (hex), count, fee totals by role."""
        if self.fee_totals is None:
            by_role: dict[str, int] = {}
            for receipt in self.receipts:
                for role, units in receipt["fee_split"].items():
                    by_role[role] = by_role.get(role, 0) + units
            fee_total = sum(r["fee"] for r in self.receipts)
        else:
            fee_total, by_role = self.fee_totals
        return {"batch_id": self.batch_id, "root": self.root.hex(), "count": len(self.receipts),
                "fee_total": fee_total, "fee_by_role": dict(sorted(by_role.items()))}

    def path(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion path of receipt ``index`` in the batch's tree."""
        return merkle.inclusion_proof_from_hashes(self.leaf_hashes, index)


def build_batch(receipts: Sequence[Mapping[str, Any]]) -> ReceiptBatch:
    """Check ``receipts`` (one batch id, indices 0, 1, ...) and hash each once into a tree.

    Raises:
        LedgerError: no receipt, a receipt breaking :data:`RECEIPT`, or a batch id or index out
            of place, naming the receipt.
    """
    if not receipts:
        raise LedgerError("a receipt batch needs at least one receipt")
    batch_id = receipts[0].get("batch_id") if isinstance(receipts[0], Mapping) else None
    leaves = []
    for position, receipt in enumerate(receipts):
        problem = schema_problem(f"receipt {position}", RECEIPT, receipt)
        if problem is None and receipt["batch_id"] != batch_id:
            problem = f"receipt {position}: batch_id {receipt['batch_id']!r}, the batch is {batch_id!r}"
        if problem is None and receipt["index"] != position:
            problem = f"receipt {position}: index {receipt['index']}, its position in the batch is {position}"
        if problem:
            raise LedgerError(f"{problem}; nothing committed")
        try:
            leaves.append(merkle.leaf_hash(receipt_leaf(receipt)))
        except LedgerError as exc:  # e.g. an integer beyond 2**53 in its output
            raise LedgerError(f"receipt {position}: {exc}; nothing committed") from exc
    return ReceiptBatch(batch_id, tuple(dict(r) for r in receipts), tuple(leaves), merkle.root_from_hashes(leaves))


def commit_receipts(book: Ledger, receipts: Sequence[Mapping[str, Any]], actor: str) -> tuple[Entry, ReceiptBatch]:
    """Append one ``receipt_batch`` entry, signed by ``actor``, committing ``receipts``.

    Raises:
        LedgerError: as :func:`build_batch` or :meth:`ledger.Ledger.append`; nothing is written.
    """
    batch = build_batch(receipts)
    return book.append(KIND, actor, batch.payload()), batch


def receipt_proof(book: Ledger, batch: ReceiptBatch | Sequence[Mapping[str, Any]], index: int,
                  seq: int | None = None) -> dict[str, Any]:
    """The document proving receipt ``index`` of ``batch`` (a :class:`ReceiptBatch` or the
    batch's receipts) against ``book``'s latest signed head, checked by :func:`check_receipt`.

    ``seq``: the batch's entry, when known (else the ``receipt_batch`` entries are searched for
    the batch's root).

    Raises:
        LedgerError: ``index`` outside the batch, or no ``receipt_batch`` entry of ``book``
            commits this batch (at ``seq``, when given).
    """
    if not isinstance(batch, ReceiptBatch):
        batch = build_batch(batch)
    count = len(batch.receipts)
    if type(index) is not int or not 0 <= index < count:
        raise LedgerError(f"receipt index {index!r} is outside batch {batch.batch_id!r} of {count} receipts")
    payload = batch.payload()
    if seq is None:
        seq = next((e.seq for e in book.entries(kind=KIND) if e.payload == payload), None)
    else:
        entry = book.entry(seq)
        seq = seq if (entry.kind, entry.payload) == (KIND, payload) else None
    if seq is None:
        raise LedgerError(f"{book.path}: no receipt_batch entry commits batch {batch.batch_id!r} (root {payload['root'][:16]}…)")
    return {
        "type": "receipt",
        "receipt": copy.deepcopy(batch.receipts[index]),  # the document is the caller's to change
        "index": index,
        "batch_path": [h.hex() for h in batch.path(index)],
        "batch_entry": inclusion_document(book, seq),
    }


def read_batches(path: Path, start: int = 0) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """The batches of receipts file ``path`` (one receipt per line, a batch's lines together) from
    byte ``start``: runs of lines of one batch id indexed 0, 1, ..., each with the byte offset after
    it; stops at a line that is not a whole receipt (a write cut short)."""
    batch: list[dict[str, Any]] = []
    position = start
    with open(path, "rb") as lines:
        lines.seek(start)
        for line in lines:
            try:
                receipt = json.loads(line) if line.endswith(b"\n") else None
            except (ValueError, RecursionError):
                receipt = None
            if not isinstance(receipt, dict) or "batch_id" not in receipt:
                break
            if batch and (receipt["batch_id"], receipt.get("index")) != (batch[0]["batch_id"], len(batch)):
                yield batch, position
                batch = []
            batch.append(receipt)
            position += len(line)
    if batch:
        yield batch, position


def request_proof(book: Ledger, path: str | Path, request_id: str) -> dict[str, Any]:
    """The :func:`receipt_proof` document of the receipt of ``request_id`` in receipts file ``path``
    (:func:`read_batches`) against ``book``'s latest signed head.

    Raises:
        LedgerError: ``path`` is no readable file, no receipt before its first unreadable line has
            this request id, or no ``receipt_batch`` entry of ``book`` commits its batch.
    """
    path = Path(path)
    try:
        for receipts, _ in read_batches(path):
            for index, receipt in enumerate(receipts):
                if receipt.get("request_id") == request_id:
                    return receipt_proof(book, receipts, index)
    except OSError as exc:
        raise LedgerError(f"cannot read receipts file {path}: {exc.strerror or exc}") from exc
    raise LedgerError(f"{path}: no receipt has request id {request_id!r}")


def check_receipt(doc: Mapping[str, Any], log_key: str,
                  keys: Mapping[str, tuple[str, str, str]] | None = None) -> ProofCheck:
    """Check a :func:`receipt_proof` document offline against the log's public key ``log_key``
    (hex), chosen by the checker: ``key-mismatch`` when the document's head is under another key;
    then the batch entry in the signed head (statuses of :func:`ledger.proofs.check_document`:
    ``bad-head``, ``bad-entry``, ``bad-signature``, ``bad-proof``), ``not-a-batch`` (the entry is
    no ``receipt_batch``), ``bad-signer`` (given the ledger's ``keys``, ``actor -> (role,
    public_key, proof)`` as :meth:`ledger.Ledger.key_records`: the entry's actor is not registered
    with the document's key, or its role may not commit receipts), ``bad-receipt`` (the receipt
    breaks :data:`RECEIPT` or names another batch or index) and ``wrong-root`` (the receipt and
    its path do not lead to the batch's root: the receipt was altered or belongs to another batch)."""
    try:
        if doc["type"] != "receipt":
            return ProofCheck(False, "malformed", f"not a receipt proof: type {doc['type']!r}")
        found = doc["batch_entry"]["log_public_key"]
        if found != log_key:
            return ProofCheck(False, "key-mismatch", f"the proof's tree head is under log key {found}, "
                                                     f"the log key chosen to check it is {log_key}")
        level2 = check_document(doc["batch_entry"], log_key)
        if not level2.ok:
            return level2
        entry, receipt, index = doc["batch_entry"]["entry"], doc["receipt"], doc["index"]
        if entry["kind"] != KIND:
            return ProofCheck(False, "not-a-batch", f"entry {entry['seq']} is a {entry['kind']} entry, not a {KIND}")
        signer = None if keys is None else _signer_problem(doc["batch_entry"], keys)
        if signer:
            return ProofCheck(False, "bad-signer", signer)
        batch = entry["payload"]
        problem = schema_problem("receipt", RECEIPT, receipt)
        if problem is None and (receipt["batch_id"], receipt["index"]) != (batch["batch_id"], index):
            problem = (f"the receipt says batch {receipt['batch_id']!r} index {receipt['index']}, the proof is for "
                       f"batch {batch['batch_id']!r} index {index}")
        if problem:
            return ProofCheck(False, "bad-receipt", problem)
        path = [bytes.fromhex(h) for h in doc["batch_path"]]
        if type(index) is not int or not 0 <= index < batch["count"] or not merkle.verify_inclusion(
                receipt_leaf(receipt), index, batch["count"], path, bytes.fromhex(batch["root"])):
            return ProofCheck(False, "wrong-root", f"receipt {index} and its path do not lead to the root of batch "
                                                   f"{batch['batch_id']!r} (entry {entry['seq']}): altered, or of another batch")
    except (KeyError, TypeError, ValueError, AttributeError, LedgerError, RecursionError) as exc:
        return ProofCheck(False, "malformed", f"unreadable receipt proof: {exc!r}")
    head = doc["batch_entry"]["head"]
    return ProofCheck(True, "included", f"receipt {index} of batch {batch['batch_id']!r} (request {receipt['request_id']!r}) "
                                        f"is in entry {entry['seq']}, in the signed tree of size {head['size']}, root {head['root']}")


def _signer_problem(batch_entry: Mapping[str, Any], keys: Mapping[str, tuple[str, str, str]]) -> str | None:
    """What is wrong with the signer of a proven batch entry, given the ledger's registered keys."""
    seq, actor = batch_entry["entry"]["seq"], batch_entry["entry"]["actor"]
    if actor not in keys:
        return f"entry {seq} is signed by {actor!r}, who has no key registered in the ledger"
    role, key, _ = keys[actor]
    if key != batch_entry["actor_public_key"]:
        return f"entry {seq}: the proof gives actor {actor!r} key {batch_entry['actor_public_key']}, the ledger registers {key}"
    problem = role_problem(KIND, actor, role)
    return f"entry {seq}: {problem}" if problem else None
