"""serve-sim: a finished run served as a stream of paid, receipted inferences, measured.

:func:`serve_sim` reads the requests (the run's test set cycled to ``requests`` inputs, or the
rows of a CSV/Parquet/JSONL file) and checks them all before anything is written, then serves them
through one :class:`~datanet_lab.serving.economy.InferenceEconomy` in micro-batches of
``batch_size``, committing each (its file and ledger writes overlapping the next micro-batch:
``commit(wait=False)``; the last one landed before the time is taken), and closes the payout
epoch at the end. It reports throughput,
where the time went (:data:`~datanet_lab.serving.economy.PHASES`), and the dust of the same stream
(:func:`ledger.fees.measure_dust`: what paying each inference on its own would lose against the
accrual), and draws the figures (:mod:`~datanet_lab.serving.figures`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import pandas as pd

import ledger
from ledger.fees import CONTRIBUTORS, DEFAULT_ROLE_SHARES, DustReport, measure_dust
from datanet_lab.pipeline.tabular.build_step import datanet
from datanet_lab.pipeline.run import Run
from datanet_lab.serving import figures
from datanet_lab.serving.attributor import QueryAttributor
from datanet_lab.serving.economy import (FOLDER, PHASES, RECEIPTS, EpochClose, InferenceEconomy, Served,
                                         check_fee_room, checked_fee_split)
from datanet_lab.serving.requests import RequestError, read_requests
from datanet_lab.serving.runs import ServingError, run_test_inputs, served_run

MAX_REQUESTS = 1_000_000
"""The most inferences one :func:`serve_sim` serves: it holds every input, and every inference's
credit for the dust measure (about 100 bytes per contributor), in memory."""
_CHECK_ROWS = 65_536
"""Inputs per forward pass of :func:`check_outputs`."""


@dataclass(frozen=True)
class SimResult:
    """What :func:`serve_sim` did: ``requests`` inferences served in ``seconds`` (serving and
    committing, the epoch's close apart), ``timings`` seconds per phase, the ``dust`` of the
    stream, the ``epoch`` it closed (``None`` when nothing was accrued), the files written (no
    figures unless drawn) and the ledger's head hash after the close."""

    requests: int
    seconds: float
    timings: dict[str, float]
    dust: DustReport
    epoch: EpochClose | None
    receipts: Path
    earnings: Path
    figures: tuple[Path, ...]
    head_hash: str

    @property
    def throughput(self) -> float:
        """Inferences per second."""
        return self.requests / self.seconds

    @property
    def cost_split(self) -> dict[str, float]:
        """Each phase's fraction of the measured phases' time."""
        total = sum(self.timings.values()) or 1.0
        return {phase: seconds / total for phase, seconds in self.timings.items()}

    def lines(self) -> list[str]:
        """The throughput line and the dust line that ``datanet-lab serve-sim`` prints."""
        split = ", ".join(f"{phase} {share:.0%}" for phase, share in self.cost_split.items())
        dust = self.dust
        carried = f"{dust.accrual_carried:,.0f} units carried into the next epoch" if self.epoch else "no epoch closed"
        return [
            f"serve-sim: {self.requests} inferences in {self.seconds:.2f} s = {self.throughput:,.0f}/s ({split})",
            f"dust: {dust.earned:,} units earned by credit; floored per inference {dust.floor_lost:,} lost "
            f"(at most {dust.floor_max_short:.2f} short per contributor), largest remainders per inference "
            f"{dust.hamilton_moved:,.2f} moved; accrual {dust.accrual_lost:g} lost, {carried}",
        ]


def request_inputs(run: Run, n_features: int, requests: int | None, inputs: str | Path | None, seed: int | None,
                   model: QueryAttributor | None = None) -> np.ndarray:
    """``(requests, n_features)`` float64 requests: the rows of ``inputs`` (a CSV/Parquet/JSONL
    file, in file order; a header must name the run's features) or the run's test inputs, cycled
    to ``requests`` rows (``None``: one pass). With ``seed`` each pass over the test inputs is a
    fresh permutation drawn with it. Given ``model``, each input is first checked to give it a
    finite output (:func:`check_outputs`).

    Raises:
        RequestError: a bad inputs file, or an input ``model`` cannot compute on (row and field named).
        ServingError: ``requests`` not an integer from 1 to :data:`MAX_REQUESTS` (nor ``None``
            with more inputs than that), or ``seed`` neither ``None`` nor an integer >= 0.
    """
    if requests is not None and (type(requests) is not int or not 1 <= requests <= MAX_REQUESTS):
        raise ServingError(f"requests must be an integer from 1 to {MAX_REQUESTS:,} (a sim holds its inputs and "
                           f"credit in memory), got {requests!r}")
    if seed is not None and (type(seed) is not int or seed < 0):
        raise ServingError(f"seed must be an integer >= 0, got {seed!r}")
    names = datanet(run).feature_names
    source = run_test_inputs(run) if inputs is None else read_requests(inputs, n_features, names)
    where = "the run's test inputs" if inputs is None else f"request file {inputs}"
    count = len(source) if requests is None else requests
    if count > MAX_REQUESTS:
        raise ServingError(f"{where}: {count:,} inputs, more than the {MAX_REQUESTS:,} a sim serves; give requests")
    if model is not None:
        check_outputs(model, source, where, names)
    passes = -(-count // len(source))
    if inputs is not None or seed is None:
        order = np.tile(np.arange(len(source)), passes)
    else:
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(source)) for _ in range(passes)])
    return source[order[:count]]


