"""The receipts of a served micro-batch written straight from its arrays as their Merkle leaves:
byte for byte the RFC 8785 canonical JSON that :func:`ledger.receipts.receipt_leaf` gives for the
receipt :func:`ledger.receipts.make_receipt` builds from the same values (the tests compare the two
on generated batches, and the floats with ``rfc8785`` itself).

Why hand-written: building each receipt as a dict, checking it against
:data:`ledger.receipts.RECEIPT` and encoding it cost ~60 us an inference, several times the
attribution. An economy's receipts all have one shape: the same fields, fee split, versions,
method and contributors. :class:`ReceiptWriter` encodes that shape once with the reference
encoder (``canonical_json`` of a receipt whose varying fields are placeholders), keeping a format
string; each receipt is then the format filled with its values, each already canonical: integers
in decimal, the request and batch ids and the input hash escape-free ASCII, floats in their
ECMAScript form (:func:`json_numbers`), contributor ids (actor ids: escape-free) in sorted order
with their shares in lowest terms. The schema holds by construction for the varying fields, and
is checked by :meth:`ReceiptWriter.check_first` on an economy's first receipt through
``make_receipt`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from math import gcd
from typing import Any

import numpy as np

from ledger.canonical import canonical_json, number_text
from ledger.errors import LedgerError
from ledger.keys import check_actor
from ledger.receipts import make_receipt, receipt_leaf

REQUEST_ID, BATCH_ID = "req-%010d", "batch-%08d"
"""The request and batch ids of an economy's receipts, numbered from 0."""
SHARES, TOP = "shares", "top"
_SLOTS = {"batch_id": '"%s"', "index": "%d", "input_hash": '"%s"', "class": "%d", "probability": "%r",
          "request_id": f'"{REQUEST_ID}"', SHARES: "\x01", TOP: "\x02"}
"""The varying fields and how each is written into the format (its values are canonical already);
shares and top hold a control character, which canonical JSON never holds raw, replaced by each
row's format for its number of shares and top contributors (:meth:`ReceiptWriter._row_format`)."""


class _Text(str):
    """A number's RFC 8785 text, which ``%r`` writes as it is."""

    def __repr__(self) -> str:
        return str(self)


