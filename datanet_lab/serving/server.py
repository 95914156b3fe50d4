"""The HTTP server of payable inference: a run's :class:`~datanet_lab.serving.economy.InferenceEconomy`
behind a group commit, served by uvicorn (``datanet-lab serve RUN_DIR``).

:class:`GroupCommit` owns one worker thread. It takes the first pending request and those queued
behind it, up to ``batch_size`` (``max_wait_ms`` > 0: waiting that long after the first for more),
hands the batch to its handler and resolves each request's future once the handler returns. The
batches adapt to the load: the requests that arrive while a batch is served and committed are
the next batch, so a lone request waits for no one, and under load each commit (two fsyncs, one
ledger entry, one attribution pass) is shared by as many requests as came in meanwhile; by
default (:data:`BATCH_SIZE`, :data:`MAX_WAIT_MS`) nothing waits on a timer. :class:`Server`'s handler
serves the batch's rows through the economy as one micro-batch (so the attributor, which is not
thread-safe, only ever runs on that thread) and commits them as one ``receipt_batch`` entry.

Durability: an answer follows the commit. A receipt id a client receives is in a committed
``receipt_batch`` entry (SQLite WAL, ``synchronous=FULL``) and its receipt in the fsynced
``inference/receipts.jsonl``, so a crash (``kill -9``) loses only requests that were never
answered; the economy cuts their receipts off when the run directory is served again. A commit
the ledger refuses stops the server from serving (every later request gets 503): its receipts
stay pending in the economy, and only a restart drops them.
"""

from __future__ import annotations

import argparse
import gc
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import uvicorn

import ledger
from datanet import DatanetError
from datanet_lab.pipeline.run import Run
from datanet_lab.serving.app import Answered, ReceiptPending, ServiceUnavailable, UnknownReceipt, create_app
from datanet_lab.serving.economy import PHASES, InferenceEconomy, Served
from datanet_lab.serving.requests import RequestError
from datanet_lab.serving.runs import ServingError
from ledger.fees import CONTRIBUTORS, fraction_text

Request = TypeVar("Request")
Answer = TypeVar("Answer")
Handler = Callable[[Sequence[Request]], Sequence[Answer]]
"""Serves a micro-batch of requests and commits it; returns one answer per request, in order."""


UVICORN = {"loop": "auto", "http": "auto", "access_log": False}
"""How :func:`serve` runs uvicorn (one worker: the economy has one writer): its event loop and
HTTP parser are uvloop and httptools when installed (``uvicorn[standard]``), else asyncio and h11;
no access log unless asked (a formatted line per request costs CPU the commit pipeline needs)."""


BATCH_SIZE, MAX_WAIT_MS = 64, 0.0
"""The group commit's defaults: batches of whatever is queued, up to 64 requests, no timed wait.
On the 2-core machine of ``benchmarks/http_bench.py`` a timed wait only lengthened each cycle
(fewer requests/s at 8 and 32 clients), and 64 is past what 128 clients queued per commit."""


class ServerStopped(ServiceUnavailable):
    """A request submitted to a :class:`GroupCommit` that is not running."""


@dataclass
class _Pending(Generic[Request, Answer]):
    request: Request
    future: Future[Answer]


_STOP = object()
"""Queued by :meth:`GroupCommit.stop` behind every pending request."""


