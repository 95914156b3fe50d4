"""Payable inference on a finished run: attributed predictions whose fees are split by role and by
contributor credit, receipts committed to the run's ledger in batches, contributors paid in whole
units by epoch.

Stages (:class:`InferenceEconomy`, one per run directory):

1. :meth:`~InferenceEconomy.serve` a micro-batch ``x`` ``(n, n_features)``: the run's
   :class:`~datanet_lab.serving.QueryAttributor` predicts and credits contributors; each
   inference's fee is split by role (:func:`ledger.fees.split_by_role`), the contributors' part
   is accrued by positive credit (:class:`ledger.fees.FeeAccount`, exact to
   ``1 / RESOLUTION`` unit) and a receipt is built (the receipt of
   :func:`ledger.receipts.make_receipt`, written for the whole micro-batch at once by
   :mod:`~datanet_lab.serving.batch_split` and :mod:`~datanet_lab.serving.receipt_lines`). The
   receipts are pending.
2. :meth:`~InferenceEconomy.commit` the pending receipts as one batch: appended to
   ``receipts.jsonl`` (:mod:`~datanet_lab.serving.receipts_file`), then one ``receipt_batch``
   ledger entry signed by :data:`HOST`, both on the ledger's thread. A receipt is acknowledged
   (provable, its shares accrued) once its batch has landed: when ``commit`` returns, or, with
   ``commit(wait=False)`` (the writes overlap the next serve), at the next ``commit``,
   :meth:`~InferenceEconomy.land`, ``close_epoch`` or ``close``.
3. :meth:`~InferenceEconomy.close_epoch` pays the accrued whole units as the ledger's next payout
   epoch (``payout`` entries and a ``payout_epoch`` entry, as :func:`ledger.epoch_records` writes
   them); each contributor's remainder (< 1 unit) is carried into the next epoch.

Files, under ``<run>/inference/``::

    receipts.jsonl  one receipt per line, batch after batch in commit order
                    (:mod:`~datanet_lab.serving.receipts_file`)
    accrual.json    a checkpoint of the state as of ledger entry ``ledger_seq``
                    (:mod:`~datanet_lab.serving.tally`), written at each close and on ``close``
    earnings.csv    ``id, role, units`` after the last close (:func:`earnings_table`)
    lock            held (``flock``) while an economy is open: one writer per run directory

Write order and crashes. ``commit`` writes and fsyncs the batch's lines BEFORE the ledger entry,
so a committed root never lacks its receipts; lines that no entry commits were never
acknowledged. Nothing is cut from the receipts file until the ledger (asked on its own thread,
after any write still in flight) shows no entry commits it: after any exception in ``commit`` or
``close_epoch`` (an interrupt included) the economy reconciles itself with what reached the ledger
before it is used again, and opening derives the whole state from the ledger and the receipts
file (:func:`~datanet_lab.serving.tally.derive`): receipts are charged again from the committed
batches, epochs closed again and checked against the ledger's payouts, the checkpoint compared
(refused, naming the field, when it differs), and the uncommitted tail of the file cut off.

Amounts. Every amount the economy writes (a batch's fees, an epoch's pool and payouts, role
totals) is at most the fees charged on the run directory, which :meth:`~InferenceEconomy.serve`
keeps within ``2**53 - 1`` (canonical JSON's safe integers) before charging anything
(:meth:`~InferenceEconomy.check_room`).

Receipt fields (:data:`ledger.receipts.RECEIPT`): ``request_id`` ``req-<n>`` and ``batch_id``
``batch-<n>`` numbered on from the committed ones, so never reused across restarts (ids of
receipts never committed were never acknowledged); ``model_version`` the SHA-256 of the final
checkpoint and ``dataset_version`` the Datanet version, both from the run's ``training_run``
ledger entry; ``input_hash`` the SHA-256 of the input row as 8-byte little-endian IEEE-754
float64 values in feature order (``np.asarray(row, "<f8").tobytes()``); ``output``
``{"class": predicted class index, "probability": its softmax probability}``; ``shares`` each
positively credited contributor's exact share of the contributors' part; ``top`` the ``top_k``
contributors by credit, best first, with their credit (sign of
:mod:`~datanet_lab.serving.attributor`: positive = raised the model's confidence in its answer).

Thread safety: every public method holds one lock (the attributor serves one micro-batch at a
time anyway), and the ledger is used from one thread of its own
(:class:`~datanet_lab.serving.ledger_thread.LedgerThread`), so an HTTP layer may call from any
thread: serve per micro-batch, commit per group of requests, answer after commit. Determinism:
the same run directory, inputs and batches give the same receipts file and ledger head (fixed run
clock, keys from the run seed, ``torch`` threads equal).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pandas as pd

import ledger
from ledger import merkle
from ledger.fees import (CONTRIBUTOR, CONTRIBUTORS, DEFAULT_ROLE_SHARES, RESOLUTION, AccrualClose, FeeAccount,
                         check_charged, checked_fee_split)
from ledger.receipts import KIND, LeafReceipts, ReceiptBatch, receipt_proof
from datanet_lab.pipeline.run import Run
from datanet_lab.serving.attributor import QueryAttributor
from datanet_lab.serving.batch_split import hamilton_rows
from datanet_lab.serving.durable import sync_directory, take_lock, truncate, write_at, write_atomic
from datanet_lab.serving.ledger_thread import LedgerThread
from datanet_lab.serving.receipt_check import ReceiptCheck, check_receipts
from datanet_lab.serving.receipt_lines import BATCH_ID, ReceiptWriter
from datanet_lab.serving.receipts_file import FOLDER, HOST, HOST_ROLE, RECEIPTS, batch_entries, committed_batches
from datanet_lab.serving.requests import check_batch
from datanet_lab.serving.runs import ServingError, served_run
from datanet_lab.serving.tally import STATE, Replay, Tally, derive, entries_after, read_state

__all__ = ["CONTRIBUTOR", "EARNINGS", "FOLDER", "HOST", "HOST_ROLE", "PHASES", "RECEIPTS", "STATE", "CommittedBatch",
           "EpochClose", "FeeAccount", "InferenceEconomy", "ReceiptCheck", "Served", "check_fee_room", "check_receipts",
           "checked_fee_split", "earnings_table", "model_versions"]

EARNINGS, LOCK = "earnings.csv", "lock"
PHASES = ("attribution", "split", "hashing", "commit")
"""Where serving time goes: attribution (predict + attribute + roll-up), split (the shares and their
accrual), hashing (input hashes, receipts written as their canonical-JSON leaves, leaf hashes and
batch roots), commit (receipts file, ledger entry, state file)."""
EPOCH_RULE = ("inference fees: each contributors' part accrued exactly by positive credit per inference; "
              "whole units paid at close, remainders carried to the next epoch")


def earnings_table(account: FeeAccount, contributors: Sequence[str]) -> pd.DataFrame:
    """:meth:`ledger.fees.FeeAccount.earnings` as an ``id, role, units`` table.

    Raises:
        ValueError: the account's epoch is open (units accrued since the last close).
    """
    return pd.DataFrame(account.earnings(contributors), columns=["id", "role", "units"])


class Served:
    """One served inference: its pending receipt, held as its Merkle ``leaf`` (canonical JSON
    bytes; decoded into :attr:`receipt` when first read), and each contributor's :attr:`credit`."""

    __slots__ = ("leaf", "_names", "_credit", "_receipt")

    def __init__(self, leaf: bytes, names: Sequence[str], credit: np.ndarray) -> None:
        self.leaf, self._names, self._credit = leaf, names, credit
        self._receipt: dict[str, Any] | None = None

    @property
    def receipt(self) -> dict[str, Any]:
        """The receipt (the decoded leaf)."""
        if self._receipt is None:
            self._receipt = json.loads(self.leaf)
        return self._receipt

    @property
    def credit(self) -> dict[str, float]:
        """Each contributor's credit, by contributor id."""
        return dict(zip(self._names, self._credit.tolist()))


