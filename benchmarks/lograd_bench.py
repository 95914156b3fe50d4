"""Benchmark: LoGra-style projected TracIn against the exact per-sample path on the generation
pipeline's GPT-2.

Model: the default :class:`datanet.models.lm.LMConfig` architecture (2 layers, ``n_embd`` 128,
4 heads, 128 positions, vocab 4096, ``lm_head`` tied to ``wte``; 0.9M parameters) with *random*
weights (no tokenizer or training: the cost of attribution depends on the shapes, not on what was
learnt), wrapped as the pipeline attributes it (:class:`~datanet.models.lm.LogitsOnly`,
:func:`~datanet.models.lm.causal_lm_loss`). Checkpoints: ``--checkpoints`` copies of the
initialisation each moved by Gaussian noise (std 0.02), learning rates 1e-3 each. Data: random
token windows of ``--length`` tokens, ``--train`` training and ``--test`` test windows.

Exact path: :class:`~attribution.fast_tracin.FastTracIn` (GPT-2's ``Conv1D`` and tied ``lm_head``
are outside its Gram trick, so every parameter goes through ``torch.func`` per-sample gradients).
Projected: :class:`~attribution.lograd.LoGradTracIn` at the default ``k`` (``--k``). Each runs
``fit`` + ``scores`` in its own spawned process, so the peak resident memory it reports
(``ru_maxrss``) is that method's; a process that only builds the model and data gives the
baseline. Prints seconds and peak MiB of each, Pearson and Spearman of the projected scores with
the exact ones, and a final line ``projected tracin: <ratio>x the exact per-sample path`` (ratio
= exact seconds / projected seconds). On GPT-2 the projected path hooks every parameter
(LayerNorms and the position embedding ``wpe`` included), so it runs no ``torch.func`` pass
beyond its construction's check on 3 samples. Usage:
``python benchmarks/lograd_bench.py [--train 64] [--test 16] [--length 64] [--checkpoints 2] [--k 32] [--threads 2]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time

import numpy as np
import torch
from scipy.stats import spearmanr

STD, LEARNING_RATE = 0.02, 1e-3


def _task(args: argparse.Namespace, directory: str):
    """The attribution task and the test windows (built identically in every process)."""
    from attribution import AttributionTask
    from datanet.models import load_checkpoint, save_checkpoint
    from datanet.models.lm import VOCAB_SIZE, LMConfig, LogitsOnly, build_lm, causal_lm_loss

    model = LogitsOnly(build_lm(LMConfig(), VOCAB_SIZE, eot_id=0)).eval()
    g = torch.Generator().manual_seed(0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    paths = []
    for epoch in range(1, args.checkpoints + 1):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(start[name] + STD * torch.randn(p.shape, generator=g))
        paths.append(save_checkpoint(model, directory, epoch, LEARNING_RATE))

    def windows(n: int):
        ids = torch.randint(1, VOCAB_SIZE, (n, args.length), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids

    (train_x, train_y), (test_x, test_y) = windows(args.train), windows(args.test)
    return AttributionTask(model, train_x, train_y, paths, load_checkpoint, causal_lm_loss), test_x, test_y


def _run(args: argparse.Namespace, method: str, directory: str, out) -> None:
    """In a spawned process: build the task, time ``method``'s fit + scores, send scores, seconds, peak MiB."""
    torch.set_num_threads(args.threads)
    from attribution import FastTracIn, LoGradTracIn

    task, test_x, test_y = _task(args, directory)
    start = time.perf_counter()
    if method == "exact":
        scores = FastTracIn(batch_size=args.batch, test_batch_size=args.batch).fit(task).scores(test_x, test_y)
    elif method == "projected":
        scores = LoGradTracIn(k=args.k, batch_size=args.batch).fit(task).scores(test_x, test_y)
    else:
        scores = None
    seconds = time.perf_counter() - start
    out.send((scores, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _measure(args: argparse.Namespace, method: str, directory: str):
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_run, args=(args, method, directory, send))
    process.start()
    result = receive.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="samples per block, both methods")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        _, _, baseline = _measure(args, "baseline", directory)
        exact, exact_s, exact_mb = _measure(args, "exact", directory)
        projected, projected_s, projected_mb = _measure(args, "projected", directory)
    print(f"GPT-2 (LMConfig defaults, random weights), {args.train} train x {args.test} test windows of {args.length} "
          f"tokens, {args.checkpoints} checkpoints, {args.threads} threads, k={args.k}")
    print(f"baseline process (model + data): peak {baseline:.0f} MiB")
    print(f"exact (FastTracIn, torch.func for every parameter): {exact_s:.1f} s, peak {exact_mb:.0f} MiB")
    print(f"projected (LoGradTracIn k={args.k}): {projected_s:.1f} s, peak {projected_mb:.0f} MiB")
    print(f"scores: Pearson {np.corrcoef(projected.ravel(), exact.ravel())[0, 1]:.4f}, "
          f"Spearman {spearmanr(projected.ravel(), exact.ravel()).statistic:.4f} over {exact.size} pairs")
    print(f"projected tracin: {exact_s / projected_s:.2f}x the exact per-sample path")


if __name__ == "__main__":
    main()