class GroupCommit(Generic[Request, Answer]):
    """One worker thread batching requests for ``handler`` (module docstring).

    Args:
        handler: serves and commits one micro-batch, on the worker thread only; it answers each
            request, or returns an exception in a request's place to fail that request alone.
        batch_size: the most requests in one micro-batch (>= 1).
        max_wait_ms: how long after taking the first request (and those queued behind it) the
            worker waits for more (>= 0; 0: not at all).
    """

    def __init__(self, handler: Handler, batch_size: int = BATCH_SIZE, max_wait_ms: float = MAX_WAIT_MS) -> None:
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if type(max_wait_ms) not in (int, float) or not 0 <= max_wait_ms < float("inf"):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        self.batch_size, self.max_wait_ms = batch_size, float(max_wait_ms)
        self._handler = handler
        self._queue: queue.SimpleQueue[_Pending[Request, Answer] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="group-commit", daemon=True)
        self._accepting = False
        self._lock = threading.Lock()  # orders submit() against stop()'s marker

    def start(self) -> None:
        """Start the worker thread."""
        with self._lock:
            self._thread.start()
            self._accepting = True

    def submit(self, request: Request) -> Future[Answer]:
        """Queue ``request``; the future gets its answer once its batch is committed, or the
        exception the handler returned in its place, or the handler's exception (every request
        of a failed batch gets it).

        Raises:
            ServerStopped: the worker is not running (not started, or stopping).
        """
        future: Future[Answer] = Future()
        with self._lock:
            if not self._accepting:
                raise ServerStopped("the server is not accepting requests (starting or shutting down)")
            self._queue.put(_Pending(request, future))
        return future

    def stop(self) -> None:
        """Stop accepting requests, serve those already queued, and join the worker."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
            self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_ms / 1000
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._serve(batch)

    def _serve(self, batch: list[_Pending[Request, Answer]]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]  # a cancelled request is not served
        if not live:
            return
        try:
            answers = self._handler([p.request for p in live])
            if len(answers) != len(live):
                raise RuntimeError(f"the handler answered {len(answers)} of {len(live)} requests")
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            for pending in live:
                pending.future.set_exception(exc)
            return
        for pending, answer in zip(live, answers):
            if isinstance(answer, Exception):
                pending.future.set_exception(answer)
            else:
                pending.future.set_result(answer)


class Server:
    """A run's :class:`~datanet_lab.serving.economy.InferenceEconomy` behind a :class:`GroupCommit`:
    the :class:`~datanet_lab.serving.app.Service` that :func:`~datanet_lab.serving.app.create_app`
    serves. Opening takes the run's economy lock; :meth:`start`, then :meth:`close` (or use it
    as a context manager).

    Args:
        run: a finished run directory (build, train and attribute steps done).
        batch_size, max_wait_ms: the group commit's (:class:`GroupCommit`).
        fee: units charged per inference.

    Raises:
        ServingError: a bad ``batch_size`` or ``max_wait_ms``, or a run that cannot be served.
    """

    def __init__(self, run: str | Path | Run, batch_size: int = BATCH_SIZE, max_wait_ms: float = MAX_WAIT_MS,
                 fee: int = 1000) -> None:
        try:
            self._group: GroupCommit[tuple[np.ndarray, float], Answered] = GroupCommit(self._serve_batch, batch_size,
                                                                                       max_wait_ms)
        except ValueError as exc:
            raise ServingError(str(exc)) from None
        self.economy = InferenceEconomy(run, fee=fee)
        self.n_features = self.economy.attributor.n_features
        self._committing: set[str] = set()  # receipt ids served, their batch not yet committed
        self._failure: str | None = None
        self._earnings = self._earnings_now()

    def start(self) -> None:
        self._group.start()

    def close(self) -> None:
        """Answer the queued requests, then close the economy (its lock and ledger)."""
        self._group.stop()
        self.economy.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(self, x: np.ndarray) -> Future[Answered]:
        """Queue ``x`` ``(n, n_features)``; the future gets its answer (one result per row) once committed."""
        return self._group.submit((x, time.perf_counter()))

    def receipt(self, receipt_id: str) -> dict[str, Any]:
        """The receipt's proof document (:meth:`InferenceEconomy.proof`)."""
        if receipt_id in self._committing:
            raise ReceiptPending(f"receipt {receipt_id!r}: its batch is being committed; ask again")
        try:
            return self.economy.proof(receipt_id)
        except ServingError:
            raise UnknownReceipt(f"no committed receipt has id {receipt_id!r}") from None

    def head(self) -> dict[str, Any]:
        """The ledger's latest signed head and the log's public key, read by a read-only handle."""
        with ledger.Ledger(self.economy.run.ledger_path) as book:
            return {**book.signed_head().to_dict(), "log_public_key": book.log_public_key}

    def earnings(self) -> dict[str, Any]:
        """The economy's account as of the last commit (:class:`~datanet_lab.serving.app.EarningsResponse`)."""
        return self._earnings

    def _serve_batch(self, requests: Sequence[tuple[np.ndarray, float]]) -> list[Answered | RequestError]:
        """Serve and commit a group of ``(inputs, submitted at)`` requests; each answer says how
        long it queued and what its group's phases took."""
        if self._failure is not None:
            raise ServiceUnavailable(self._failure)
        began, before = time.perf_counter(), dict(self.economy.timings)
        served = self._serve_isolated([x for x, _ in requests])
        ids = {s.receipt["request_id"] for group in served if not isinstance(group, RequestError) for s in group}
        self._committing |= ids
        try:
            self.economy.commit()
        except Exception as exc:
            self._failure = f"the ledger refused a commit ({exc}); nothing is served until the server restarts"
            raise ServiceUnavailable(self._failure) from exc
        finally:
            self._committing -= ids
        self._earnings = self._earnings_now()
        spent = {phase: self.economy.timings[phase] - before[phase] for phase in PHASES}
        return [group if isinstance(group, RequestError)
                else Answered([_answer(s.receipt) for s in group], {"queue": began - submitted, **spent})
                for group, (_, submitted) in zip(served, requests)]

    def _serve_isolated(self, requests: Sequence[np.ndarray]) -> list[list[Served] | RequestError]:
        """Each request's served inferences, the group in one pass; when one request of a group
        cannot be served (its input overflows the float32 model, say), each request on its own, so
        that only that request fails: its place holds its :class:`RequestError`."""
        try:
            served = self.economy.serve(np.concatenate(requests))
        except RequestError:
            if len(requests) == 1:
                raise
            return [self._serve_alone(request) for request in requests]
        ends = np.cumsum([len(r) for r in requests]).tolist()
        return [served[end - len(r) : end] for r, end in zip(requests, ends)]

    def _serve_alone(self, request: np.ndarray) -> list[Served] | RequestError:
        try:
            return self.economy.serve(request)
        except RequestError as error:
            return error

    def _earnings_now(self) -> dict[str, Any]:
        account = self.economy.account
        return {
            "fees": account.fees,
            "by_role": {**account.roles, CONTRIBUTORS: account.fees - sum(account.roles.values())},
            "paid": dict(account.paid),
            "balances": {c: fraction_text(b) for c, b in account.accrual.balances.items()},
            "unallocated": account.unallocated + account.accrual.unallocated,
        }


