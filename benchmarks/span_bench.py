"""Span attribution speed against its targets, every figure and ratio measured in one run (not a test).

    .venv/bin/python benchmarks/span_bench.py [--sizes 1,10] [--generations 50] [--reference-generations 10]
                                              [--repeats 3] [--results docs/results/span_bench.json]

For each corpus size (millions of tokens; seeded Zipf token frequencies, exponent 1.1, over a
vocabulary of 4,096; documents of 150-250 tokens):

1. the index build (``attribution.build_span_index``: writing the corpus, infini-gram's indexer in a
   subprocess, the metadata and its SHA-256): seconds, the index's size on disk, the peak RSS of
   the largest process the build starts (the indexer and its Rust helpers: their ``VmHWM``, polled
   from /proc every 5 ms; ``getrusage(RUSAGE_CHILDREN)`` would report this benchmark's own RSS,
   which Linux charges to a child that execs from a vfork), and this process's peak RSS;
2. span attribution of seeded 200-token "generations" (four 25-token slices copied from random
   documents, each followed by 25 Zipf-random tokens) with ``min_len=8, max_count=1000``, on the
   same index files: milliseconds per generation (median over the generations after 3 warm-up
   queries, the best of ``--repeats`` such medians) for the ``vectorized`` engine (the default:
   :mod:`attribution.span_search`), one generation per call and all generations in one
   ``spans_batch`` call (per generation, best of ``--repeats``), for the ``infini_gram`` engine
   (``SpanIndex.spans``) and for the reference matcher (``ReferenceSpanMatcher.spans``, after its
   suffix array is built, on the first ``--reference-generations``); the vectorized engine's
   speed-up over infini-gram's; whether all of them find the same spans on every generation
   they answered (printed, and a figure).

First, the fixed cost of each table engine: milliseconds per generation on a 1,000-token index,
where the suffix-array search is negligible; infini-gram's engine starts about three threads per
query token (the longest prefix at each start, each with a search thread per shard, then a count
per span).

Ends with the targets on the largest size: 10M tokens indexed in < 60 s; <= 2 ms per generation
for the vectorized engine; >= 10x infini-gram's engine; the same spans everywhere: each met or
missed. Timings are wall-clock on whatever else the machine runs: rerun on a quiet machine.
``--results`` writes the figures (:mod:`datanet_lab.results_files`) to a JSON file.
"""

from __future__ import annotations

import argparse
import math
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
BUILD_TARGET_S, QUERY_TARGET_MS, SPEEDUP_TARGET = 60.0, 2.0, 10.0

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


def per_query_ms(spans: Callable[[list[int], int, int], list], queries: list[list[int]], repeats: int,
                 warm_up: int = 3) -> tuple[float, list]:
    """Milliseconds of ``spans`` per query, the best of ``repeats`` medians over ``queries`` after
    ``warm_up`` untimed queries; and its answers."""
    for query in queries[:warm_up]:
        spans(query, MIN_LEN, MAX_COUNT)
    medians = []
    for _ in range(repeats):
        times, answers = [], []
        for query in queries:
            start = time.perf_counter()
            answers.append(spans(query, MIN_LEN, MAX_COUNT))
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return 1000 * min(medians), answers