@dataclass(frozen=True)
class CommittedBatch:
    """A committed batch: its receipts and tree (:class:`~ledger.receipts.ReceiptBatch`) and the
    sequence number of its ``receipt_batch`` entry."""

    batch: ReceiptBatch
    seq: int


@dataclass(frozen=True)
class EpochClose:
    """A closed inference payout epoch: its number, what the accrual paid and carried, and the
    sequence number of its ``payout_epoch`` entry."""

    epoch: int
    close: AccrualClose
    seq: int


@dataclass(frozen=True)
class _Books:
    """All an economy knows, replaced whole (one assignment), never changed in place: the
    ``committed`` tally, and the receipts served since (their leaves and leaf hashes) with their
    charges."""

    committed: Tally
    pending: tuple[bytes, ...] = ()
    pending_hashes: tuple[bytes, ...] = ()
    pending_account: FeeAccount = field(default_factory=FeeAccount)
    flying: _Flight | None = None

    @property
    def head(self) -> Tally:
        """The committed tally once the batch in flight is in (ids and fees follow it)."""
        return self.flying.tally if self.flying else self.committed


@dataclass(frozen=True)
class _Flight:
    """A batch handed to the ledger's thread (receipts file, then entry) and not yet landed: the
    ``future`` of its entry's sequence number, the ``tally`` once it is in (``ledger_seq`` aside),
    the ``batch``, and its receipts as they were pending (given back when it did not get in)."""

    future: Future[int]
    tally: Tally
    batch: ReceiptBatch
    receipts: _Books