def check_outputs(model: QueryAttributor, x: np.ndarray, source: str, names: Sequence[str]) -> None:
    """Check that ``model`` gives every input of ``x`` finite probabilities: a value finite as a
    float32 can still overflow once the model standardizes it, and its credit would be NaN.

    Raises:
        RequestError: the first input that overflows, named by its place in ``source`` (from 1),
            with its largest-magnitude field.
    """
    for first in range(0, len(x), _CHECK_ROWS):
        _, probabilities = model.predict(x[first : first + _CHECK_ROWS])
        bad = ~np.isfinite(probabilities).all(axis=1)
        if bad.any():
            row = first + int(np.argmax(bad))
            field = int(np.argmax(np.abs(x[row])))
            raise RequestError(f"{source}: input {row + 1} overflows the float32 model once standardized (its output "
                               f"is not finite); its largest value is field {field} ({names[field]!r}) = {x[row, field]:g}")


def serve_sim(run_dir: str | Path | Run, requests: int | None = None, inputs: str | Path | None = None,
              batch_size: int = 256, fee: int = 1000, role_shares: Mapping[str, int] = DEFAULT_ROLE_SHARES,
              top_k: int = 5, seed: int | None = 0, draw: bool = True, log: Callable[[str], None] | None = print) -> SimResult:
    """Serve ``requests`` inputs (:func:`request_inputs`) of a finished run as paid inferences in
    micro-batches of ``batch_size``, each committed, then close the epoch, write
    ``inference/earnings.csv`` and (``draw``) ``inference/figures/*.png``, and pass the summary
    (:meth:`SimResult.lines`) to ``log``. Inputs and arguments are checked first: a bad one
    raises with nothing written. A run directory served before continues (request and batch ids,
    the next epoch).

    Raises:
        RequestError: a bad inputs file. ServingError: a run that cannot be served, or bad
        ``requests`` / ``seed`` / ``batch_size`` / ``top_k``. LedgerError: a bad ``fee`` or ``role_shares``.
    """
    run = served_run(run_dir)
    if type(batch_size) is not int or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    checked_fee_split(fee, role_shares)  # before anything is written
    attributor = QueryAttributor.from_run(run)
    x = request_inputs(run, attributor.n_features, requests, inputs, seed, attributor)
    check_fee_room(run, fee, len(x))  # every amount within the ledger's range, before anything is written
    served: list[Served] = []
    with InferenceEconomy(run, fee, role_shares, top_k, attributor) as economy:
        pool = economy.fee_split.get(CONTRIBUTORS, 0)
        start = perf_counter()
        for first in range(0, len(x), batch_size):
            served += economy.serve(x[first : first + batch_size])
            economy.commit(wait=False)  # written while the next micro-batch is served
        economy.land()
        seconds = perf_counter() - start
        timings = dict(economy.timings)
        closed = economy.close_epoch()
        earnings = economy.write_earnings()  # written by the close too; also when nothing was accrued
    with ledger.Ledger(run.ledger_path) as book:  # read only
        head_hash = book.head().hash
    dust = measure_dust((pool, s.credit) for s in served)
    drawn = figures.write_figures(run.directory / FOLDER / "figures", pd.read_csv(earnings), dust) if draw else ()
    result = SimResult(len(x), seconds, {p: timings[p] for p in PHASES}, dust, closed, run.directory / FOLDER / RECEIPTS,
                       earnings, drawn, head_hash)
    if log is not None:
        for line in result.lines():
            log(line)
    return result
