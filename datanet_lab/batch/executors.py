"""Where a sweep's runs execute: one ``concurrent.futures.Executor`` seam, chosen by name.

``local`` is a pool of ``workers`` processes on this machine. ``dask`` is
``distributed.Client(...).get_executor()``: a ``LocalCluster`` of ``workers`` single-threaded
worker processes, or the scheduler at ``scheduler`` (e.g. a ``dask-jobqueue`` SLURM cluster's).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager

from datanet_lab.params import ParameterError


@contextmanager
def local(workers: int, scheduler: str | None = None) -> Iterator[Executor]:
    """A process pool of ``workers`` fresh (spawned) Python processes."""
    if scheduler is not None:
        raise ParameterError(f"--scheduler {scheduler!r} needs --executor dask")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@contextmanager
def dask(workers: int, scheduler: str | None = None) -> Iterator[Executor]:
    """A Dask client's executor: on a new ``LocalCluster`` of ``workers`` processes, or on the
    running scheduler at address ``scheduler`` (``workers`` is then the cluster's business)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError("--executor dask needs Dask: pip install 'dask[distributed]'") from None
    if scheduler is not None:
        try:
            client = Client(scheduler)
        except OSError as exc:
            raise ParameterError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        with client:
            yield client.get_executor()
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client.get_executor()


EXECUTORS: dict[str, Callable[[int, str | None], AbstractContextManager[Executor]]] = {"local": local, "dask": dask}


def open_executor(name: str, workers: int, scheduler: str | None = None) -> AbstractContextManager[Executor]:
    """The executor registered as ``name``, with ``workers`` >= 1 workers.

    Raises:
        ParameterError: an unknown name, fewer than one worker, or a scheduler for ``local``.
    """
    if name not in EXECUTORS:
        raise ParameterError(f"unknown executor {name!r}; expected one of {sorted(EXECUTORS)}")
    if workers < 1:
        raise ParameterError(f"--workers must be >= 1, got {workers}")
    return EXECUTORS[name](workers, scheduler)
