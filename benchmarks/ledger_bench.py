"""Ledger speed figures against the ledger's speed targets (prints figures; not a test).

    .venv/bin/python benchmarks/ledger_bench.py [--batches 20] [--verify-entries 100000] [--tree-leaves 1000000] [--results PATH]

* signed appends per second with ``synchronous=FULL`` on disk, one entry per transaction and in
  batches of 1,000, against the limit that signing sets: before each batch is appended, the same
  statements are signed alone with the same threads (``ledger.keys.sign_many``, as the append
  signs them). Target: batched appends at >= 0.7 of that signing rate, on the append's threads
  (``ledger.keys.SIGN_THREADS``) and, beside it, on one thread; then what SQLite alone takes to
  write the same rows, Merkle nodes and heads batch by batch, which bounds the ratio. The line
  ``appends: <ratio> of the signing rate`` gives the ratio on the append's threads;
* verification of a 100k-entry ledger (SQLite integrity check, chain, Merkle root, every head,
  signature and payload schema) on 1 and 2 processes (target: < 6 s on 2 cores), and what a
  writer pays once to reopen it (the integrity check, then the payout rules' scan at its first
  append);
* inclusion and consistency proofs from the stored Merkle state of a 1M-leaf tree (target: an
  inclusion proof in < 1 ms with ceil(log2 n) hashes), against recomputing from all leaf hashes.

``--results PATH`` also writes the figures (:mod:`datanet_lab.results_files`).

The first line calibrates the machine: Ed25519 signs and verifies per second on one core with
libsodium (PyNaCl, what ``ledger/`` uses) and with OpenSSL (``cryptography``, the reference, which
verified 9,600/s on the machine the 6 s target was set on). Signing bounds the appends, verifying
the verification.

Timings are wall-clock on whatever else the machine is running: rerun on a quiet machine. Beside
the batched appends (and the signing and SQLite they are compared with) and each verification
stands the CPU time they took (this process, its signing
threads and its worker processes): a busy machine inflates wall time far more than CPU time, and on
an idle one a 2-process verification takes about (CPU time + the serial part) / 2.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from ledger import Keystore, Ledger, canonical_json, fixed_clock, keys, merkle, store, tree, verify
from ledger.encoding import statement_bytes
from ledger.store import connect


def calibration(samples: int = 3000) -> dict[str, float]:
    """Raw Ed25519 speed of this machine, one core, libsodium (ledger/) and OpenSSL (the reference)."""
    seed, message = b"\x01" * 32, b"x" * 200
    sodium, openssl = SigningKey(seed), Ed25519PrivateKey.from_private_bytes(seed)
    sodium_public, openssl_public = sodium.verify_key, openssl.public_key()
    signature = sodium.sign(message).signature
    assert signature == openssl.sign(message)  # Ed25519 is deterministic: the same bytes from both
    libraries = {
        "libsodium (PyNaCl, used by ledger/)": (lambda: sodium.sign(message), lambda: sodium_public.verify(message, signature)),
        "OpenSSL (cryptography, the reference)": (lambda: openssl.sign(message), lambda: openssl_public.verify(signature, message)),
    }
    rates = {name: (_per_second(signs, samples), _per_second(verifies, samples)) for name, (signs, verifies) in libraries.items()}
    figures = "; ".join(f"{name} {signs:,.0f} signs/s, {verifies:,.0f} verifies/s" for name, (signs, verifies) in rates.items())
    sodium_verifies = rates["libsodium (PyNaCl, used by ledger/)"][1]
    print(f"calibration, one core, Ed25519: {figures} (the machine of the 6 s target: 9,600 verifies/s with OpenSSL); "
          f"100k libsodium verifies alone on 2 cores: {100_000 / sodium_verifies / 2:.1f} s")
    (sodium_signs, _), (openssl_signs, openssl_verifies) = rates.values()
    return {"calibration.libsodium_signs_per_s": sodium_signs, "calibration.libsodium_verifies_per_s": sodium_verifies,
            "calibration.openssl_signs_per_s": openssl_signs, "calibration.openssl_verifies_per_s": openssl_verifies}


def _per_second(operation: Callable[[], object], samples: int) -> float:
    start = time.perf_counter()
    for _ in range(samples):
        operation()
    return samples / (time.perf_counter() - start)


def _book(folder: Path, name: str) -> Ledger:
    book = Ledger(folder / name, keystore=Keystore(folder / "keys", seed=b"bench"), clock=fixed_clock())
    book.register("c0", "contributor")
    return book


APPEND_LIMIT = 0.7
"""Batched appends per second, as a fraction of the signing rate of the same statements on the same threads."""


def _records(batch: int) -> list[tuple[str, str, dict[str, str]]]:
    return [("contribution", "c0", {"sample_id": f"s{batch}-{i}", "content_hash": "ab" * 32}) for i in range(1000)]


def appends(folder: Path, single: int, batches: int) -> dict[str, float]:
    """One-entry transactions, then batches of 1,000 against signing the same statements alone, on
    the append's threads and on one; returns the figures."""
    with _book(folder, "single.db") as book:
        start = time.perf_counter()
        for i in range(single):
            book.append("contribution", "c0", {"sample_id": f"s{i}", "content_hash": "ab" * 32})
        one = single / (time.perf_counter() - start)
    print(f"signed appends, synchronous=FULL, one per transaction: {one:,.0f}/s ({single} appends)")
    figures = {"appends.single_per_s": one}
    for threads in dict.fromkeys((keys.SIGN_THREADS, 1)):
        figures |= _batched(folder, batches, threads)
    figures |= _sqlite_alone(folder / f"batched-{keys.SIGN_THREADS}.db", folder / "sqlite-alone.db",
                             figures[f"appends.{keys.SIGN_THREADS}_threads.sign_ms_per_batch"],
                             figures[f"appends.{keys.SIGN_THREADS}_threads.sign_cpu_ms_per_batch"])
    ratio = figures[f"appends.{keys.SIGN_THREADS}_threads.ratio"]
    print(f"appends: {ratio:.2f} of the signing rate (batches of 1,000 on {keys.SIGN_THREADS} signing thread(s), the "
          f"signing rate measured in this run on as many) — limit {APPEND_LIMIT}: {'met' if ratio >= APPEND_LIMIT else 'MISSED'}")
    return figures | {"appends.ratio": ratio, "appends.met": ratio >= APPEND_LIMIT}


