"""Payable inference on a finished run: attributed predictions whose fees are split by role and by
contributor credit, receipts committed to the run's ledger in batches, contributors paid in whole
units by epoch.

Stages (:class:`InferenceEconomy`, one per run directory):

1. :meth:`~InferenceEconomy.serve` a micro-batch ``x`` ``(n, n_features)``: the run's
   :class:`~datanet_lab.serving.QueryAttributor` predicts and credits contributors; each
   inference's fee is split by role (:func:`ledger.fees.split_by_role`), the contributors' part
   is accrued by positive credit (:class:`ledger.fees.Accrual`, exact to ``1 / RESOLUTION``
   unit) and a receipt is built (:func:`ledger.receipts.make_receipt`). The receipts are pending.
2. :meth:`~InferenceEconomy.commit` the pending receipts as one batch: appended to
   ``receipts.jsonl``, then one ``receipt_batch`` ledger entry signed by :data:`HOST`. A receipt
   is acknowledged (provable, its shares accrued) once ``commit`` returns.
3. :meth:`~InferenceEconomy.close_epoch` pays the accrued whole units as the ledger's next payout
   epoch (``payout`` entries and a ``payout_epoch`` entry, as :func:`ledger.epoch_records` writes
   them); each contributor's remainder (< 1 unit) is carried into the next epoch.

Files, under ``<run>/inference/``::

    receipts.jsonl  one receipt per line, its Merkle leaf's bytes (RFC 8785 canonical JSON),
                    batch after batch in commit order
    accrual.json    a checkpoint of the state as of ledger entry ``ledger_seq``: counters, the
                    role totals, the contributors paid, the unallocated units and the accrual
                    with its carried remainders (:class:`FeeAccount`); rewritten (atomically)
                    every :data:`CHECKPOINT_RECEIPTS` receipts, at each close and on ``close``
    earnings.csv    ``id, role, units`` after the last close (:func:`earnings_table`)
    lock            held (``flock``) while an economy is open: one writer per run directory

Write order. ``commit`` writes and fsyncs the batch's lines BEFORE the ledger entry. A crash
before the entry leaves lines that no entry commits: never acknowledged, they are cut off when the
economy is next opened. The other order could leave a ledger root whose receipts are lost,
unprovable for ever. The state file is a checkpoint: opening replays the ledger's later entries of
:data:`HOST` against the receipts file (each batch must rebuild its entry's root, else
:class:`ServingError`), so a state left behind by a crash (or not yet rewritten) loses nothing.
``close_epoch`` writes the ledger first (one transaction), then the state; a close the state lacks
is replayed the same way (closing is deterministic) and its payouts checked against the ledger's.

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
time anyway), and the ledger is used from one writer thread of its own (SQLite connections stay in
their thread), so an HTTP layer may call from any thread: serve per micro-batch, commit per group
of requests, answer after commit. Determinism: the same run directory, inputs and batches give the
same receipts file and ledger head (fixed run clock, keys from the run seed, ``torch`` threads
equal).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import numpy as np
import pandas as pd

import ledger
from ledger import merkle
from ledger.fees import CONTRIBUTORS, DEFAULT_ROLE_SHARES, RESOLUTION, Accrual, AccrualClose, fraction_text, parse_fraction, split_by_role
from ledger.receipts import KIND, ReceiptBatch, build_batch, check_receipt, make_receipt, receipt_leaf, receipt_proof
from datanet_lab.pipeline.run import Run
from datanet_lab.serving.attributor import QueryAttributor
from datanet_lab.serving.requests import check_batch
from datanet_lab.serving.runs import ServingError, served_run

HOST, HOST_ROLE = "inference-host", "host"
"""The actor that signs receipt batches and inference payout epochs, and its registered role."""
FOLDER, RECEIPTS, STATE, EARNINGS, LOCK = "inference", "receipts.jsonl", "accrual.json", "earnings.csv", "lock"
STATE_FORMAT = "datanet-lab inference state 1"
CHECKPOINT_RECEIPTS = 8192
"""``commit`` rewrites ``accrual.json`` once this many receipts were committed since it was last
written (and ``close_epoch`` and ``close`` always do): opening replays at most about as many."""
PHASES = ("attribution", "split", "hashing", "commit")
"""Where serving time goes: attribution (predict + attribute + roll-up), split (fee split, accrual,
receipt building), hashing (input hashes, receipt leaves and batch roots), commit (receipts file,
ledger entry, state file)."""
EPOCH_RULE = ("inference fees: each contributors' part accrued exactly by positive credit per inference; "
              "whole units paid at close, remainders carried to the next epoch")
CARRIED, UNALLOCATED, CONTRIBUTOR = "carried", "unallocated", "contributor"
"""Row roles of :func:`earnings_table` beside the fee roles."""

T = TypeVar("T")


class FeeAccount:
    """Where every fee unit of the inferences charged to it is, exactly (no I/O).

    ``fees``: units charged; ``roles``: units per role other than ``contributors``; ``paid``:
    whole units per contributor over closed epochs; ``unallocated``: contributors' parts that no
    positive credit claimed, over closed epochs; ``accrual``: the open epoch (its balances hold
    the carried remainders; its ``unallocated`` the open epoch's). Invariant (exact):
    ``fees == sum(roles) + sum(paid) + unallocated + accrual.unallocated + sum(accrual.balances)``
    (:meth:`placed`).

    Args:
        resolution: the :class:`~ledger.fees.Accrual` resolution (``None``: exact fractions).
    """

    def __init__(self, resolution: int | None = RESOLUTION) -> None:
        self.accrual = Accrual(resolution)
        self.fees = 0
        self.roles: dict[str, int] = {}
        self.paid: dict[str, int] = {}
        self.unallocated = 0

    def charge(self, fee_split: Mapping[str, int], credit: Mapping[str, float]) -> dict[str, Fraction]:
        """Charge one inference's ``fee_split`` (units by role): the ``contributors`` part is
        accrued by positive ``credit`` (:meth:`ledger.fees.Accrual.accrue`, whose shares it
        returns), the other parts added to their roles."""
        shares = self.accrual.accrue(fee_split.get(CONTRIBUTORS, 0), credit)
        self._add_roles(fee_split)
        return shares

    def charge_receipts(self, receipts: Sequence[Mapping[str, Any]]) -> None:
        """Charge committed receipts again from their exact ``shares`` (the same balances as
        :meth:`charge` gave them: a share does not depend on the balances)."""
        delta = FeeAccount(self.accrual.resolution)
        balances: dict[str, Fraction] = {}
        accrued = unallocated = 0
        for receipt in receipts:
            part = receipt["fee_split"].get(CONTRIBUTORS, 0)
            accrued += part
            if not receipt["shares"]:
                unallocated += part
            for contributor, text in receipt["shares"].items():
                balances[contributor] = balances.get(contributor, 0) + parse_fraction(text, f"share of {contributor!r}")
            delta._add_roles(receipt["fee_split"])
        delta.accrual = Accrual.from_state({
            "resolution": self.accrual.resolution, "balances": {c: fraction_text(Fraction(b)) for c, b in balances.items()},
            "unallocated": unallocated, "accrued": accrued, "carried_in": "0/1"})
        self.absorb(delta)

    def absorb(self, other: FeeAccount) -> None:
        """Add ``other``'s charges (an account with nothing closed: its fees, roles and open
        accrual) to this one."""
        if other.paid or other.unallocated or other.accrual.to_state()["carried_in"] != "0/1":
            raise ValueError("only an account with nothing closed can be absorbed")
        mine, theirs = self.accrual.to_state(), other.accrual.to_state()
        if mine["resolution"] != theirs["resolution"]:
            raise ValueError(f"accrual resolutions differ: {mine['resolution']} and {theirs['resolution']}")
        balances = {c: parse_fraction(t, c) for c, t in mine["balances"].items()}
        for contributor, text in theirs["balances"].items():
            balances[contributor] = balances.get(contributor, 0) + parse_fraction(text, contributor)
        self.accrual = Accrual.from_state({
            **mine, "balances": {c: fraction_text(Fraction(b)) for c, b in sorted(balances.items())},
            "unallocated": mine["unallocated"] + theirs["unallocated"], "accrued": mine["accrued"] + theirs["accrued"]})
        self.fees += other.fees
        for role, units in other.roles.items():
            self.roles[role] = self.roles.get(role, 0) + units

    def close(self) -> AccrualClose:
        """Close the open epoch (:meth:`ledger.fees.Accrual.close`) and book what it pays."""
        done = self.accrual.close()
        for contributor, units in done.payouts.items():
            self.paid[contributor] = self.paid.get(contributor, 0) + units
        self.unallocated += done.unallocated
        return done

    def placed(self) -> Fraction:
        """The units found in the places of the invariant (equal to :attr:`fees`)."""
        return (sum(self.roles.values()) + sum(self.paid.values()) + self.unallocated + self.accrual.unallocated
                + sum(self.accrual.balances.values(), Fraction(0)))

    def copy(self) -> FeeAccount:
        return FeeAccount.from_state(self.to_state())

    def to_state(self) -> dict[str, Any]:
        """Plain JSON for :meth:`from_state`."""
        return {"fees": self.fees, "roles": dict(sorted(self.roles.items())), "paid": dict(sorted(self.paid.items())),
                "unallocated": self.unallocated, "accrual": self.accrual.to_state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeeAccount:
        """The account of :meth:`to_state`; raises :class:`ledger.LedgerError` naming a bad field."""
        expected = {"fees", "roles", "paid", "unallocated", "accrual"}
        if not isinstance(state, Mapping) or set(state) != expected:
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ledger.LedgerError(f"account state must hold exactly {sorted(expected)}, got {found}")
        account = cls()
        account.accrual = Accrual.from_state(state["accrual"])
        for name in ("fees", "unallocated"):
            if not _units(state[name]):
                raise ledger.LedgerError(f"account state: {name!r} must be an integer >= 0 units, got {state[name]!r}")
        for name in ("roles", "paid"):
            if type(state[name]) is not dict or not all(type(k) is str and _units(v) for k, v in state[name].items()):
                raise ledger.LedgerError(f"account state: {name!r} must map ids to integers >= 0 units, got {state[name]!r}")
        account.fees, account.unallocated = state["fees"], state["unallocated"]
        account.roles, account.paid = dict(state["roles"]), dict(state["paid"])
        return account

    def _add_roles(self, fee_split: Mapping[str, int]) -> None:
        self.fees += sum(fee_split.values())
        for role, units in fee_split.items():
            if role != CONTRIBUTORS:
                self.roles[role] = self.roles.get(role, 0) + units


def _units(value: Any) -> bool:
    return type(value) is int and value >= 0


def earnings_table(account: FeeAccount, contributors: Sequence[str]) -> pd.DataFrame:
    """``id, role, units`` right after a close: each fee role's total (id = role), each
    contributor's paid units (every id of ``contributors`` and of ``account.paid``, role
    ``contributor``), the ``unallocated`` units and the ``carried`` total. Their sum is
    ``account.fees``: the carried remainders add up to whole units when every other place holds
    whole units.

    Raises:
        ValueError: the account's epoch is open (units accrued since the last close).
    """
    if account.accrual.accrued or account.accrual.unallocated:
        raise ValueError(f"the epoch is open ({account.accrual.accrued} units accrued since the last close); close it first")
    carried = sum(account.accrual.balances.values(), Fraction(0))
    if carried.denominator != 1:  # impossible when the invariant holds: every other place is whole
        raise ValueError(f"carried remainders sum to {carried}, not whole units: the account is inconsistent")
    rows = [(role, role, units) for role, units in sorted(account.roles.items())]
    rows += [(c, CONTRIBUTOR, account.paid.get(c, 0)) for c in sorted(set(contributors) | set(account.paid))]
    rows += [(UNALLOCATED, UNALLOCATED, account.unallocated), (CARRIED, CARRIED, int(carried))]
    return pd.DataFrame(rows, columns=["id", "role", "units"])


@dataclass(frozen=True)
class Served:
    """One served inference: its (pending) ``receipt`` and each contributor's ``credit``."""

    receipt: dict[str, Any]
    credit: dict[str, float]


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