def json_numbers(values: np.ndarray) -> list[float | str]:
    """Each finite float of ``values`` (flattened) as a value whose ``repr`` (``%r``) is the
    float as RFC 8785 writes it (:func:`ledger.canonical.number_text`): the float itself where
    its ``repr`` is that text already, a non-integer of magnitude in ``[1e-4, 1e16)`` (both are
    the shortest round-trip digits, in plain decimal notation there), else that text.

    Raises:
        LedgerError: a value is not finite (JSON cannot hold it).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise LedgerError(f"a receipt holds only finite numbers, got {values[~np.isfinite(values)][0]!r}")
    numbers: list[float | str] = values.tolist()
    magnitude = np.abs(values)
    for i in np.flatnonzero((magnitude < 1e-4) | (magnitude >= 1e16) | (values == np.trunc(values))).tolist():
        numbers[i] = _Text(number_text(numbers[i]))
    return numbers


class ReceiptWriter:
    """The leaves of an economy's receipts (module docstring).

    Args:
        contributors: the contributor ids, in the order of the credit and parts columns.
        fee_split: each inference's fee by role; the ``contributors`` part is split in sub-units
            of ``1 / resolution`` unit.
        model_version, dataset_version, method: the receipts' constant fields.
        resolution: the sub-units per unit of the parts (:data:`ledger.fees.RESOLUTION`).

    Raises:
        LedgerError: a contributor id that is not an actor id (names it).
    """

    def __init__(self, contributors: Sequence[str], fee_split: Mapping[str, int], model_version: str,
                 dataset_version: str, method: str, resolution: int) -> None:
        for contributor in contributors:
            try:
                check_actor(contributor)
            except LedgerError as exc:
                raise LedgerError(f"receipt writer: contributor {exc}") from None
        self.contributors, self.fee_split, self.resolution = tuple(contributors), dict(fee_split), resolution
        self._constants = {"model_version": model_version, "dataset_version": dataset_version, "method": method}
        self._format, self._slots = _receipt_format(self.fee_split, self._constants)
        self._by_id = np.argsort(np.array(self.contributors, dtype=object), kind="stable")  # columns in id order
        self._share_keys = np.array([canonical_json(c).decode() + ':"' for c in self.contributors], dtype=object)
        self._top_keys = np.array([f'{{"contributor":{canonical_json(c).decode()},"score":' for c in self.contributors],
                                  dtype=object)
        self._row_formats: dict[tuple[int, int], str] = {}

    def leaves(self, batch: int, first_index: int, first_request: int, input_hashes: Sequence[str], classes: np.ndarray,
               probabilities: np.ndarray, credit: np.ndarray, parts: np.ndarray, top: np.ndarray) -> list[bytes]:
        """The leaves of ``n`` receipts of batch number ``batch``, at indices ``first_index, ...``
        with request numbers ``first_request, ...``: ``input_hashes`` ``n`` SHA-256 hex digests,
        ``classes`` ``(n,)`` ints and ``probabilities`` ``(n,)`` floats (the output),
        ``credit`` ``(n, m)`` floats (a share for each positive one, the top scores), ``parts``
        ``(n, m)`` each positive credit's share in sub-units (integers >= 0), ``top`` ``(n, k)``
        the columns of the top contributors, best first.

        All ``n`` receipts are one ``%`` format (each row's, by its number of shares, joined by
        newlines) filled from one flat list of values laid out by numpy: no Python step per field.

        Raises:
            LedgerError: a probability or a credit that is not finite.
        """
        n, k = top.shape
        positive = credit[:, self._by_id] > 0  # (n, m), columns in id order
        rows, columns = np.nonzero(positive)
        count = positive.sum(axis=1)
        sizes = {slot: np.full(n, 1) for slot in self._slots} | {SHARES: 3 * count, TOP: np.full(n, 2 * k)}
        ends = np.cumsum([sizes[slot] for slot in self._slots], axis=0)  # (slots, n) within the row
        row_start = np.concatenate([[0], np.cumsum(ends[-1])[:-1]])
        at = {slot: row_start + end - sizes[slot] for slot, end in zip(self._slots, ends)}
        values = np.empty(int(ends[-1].sum()), dtype=object)
        simple = {"batch_id": BATCH_ID % batch, "index": np.arange(first_index, first_index + n),
                  "input_hash": input_hashes, "class": np.asarray(classes), "probability": json_numbers(probabilities),
                  "request_id": np.arange(first_request, first_request + n)}
        for slot, column in simple.items():
            values[at[slot]] = column
        first_share = np.concatenate([[0], np.cumsum(count)[:-1]])
        share_at = at[SHARES][rows] + 3 * (np.arange(len(rows)) - first_share[rows])
        values[share_at] = self._share_keys[self._by_id][columns]
        values[share_at + 1], values[share_at + 2] = self._fractions(parts[:, self._by_id][rows, columns])
        top_at = at[TOP][:, None] + 2 * np.arange(k)
        values[top_at] = self._top_keys[top]
        values[top_at + 1] = np.array(json_numbers(np.take_along_axis(credit, top, axis=1)), dtype=object).reshape(n, k)
        text = "\n".join([self._row_format(c, k) for c in count.tolist()]) % tuple(values.tolist())
        return text.encode().split(b"\n")  # canonical JSON holds no raw newline

    def check_first(self, leaf: bytes, batch: int, index: int, request: int, input_hash: str, output: dict[str, Any],
                    credit: Sequence[float], parts: Sequence[int], top: Sequence[int]) -> None:
        """Build the receipt of these values with :func:`~ledger.receipts.make_receipt` (which
        checks it against the schema) and raise :class:`LedgerError` unless ``leaf`` is its
        :func:`~ledger.receipts.receipt_leaf`, byte for byte."""
        names = self.contributors
        shares = {names[j]: Fraction(parts[j], self.resolution) for j in range(len(names)) if credit[j] > 0}
        receipt = make_receipt(request_id=REQUEST_ID % request, batch_id=BATCH_ID % batch, index=index,
                               input_hash=input_hash, output=output, fee_split=self.fee_split, shares=shares,
                               top=[(names[j], credit[j]) for j in top], **self._constants)
        expected = receipt_leaf(receipt)
        if leaf != expected:
            raise LedgerError(f"receipt writer: receipt {REQUEST_ID % request} is {leaf[:200]!r}…, the reference "
                              f"receipt is {expected[:200]!r}…; nothing served")

    def _fractions(self, chosen: np.ndarray) -> tuple[list[int], list[int]]:
        """Numerators and denominators of sub-unit parts ``chosen`` over the resolution, in lowest terms."""
        if chosen.dtype == np.int64:
            common = np.gcd(chosen, self.resolution)
            return (chosen // common).tolist(), (self.resolution // common).tolist()
        common = [gcd(int(p), self.resolution) for p in chosen]  # parts beyond int64 (a pool above ~2**62 sub-units)
        return [int(p) // g for p, g in zip(chosen, common)], [self.resolution // g for g in common]

    def _row_format(self, shares: int, top: int) -> str:
        """The format of a receipt with ``shares`` shares and ``top`` top contributors (cached)."""
        key = (shares, top)
        if key not in self._row_formats:
            share_items, top_items = ",".join(['%s%d/%d"'] * shares), ",".join(["%s%r}"] * top)
            self._row_formats[key] = (self._format.replace(_SLOTS[SHARES], "{" + share_items + "}")
                                      .replace(_SLOTS[TOP], "[" + top_items + "]"))
        return self._row_formats[key]


def _receipt_format(fee_split: Mapping[str, int], constants: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """The ``%`` format of a receipt of this shape and its slots (:data:`_SLOTS`) in format order:
    ``canonical_json`` of a receipt whose varying fields are placeholder strings, each replaced
    by its slot.

    Raises:
        LedgerError: the constant fields break the schema, or a placeholder cannot be told apart
            from them.
    """
    mark = {slot: f"\0{slot}\0" for slot in _SLOTS}
    receipt = make_receipt(request_id=mark["request_id"], batch_id=mark["batch_id"], index=0, input_hash="0" * 64,
                           output={"class": mark["class"], "probability": mark["probability"]}, fee_split=fee_split,
                           shares={}, top=[], **constants)  # checks the constant fields
    receipt |= {"index": mark["index"], "input_hash": mark["input_hash"], "shares": mark["shares"], "top": mark["top"]}
    text = canonical_json(receipt).decode().replace("%", "%%")
    quoted = {slot: canonical_json(placeholder).decode() for slot, placeholder in mark.items()}
    if any(text.count(q) != 1 for q in quoted.values()):
        raise LedgerError("receipt writer: the receipt's constant fields hold one of the placeholders "
                          f"{sorted(mark.values())}")
    slots = tuple(sorted(quoted, key=lambda slot: text.index(quoted[slot])))
    for slot in slots:
        text = text.replace(quoted[slot], _SLOTS[slot])
    return text, slots
