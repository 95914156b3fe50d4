"""Benchmark: our FastTracIn against Captum's TracInCP, and a 100k × 10k streamed run.

1. digits (1437 train / 360 test, stratified split seed 0), MLP 64-128-10 trained by SGD with 5
   checkpoints; both methods over all layers on the same checkpoints. On 1 and then 2 torch
   threads: 5 runs, each timing Captum's fast mode and then FastTracIn (``fit`` + ``scores``, after
   a warm-up call of each); the speedup of a run is Captum's seconds over FastTracIn's, and the
   limit is 20x for the median of the 5 runs (the minimum printed beside it, and the median in CPU
   time, which a busy machine distorts less on one thread). Then, once: the max
   relative difference, scoring again on fitted attributors, and the achieved GFLOP/s of
   FastTracIn's heavy phase alone (the Gram products, gradient factors computed beforehand; best
   of 5) vs a plain ``torch.matmul`` of the same shape, measured in the same run.
2. 100k train × 10k test synthetic features on the same architecture, streamed into
   per-contributor sums (``--memmap`` also writes a float16 memmap) in a fresh process: seconds
   and peak RSS.

Prints a final line ``tracin speedup vs captum: <median>x ...`` per thread count and the verdict.
Usage: ``python benchmarks/attribution_bench.py [--large-train 100000] [--large-test 10000]
[--memmap] [--quick] [--threads 1 2] [--results PATH]`` (``--quick`` skips part 2; ``--results``
writes the figures with :mod:`datanet_lab.results_files`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from attribution import AttributionTask, CaptumTracIn, FastTracIn, Float16Memmap, GroupSums
from datanet.models import Standardize, load_checkpoint, save_checkpoint
from datanet_lab import results_files

HIDDEN, EPOCHS, LR = 128, 5, 0.05
RUNS, LIMIT = 5, 20.0
"""Runs per thread count, and the least median speedup over Captum's fast mode that meets the target."""


def mlp(train_x: torch.Tensor, n_classes: int) -> nn.Sequential:
    return nn.Sequential(Standardize.fit(train_x), nn.Linear(train_x.shape[1], HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, n_classes))