def _batched(folder: Path, batches: int, threads: int) -> dict[str, float]:
    """``batches`` appends of 1,000 entries on ``threads`` signing threads, each after signing its
    statements alone on as many; rates from the summed times, CPU from this process's threads."""
    patched, keys.SIGN_THREADS = keys.SIGN_THREADS, threads
    try:
        with _book(folder, f"batched-{threads}.db") as book:
            key = Keystore(folder / "keys", seed=b"bench").key("c0")  # the book's key of c0
            book.append_many(_records(-1))  # warm-up: the first batch also creates the tree's first nodes
            sign_s = append_s = sign_cpu = append_cpu = 0.0
            for b in range(batches):
                records = _records(b)
                statements = [(key, statement_bytes(k, a, canonical_json(p).decode())) for k, a, p in records]
                start, cpu = time.perf_counter(), _cpu_seconds()
                keys.sign_many(statements)
                sign_s, sign_cpu = sign_s + time.perf_counter() - start, sign_cpu + _cpu_seconds() - cpu
                start, cpu = time.perf_counter(), _cpu_seconds()
                book.append_many(records)
                append_s, append_cpu = append_s + time.perf_counter() - start, append_cpu + _cpu_seconds() - cpu
    finally:
        keys.SIGN_THREADS = patched
    n = batches * 1000
    print(f"signed appends, synchronous=FULL, batches of 1,000 on {threads} signing thread(s): {n / append_s:,.0f}/s "
          f"({append_cpu / batches * 1000:.0f} CPU-ms a batch); the same statements signed alone on as many: "
          f"{n / sign_s:,.0f}/s ({sign_cpu / batches * 1000:.0f} CPU-ms a batch): {sign_s / append_s:.2f} of the signing rate "
          f"({sign_cpu / append_cpu:.2f} in CPU time)")
    prefix = f"appends.{threads}_threads"
    return {f"{prefix}.per_s": n / append_s, f"{prefix}.signs_per_s": n / sign_s, f"{prefix}.ratio": sign_s / append_s,
            f"{prefix}.cpu_ratio": sign_cpu / append_cpu, f"{prefix}.sign_ms_per_batch": sign_s / batches * 1000,
            f"{prefix}.sign_cpu_ms_per_batch": sign_cpu / batches * 1000, f"{prefix}.append_cpu_ms_per_batch": append_cpu / batches * 1000}