class InferenceEconomy:
    """Serve a finished run's model as paid, receipted inferences (module docstring).

    Args:
        run: a run directory (or :class:`~datanet_lab.pipeline.run.Run`) whose build, train and
            attribute steps are done.
        fee: units charged per inference (integer in ``[0, 2**53 - 1]``).
        role_shares: integer shares of the fee by role (:func:`ledger.fees.split_by_role`); the
            ``contributors`` part is divided by credit.
        top_k: contributors listed per receipt (>= 1; fewer when the run has fewer).
        attributor: the run's :class:`~datanet_lab.serving.QueryAttributor` (built from the run
            when ``None``).

    Opening takes the run's ``inference/lock`` and derives the state from the ledger and the
    receipts file (module docstring); use it as a context manager, or call :meth:`close`.

    Raises:
        LedgerError: a bad fee or role shares (nothing written).
        ServingError: a run that cannot be served, another economy holding the lock, or
            ``inference/`` files that disagree with the ledger (named).
    """

    def __init__(self, run: str | Path | Run, fee: int = 1000, role_shares: Mapping[str, int] = DEFAULT_ROLE_SHARES,
                 top_k: int = 5, attributor: QueryAttributor | None = None) -> None:
        self.run = served_run(run)
        self.fee_split = checked_fee_split(fee, role_shares)
        if type(top_k) is not int or top_k < 1:
            raise ServingError(f"top_k must be an integer >= 1, got {top_k!r}")
        self.top_k = top_k
        self.attributor = attributor or QueryAttributor.from_run(self.run)
        self.folder = self.run.directory / FOLDER
        if not self.folder.exists():
            self.folder.mkdir()
            sync_directory(self.run.directory)
        self._lock_fd = take_lock(self.folder / LOCK)
        self._mutex = threading.RLock()
        self.timings = dict.fromkeys(PHASES, 0.0)
        """Seconds spent per phase of :data:`PHASES` by this economy."""
        try:
            self._ledger = LedgerThread(self.run)
            self._ledger.book(lambda book: book.register(HOST, HOST_ROLE))
            self.model_version, self.dataset_version = self._ledger.book(model_versions)
            self._books = _Books(self._recover())
            self._writer = ReceiptWriter(self.attributor.contributors, self.fee_split, self.model_version,
                                         self.dataset_version, self.attributor.method, RESOLUTION)
        except BaseException:
            if hasattr(self, "_ledger"):
                self._ledger.close()
            os.close(self._lock_fd)
            raise
        self._unsettled = False  # True while a write to the receipts file and the ledger is unreconciled
        self._checked = False  # whether a served receipt was compared with the reference (ReceiptWriter.check_first)

    @property
    def account(self) -> FeeAccount:
        """The fee account as of the last commit or close (replaced by each, never changed in place)."""
        return self._books.committed.account

    @property
    def pending(self) -> int:
        """Receipts served and not yet committed."""
        return len(self._books.pending)

    # --- serving ------------------------------------------------------------------------------

    def check_room(self, requests: int) -> None:
        """Raise :class:`~ledger.LedgerError` (naming the amount) unless ``requests`` more
        inferences, after those pending, keep the fees charged on this run directory, and so
        every amount the economy writes, within ``2**53 - 1`` units; nothing changes."""
        books, fee = self._books, sum(self.fee_split.values())
        check_charged(books.head.account.fees + books.pending_account.fees + requests * fee,
                      f"{self.folder}: {requests} more inferences at {fee} units each")

    def serve(self, x: np.ndarray) -> list[Served]:
        """Predict, attribute and charge a micro-batch ``x`` ``(n, n_features)``; the receipts
        join the open batch, pending until :meth:`commit`.

        The shares are split for the whole micro-batch at once
        (:func:`~datanet_lab.serving.batch_split.hamilton_rows`, what :meth:`FeeAccount.charge`
        gives each) and the receipts written as their leaves
        (:class:`~datanet_lab.serving.receipt_lines.ReceiptWriter`, the bytes of
        :func:`~ledger.receipts.make_receipt` and :func:`~ledger.receipts.receipt_leaf`; the
        economy's first receipt is built both ways and compared).

        Raises:
            RequestError: ``x`` not a finite numeric ``(n, n_features)`` array (row and field
                named); nothing changes.
            LedgerError: the fees would leave the safe integer range (:meth:`check_room`), or a
                credit or probability is not finite; nothing changes.
        """
        with self._mutex:
            self._settle()  # the ids and the batch follow what the ledger holds
            start = perf_counter()
            x = np.ascontiguousarray(check_batch(x, self.attributor.n_features), dtype="<f8")
            self.check_room(len(x))
            result = self.attributor.attribute(x)
            attributed = perf_counter()
            names, n, books = self.attributor.contributors, len(x), self._books
            credit = np.ascontiguousarray(result.contributor_credit.T)  # (n, n_contributors)
            _check_credit(credit, names)
            units = self.fee_split.get(CONTRIBUTORS, 0) * RESOLUTION
            parts = hamilton_rows(units, credit, names)  # (n, n_contributors) sub-units
            credited = (credit > 0).any(axis=0)
            totals = parts.sum(axis=0, dtype=np.int64 if units * n < 2**63 else object)
            charges = books.pending_account.copy()
            charges.charge_parts(self.fee_split, n, {names[j]: int(totals[j]) for j in np.flatnonzero(credited)},
                                 int(n - (credit > 0).any(axis=1).sum()))
            split = perf_counter()
            input_hashes = [hashlib.sha256(row).hexdigest() for row in x]
            top = np.argsort(-credit, axis=1, kind="stable")[:, : self.top_k]  # (n, k), best first
            confidence = result.probabilities[np.arange(n), result.predictions]
            batch, index, request = books.head.batches, len(books.pending), books.head.requests + len(books.pending)
            leaves = self._writer.leaves(batch, index, request, input_hashes, result.predictions, confidence, credit,
                                         parts, top)
            if not self._checked:
                self._writer.check_first(leaves[0], batch, index, request, input_hashes[0],
                                         {"class": int(result.predictions[0]), "probability": float(confidence[0])},
                                         credit[0].tolist(), parts[0].tolist(), top[0].tolist())
                self._checked = True
            leaf_hashes = tuple(map(merkle.leaf_hash, leaves))
            self._books = replace(books, pending=books.pending + tuple(leaves),
                                  pending_hashes=books.pending_hashes + leaf_hashes, pending_account=charges)
            done = perf_counter()
            self.timings["attribution"] += attributed - start
            self.timings["split"] += split - attributed
            self.timings["hashing"] += done - split
            return [Served(leaf, names, row) for leaf, row in zip(leaves, credit)]

    def commit(self, wait: bool = True) -> CommittedBatch | None:
        """Commit the pending receipts as one batch (module docstring: file, then ledger), on
        the ledger's thread; ``None`` when none is pending. A batch still in flight lands first.

        ``wait``: return once the batch is in (acknowledged); else return ``None`` at once and
        let the batch land at the next :meth:`commit`, :meth:`close_epoch` or :meth:`close` (or
        :meth:`land`), so that its file and ledger writes overlap the next :meth:`serve` (one
        batch in flight at a time). After an exception the lines the ledger did not take are cut
        off again and the receipts stay pending unless the ledger took the batch; receipts
        served while a batch that did not get in was in flight are dropped (their ids followed
        it; none was acknowledged).

        Raises:
            LedgerError: the ledger refused the entry (nothing committed).
        """
        with self._mutex:
            self._settle()
            self.land()
            books = self._books
            if not books.pending:
                return None
            start = perf_counter()
            # build_batch's tree without its check of each receipt (serve wrote them, and their batch
            # id and indices are this economy's); tests compare the two
            count, before = len(books.pending), books.committed
            fee_totals = (sum(self.fee_split.values()) * count,
                          {role: units * count for role, units in self.fee_split.items()})
            batch = ReceiptBatch(BATCH_ID % before.batches, LeafReceipts(books.pending), books.pending_hashes,
                                 merkle.root_from_hashes(books.pending_hashes), fee_totals)
            hashed = perf_counter()
            data = b"\n".join(books.pending) + b"\n"
            account = before.account.copy()
            account.absorb(books.pending_account)
            path, offset, payload = self.folder / RECEIPTS, before.receipts_bytes, batch.payload()

            def write(book: ledger.Ledger) -> int:
                write_at(path, offset, data)
                return book.append(KIND, HOST, payload).seq

            tally = Tally(0, offset + len(data), before.batches + 1, before.requests + count, account)
            with self._reconciled_on_failure():  # the write is under way once submitted
                self._books = _Books(before, flying=_Flight(self._ledger.submit(write), tally, batch, books))
            self.timings["hashing"] += hashed - start
            self.timings["commit"] += perf_counter() - hashed
            return self.land() if wait else None

    def land(self) -> CommittedBatch | None:
        """Wait for the batch in flight (:meth:`commit` with ``wait=False``) to be in, and
        return it (``None`` when none is in flight); its receipts are then acknowledged.

        Raises:
            LedgerError: the ledger refused it (reconciled as :meth:`commit` says).
        """
        with self._mutex:
            flight = self._books.flying
            if flight is None:
                return None
            start = perf_counter()
            with self._reconciled_on_failure():
                seq = flight.future.result()
                books = self._books
                self._books = _Books(replace(flight.tally, ledger_seq=seq), books.pending, books.pending_hashes,
                                     books.pending_account)
            self.timings["commit"] += perf_counter() - start
            return CommittedBatch(flight.batch, seq)

    def close_epoch(self) -> EpochClose | None:
        """Commit what is pending, then pay the accrued whole units as the ledger's next payout
        epoch (after any epoch already closed, by anyone), carry the remainders, and write
        ``earnings.csv``. ``None`` (nothing written) when nothing was accrued since the last close.

        Raises:
            LedgerError: the ledger refused the epoch (nothing paid, the accrual unchanged).
        """
        with self._mutex:
            self.commit()
            before = self._books.committed
            if not before.account.accrual.accrued:
                return None
            closed = before.account.copy()
            done = closed.close()
            pool = done.paid + done.unallocated  # this epoch's whole units: accrued + carried in - carried out

            def pay(book: ledger.Ledger) -> list[ledger.Entry]:
                epoch = max((e.payload["epoch"] for e in book.entries(kind="payout_epoch")), default=0) + 1
                plan = ledger.EpochPlan(epoch, pool, (), ledger.PayoutSplit(pool, done.payouts, done.unallocated))
                return book.append_many(ledger.epoch_records(plan, HOST, rule=EPOCH_RULE, dataset_version=self.dataset_version))

            with self._reconciled_on_failure():
                entries = self._ledger.book(pay)
                self._books = _Books(replace(before, ledger_seq=entries[-1].seq, account=closed))
            self._save_state()
            self.write_earnings()
            return EpochClose(entries[-1].payload["epoch"], done, entries[-1].seq)

    def write_earnings(self) -> Path:
        """Write ``earnings.csv`` (:func:`earnings_table`, atomically) and return its path."""
        with self._mutex:
            path = self.folder / EARNINGS
            table = earnings_table(self.account, self.attributor.contributors)
            write_atomic(path, table.to_csv(index=False).encode())
            return path

    # --- proofs -------------------------------------------------------------------------------

    def proof(self, request_id: str) -> dict[str, Any]:
        """The :func:`~ledger.receipts.receipt_proof` document of committed receipt ``request_id``
        against the ledger's latest signed head (the receipts file is searched).

        Raises:
            ServingError: no committed receipt has this id.
        """
        with self._mutex:
            for receipts, seq in committed_batches(self.folder / RECEIPTS, self._ledger.book(batch_entries)):
                for index, receipt in enumerate(receipts):
                    if receipt["request_id"] == request_id:
                        return self._ledger.book(lambda book: receipt_proof(book, receipts, index, seq))
            raise ServingError(f"{self.folder / RECEIPTS}: no committed receipt has request id {request_id!r}")

    # --- state --------------------------------------------------------------------------------

    def _recover(self) -> Tally:
        """The tally derived from the ledger and the receipts file (checked against the
        checkpoint), with the file's uncommitted tail cut off and the checkpoint brought up to it."""
        receipts, saved = self.folder / RECEIPTS, self.folder / STATE
        state = read_state(saved) if saved.exists() else None
        entries = self._ledger.book(lambda book: list(book.entries(actor=HOST)))
        tally = derive(entries, receipts, self.run.ledger_path, saved, state)
        if receipts.exists() and receipts.stat().st_size > tally.receipts_bytes:  # lines no entry commits
            truncate(receipts, tally.receipts_bytes)
        self._saved_seq = state["ledger_seq"] if state else 0  # nothing to write for a ledger the host never wrote to
        self._save_state(tally)
        return tally

    @contextmanager
    def _reconciled_on_failure(self) -> Iterator[None]:
        """Around a write to the receipts file and the ledger: on any exception (an interrupt
        included) the economy is reconciled with what reached the ledger (:meth:`_settle`), now
        when it can be, else before it is used again."""
        self._unsettled = True
        try:
            yield
        except BaseException:
            with suppress(Exception):  # the first error is the one to report; _unsettled stays set
                self._settle()
            raise
        self._unsettled = False

    def _settle(self) -> None:
        """After an interrupted write: replay the ledger's entries of :data:`HOST` after the
        committed tally (asked on the ledger's thread, so after any write still in flight). A
        batch or an epoch that got in is committed (the pending receipts with it); a batch in
        flight that did not get in gives its receipts back as pending, unless receipts were
        served after it (they are dropped); then the receipts file is cut back to what is
        committed."""
        if not self._unsettled:
            return
        books = self._books
        later = self._ledger.book(lambda book: entries_after(book, books.committed.ledger_seq))
        replay = Replay(books.committed, self.folder / RECEIPTS, self.run.ledger_path)
        for entry in later:
            replay.apply(entry)
        committed = replay.tally()
        receipts = self.folder / RECEIPTS
        if receipts.exists() and receipts.stat().st_size > committed.receipts_bytes:
            truncate(receipts, committed.receipts_bytes)
        flight = books.flying
        if flight is not None and committed.batches == flight.tally.batches:  # it got in
            self._books = _Books(committed, books.pending, books.pending_hashes, books.pending_account)
        elif flight is not None and not books.pending:  # it did not get in: its receipts are pending again
            given = flight.receipts
            self._books = _Books(committed, given.pending, given.pending_hashes, given.pending_account)
        elif flight is not None:  # nor did the receipts served after it (numbered after it) get in
            self._books = _Books(committed)
        elif later:
            self._books = _Books(committed)
        self._unsettled = False

    def _save_state(self, tally: Tally | None = None) -> None:
        """Write the checkpoint of ``tally`` (the committed one) unless it is already written."""
        tally = tally or self._books.committed
        if tally.ledger_seq != self._saved_seq:
            write_atomic(self.folder / STATE, (json.dumps(tally.to_state(), indent=1, sort_keys=True) + "\n").encode())
            self._saved_seq = tally.ledger_seq

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending, write the checkpoint, then let go of the ledger and the lock."""
        with self._mutex:
            if self._lock_fd < 0:
                return
            try:
                self.commit()
                self._save_state()
            finally:
                self._release()

    def _release(self) -> None:
        """Close the ledger (after any write in flight), then the lock: never the other way round,
        or another economy could open while a batch of this one is still being committed."""
        self._ledger.close()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> InferenceEconomy:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # pending receipts were never acknowledged
            with self._mutex:
                if self._lock_fd >= 0:
                    self._release()


def _check_credit(credit: np.ndarray, names: Sequence[str]) -> None:
    """Raise :class:`~ledger.LedgerError` naming the first credit of ``credit`` ``(n, len(names))``
    that is not finite (what :meth:`ledger.fees.Accrual.accrue` refuses)."""
    bad = ~np.isfinite(credit)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ledger.LedgerError(f"credit of {names[column]!r} must be a finite number, got {credit[row, column]!r} "
                                 f"(input {row} of the micro-batch); nothing charged")


def check_fee_room(run: Run, fee: int, requests: int) -> None:
    """Before opening an economy on ``run``: raise :class:`~ledger.LedgerError` (naming the
    amount) unless ``requests`` inferences at ``fee`` units, after the fees its ledger already
    commits, stay within ``2**53 - 1`` units (:meth:`InferenceEconomy.check_room`). Reads only."""
    with ledger.Ledger(run.ledger_path) as book:
        charged = sum(e.payload["fee_total"] for e in book.entries(kind=KIND, actor=HOST))
    check_charged(charged + requests * fee, f"{run.directory / FOLDER}: {requests} inferences at {fee} units each")


def model_versions(book: ledger.Ledger) -> tuple[str, str]:
    """``(model_version, dataset_version)`` of the latest ``training_run`` entry: the SHA-256 of
    its last checkpoint, and the Datanet version it trained on."""
    runs = list(book.entries(kind="training_run"))
    if not runs:
        raise ServingError(f"{book.path}: no training_run entry; train the run first (datanet_lab.pipeline.train_model)")
    payload = runs[-1].payload
    return payload["checkpoints"][-1]["sha256"], payload["dataset_version"]