def batch_ms(index: SpanIndex, queries: list[list[int]], repeats: int) -> tuple[float, list]:
    """Milliseconds per query of one ``spans_batch`` call on all ``queries`` (best of ``repeats``), and its answers."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        answers = index.spans_batch(queries, MIN_LEN, MAX_COUNT)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(queries), answers


def bench(millions: float, n_generations: int, n_reference: int, repeats: int, seed: int,
          workdir: Path) -> dict[str, float]:
    """Print one corpus size's figures; return them (``build_s``, ``peak_mb``, ``vectorized_ms``, ...)."""
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

    vectorized = SpanIndex.open(index.directory, "vectorized")
    start = time.perf_counter()
    vectorized.spans([], MIN_LEN, MAX_COUNT)  # starts the engine: reads every SAMPLE-th suffix's key
    start_ms = 1000 * (time.perf_counter() - start)
    vectorized_ms, vectorized_spans = per_query_ms(vectorized.spans, queries, repeats)
    batch_per_query_ms, batch_spans = batch_ms(vectorized, queries, repeats)
    engine_ms, engine_spans = per_query_ms(SpanIndex.open(index.directory, "infini_gram").spans, queries, repeats)
    start = time.perf_counter()
    reference = ReferenceSpanMatcher(documents, vocab_size=VOCAB)
    reference_build_s = time.perf_counter() - start
    reference_ms, reference_spans = per_query_ms(reference.spans, queries[:n_reference], 1)
    agree = vectorized_spans == batch_spans == engine_spans and reference_spans == engine_spans[:n_reference]
    speedup = engine_ms / vectorized_ms
    print(f"span attribution on {n_tokens / 1e6:g}M tokens, ms per generation ({statistics.mean(map(len, engine_spans)):.1f} "
          f"spans each): vectorized {vectorized_ms:.2f} (started in {start_ms:.0f} ms), in one batch of {len(queries)} "
          f"{batch_per_query_ms:.2f}; infini-gram's engine {engine_ms:.1f} (vectorized speed-up {speedup:.1f}x); "
          f"reference matcher {reference_ms:.1f} (suffix array in {reference_build_s:.2f} s, first {n_reference})")
    print(f"  same spans on all {len(queries)} generations (vectorized one by one and batched, infini-gram's "
          f"engine; the reference on the first {n_reference}): {'yes' if agree else 'NO'}")
    return {"build_s": build_s, "peak_mb": children.peak_mb, "vectorized_ms": vectorized_ms,
            "vectorized_batch_ms": batch_per_query_ms, "vectorized_start_ms": start_ms, "engine_ms": engine_ms,
            "reference_ms": reference_ms, "speedup": speedup, "agree": agree}


def floors(n_generations: int, repeats: int, seed: int, workdir: Path) -> dict[str, float]:
    """Print and return each table engine's milliseconds per generation on a 1,000-token index (its fixed cost)."""
    rng = np.random.default_rng(seed)
    documents = zipf_corpus(1000, rng)
    index = build_span_index(documents, workdir / "index-floor", vocab_size=VOCAB)
    queries = generations(documents, n_generations, rng)
    found = {engine: per_query_ms(SpanIndex.open(index.directory, engine).spans, queries, repeats)[0]
             for engine in ("infini_gram", "vectorized")}
    print(f"fixed cost per {GENERATION}-token generation on a 1,000-token index: infini-gram's engine "
          f"{found['infini_gram']:.1f} ms, vectorized {found['vectorized']:.2f} ms")
    return {"floor_ms": found["infini_gram"], "vectorized_floor_ms": found["vectorized"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="corpus sizes in millions of tokens, comma-separated")
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--reference-generations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per engine; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="span-bench-") as workdir:
        fixed = floors(args.generations, args.repeats, args.seed, Path(workdir))
        results = {m: bench(m, args.generations, args.reference_generations, args.repeats, args.seed, Path(workdir))
                   for m in sizes}
    largest = max(sizes)
    found = results[largest]
    met = {
        "build": (found["build_s"] < BUILD_TARGET_S, f"indexed in < {BUILD_TARGET_S:g} s ({found['build_s']:.1f} s)"),
        "query": (found["vectorized_ms"] <= QUERY_TARGET_MS,
                  f"<= {QUERY_TARGET_MS:g} ms per generation, vectorized ({found['vectorized_ms']:.2f} ms)"),
        "speedup": (found["speedup"] >= SPEEDUP_TARGET,
                    f">= {SPEEDUP_TARGET:g}x infini-gram's engine ({found['speedup']:.1f}x)"),
        "agree": (all(r["agree"] for r in results.values()), "the same spans on every generation of every size"),
    }
    print(f"targets on {largest:g}M tokens{'' if largest >= 10 else ' (they are for 10M)'}: "
          + "; ".join(f"{text}: {'met' if ok else 'missed'}" for ok, text in met.values()))
    if args.results:
        figures = {f"{m:g}M.{name}": value for m, found in results.items() for name, value in found.items()}
        figures |= fixed | {"target.build_s": BUILD_TARGET_S, "target.query_ms": QUERY_TARGET_MS,
                            "target.speedup": SPEEDUP_TARGET} | {f"target.{name}_met": ok for name, (ok, _) in met.items()}
        results_files.write(args.results, figures, "python benchmarks/span_bench.py " + " ".join(sys.argv[1:]),
                            {"sizes": sizes, "generations": args.generations,
                             "reference_generations": args.reference_generations, "repeats": args.repeats,
                             "seed": args.seed})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