def _sqlite_alone(written: Path, fresh: Path, sign_ms: float, sign_cpu_ms: float) -> dict[str, float]:
    """The batches of the ledger ``written`` by :func:`_batched` (entries, the Merkle nodes each
    completed, its head) written again by SQLite alone into ``fresh``, with the ledger's schema and
    pragmas, one ``synchronous=FULL`` transaction a batch (the first, the warm-up, untimed); with
    ``sign_ms`` and ``sign_cpu_ms`` (signing one batch), the ratio appends would reach were nothing
    else to be done."""
    source = connect(written)
    entries = source.execute(f"SELECT {store.COLUMNS} FROM entries ORDER BY seq").fetchall()
    heads = source.execute("SELECT size, root, timestamp, signature FROM heads ORDER BY size").fetchall()
    nodes: list[list[tuple[int, bytes]]] = [[] for _ in heads]
    for node, digest in source.execute("SELECT id, hash FROM tree ORDER BY id"):
        level, index = node >> 40, node & ((1 << 40) - 1)
        nodes[(((index + 1) << level) - 1) // 1000].append((node, digest))  # the batch of the node's last leaf
    source.close()
    conn = connect(fresh)
    conn.executescript(store.SCHEMA)
    seconds = cpu = 0.0
    for b, head in enumerate(heads):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT INTO entries ({store.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entries[b * 1000 : (b + 1) * 1000])
        conn.executemany("INSERT INTO tree (id, hash) VALUES (?, ?)", nodes[b])
        conn.execute("INSERT INTO heads VALUES (?, ?, ?, ?)", head)
        conn.execute("COMMIT")
        if b:
            seconds, cpu = seconds + time.perf_counter() - start, cpu + _cpu_seconds() - cpu_start
    conn.close()
    sqlite_ms, sqlite_cpu_ms = (seconds / (len(heads) - 1) * 1000, cpu / (len(heads) - 1) * 1000)
    bound, cpu_bound = sign_ms / (sign_ms + sqlite_ms), sign_cpu_ms / (sign_cpu_ms + sqlite_cpu_ms)
    print(f"SQLite alone writing the same rows, Merkle nodes and heads, one synchronous=FULL transaction a batch: "
          f"{sqlite_ms:.1f} ms ({sqlite_cpu_ms:.0f} CPU-ms) a batch, against {sign_ms:.1f} ms ({sign_cpu_ms:.0f} CPU-ms) "
          f"signing it: with nothing else to do, appends would reach {bound:.2f} of the signing rate ({cpu_bound:.2f} in CPU time)")
    return {"appends.sqlite_ms_per_batch": sqlite_ms, "appends.sqlite_cpu_ms_per_batch": sqlite_cpu_ms,
            "appends.sqlite_bound": bound, "appends.sqlite_cpu_bound": cpu_bound}


def verification(folder: Path, n: int) -> dict[str, float]:
    with _book(folder, "verify.db") as book:
        for b in range(0, n, 1000):
            book.append_many([("contribution", "c0", {"sample_id": f"s{i}", "content_hash": "ab" * 32}) for i in range(b, min(n, b + 1000))])
    start = time.perf_counter()
    with _book(folder, "verify.db") as book:
        opened = time.perf_counter() - start
        book.append("contribution", "c0", {"sample_id": "reopened", "content_hash": "ab" * 32})
        first = time.perf_counter() - start - opened
    heads, n = -(-n // 1000) + 1, n + 1
    print(f"a writer reopening the {n - 1:,}-entry ledger: {opened:.2f} s (SQLite integrity check), then "
          f"{first:.2f} s for its first append (payout rules read from the log)")
    figures = {"reopen.integrity_check_s": opened, "reopen.first_append_s": first}
    for workers in (1, 2):
        start, cpu = time.perf_counter(), _cpu_seconds()
        report = verify(folder / "verify.db", workers=workers)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        assert report.ok and report.entries == n, report
        verdict = f" — target < 6 s on 2 cores: {'met' if seconds < 6 else 'MISSED'} ({seconds / 6:.2f}x the target)" if workers == 2 and n >= 100_000 else ""
        print(f"verify {n:,} entries (integrity check, chain, Merkle root, {heads} heads, every signature and "
              f"schema) on {workers} process(es): {seconds:.2f} s ({cpu:.2f} CPU-s){verdict}")
        figures[f"verify.{workers}_processes_s"] = seconds
    return figures


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    return sum(usage.ru_utime + usage.ru_stime for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def proofs(folder: Path, n: int, samples: int = 1000) -> dict[str, float]:
    conn = connect(folder / "tree.db")
    conn.executescript(tree.SCHEMA)
    conn.execute("PRAGMA synchronous=OFF")  # building the fixture only; the proofs below only read
    leaves = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    compact = merkle.CompactRange()
    conn.execute("BEGIN")
    for chunk in range(0, n, 100_000):
        tree.store_nodes(conn, (node for leaf in leaves[chunk : chunk + 100_000] for node in compact.append(leaf)))
    conn.execute("COMMIT")
    root = compact.root()
    rng = random.Random(0)
    indices = [rng.randrange(n) for _ in range(samples)]
    start = time.perf_counter()
    paths = [tree.inclusion_proof(conn, i, n) for i in indices]
    per_proof = (time.perf_counter() - start) / samples * 1000
    assert all(merkle.verify_inclusion(i.to_bytes(8, "big"), i, n, p, root) for i, p in zip(indices, paths))
    sizes = {len(p) for p in paths}
    start = time.perf_counter()
    consistency = [tree.consistency_proof(conn, rng.randrange(1, n), n) for _ in range(samples)]
    per_consistency = (time.perf_counter() - start) / samples * 1000
    start = time.perf_counter()
    merkle.inclusion_proof_from_hashes(leaves, indices[0])
    naive = (time.perf_counter() - start) * 1000
    print(f"inclusion proof, {n:,}-leaf tree stored in SQLite: {per_proof:.3f} ms each (mean of {samples}), "
          f"{min(sizes)}-{max(sizes)} hashes (ceil(log2 n) = {math.ceil(math.log2(n))}) — target < 1 ms: "
          f"{'met' if per_proof < 1 else 'MISSED'}; recomputing from all leaf hashes instead: {naive:.0f} ms "
          f"({naive / per_proof:,.0f}x slower)")
    print(f"consistency proof, same tree: {per_consistency:.3f} ms each, up to {max(len(p) for p in consistency)} hashes")
    conn.close()
    return {"proofs.inclusion_ms": per_proof, "proofs.consistency_ms": per_consistency, "proofs.naive_ms": naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=500, help="one-entry transactions to time")
    parser.add_argument("--batches", type=int, default=20, help="1,000-entry batches to time")
    parser.add_argument("--verify-entries", type=int, default=100_000)
    parser.add_argument("--tree-leaves", type=int, default=1_000_000)
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as folder:  # on disk, not tmpfs
        figures = calibration()
        figures |= appends(Path(folder), args.single, args.batches)
        figures |= verification(Path(folder), args.verify_entries)
        figures |= proofs(Path(folder), args.tree_leaves)
    if args.results:
        from datanet_lab import results_files  # numpy and pandas, no ML stack; only to write the file

        results_files.write(args.results, figures, "python benchmarks/ledger_bench.py " + " ".join(sys.argv[1:]),
                            {"single": args.single, "batches": args.batches, "verify_entries": args.verify_entries,
                             "tree_leaves": args.tree_leaves, "sign_threads": keys.SIGN_THREADS, "limit": APPEND_LIMIT})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
