"""HTTP serving on loopback, at 8, 32 and 128 concurrent clients (prints figures; not a test).

    .venv/bin/python benchmarks/http_bench.py [--run-dir DIR] [--clients 8,32,128] [--requests 2000]
                                              [--rows 1] [--batch-size 64] [--max-wait-ms 0]
                                              [--results docs/results/http_bench.json]

Serves a finished run (default: a fresh default logreg run in a temporary directory) with
``datanet-lab serve`` in a subprocess. Per client count, ``--requests`` ``POST /infer`` requests of
``--rows`` rows go out from that many keep-alive connections of one light asyncio load generator
(:mod:`tests.serving.load`), each client waiting for its answer (which follows its group's commit)
before sending the next. Printed per client count: requests/s, latency p50 and p99, requests per
group commit, the server's CPU per request, and where a request's time went: the phases of the
server's ``Server-Timing`` header (:data:`~datanet_lab.serving.app.TIMING_PHASES`) and ``http``,
the rest of the latency the client saw (uvicorn's parsing and writing, the socket, the client).

Limits, measured in the same run, the same way: the load generator against a canned server that
answers at once (what the clients alone can send: the benchmark measures the server only well
below it) and against the real app under uvicorn over a service that answers at once (what the
HTTP stack alone can serve); the server, the clients and everything else share the machine's
cores. Also measured: one ``fsync`` of a small append next to the run's ledger (a commit makes
two: the receipts file's and SQLite's), an in-process economy over the same rows in groups of the
size the server committed at the target's client count (what HTTP and the group commit cost),
``GET /receipts/{id}`` on a sample, and, last, every committed receipt proven and checked offline
(:func:`~datanet_lab.serving.economy.check_receipts`). The targets, at 32 clients:
>= 1,000 requests/s and p99 <= 100 ms.

Timings are wall-clock on whatever else the machine runs. ``--results`` writes the figures
(:mod:`datanet_lab.results_files`): those of ``--clients``' first count under their plain names
(``requests_per_second``, ...), every count's as ``c{N}.name``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from datanet_lab import pipeline, results_files
from datanet_lab.serving import run_test_inputs
from datanet_lab.serving.app import TIMING_PHASES
from datanet_lab.serving.economy import InferenceEconomy, check_receipts
from datanet_lab.serving.server import BATCH_SIZE, MAX_WAIT_MS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))  # the server harness and load generator
# (by path: a package may install a top-level "tests" of its own, hiding the repository's)
from harness import Launched  # noqa: E402
from load import Answer, canned, instant, post, run_load  # noqa: E402

TARGET_CLIENTS, TARGET_RPS, TARGET_P99_MS = 32, 1000.0, 100.0
PHASES = (*TIMING_PHASES, "http")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phases_ms(answer: Answer) -> dict[str, float]:
    """Milliseconds per phase of :data:`PHASES`: the answer's ``Server-Timing`` and ``http``, the
    rest of its latency."""
    timing = answer.header("server-timing")
    if timing is None:
        raise SystemExit(f"an answer without a Server-Timing header: {answer.head!r}")
    spent = {name: float(value) for name, _, value in (part.partition(";dur=") for part in timing.split(", "))}
    return {**spent, "http": answer.latency * 1e3 - sum(spent.values())}


def capacity(port: int, requests: list[bytes], clients: int, repeats: int = 2) -> float:
    """The best requests/s of ``repeats`` loads of ``requests`` from ``clients`` clients."""
    return max(len(requests) / run_load(port, requests, clients)[1] for _ in range(repeats))


def fsync_ms(directory: Path, times: int = 30) -> float:
    """Median milliseconds of writing 100 bytes to the end of a file in ``directory`` and fsyncing it."""
    path, spent = directory / ".fsync-probe", []
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(times):
            start = time.perf_counter()
            os.write(descriptor, b"x" * 100)
            os.fsync(descriptor)
            spent.append(time.perf_counter() - start)
    finally:
        os.close(descriptor)
        path.unlink()
    return float(np.median(spent)) * 1e3


def reference(run_dir: Path, x: np.ndarray, batch: int) -> float:
    """Rows per second through an in-process economy, ``batch`` rows per serve + commit."""
    with InferenceEconomy(run_dir) as economy:
        start = time.perf_counter()
        for first in range(0, len(x), batch):
            economy.serve(x[first : first + batch])
            economy.commit()
        return len(x) / (time.perf_counter() - start)


def measure(server: Launched, requests: list[bytes], clients: int) -> tuple[dict[str, float], list[dict]]:
    """The figures of ``requests`` sent to ``server`` by ``clients`` clients, and every result."""
    port = int(server.url.rsplit(":", 1)[1])
    before = cpu_seconds(server.process.pid)
    answers, wall = run_load(port, requests, clients)
    cpu = cpu_seconds(server.process.pid) - before
    refused = [a for a in answers if a.status != 200]
    if refused:
        raise SystemExit(f"{len(refused)} requests failed, e.g. {refused[0].status}: {refused[0].body[:500]!r}")
    results = [r for a in answers for r in json.loads(a.body)["results"]]
    latencies = np.array([a.latency for a in answers]) * 1e3
    split = [phases_ms(a) for a in answers]
    figures = {"requests_per_second": len(answers) / wall, "rows_per_second": len(results) / wall,
               "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
               "requests_per_commit": len(answers) / len({r["batch_id"] for r in results}),
               "server_cpu_us": cpu / len(answers) * 1e6,
               **{f"{phase}_ms": float(np.mean([s[phase] for s in split])) for phase in PHASES}}
    return figures, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: a fresh default logreg run)")
    parser.add_argument("--clients", default="8,32,128", help="concurrent client counts, comma-separated")
    parser.add_argument("--requests", type=int, default=2000, help="requests per client count")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="the server's --batch-size")
    parser.add_argument("--max-wait-ms", type=float, default=MAX_WAIT_MS, help="the server's --max-wait-ms")
    parser.add_argument("--sample", type=int, default=100, help="receipts fetched over HTTP to time GET /receipts")
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    if not counts or min(counts) < 1 or max(counts) > args.requests:
        parser.error(f"--clients must be counts from 1 to --requests ({args.requests}), got {args.clients!r}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir
        if run_dir is None:
            start = time.perf_counter()
            run_dir = pipeline.open_run(str(Path(scratch) / "run"), model="logreg").directory
            pipeline.attribute(pipeline.open_run(str(run_dir), model="logreg"))
            print(f"built a default logreg run in {time.perf_counter() - start:.1f} s: {run_dir}")
        x = run_test_inputs(run_dir)
        requests = [post("/infer", json.dumps({"inputs": np.take(x, range(k * args.rows, (k + 1) * args.rows), axis=0,
                                                                   mode="wrap").tolist()}).encode())
                    for k in range(args.requests)]
        log = Path(scratch) / "server.log"
        with Launched(run_dir, log, "--batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms)) as server:
            port = int(server.url.rsplit(":", 1)[1])
            warm = run_load(port, requests[:64], 8)[0]  # torch's first calls, the first ledger pages
            sample_results = json.loads(warm[0].body)["results"]
            (Path(scratch) / "results.json").write_text(json.dumps(sample_results))
            size_before = server.head()["size"]
            found, limits, every = {}, {}, []
            with canned(len(warm[0].body)) as canned_server, instant(x.shape[1], Path(scratch) / "results.json") as app_only:
                for clients in counts:  # each limit measured next to the figure it bounds
                    limits[clients] = {"client_limit": capacity(canned_server.port, requests * 5, clients),
                                       "stack_limit": capacity(app_only.port, requests, clients)}
                    found[clients], results = measure(server, requests, clients)
                    every.extend(results)
            size_after = server.head()["size"]
            ids = [r["receipt_id"] for r in every]
            proof_times = []
            for index in np.random.default_rng(0).choice(len(ids), min(args.sample, len(ids)), replace=False):
                start = time.perf_counter()
                server.client.get(f"/receipts/{ids[index]}").raise_for_status()
                proof_times.append(time.perf_counter() - start)
            code = server.stop()
        if code != 0:
            raise SystemExit(f"the server exited with {code}: {log.read_text()}")
        one_fsync = fsync_ms(run_dir)
        print(f"HTTP, loopback: {args.requests} requests of {args.rows} row(s) per client count; server groups <= "
              f"{args.batch_size} requests, waiting <= {args.max_wait_ms} ms for more after taking those queued; "
              f"{os.cpu_count()} cores shared by server, clients and the machine's other load")
        header = f"{'clients':>7} {'requests/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'/commit':>7} {'CPU us':>6} " \
                 f"{'client limit':>12} {'ratio':>5} {'stack limit':>11} {'ratio':>5}"
        print(header)
        for clients, got in found.items():
            limit = limits[clients]
            print(f"{clients:>7} {got['requests_per_second']:>10,.0f} {got['p50_ms']:>7.1f} {got['p99_ms']:>7.1f} "
                  f"{got['requests_per_commit']:>7.1f} {got['server_cpu_us']:>6.0f} {limit['client_limit']:>12,.0f} "
                  f"{got['requests_per_second'] / limit['client_limit']:>5.3f} {limit['stack_limit']:>11,.0f} "
                  f"{got['requests_per_second'] / limit['stack_limit']:>5.2f}")
        print("where a request's time went (mean ms; server phases from its Server-Timing header, http the rest):")
        print(f"{'clients':>7} " + " ".join(f"{phase:>11}" for phase in PHASES))
        for clients, got in found.items():
            print(f"{clients:>7} " + " ".join(f"{got[f'{phase}_ms']:>11.2f}" for phase in PHASES))
        print(f"  one fsync of a small append on the run's disk: {one_fsync:.2f} ms (each commit makes two)")
        print(f"  columns: requests/s, latency, requests per group commit, the server's CPU per request; client limit: "
              f"the load generator against a canned server; stack limit: the app under uvicorn over a service that "
              f"answers at once; ratio: requests/s over the limit")
        print(f"ledger {size_before:,} -> {size_after:,} entries; GET /receipts/{{id}} on {len(proof_times)} receipts: "
              f"p50 {np.median(proof_times) * 1e3:.1f} ms, max {max(proof_times) * 1e3:.1f} ms")
        at_target = found.get(TARGET_CLIENTS, found[counts[0]])
        group = max(1, round(at_target["requests_per_commit"] * args.rows))
        direct = reference(run_dir, np.take(x, range(args.requests * args.rows), axis=0, mode="wrap"), group)
        print(f"reference: in-process economy, {group} rows per serve + commit: {direct:,.0f} rows/s; "
              f"HTTP / in-process = {at_target['rows_per_second'] / direct:.2f}")
        check = check_receipts(run_dir)
        print(f"receipts proven and checked offline: {check.checked:,} of {check.total:,}, "
              f"{'all OK' if check.ok else 'FAILURES: ' + '; '.join(check.failures)}")
        targets = {}
        if TARGET_CLIENTS in found:
            got = found[TARGET_CLIENTS]
            targets = {"rps_met": got["requests_per_second"] >= TARGET_RPS, "p99_met": got["p99_ms"] <= TARGET_P99_MS}
            print(f"target at {TARGET_CLIENTS} clients: >= {TARGET_RPS:,.0f} requests/s: "
                  f"{got['requests_per_second']:,.0f}, {'met' if targets['rps_met'] else 'missed'}; p99 <= "
                  f"{TARGET_P99_MS:.0f} ms: {got['p99_ms']:.1f} ms, {'met' if targets['p99_met'] else 'missed'}")
    if args.results:
        first = found[counts[0]]
        figures = {**{k: first[k] for k in ("p50_ms", "p99_ms", "requests_per_second", "rows_per_second",
                                            "requests_per_commit")},
                   **{f"c{c}.{k}": v for c, got in found.items() for k, v in {**got, **limits[c]}.items()},
                   "receipt_get_p50_ms": float(np.median(proof_times)) * 1e3, "fsync_ms": one_fsync,
                   "in_process_rows_per_second": direct, "receipts_checked": check.checked,
                   "receipts_total": check.total, "receipts_ok": check.ok,
                   **{f"c{TARGET_CLIENTS}.{k}": v for k, v in targets.items()}}
        results_files.write(args.results, figures, "python benchmarks/http_bench.py " + " ".join(sys.argv[1:]),
                            {k: v for k, v in vars(args).items() if k not in ("results", "run_dir")})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
