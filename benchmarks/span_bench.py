"""Span attribution speed against its targets, every figure and ratio measured in one run (not a test).

    .venv/bin/python benchmarks/span_bench.py [--sizes 1,10] [--generations 50] [--reference-generations 10]
                                              [--results docs/results/span_bench.json]

For each corpus size (millions of tokens; seeded Zipf token frequencies, exponent 1.1, over a
vocabulary of 4,096; documents of 150-250 tokens):

1. the index build (``attribution.build_span_index``: writing the corpus, infini-gram's indexer in a
   subprocess, the metadata and its SHA-256): seconds, the index's size on disk, the peak RSS of
   the largest process the build starts (the indexer and its Rust helpers: their ``VmHWM``, polled
   from /proc every 5 ms; ``getrusage(RUSAGE_CHILDREN)`` would report this benchmark's own RSS,
   which Linux charges to a child that execs from a vfork), and this process's peak RSS;
2. span attribution of seeded 200-token "generations" (four 25-token slices copied from random
   documents, each followed by 25 Zipf-random tokens) with ``min_len=8, max_count=1000``:
   milliseconds per generation (median after 3 warm-up queries) for the engine
   (``SpanIndex.spans``) and for the reference matcher (``ReferenceSpanMatcher.spans``, after its
   suffix array is built, on the first ``--reference-generations``), their ratio, and whether the
   two agree on every span.

First, the engine's fixed cost: milliseconds per generation on a 1,000-token index, where
the suffix-array search is negligible; the engine starts about three threads per query token
(the longest prefix at each start, each with a search thread per shard, then a count per span).

Ends with the targets: 10M tokens indexed in < 60 s, and < 20 ms per generation, each met or missed.
Timings are wall-clock on whatever else the machine runs: rerun on a quiet machine. ``--results``
writes the figures (:mod:`datanet_lab.results_files`) to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attribution import ReferenceSpanMatcher, SpanIndex, build_span_index
from datanet_lab import results_files

VOCAB, ZIPF, MIN_LEN, MAX_COUNT = 4096, 1.1, 8, 1000
GENERATION, PIECE = 200, 25
BUILD_TARGET_S, QUERY_TARGET_MS = 60.0, 20.0


def zipf_corpus(n_tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Documents of 150-250 Zipf-distributed token ids, ``n_tokens`` in all."""
    p = 1.0 / np.arange(1, VOCAB + 1) ** ZIPF
    stream = rng.choice(VOCAB, size=n_tokens, p=p / p.sum()).astype(np.uint16)
    cuts = np.cumsum(rng.integers(150, 251, size=n_tokens // 150 + 1))
    return np.split(stream, cuts[cuts < n_tokens])


def generations(documents: list[np.ndarray], count: int, rng: np.random.Generator) -> list[list[int]]:
    """``count`` generations: copied document slices alternating with Zipf-random tokens (half each)."""
    p = 1.0 / np.arange(1, VOCAB + 1) ** ZIPF
    out = []
    for _ in range(count):
        pieces = []
        for _ in range(GENERATION // (2 * PIECE)):
            document = documents[rng.integers(len(documents))]
            start = rng.integers(len(document) - PIECE + 1)
            pieces += [document[start:start + PIECE], rng.choice(VOCAB, size=PIECE, p=p / p.sum())]
        out.append(np.concatenate(pieces).astype(int).tolist())
    return out


class DescendantPeak:
    """Largest peak RSS (``VmHWM``, MB) of any descendant of this process seen while the block runs."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s, self.peak_mb, self._done = every_s, 0.0, threading.Event()

    def _poll(self) -> None:
        while not self._done.wait(self.every_s):
            parents = {}
            for entry in os.scandir("/proc"):
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (ValueError, OSError):  # not a process, or it has exited
                    continue
            descendants, grew = {os.getpid()}, True
            while grew:
                found = {pid for pid, parent in parents.items() if parent in descendants}
                grew = bool(found - descendants)
                descendants |= found
            for pid in descendants - {os.getpid()}:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        hwm = next((line for line in f if line.startswith("VmHWM:")), None)
                except OSError:
                    continue
                if hwm:
                    self.peak_mb = max(self.peak_mb, int(hwm.split()[1]) / 1024)

    def __enter__(self) -> DescendantPeak:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def per_query_ms(spans: Callable[[list[int], int, int], list], queries: list[list[int]], warm_up: int = 3) -> tuple[float, list]:
    """Median milliseconds of ``spans`` per query after ``warm_up`` untimed queries, and its answers."""
    for query in queries[:warm_up]:
        spans(query, MIN_LEN, MAX_COUNT)
    times, answers = [], []
    for query in queries:
        start = time.perf_counter()
        answers.append(spans(query, MIN_LEN, MAX_COUNT))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), answers


def bench(millions: float, n_generations: int, n_reference: int, seed: int, workdir: Path) -> dict[str, float]:
    """Print one corpus size's figures; return them (``build_s``, ``peak_mb``, ``engine_ms``, ``reference_ms``)."""
    rng = np.random.default_rng(seed)
    n_tokens = int(millions * 1_000_000)
    documents = zipf_corpus(n_tokens, rng)
    queries = generations(documents, n_generations, rng)

    start = time.perf_counter()
    with DescendantPeak() as children:
        index: SpanIndex = build_span_index(documents, workdir / f"index-{millions:g}m", vocab_size=VOCAB)
    build_s = time.perf_counter() - start
    disk_mb = sum(p.stat().st_size for p in index.directory.iterdir()) / 2**20
    print(f"span index build: {n_tokens / 1e6:g}M tokens in {len(documents):,} documents: {build_s:.2f} s, "
          f"{disk_mb:.1f} MB on disk, peak RSS {children.peak_mb:.0f} MB in the indexer's processes, "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB in this one so far")

    engine_ms, engine_spans = per_query_ms(index.spans, queries)
    print(f"span attribution: {engine_ms:.1f} ms per generation on {n_tokens / 1e6:g}M tokens "
          f"(engine, median of {len(queries)}, {statistics.mean(len(s) for s in engine_spans):.1f} spans each)")

    start = time.perf_counter()
    reference = ReferenceSpanMatcher(documents, vocab_size=VOCAB)
    reference_build_s = time.perf_counter() - start
    reference_ms, reference_spans = per_query_ms(reference.spans, queries[:n_reference])
    agree = reference_spans == engine_spans[:n_reference]
    print(f"reference matcher: suffix array in {reference_build_s:.2f} s, {reference_ms:.1f} ms per generation "
          f"(median of {n_reference}); engine speed-up {reference_ms / engine_ms:.1f}x; "
          f"spans agree on all {n_reference}: {'yes' if agree else 'NO'}")
    return {"build_s": build_s, "peak_mb": children.peak_mb, "engine_ms": engine_ms, "reference_ms": reference_ms,
            "agree": agree}


def engine_floor(n_generations: int, seed: int, workdir: Path) -> float:
    """Print and return the engine's milliseconds per generation on a 1,000-token index (its fixed cost)."""
    rng = np.random.default_rng(seed)
    documents = zipf_corpus(1000, rng)
    index = build_span_index(documents, workdir / "index-floor", vocab_size=VOCAB)
    ms, _ = per_query_ms(index.spans, generations(documents, n_generations, rng))
    print(f"engine fixed cost: {ms:.1f} ms per {GENERATION}-token generation on a 1,000-token index")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="corpus sizes in millions of tokens, comma-separated")
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--reference-generations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="span-bench-") as workdir:
        floor_ms = engine_floor(args.generations, args.seed, Path(workdir))
        results = {m: bench(m, args.generations, args.reference_generations, args.seed, Path(workdir)) for m in sizes}
    largest = max(sizes)
    build_s, query_ms = results[largest]["build_s"], results[largest]["engine_ms"]
    met = {True: "met", False: "missed"}
    print(f"targets on {largest:g}M tokens: indexed in < {BUILD_TARGET_S:g} s: {met[build_s < BUILD_TARGET_S]} "
          f"({build_s:.1f} s){'' if largest >= 10 else ' (the target is for 10M)'}; "
          f"< {QUERY_TARGET_MS:g} ms per generation: {met[query_ms < QUERY_TARGET_MS]} ({query_ms:.1f} ms)")
    if args.results:
        figures = {f"{m:g}M.{name}": value for m, found in results.items() for name, value in found.items()}
        figures |= {"floor_ms": floor_ms, "target.build_s": BUILD_TARGET_S, "target.query_ms": QUERY_TARGET_MS,
                    "target.build_met": build_s < BUILD_TARGET_S, "target.query_met": query_ms < QUERY_TARGET_MS,
                    "target.query_excess_ms": query_ms - QUERY_TARGET_MS}
        results_files.write(args.results, figures, "python benchmarks/span_bench.py " + " ".join(sys.argv[1:]),
                            {"sizes": sizes, "generations": args.generations,
                             "reference_generations": args.reference_generations, "seed": args.seed})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
