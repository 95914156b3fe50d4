"""What a run's ledger and receipts file commit for its inference economy (:class:`Tally`),
derived from them alone (:class:`Replay`), and its checkpoint ``inference/accrual.json``.

The ledger's entries of :data:`~datanet_lab.serving.receipts_file.HOST` are replayed in order:
each ``receipt_batch`` entry must commit the receipts file's next batch (its root, count and fee
totals), whose receipts are charged again from their exact shares; each inference payout epoch
(``payout`` entries, then a ``payout_epoch`` entry) closes the accrual, and must pay what the
close pays. Nothing else is trusted: the checkpoint file
(:func:`read_state`) is compared with the replay as of its ``ledger_seq`` and refused, naming
the first field that differs, when it says anything else (an edited file, or one from another
run); deleting it makes the economy rebuild it from the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ledger
from ledger.fees import FeeAccount
from ledger.receipts import KIND
from datanet_lab.serving.receipts_file import HOST, read_batches
from datanet_lab.serving.runs import ServingError

STATE = "accrual.json"
STATE_FORMAT = "datanet-lab inference state 1"
COUNTERS = ("ledger_seq", "receipts_bytes", "batches", "requests")


@dataclass(frozen=True)
class Tally:
    """The committed state as of ledger entry ``ledger_seq`` (the last entry of the host, 0 for
    none): the receipts file's committed ``receipts_bytes``, the ``batches`` and ``requests``
    committed, and the fee ``account``. Never changed in place: a new tally replaces it."""

    ledger_seq: int = 0
    receipts_bytes: int = 0
    batches: int = 0
    requests: int = 0
    account: FeeAccount = field(default_factory=FeeAccount)

    def to_state(self) -> dict[str, Any]:
        """The checkpoint file's object (:func:`read_state`)."""
        return {"format": STATE_FORMAT, **{name: getattr(self, name) for name in COUNTERS}, "account": self.account.to_state()}


class Replay:
    """A :class:`Tally` advanced by the host's ledger entries after it (module docstring).

    Args:
        start: the tally the entries follow.
        receipts: the receipts file; its batches are read from ``start.receipts_bytes``.
        ledger_path: the ledger, named in errors.
    """

    def __init__(self, start: Tally, receipts: Path, ledger_path: Path) -> None:
        self._counters = {name: getattr(start, name) for name in COUNTERS}
        self._account = start.account.copy()
        self._batches = read_batches(receipts, start.receipts_bytes)
        self._payouts: dict[str, int] = {}
        self._receipts, self._ledger_path = receipts, ledger_path

    def apply(self, entry: ledger.Entry) -> None:
        """Replay ``entry`` (an entry of the host after the tally).

        Raises:
            ServingError: a ``receipt_batch`` entry that does not commit the file's next batch,
                or an epoch that pays what the replayed receipts do not.
        """
        counters = self._counters
        if entry.kind == KIND:
            found = next(self._batches, None)
            tree = found.tree() if found is not None else None
            if tree is None or tree.root.hex() != entry.payload["root"] or tree.payload() != entry.payload:
                raise ServingError(f"{self._ledger_path}: entry {entry.seq} commits batch {entry.payload['batch_id']!r}, "
                                   f"which {self._receipts} does not hold at byte {counters['receipts_bytes']}: "
                                   f"committed receipts are missing or altered")
            self._account.charge_receipts(found.receipts)
            counters["batches"] += 1
            counters["requests"] += len(found.receipts)
            counters["receipts_bytes"] = found.end
        elif entry.kind == "payout":
            self._payouts[entry.payload["contributor"]] = entry.payload["amount"]
        elif entry.kind == "payout_epoch":
            done = self._account.close()
            if (done.payouts, done.unallocated) != (self._payouts, entry.payload["unallocated"]):
                raise ServingError(f"{self._ledger_path}: payout epoch {entry.payload['epoch']} (entry {entry.seq}) pays "
                                   f"{self._payouts}, the receipts since the previous close pay {done.payouts}")
            self._payouts = {}
        counters["ledger_seq"] = entry.seq

    def tally(self) -> Tally:
        """The tally as of the last entry replayed."""
        return Tally(**self._counters, account=self._account.copy())


def derive(entries: Iterable[ledger.Entry], receipts: Path, ledger_path: Path, saved: Path,
           state: dict[str, Any] | None) -> Tally:
    """The tally of all the host's ``entries`` (in order) over receipts file ``receipts``; the
    checkpoint ``state`` read from file ``saved`` (:func:`read_state`; ``None``: none) must equal
    it as of its ``ledger_seq``.

    Raises:
        ServingError: the entries and the file disagree (:meth:`Replay.apply`), or ``state``
            says anything else than the replay (:func:`check_state`).
    """
    replay = Replay(Tally(), receipts, ledger_path)
    for entry in entries:
        if state is not None and entry.seq > state["ledger_seq"]:
            check_state(saved, state, replay.tally())
            state = None
        replay.apply(entry)
    if state is not None:
        check_state(saved, state, replay.tally())
    return replay.tally()


def entries_after(book: ledger.Ledger, seq: int) -> list[ledger.Entry]:
    """The host's entries after entry ``seq``, in order."""
    return [entry for entry in map(book.entry, range(seq + 1, len(book) + 1)) if entry.actor == HOST]


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint object of ``path`` (:meth:`Tally.to_state`), its form checked.

    Raises:
        ServingError: not such an object, naming the file and the field.
    """
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServingError(f"{path} is not a readable inference state: {exc}") from None
    expected = {"format", *COUNTERS, "account"}
    if type(state) is not dict or set(state) != expected or state["format"] != STATE_FORMAT:
        raise ServingError(f"{path}: expected an object with exactly {sorted(expected)} and format {STATE_FORMAT!r}")
    for name in COUNTERS:
        if type(state[name]) is not int or state[name] < 0:
            raise ServingError(f"{path}: {name!r} must be an integer >= 0, got {state[name]!r}")
    try:
        FeeAccount.from_state(state["account"])
    except ledger.LedgerError as exc:
        raise ServingError(f"{path}: {exc}") from None
    return state


def check_state(path: Path, state: dict[str, Any], derived: Tally) -> None:
    """Raise :class:`ServingError` naming the first field where checkpoint ``state`` (of file
    ``path``) differs from the ``derived`` tally."""
    found = _difference(state, derived.to_state(), "")
    if found is not None:
        name, saved, replayed = found
        raise ServingError(f"{path}: field {name!r} is {saved}, but the ledger's entries of {HOST!r} and the receipts "
                           f"file make it {replayed} as of entry {derived.ledger_seq}; the file was edited or is not "
                           f"this run's (delete it to rebuild it from the ledger)")


def _difference(saved: Any, derived: Any, path: str) -> tuple[str, str, str] | None:
    """``(dotted field, saved value, derived value)`` of the first field (in key order) where two
    JSON objects differ, ``None`` when they are equal."""
    if type(saved) is dict and type(derived) is dict:
        for key in sorted(set(saved) | set(derived)):
            if key not in saved or key not in derived:
                return (f"{path}{key}", repr(saved[key]) if key in saved else "absent",
                        repr(derived[key]) if key in derived else "absent")
            found = _difference(saved[key], derived[key], f"{path}{key}.")
            if found is not None:
                return found
        return None
    return None if saved == derived else (path.rstrip("."), repr(saved), repr(derived))