class _Writer:
    """The run's ledger, opened and used on one thread of its own (a SQLite connection stays in
    the thread that opened it)."""

    def __init__(self, run: Run) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference-ledger")
        self._book = self.call(run.ledger)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._thread.submit(fn, *args).result()

    def book(self, fn: Callable[[ledger.Ledger], T]) -> T:
        """``fn(ledger)`` on the writer thread."""
        return self.call(fn, self._book)

    def close(self) -> None:
        self.call(self._book.close)
        self._thread.shutdown()


class InferenceEconomy:
    """Serve a finished run's model as paid, receipted inferences (module docstring).

    Args:
        run: a run directory (or :class:`~datanet_lab.pipeline.run.Run`) whose build, train and
            attribute steps are done.
        fee: units charged per inference (integer >= 0).
        role_shares: integer shares of the fee by role (:func:`ledger.fees.split_by_role`); the
            ``contributors`` part is divided by credit.
        top_k: contributors listed per receipt (>= 1; fewer when the run has fewer).
        attributor: the run's :class:`~datanet_lab.serving.QueryAttributor` (built from the run
            when ``None``).

    Opening takes the run's ``inference/lock`` and recovers the state (module docstring); use it
    as a context manager, or call :meth:`close`.

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
        self.folder.mkdir(exist_ok=True)
        self._lock_fd = _take_lock(self.folder / LOCK)
        self._mutex = threading.RLock()
        self.timings = dict.fromkeys(PHASES, 0.0)
        """Seconds spent per phase of :data:`PHASES` by this economy."""
        try:
            self._writer = _Writer(self.run)
            self._writer.book(lambda book: book.register(HOST, HOST_ROLE))
            self.model_version, self.dataset_version = self._writer.book(model_versions)
            self._recover()
        except BaseException:
            if hasattr(self, "_writer"):
                self._writer.close()
            os.close(self._lock_fd)
            raise
        self._pending: list[dict[str, Any]] = []
        self._pending_account = FeeAccount()

    # --- serving ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Receipts served and not yet committed."""
        return len(self._pending)

    def serve(self, x: np.ndarray) -> list[Served]:
        """Predict, attribute and charge a micro-batch ``x`` ``(n, n_features)``; the receipts
        join the open batch, pending until :meth:`commit`.

        Raises:
            RequestError: ``x`` not a finite numeric ``(n, n_features)`` array (row and field
                named); nothing changes.
        """
        with self._mutex:
            start = perf_counter()
            x = np.ascontiguousarray(check_batch(x, self.attributor.n_features), dtype="<f8")
            result = self.attributor.attribute(x)
            attributed = perf_counter()
            hashes = [hashlib.sha256(row).hexdigest() for row in x]
            hashed = perf_counter()
            names, n = self.attributor.contributors, len(x)
            columns = result.contributor_credit.T.tolist()  # (n, n_contributors)
            top = np.argsort(-result.contributor_credit, axis=0, kind="stable")[: self.top_k].T.tolist()  # (n, k)
            classes = result.predictions.tolist()
            confidence = result.probabilities[np.arange(n), result.predictions].tolist()
            batch_id, first = f"batch-{self._batches:08d}", len(self._pending)
            delta, served = FeeAccount(), []
            for j in range(n):
                credit = dict(zip(names, columns[j]))
                receipt = make_receipt(
                    request_id=f"req-{self._requests + first + j:010d}", batch_id=batch_id, index=first + j,
                    model_version=self.model_version, dataset_version=self.dataset_version, input_hash=hashes[j],
                    output={"class": classes[j], "probability": confidence[j]}, fee_split=self.fee_split,
                    shares=delta.charge(self.fee_split, credit), top=[(names[i], columns[j][i]) for i in top[j]],
                    method=self.attributor.method)
                served.append(Served(receipt, credit))
            self._pending_account.absorb(delta)
            self._pending.extend(s.receipt for s in served)
            done = perf_counter()
            self.timings["attribution"] += attributed - start
            self.timings["hashing"] += hashed - attributed
            self.timings["split"] += done - hashed
            return served

    def commit(self) -> CommittedBatch | None:
        """Commit the pending receipts as one batch (module docstring: file, then ledger);
        ``None`` when none is pending. On a ledger error the file is cut back and the receipts
        stay pending.

        Raises:
            LedgerError: the ledger refused the entry (nothing committed).
        """
        with self._mutex:
            if not self._pending:
                return None
            start = perf_counter()
            leaves = [receipt_leaf(r) for r in self._pending]
            hashes = tuple(merkle.leaf_hash(leaf) for leaf in leaves)
            # build_batch's tree without its second check of each receipt (make_receipt checked them,
            # and their batch id and indices are this economy's); tests compare the two
            batch = ReceiptBatch(self._pending[0]["batch_id"], tuple(self._pending), hashes, merkle.root_from_hashes(hashes))
            hashed = perf_counter()
            data = b"\n".join(leaves) + b"\n"
            offset = self._receipts_bytes
            _append_synced(self.folder / RECEIPTS, offset, data)
            try:
                entry = self._writer.book(lambda book: book.append(KIND, HOST, batch.payload()))
            except BaseException:
                _truncate(self.folder / RECEIPTS, offset)
                raise
            self.account.absorb(self._pending_account)
            self._receipts_bytes += len(data)
            self._batches, self._requests, self._ledger_seq = self._batches + 1, self._requests + len(self._pending), entry.seq
            self._pending, self._pending_account = [], FeeAccount()
            if self._requests - self._saved_requests >= CHECKPOINT_RECEIPTS:
                self._save_state()
            self.timings["hashing"] += hashed - start
            self.timings["commit"] += perf_counter() - hashed
            return CommittedBatch(batch, entry.seq)

    def close_epoch(self) -> EpochClose | None:
        """Commit what is pending, then pay the accrued whole units as the ledger's next payout
        epoch (after any epoch already closed, by anyone), carry the remainders, and write
        ``earnings.csv``. ``None`` (nothing written) when nothing was accrued since the last close.

        Raises:
            LedgerError: the ledger refused the epoch (nothing paid, the accrual unchanged).
        """
        with self._mutex:
            self.commit()
            if not self.account.accrual.accrued:
                return None
            closed = self.account.copy()
            done = closed.close()
            pool = done.paid + done.unallocated  # this epoch's whole units: accrued + carried in - carried out

            def pay(book: ledger.Ledger) -> list[ledger.Entry]:
                epoch = max((e.payload["epoch"] for e in book.entries(kind="payout_epoch")), default=0) + 1
                plan = ledger.EpochPlan(epoch, pool, (), ledger.PayoutSplit(pool, done.payouts, done.unallocated))
                return book.append_many(ledger.epoch_records(plan, HOST, rule=EPOCH_RULE, dataset_version=self.dataset_version))

            entries = self._writer.book(pay)
            self.account, self._ledger_seq = closed, entries[-1].seq
            self._save_state()
            self.write_earnings()
            return EpochClose(entries[-1].payload["epoch"], done, entries[-1].seq)

    def write_earnings(self) -> Path:
        """Write ``earnings.csv`` (:func:`earnings_table`, atomically) and return its path."""
        with self._mutex:
            path = self.folder / EARNINGS
            table = earnings_table(self.account, self.attributor.contributors)
            _write_atomic(path, table.to_csv(index=False).encode())
            return path

    # --- proofs -------------------------------------------------------------------------------

    def proof(self, request_id: str) -> dict[str, Any]:
        """The :func:`~ledger.receipts.receipt_proof` document of committed receipt ``request_id``
        against the ledger's latest signed head (the receipts file is searched).

        Raises:
            ServingError: no committed receipt has this id.
        """
        with self._mutex:
            for receipts, seq in committed_batches(self.folder / RECEIPTS, self._writer.book(batch_entries)):
                for index, receipt in enumerate(receipts):
                    if receipt["request_id"] == request_id:
                        return self._writer.book(lambda book: receipt_proof(book, receipts, index, seq))
            raise ServingError(f"{self.folder / RECEIPTS}: no committed receipt has request id {request_id!r}")

    # --- state --------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load ``accrual.json``, replay the ledger's later entries of :data:`HOST` against the
        receipts file, cut off receipts no entry commits, and save the state when it moved."""
        path = self.folder / STATE
        state = _read_state(path) if path.exists() else None
        self._ledger_seq = state["ledger_seq"] if state else 0
        self._receipts_bytes = state["receipts_bytes"] if state else 0
        self._batches, self._requests = (state["batches"], state["requests"]) if state else (0, 0)
        self._saved_requests = self._requests
        self.account = FeeAccount.from_state(state["account"]) if state else FeeAccount()
        receipts_path = self.folder / RECEIPTS
        size = receipts_path.stat().st_size if receipts_path.exists() else 0
        if size < self._receipts_bytes:
            raise ServingError(f"{receipts_path} holds {size} bytes, {path} says {self._receipts_bytes} were committed: "
                               f"committed receipts are missing")
        later = self._writer.book(lambda book: [e for e in book.entries(actor=HOST) if e.seq > self._ledger_seq])
        batches = _read_batches(receipts_path, self._receipts_bytes)
        moved, payouts = False, {}
        for entry in later:
            if entry.kind == KIND:
                found = next(batches, None)
                try:
                    matches = found is not None and build_batch(found[0]).payload() == entry.payload
                except ledger.LedgerError:  # lines that are no batch of receipts
                    matches = False
                if not matches:
                    raise ServingError(f"{self.run.ledger_path}: entry {entry.seq} commits batch {entry.payload['batch_id']!r}, "
                                       f"which {receipts_path} does not hold at byte {self._receipts_bytes}")
                self.account.charge_receipts(found[0])
                self._batches, self._requests, self._receipts_bytes = self._batches + 1, self._requests + len(found[0]), found[1]
            elif entry.kind == "payout":
                payouts[entry.payload["contributor"]] = entry.payload["amount"]
            elif entry.kind == "payout_epoch":
                done = self.account.close()
                if (done.payouts, done.unallocated) != (payouts, entry.payload["unallocated"]):
                    raise ServingError(f"{self.run.ledger_path}: payout epoch {entry.payload['epoch']} (entry {entry.seq}) "
                                       f"pays {payouts}, the receipts since the previous close pay {done.payouts}")
                payouts = {}
            self._ledger_seq, moved = entry.seq, True
        if size > self._receipts_bytes:  # lines written before a ledger entry that never came
            _truncate(receipts_path, self._receipts_bytes)
            moved = True
        if moved:
            self._save_state()

    def _save_state(self) -> None:
        self._saved_requests = self._requests
        state = {"format": STATE_FORMAT, "ledger_seq": self._ledger_seq, "receipts_bytes": self._receipts_bytes,
                 "batches": self._batches, "requests": self._requests, "account": self.account.to_state()}
        _write_atomic(self.folder / STATE, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending, then let go of the ledger and the lock."""
        with self._mutex:
            if self._lock_fd < 0:
                return
            try:
                self.commit()
                if self._saved_requests != self._requests:
                    self._save_state()
            finally:
                self._release()

    def _release(self) -> None:
        self._writer.close()
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


