"""HTTP serving figures on loopback (prints figures; not a test).

    .venv/bin/python benchmarks/http_bench.py [--run-dir DIR] [--clients 8] [--requests 2000]
                                              [--rows 1] [--batch-size 16] [--max-wait-ms 5]
                                              [--results docs/results/http_bench.json]

Serves a finished run (default: a fresh default logreg run in a temporary directory) with
``datanet-lab serve`` in a subprocess; ``--clients`` threads, each with its own httpx client,
send ``--requests`` ``POST /infer`` requests of ``--rows`` rows in all, each waiting for its
answer (which follows its batch's commit) before sending the next. Prints the request latency
(p50, p99), requests and rows per second, the mean requests per commit, the ledger's growth and
the latency of ``GET /receipts/{id}`` on a sample.

The reference, measured in the same run: the same rows through an in-process
:class:`~datanet_lab.serving.economy.InferenceEconomy` in micro-batches of the size the server
committed on average, one ``serve`` and ``commit`` each; the ratio is what HTTP, JSON and the
group commit's waiting cost. Last, every committed receipt of the run is proven and checked
offline (:func:`~datanet_lab.serving.economy.check_receipts`).

Timings are wall-clock on whatever else the machine runs; the server and the clients share its cores.
``--results`` writes the figures (:mod:`datanet_lab.results_files`) to a JSON file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from datanet_lab import pipeline, results_files
from datanet_lab.serving import run_test_inputs
from datanet_lab.serving.economy import InferenceEconomy, check_receipts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the tests' server harness
from tests.serving.harness import Launched  # noqa: E402


def load(url: str, x: np.ndarray, clients: int, requests: int, rows: int) -> tuple[np.ndarray, list[dict], float]:
    """Latencies (s) of ``requests`` requests of ``rows`` rows (cycled from ``x``) sent by
    ``clients`` threads, every result, and the wall time."""
    latencies: list[float] = []
    results: list[dict] = []
    failures: list[str] = []

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as own:
            for k in range(worker, requests, clients):
                body = {"inputs": np.take(x, range(k * rows, (k + 1) * rows), axis=0, mode="wrap").tolist()}
                start = time.perf_counter()
                answer = own.post("/infer", json=body)
                latencies.append(time.perf_counter() - start)
                if answer.status_code != 200:
                    failures.append(answer.text)
                    return
                results.extend(answer.json()["results"])

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return np.array(latencies), results, wall


def reference(run_dir: Path, x: np.ndarray, batch: int) -> float:
    """Rows per second through an in-process economy, ``batch`` rows per serve + commit."""
    with InferenceEconomy(run_dir) as economy:
        start = time.perf_counter()
        for first in range(0, len(x), batch):
            economy.serve(x[first : first + batch])
            economy.commit()
        return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: a fresh default logreg run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--batch-size", type=int, default=16, help="the server's --batch-size")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    parser.add_argument("--sample", type=int, default=200, help="receipts fetched over HTTP to time GET /receipts")
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir
        if run_dir is None:
            start = time.perf_counter()
            run_dir = pipeline.open_run(str(Path(scratch) / "run"), model="logreg").directory
            pipeline.attribute(pipeline.open_run(str(run_dir), model="logreg"))
            print(f"built a default logreg run in {time.perf_counter() - start:.1f} s: {run_dir}")
        x = run_test_inputs(run_dir)
        with Launched(run_dir, Path(scratch) / "server.log", "--batch-size", str(args.batch_size), "--max-wait-ms",
                      str(args.max_wait_ms)) as server:
            size_before = server.head()["size"]
            latencies, results, wall = load(server.url, x, args.clients, args.requests, args.rows)
            size_after = server.head()["size"]
            ids = [r["receipt_id"] for r in results]
            sample = np.random.default_rng(0).choice(len(ids), min(args.sample, len(ids)), replace=False)
            proof_times = []
            for index in sample:
                start = time.perf_counter()
                server.client.get(f"/receipts/{ids[index]}").raise_for_status()
                proof_times.append(time.perf_counter() - start)
            code = server.stop()
        if code != 0:
            raise SystemExit(f"the server exited with {code}: {(Path(scratch) / 'server.log').read_text()}")
        batches = len({r["batch_id"] for r in results})
        per_commit = args.requests / batches
        rows_per_s = len(results) / wall
        print(f"HTTP: {args.clients} clients, {args.requests} requests of {args.rows} row(s), server batch <= "
              f"{args.batch_size} requests or {args.max_wait_ms} ms")
        print(f"  latency p50 {np.percentile(latencies, 50) * 1e3:.1f} ms, p99 {np.percentile(latencies, 99) * 1e3:.1f} ms; "
              f"{args.requests / wall:,.0f} requests/s, {rows_per_s:,.0f} rows/s")
        print(f"  {batches} commits ({per_commit:.1f} requests each); ledger {size_before:,} -> {size_after:,} entries")
        print(f"  GET /receipts/{{id}} on {len(proof_times)} receipts: p50 {np.median(proof_times) * 1e3:.1f} ms, "
              f"max {max(proof_times) * 1e3:.1f} ms ({len(ids):,} receipts in the file)")
        batch_rows = max(1, round(per_commit * args.rows))
        direct = reference(run_dir, np.take(x, range(len(results)), axis=0, mode="wrap"), batch_rows)
        print(f"reference: in-process economy, {batch_rows} rows per serve + commit: {direct:,.0f} rows/s; "
              f"HTTP / in-process = {rows_per_s / direct:.2f}")
        check = check_receipts(run_dir)
        print(f"receipts proven and checked offline: {check.checked:,} of {check.total:,}, "
              f"{'all OK' if check.ok else 'FAILURES: ' + '; '.join(check.failures)}")
    if args.results:
        figures = {"p50_ms": np.percentile(latencies, 50) * 1e3, "p99_ms": np.percentile(latencies, 99) * 1e3,
                   "requests_per_second": args.requests / wall, "rows_per_second": rows_per_s,
                   "requests_per_commit": per_commit, "receipt_get_p50_ms": float(np.median(proof_times)) * 1e3,
                   "in_process_rows_per_second": direct, "receipts_checked": check.checked,
                   "receipts_total": check.total, "receipts_ok": check.ok}
        results_files.write(args.results, figures, "python benchmarks/http_bench.py " + " ".join(sys.argv[1:]),
                            {k: v for k, v in vars(args).items() if k not in ("results", "run_dir")})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