def _answer(receipt: dict[str, Any]) -> dict[str, Any]:
    """The fields of :class:`~datanet_lab.serving.app.InferResult` from a committed receipt."""
    return {"receipt_id": receipt["request_id"], "batch_id": receipt["batch_id"],
            "prediction": receipt["output"]["class"], "probability": receipt["output"]["probability"],
            **{k: receipt[k] for k in ("fee", "fee_split", "shares", "top")}}


class _Stop(Exception):
    """SIGINT or SIGTERM, raised in the main thread."""


def _raise_stop(signum: int, _: object) -> None:
    raise _Stop(signum)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, batch_size: int = BATCH_SIZE,
          max_wait_ms: float = MAX_WAIT_MS, fee: int = 1000, log_level: str = "info", access_log: bool = False) -> None:
    """Serve ``run`` over HTTP until SIGINT or SIGTERM: uvicorn then finishes the requests in
    flight, the economy closes, and this returns.

    Raises:
        ServingError: as :class:`Server`.
    """
    # uvicorn re-raises the stopping signal once it has shut down; under the default SIGTERM
    # action that would end the process before the economy closes, so it raises _Stop instead.
    stopping = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {number: signal.signal(number, _raise_stop) for number in stopping}
    try:
        with Server(run, batch_size, max_wait_ms, fee) as server:
            server.start()
            app = create_app(server)
            # What is loaded by now (modules, the model, the economy's state: some 400,000 objects)
            # lives as long as the server; left out of the collector's full passes, which walked it
            # all and paused every request in flight for 0.2-0.4 s now and then (the p99 latency).
            gc.freeze()
            uvicorn.run(app, host=host, port=port, log_level=log_level, **{**UVICORN, "access_log": access_log})
    except _Stop:
        pass
    finally:
        gc.unfreeze()
        for number, handler in previous.items():
            signal.signal(number, handler)


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register ``serve`` on the ``datanet-lab`` parser's subcommands."""
    _add_arguments(commands.add_parser("serve", help="serve a finished run over HTTP: payable inference with receipts"))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory whose build, train and attribute steps are done")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"most requests per micro-batch and commit (default: {BATCH_SIZE})")
    parser.add_argument("--max-wait-ms", type=float, default=MAX_WAIT_MS,
                        help="how long a micro-batch waits for more requests once it has taken those queued "
                             f"(default: {MAX_WAIT_MS:g}: none)")
    parser.add_argument("--fee", type=int, default=1000, help="units charged per inference (default: 1000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default: info)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request (uvicorn's access log; off by default: a line per request costs CPU)")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    serve(args.run_dir, args.host, args.port, args.batch_size, args.max_wait_ms, args.fee, args.log_level, args.access_log)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m datanet_lab.serving.server RUN_DIR ...``: ``datanet-lab serve`` on its own.
    Exit 2 naming the problem when the run cannot be served."""
    parser = argparse.ArgumentParser(prog="python -m datanet_lab.serving.server", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (DatanetError, ledger.LedgerError) as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