def train_checkpoints(x: torch.Tensor, y: torch.Tensor, n_classes: int, directory: Path) -> tuple[nn.Module, list[Path]]:
    """SGD (batch 32, lr 0.05) with a checkpoint per epoch."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = mlp(x, n_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    order_rng = torch.Generator().manual_seed(0)
    paths = []
    for epoch in range(1, EPOCHS + 1):
        for index in torch.randperm(len(x), generator=order_rng).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
        paths.append(save_checkpoint(model, directory, epoch, LR))
    return model, paths


def gram_width(model: nn.Module) -> int:
    """Σ over Linear layers of (d_in + 1) + d_out: the inner dimension of the Gram products."""
    return sum(m.in_features + 1 + m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``fns``, called in turn (one round calls each once)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seen in zip(fns, times):
            start = time.perf_counter()
            fn()
            seen.append(time.perf_counter() - start)
    return [min(seen) for seen in times]


def gram_phase_gflops(tracin: FastTracIn, task: AttributionTask, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """GFLOP/s of FastTracIn's heavy phase alone: the Gram products ``GradientFactors.dot`` of the
    whole train set against the whole test set at every checkpoint, factors computed beforehand."""
    pairs = [(tracin.factors(task.train_x, task.train_y, t), tracin.factors(test_x, test_y, t, test=True))
             for t in range(len(task.checkpoints))]
    seconds = best_seconds(lambda: [train.dot(test) for train, test in pairs])
    return 2 * len(task.train_x) * len(test_x) * gram_width(task.model) * len(pairs) / seconds / 1e9


def matmul_gflops(n: int, k: int, m: int) -> float:
    """GFLOP/s of a plain ``torch.matmul`` of ``(n, k) @ (k, m)`` float32."""
    a, b = torch.randn(n, k), torch.randn(k, m)
    return 2 * n * k * m / best_seconds(lambda: torch.matmul(a, b)) / 1e9


def speedups(task: AttributionTask, test_x: torch.Tensor, test_y: torch.Tensor, runs: int = RUNS
             ) -> tuple[list[float], list[float], list[float], list[float]]:
    """Captum's and FastTracIn's seconds (``fit`` + ``scores``) in each of ``runs`` runs, one of each
    back to back after a warm-up call of each, each run's speedup (Captum's seconds over
    FastTracIn's) and its speedup in CPU time (this process, all threads)."""
    captum = lambda: CaptumTracIn().fit(task).scores(test_x, test_y)
    fast = lambda: FastTracIn().fit(task).scores(test_x, test_y)
    captum(), fast()
    captum_s, fast_s, cpu = [], [], []
    for _ in range(runs):
        spent = []
        for fn, seen in ((captum, captum_s), (fast, fast_s)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            seen.append(time.perf_counter() - start)
            spent.append(time.process_time() - start_cpu)
        cpu.append(spent[0] / spent[1])
    return captum_s, fast_s, [c / f for c, f in zip(captum_s, fast_s)], cpu


def digits_task(directory: Path) -> tuple[AttributionTask, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    tr_x, te_x, tr_y, te_y = train_test_split(digits.data.astype(np.float32), digits.target, test_size=0.2,
                                              stratify=digits.target, random_state=0)
    train_x, train_y = torch.from_numpy(tr_x), torch.from_numpy(tr_y)
    model, paths = train_checkpoints(train_x, train_y, 10, directory)
    return AttributionTask(model, train_x, train_y, paths, load_checkpoint), torch.from_numpy(te_x), torch.from_numpy(te_y)


def compare_with_captum(directory: Path, threads: list[int]) -> dict[str, float | bool]:
    """The speedup over Captum's fast mode on each thread count, then the other digits figures;
    returns the figures."""
    task, test_x, test_y = digits_task(directory)
    reference = CaptumTracIn().fit(task)
    if reference.mode != "sample_wise":
        raise RuntimeError(f"CaptumTracIn chose its {reference.mode!r} mode; this benchmark compares with Captum's fast mode")
    print(f"digits MLP 64-{HIDDEN}-10, {len(task.train_x)} train x {len(test_x)} test, {len(task.checkpoints)} checkpoints, "
          "all layers; captum TracInCP in its fast mode (sample_wise_grads_per_batch=True, exact here: only Linear layers train)")
    figures: dict[str, float | bool] = {}
    for n in threads:
        torch.set_num_threads(n)
        captum_s, fast_s, ratios, cpu = speedups(task, test_x, test_y)
        median = statistics.median(ratios)
        figures |= {f"speedup.{n}_threads.median": median, f"speedup.{n}_threads.min": min(ratios),
                    f"speedup.{n}_threads.cpu_median": statistics.median(cpu),
                    f"captum_seconds.{n}_threads": statistics.median(captum_s),
                    f"fast_tracin_ms.{n}_threads": 1000 * statistics.median(fast_s)}
        print(f"  {n} thread(s), {RUNS} runs (fit + scores, Captum then FastTracIn): Captum {statistics.median(captum_s):.3f} s, "
              f"FastTracIn {1000 * statistics.median(fast_s):.1f} ms (medians); speedup median {median:.1f}x, min {min(ratios):.1f}x "
              f"(runs: {', '.join(f'{r:.1f}' for r in ratios)}; in CPU time median {statistics.median(cpu):.1f}x) — "
              f"limit {LIMIT:.0f}x: {'met' if median >= LIMIT else 'MISSED'}")
    captum = reference.scores(test_x, test_y)
    tracin = FastTracIn().fit(task)
    fast = tracin.scores(test_x, test_y)
    rel = np.abs(fast - captum).max() / np.abs(captum).max()
    # A fitted attributor scoring again (more test samples against the same training set): what
    # does not depend on the test set (checkpoints, FastTracIn's training-set factors) is reused.
    captum_again_s, fast_again_s = interleaved_best([lambda: reference.scores(test_x, test_y),
                                                     lambda: tracin.scores(test_x, test_y)], repeats=5)
    width = gram_width(task.model)
    print(f"  on {torch.get_num_threads()} thread(s): max |fast - captum| / max |captum|: {rel:.2e}; scores again on the fitted "
          f"attributors (best of 5, interleaved): captum {captum_again_s:.3f} s, FastTracIn {fast_again_s:.3f} s: "
          f"{captum_again_s / fast_again_s:.1f}x")
    gram = gram_phase_gflops(tracin, task, test_x, test_y)
    plain = matmul_gflops(len(task.train_x), width, len(test_x))
    n_params = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    print(f"  FastTracIn heavy phase (Gram products, {len(task.checkpoints)} checkpoints): {gram:.1f} GFLOP/s; plain torch.matmul "
          f"({len(task.train_x)}x{width} @ {width}x{len(test_x)}) in this run: {plain:.1f} GFLOP/s ({gram / plain:.2f} of it); "
          f"as dense per-sample gradients ({len(task.train_x)}x{n_params} @ {n_params}x{len(test_x)}) that is "
          f"{gram * n_params / width:.0f} GFLOP/s-equivalent")
    return figures | {"max_relative_difference": f"{rel:.1e}", "met": all(figures[f"speedup.{n}_threads.median"] >= LIMIT for n in threads)}


def large_run(n_train: int, n_test: int, memmap: bool, directory: str) -> tuple[float, float, float]:
    """Seconds, peak RSS (MiB) and a checksum of a streamed run; meant for a fresh process."""
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(n_train, 64, generator=g), torch.randn(n_test, 64, generator=g)
    train_y, test_y = torch.randint(0, 10, (n_train,), generator=g), torch.randint(0, 10, (n_test,), generator=g)
    model, paths = train_checkpoints(train_x[:2000], train_y[:2000], 10, Path(directory))
    tracin = FastTracIn().fit(AttributionTask(model, train_x, train_y, paths, load_checkpoint))
    sums = GroupSums(np.arange(n_train) % 100, 100, n_test)
    f16 = Float16Memmap(Path(directory) / "scores.f16", (n_train, n_test)) if memmap else None

    def sink(start: int, block: np.ndarray) -> None:
        sums(start, block)
        if f16 is not None:
            f16(start, block)

    start = time.perf_counter()
    tracin.stream(test_x, test_y, sink)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, float(sums.totals.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-train", type=int, default=100_000)
    parser.add_argument("--large-test", type=int, default=10_000)
    parser.add_argument("--memmap", action="store_true", help="also write the float16 memmap")
    parser.add_argument("--quick", action="store_true", help="only the digits comparison (skip the large run)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to compare on (default 1 2)")
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        figures = compare_with_captum(Path(tmp), args.threads)
        if not args.quick:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                seconds, rss, _ = pool.submit(large_run, args.large_train, args.large_test, args.memmap, tmp).result()
            sink = "per-contributor sums + float16 memmap" if args.memmap else "100 per-contributor sums"
            print(f"{args.large_train} train x {args.large_test} test, 5 checkpoints, streamed into {sink}: "
                  f"{seconds:.1f} s, peak RSS {rss:.0f} MiB (targets < 120 s, < 2048 MiB)")
            figures |= {"large.seconds": seconds, "large.peak_rss_mib": rss}
    speedup = "; ".join(f"{n} thread(s) median {figures[f'speedup.{n}_threads.median']:.1f}x, min {figures[f'speedup.{n}_threads.min']:.1f}x"
                        for n in args.threads)
    print(f"tracin speedup vs captum: {speedup} — limit {LIMIT:.0f}x (median of {RUNS} runs): {'met' if figures['met'] else 'MISSED'}")
    if args.results:
        results_files.write(args.results, figures, "python benchmarks/attribution_bench.py " + " ".join(sys.argv[1:]),
                            {"threads": args.threads, "runs": RUNS, "limit": LIMIT, "quick": args.quick,
                             "large_train": args.large_train, "large_test": args.large_test, "memmap": args.memmap})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