def checked_fee_split(fee: int, role_shares: Mapping[str, int]) -> dict[str, int]:
    """:func:`ledger.fees.split_by_role` of ``fee``, its errors naming the fee and the shares."""
    try:
        return split_by_role(fee, role_shares)
    except ledger.LedgerError as exc:
        raise ledger.LedgerError(f"inference fee {fee!r} and role shares {dict(role_shares)!r}: {exc}") from None


def model_versions(book: ledger.Ledger) -> tuple[str, str]:
    """``(model_version, dataset_version)`` of the latest ``training_run`` entry: the SHA-256 of
    its last checkpoint, and the Datanet version it trained on."""
    runs = list(book.entries(kind="training_run"))
    if not runs:
        raise ServingError(f"{book.path}: no training_run entry; train the run first (datanet_lab.pipeline.train_model)")
    payload = runs[-1].payload
    return payload["checkpoints"][-1]["sha256"], payload["dataset_version"]


def batch_entries(book: ledger.Ledger) -> dict[str, int]:
    """The sequence number of each ``receipt_batch`` entry of :data:`HOST`, by batch id."""
    return {e.payload["batch_id"]: e.seq for e in book.entries(kind=KIND, actor=HOST)}


def committed_batches(path: Path, seqs: Mapping[str, int]) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Each batch of receipts file ``path`` with the sequence number of its entry from ``seqs``
    (:func:`batch_entries`), up to the first batch without one (lines not committed yet)."""
    for receipts, _ in _read_batches(path, 0):
        if receipts[0]["batch_id"] not in seqs:
            return
        yield receipts, seqs[receipts[0]["batch_id"]]


def _read_batches(path: Path, start: int) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """The batches of receipts file ``path`` from byte ``start``, each with the byte offset after
    it; stops at a line that is not a whole receipt (a write cut short)."""
    if not path.exists():
        return
    batch: list[dict[str, Any]] = []
    position = start
    with open(path, "rb") as lines:
        lines.seek(start)
        for line in lines:
            try:
                receipt = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                receipt = None
            if not isinstance(receipt, dict) or "batch_id" not in receipt:
                break
            if batch and receipt["batch_id"] != batch[0]["batch_id"]:
                yield batch, position
                batch = []
            batch.append(receipt)
            position += len(line)
    if batch:
        yield batch, position


@dataclass(frozen=True)
class ReceiptCheck:
    """What :func:`check_receipts` found: receipts ``checked`` of ``total``, and the first few
    ``failures`` (request id and the check's status and detail)."""

    checked: int
    total: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def check_receipts(run: str | Path | Run, sample: int | None = None, seed: int = 0) -> ReceiptCheck:
    """Prove committed receipts of ``run``'s ``inference/receipts.jsonl`` against its ledger and
    check each proof offline with the log's key pinned (:func:`~ledger.receipts.receipt_proof`,
    :func:`~ledger.receipts.check_receipt`): all of them, or ``sample`` drawn with ``seed``."""
    directory = run.directory if isinstance(run, Run) else Path(run)
    path = directory / FOLDER / RECEIPTS
    failures, checked, total = [], 0, 0
    with ledger.Ledger(directory / "ledger.sqlite") as book:
        seqs, key = batch_entries(book), book.log_public_key
        batches = list(committed_batches(path, seqs))
        sizes = [len(receipts) for receipts, _ in batches]
        total = sum(sizes)
        chosen = np.arange(total) if sample is None or sample >= total else np.sort(
            np.random.default_rng(seed).choice(total, sample, replace=False))
        starts = np.cumsum([0, *sizes])
        for number, (receipts, seq) in enumerate(batches):
            picked = chosen[(chosen >= starts[number]) & (chosen < starts[number + 1])] - starts[number]
            if not len(picked):
                continue
            batch = build_batch(receipts)
            for index in picked.tolist():
                result = check_receipt(receipt_proof(book, batch, index, seq), key)
                checked += 1
                if not result.ok and len(failures) < 10:
                    failures.append(f"{receipts[index]['request_id']}: {result.status}: {result.detail}")
    return ReceiptCheck(checked, total, tuple(failures))


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServingError(f"{path} is not a readable inference state: {exc}") from None
    expected = {"format", "ledger_seq", "receipts_bytes", "batches", "requests", "account"}
    if type(state) is not dict or set(state) != expected or state["format"] != STATE_FORMAT:
        raise ServingError(f"{path}: expected an object with exactly {sorted(expected)} and format {STATE_FORMAT!r}")
    for name in ("ledger_seq", "receipts_bytes", "batches", "requests"):
        if not _units(state[name]):
            raise ServingError(f"{path}: {name!r} must be an integer >= 0, got {state[name]!r}")
    try:
        FeeAccount.from_state(state["account"])
    except ledger.LedgerError as exc:
        raise ServingError(f"{path}: {exc}") from None
    return state


def _take_lock(path: Path) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ServingError(f"{path} is held: another inference economy serves this run directory") from None
    return descriptor


def _append_synced(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at byte ``offset`` of ``path`` (its end) and fsync it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.lseek(descriptor, offset, os.SEEK_SET)
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    """Write all of ``data`` to ``descriptor`` and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
    os.fsync(descriptor)


def _truncate(path: Path, size: int) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` whole (a synced temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
