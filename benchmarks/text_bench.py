"""Benchmark: attribution on the fine-tuned MiniLM, every figure and ratio measured in one run.

1. Data: the default docstring corpus (texts of at most 64 MiniLM tokens), its seeded test split,
   seeded subsets of ``--train`` / ``--test`` texts tokenized and encoded by the frozen MiniLM.
2. Fine-tuning (``datanet.models.encoders.fine_tune``, ``--epochs`` epochs, a checkpoint each):
   training examples/s (best of 2 seeded runs).
3. TracIn over the trainable layers (the top BertLayer and the head of ``TopLayerClassifier``,
   1.8 M parameters) at every checkpoint, on the first ``--tracin-train`` x ``--tracin-test``
   texts: FastTracIn against Captum's per-sample loop (``TracInCP`` with
   ``sample_wise_grads_per_batch=False`` through ``CaptumTracIn``; Captum's fast mode cannot
   take LayerNorm) at each of ``--captum-batch-sizes``: seconds (fit + scores, best of 2 for each
   Captum setting, best of FastTracIn's runs interleaved with them), milliseconds per (sample,
   checkpoint), speed-ups and the max relative difference of the scores. Captum's loop
   differentiates each sample's loss through
   the graph of its whole batch, so its cost per sample grows with its batch size (up to the
   number of samples): 256 is CaptumTracIn's default, 1 its fastest setting here.
4. FastTracIn on the whole ``--train`` x ``--test`` task: seconds, the memory its test factors
   take (every test sample at every checkpoint, about 4 bytes per trainable parameter) and peak RSS.
5. Token Integrated Gradients (``attribution.token_attributions``, ``--n-steps`` points,
   internal_batch_size 16) on the whole ``MiniLMClassifier`` for the ``--ig-samples`` longest test
   texts, one per call: seconds per example (fastest and median) and the completeness gap.

Prints a final line ``text tracin speedup vs captum loop: <ratio>x`` against Captum's fastest
batch size measured, then the ratio against its default. Usage:
``python benchmarks/text_bench.py [--quick] [--threads N] [--tracin-train 256 ...] [--results FILE]``
(``--results``: also write the figures, :mod:`datanet_lab.results_files`, to a JSON file); ``--quick``
shrinks every size (under a minute on 2 idle cores, the default run about 2 minutes); ``--threads 1``
steadies the timings on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attribution import AttributionTask, CaptumTracIn, FastTracIn, token_attributions
from datanet.models import load_checkpoint
from datanet.models.encoders import (
    MAX_TOKENS,
    MiniLMClassifier,
    count_tokens,
    encode,
    fine_tune,
    load_encoder,
    load_tokenizer,
    tokenize,
)
from datanet.text.datanet import split_text
from datanet.text.docstrings import docstring_corpus
from datanet_lab import results_files

REPEATS = 2
"""Timed runs of fine-tuning and of each Captum setting (the best counts); FastTracIn runs once more than all
Captum runs together, interleaved with them."""
DEFAULT = {"train": 256, "test": 64, "epochs": 2, "tracin_train": 32, "tracin_test": 8, "captum_batch_sizes": [256, 1],
           "ig_samples": 4, "n_steps": 32}
TARGET_SPEEDUP = 30.0
"""FastTracIn against Captum's per-sample loop at its fastest batch size (the README's target)."""
QUICK = {"train": 64, "test": 16, "epochs": 2, "tracin_train": 16, "tracin_test": 4, "captum_batch_sizes": [256, 1],
         "ig_samples": 1, "n_steps": 32}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call of ``fn``, and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def parse() -> tuple[dict[str, Any], argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--results", help="also write the figures to this JSON file")
    for name, value in DEFAULT.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, nargs="+" if isinstance(value, list) else None,
                            help=f"default {value} ({QUICK[name]} with --quick)")
    args = parser.parse_args()
    base = QUICK if args.quick else DEFAULT
    return {name: base[name] if getattr(args, name) is None else getattr(args, name) for name in DEFAULT}, args


def main() -> None:
    sizes, args = parse()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    # 1. data
    tokenizer, encoder = load_tokenizer(), load_encoder()
    counter = count_tokens(tokenizer)
    corpus_s, corpus = timed(lambda: docstring_corpus(max_tokens=MAX_TOKENS, count_tokens=counter))
    pool, held_out = split_text(corpus, 0, counter, MAX_TOKENS)
    rng = np.random.default_rng(0)
    rows = {"train": rng.choice(pool, sizes["train"], replace=False),
            "test": rng.choice(held_out, sizes["test"], replace=False)}
    label = {name: k for k, name in enumerate(corpus.label_set)}
    tokens = {split: tokenize(tokenizer, [corpus.texts[i] for i in r], MAX_TOKENS) for split, r in rows.items()}
    y = {split: torch.tensor([label[corpus.labels[i]] for i in r]) for split, r in rows.items()}
    encode_s, encoded = timed(lambda: {split: encode(encoder, t) for split, t in tokens.items()})
    n_encoded = sizes["train"] + sizes["test"]
    print(f"corpus: {len(corpus)} docstrings <= {MAX_TOKENS} tokens in {corpus_s:.1f} s; frozen MiniLM encodes "
          f"{n_encoded / encode_s:.1f} texts/s ({n_encoded} texts)")

    with tempfile.TemporaryDirectory() as tmp:
        # 2. fine-tuning
        train = encoded["train"]
        tunes = [timed(lambda: fine_tune(train.top_input, train.attention_mask, y["train"], len(corpus.label_set), encoder,
                                         checkpoint_dir=tmp, epochs=sizes["epochs"])) for _ in range(REPEATS)]
        tune_s, (model, history, checkpoints) = min(t for t, _ in tunes), tunes[-1][1]  # seeded: the same model each time
        print(f"fine_tune (top BertLayer + head, {sizes['train']} texts, {sizes['epochs']} epochs, best of {REPEATS}): "
              f"{sizes['train'] * sizes['epochs'] / tune_s:.1f} examples/s, a train-set evaluation per epoch included "
              f"(train accuracy {history['train_accuracy'].iloc[-1]:.2f})")

        # 3. FastTracIn vs Captum's per-sample loop
        def split_inputs(split: str, n: int) -> dict[str, torch.Tensor]:
            return {"hidden_states": encoded[split].top_input[:n], "attention_mask": encoded[split].attention_mask[:n]}

        n_tr, n_te = sizes["tracin_train"], sizes["tracin_test"]
        task = AttributionTask(model, split_inputs("train", n_tr), y["train"][:n_tr], checkpoints, load_checkpoint)
        test_x, test_y = split_inputs("test", n_te), y["test"][:n_te]
        per_pass = 1e3 / ((n_tr + n_te) * len(checkpoints))  # ms per (sample, checkpoint) for one second

        def fast_run() -> tuple[float, np.ndarray]:
            return timed(lambda: FastTracIn(batch_size=64).fit(task).scores(test_x, test_y))

        fast_runs, captum_runs = [fast_run()], {}
        for batch_size in sizes["captum_batch_sizes"]:
            reference = CaptumTracIn(batch_size=batch_size)
            runs = []
            for _ in range(REPEATS):  # interleaved with FastTracIn's runs: both see the same load
                runs.append(timed(lambda: reference.fit(task).scores(test_x, test_y)))
                fast_runs.append(fast_run())
            if reference.mode != "loop":
                raise RuntimeError(f"CaptumTracIn chose its {reference.mode!r} mode; this benchmark compares with its loop")
            captum_runs[batch_size] = (min(t for t, _ in runs), runs[-1][1])
        fast_s, fast = min(s for s, _ in fast_runs), fast_runs[-1][1]
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"TracIn, {n_tr} train x {n_te} test, {len(checkpoints)} checkpoints, {n_params} trainable parameters: "
              f"FastTracIn {fast_s:.2f} s ({fast_s * per_pass:.0f} ms per sample and checkpoint; best of {len(fast_runs)})")
        speedups = {}
        for batch_size, (captum_s, captum) in captum_runs.items():
            speedups[batch_size] = captum_s / fast_s
            default = " (CaptumTracIn's default)" if batch_size == CaptumTracIn().batch_size else ""
            print(f"  Captum per-sample loop, batch_size {batch_size}{default}: {captum_s:.2f} s "
                  f"({captum_s * per_pass:.0f} ms per sample and checkpoint), FastTracIn {speedups[batch_size]:.1f}x faster; "
                  f"max |fast - captum| / max |captum| {np.abs(fast - captum).max() / np.abs(captum).max():.1e}")

        # 4. FastTracIn on the whole task
        whole = AttributionTask(model, split_inputs("train", sizes["train"]), y["train"], checkpoints, load_checkpoint)
        whole_test = split_inputs("test", sizes["test"])
        whole_s, _ = timed(lambda: FastTracIn(batch_size=64).fit(whole).scores(whole_test, y["test"]))
        # stream() holds every test sample's factors at every checkpoint: n_test x checkpoints x 4 bytes x (most of) P
        held = sizes["test"] * len(checkpoints) * 4 * n_params / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"FastTracIn, all {sizes['train']} train x {sizes['test']} test, {len(checkpoints)} checkpoints: {whole_s:.1f} s; "
              f"test factors held {held:.0f} MiB, process peak RSS {rss:.0f} MiB")

    # 5. token IG on the whole classifier, the longest test texts
    full = MiniLMClassifier(encoder, model).eval()
    longest = torch.argsort(tokens["test"]["attention_mask"].sum(dim=1), descending=True, stable=True)[: sizes["ig_samples"]]
    mask = tokens["test"]["attention_mask"][longest]
    length = int(mask.sum(dim=1).max())
    ids, mask = tokens["test"]["input_ids"][longest, :length], mask[:, :length]
    with torch.no_grad():
        targets = full(ids, mask).argmax(dim=1)
    # one text per call (the work is per text anyway: n_steps > internal_batch_size), so a moment of load
    # on a shared machine shows as one slow text, not as a slower average
    runs = [timed(lambda: token_attributions(full, ids[i : i + 1], mask[i : i + 1], targets[i : i + 1], full.embeddings,
                                             cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                                             pad_id=tokenizer.pad_token_id, n_steps=sizes["n_steps"]))
            for i in range(len(ids))]
    seconds = np.array([t for t, _ in runs])
    delta = np.concatenate([r.convergence_delta for _, r in runs])
    gap = np.concatenate([r.attributions.sum(axis=1) for _, r in runs]) - delta  # f(x) - f(baseline), target logit
    print(f"token IG on the whole MiniLMClassifier, {len(ids)} texts of {length} tokens, n_steps {sizes['n_steps']}, "
          f"internal_batch_size 16: {seconds.min():.2f} s/example (median {np.median(seconds):.2f}); |convergence delta| "
          f"<= {np.abs(delta).max():.1e} logits ({np.abs(delta / gap).max():.1e} of f(x) - f(baseline))")
    best = min(speedups, key=speedups.get)
    default = CaptumTracIn().batch_size
    tail = f"; {speedups[default]:.1f}x vs its default batch_size {default}" if default in speedups and default != best else ""
    print(f"text tracin speedup vs captum loop: {speedups[best]:.1f}x (its fastest measured batch_size {best}){tail}")
    if args.results:
        figures = {"fast_tracin_s": fast_s, "speedup.fastest": speedups[best], "captum_fastest_batch_size": best,
                   "target_speedup": TARGET_SPEEDUP, "target_met": speedups[best] >= TARGET_SPEEDUP,
                   **{f"speedup.batch_{b}": v for b, v in speedups.items()},
                   **{f"captum_s.batch_{b}": s for b, (s, _) in captum_runs.items()},
                   "trainable_parameters": n_params, "ig_s_per_example": float(seconds.min())}
        results_files.write(args.results, figures, "python benchmarks/text_bench.py " + " ".join(sys.argv[1:]),
                            sizes | {"threads": torch.get_num_threads()})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
