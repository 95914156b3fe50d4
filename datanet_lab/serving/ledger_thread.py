"""A run's ledger used from one thread of its own (a SQLite connection stays in the thread that
opened it), so that an economy may be called from any thread."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import ledger
from datanet_lab.pipeline.run import Run

T = TypeVar("T")


class LedgerThread:
    """``run``'s ledger, opened and used on one thread. Calls run in the order they are made, so
    a call made after one that was interrupted while waiting sees what that one wrote."""

    def __init__(self, run: Run) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference-ledger")
        self._book = self._thread.submit(run.ledger).result()

    def book(self, fn: Callable[[ledger.Ledger], T]) -> T:
        """``fn(ledger)`` on the ledger's thread."""
        return self.submit(fn).result()

    def submit(self, fn: Callable[[ledger.Ledger], T]) -> Future[T]:
        """``fn(ledger)`` on the ledger's thread, after the calls made before; its future."""
        return self._thread.submit(fn, self._book)

    def close(self) -> None:
        """Close the ledger once every call made before has finished."""
        self.book(ledger.Ledger.close)
        self._thread.shutdown()
