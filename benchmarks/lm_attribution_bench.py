"""Benchmark: the kit's generation credit against the field's peer, kronfluence (EK-FAC influence),
on one generation run, judged by the same leave-one-contributor-out (LOCO) retraining.

1. The run: notebook 08's generation pipeline (:mod:`datanet_lab.pipeline.generation`) with its
   defaults but ``--gen-prompts 12`` and ``--gen-loco-seeds 2``; ``--lm-model scratch`` trains the
   GPT-2 from scratch, ``pretrained`` fine-tunes the kit's cached base (``$DATANET_LAB_CACHE``).
   Built in ``--run-dir`` (reused when it holds the same parameters) or a temporary directory.
2. :func:`~datanet_lab.experiments.compare_generation.compare_generation` with retrain seeds
   ``0 .. gen_loco_seeds - 1`` and the kit's gradient methods (``tracin_fast``, ``grad_dot_fast``,
   ``tracin_lograd``, ``grad_dot_lograd``): the LOCO truth ``Δ``, the seed ceiling, span and
   random credit.
3. Every method's ``(n_contributors, n_generations)`` credit is computed again in a fresh spawned
   process over the same model, checkpoints, training windows and generations
   (:func:`~datanet_lab.experiments.compare_generation.gradient_credit`; span credit by
   :func:`~datanet_lab.experiments.compare_generation.span_credit_matrix`): seconds and peak
   resident memory of the attribution alone, the run loaded (Linux's ``VmHWM``, reset once the run
   is loaded: loading imports every docstring package, whose peak would hide the method's), and
   that peak over the RSS before. kronfluence is imported within its methods' measurement; a
   process that only imports it gives that share. The kit's methods must reproduce the
   comparison's credit (else the benchmark stops). kronfluence runs
   through :class:`attribution.kronfluence_influence.KronfluenceInfluence` (GPT-2's ``Conv1D`` as
   ``Linear``; embeddings and layer norms are not attributed): EK-FAC with the library's defaults
   (true Fisher from labels sampled by :func:`datanet.models.lm.sample_labels`, damping 1e-8) at the
   final model and summed over every checkpoint, EK-FAC with the empirical Fisher (the registry's
   ``ekfac_kronfluence``), and the ``identity`` strategy (no curvature: a gradient dot over the
   same layers) at the final model and summed over the checkpoints.
4. Each credit is scored like the comparison's own rows: Spearman across contributors with the
   mean LOCO ``Δ`` per generation, averaged over the generations where both sides vary, with a
   seeded 95% bootstrap interval over generations.

Prints one table (method, Spearman, 95% CI, generations ranked, seconds, peak and extra MiB), the
seed ceiling and the final line ``lm attribution: best <method> <spearman> vs kronfluence <spearman>,
ceiling <ceiling>`` (the kit's best method but random against kronfluence's best variant). Usage:
``python benchmarks/lm_attribution_bench.py [--lm-model scratch|pretrained] [--run-dir DIR]
[--gen-prompts 12 ...] [--workers 1] [--threads 1] [--results FILE]``; the first run spends most of
its time on the LOCO retrains (cached in the run directory).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

KIT = ("tracin_fast", "grad_dot_fast", "tracin_lograd", "grad_dot_lograd")
"""The kit's gradient methods (registry names; the comparison shows them without ``_fast``)."""
PEERS: dict[str, dict[str, Any]] = {
    "kronfluence_ekfac": {"strategy": "ekfac", "true_fisher": True, "every_checkpoint": False},
    "kronfluence_ekfac_checkpoints": {"strategy": "ekfac", "true_fisher": True, "every_checkpoint": True},
    "kronfluence_ekfac_empirical": {"strategy": "ekfac", "true_fisher": False, "every_checkpoint": False},
    "kronfluence_identity": {"strategy": "identity", "true_fisher": False, "every_checkpoint": False},
    "kronfluence_identity_checkpoints": {"strategy": "identity", "true_fisher": False, "every_checkpoint": True},
}
"""kronfluence's variants: its strategy, the true (sampled) or empirical Fisher, the final model or every checkpoint."""
GENERATION = {"gen_per_contributor": 6, "gen_epochs": 10, "gen_width": 64, "gen_vocab_size": 2048, "gen_prompts": 12,
              "gen_max_new_tokens": 48, "gen_temperature": 0.7, "gen_loco_seeds": 2, "seed": 0}
"""Notebook 08's defaults, with 12 prompts and 2 LOCO retrain seeds."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in GENERATION.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--lm-model", choices=("scratch", "pretrained"), default="scratch")
    parser.add_argument("--run-dir", default="", help="the run's directory (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the LOCO retrains")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every process")
    parser.add_argument("--results", help="also write the figures to this JSON file")
    return parser.parse_args()


def run_params(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in GENERATION} | {"lm_model": args.lm_model}


def _open(root: str, params: dict[str, Any]):
    from datanet_lab.pipeline import open_run
    from datanet_lab.pipeline.generation import generation_run

    return generation_run(open_run(root, **params))


def _memory(field: str) -> float:
    """MiB of ``field`` (``VmRSS``: now, ``VmHWM``: the peak) in Linux's ``/proc/self/status``."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    """Start ``VmHWM`` again from the current RSS, so the peak read after attributing is that
    phase's (loading the run imports every docstring package: its peak would hide the method's)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _credit(root: str, params: dict[str, Any], method: str, threads: int, out) -> None:
    """In a spawned process: load the run, compute ``method``'s credit; send (credit, seconds,
    peak MiB while attributing, that peak minus the RSS before)."""
    torch.set_num_threads(threads)
    from attribution.kronfluence_influence import KronfluenceInfluence
    from datanet.models import lm
    from datanet_lab.experiments.compare_generation import gradient_credit, span_credit_matrix
    from datanet_lab.pipeline import generation as gen

    run = _open(root, params)
    dn, trained, generations = gen.build_generation(run), gen.train_generation(run), gen.generate_texts(run)
    doc_contributors = list(dn.train_contributors)
    contributors = sorted(set(doc_contributors))
    _reset_peak()
    before = _memory("VmRSS")
    start = time.perf_counter()
    if method == "import_kronfluence":
        import kronfluence  # noqa: F401  (the share of the kronfluence rows' memory that is its import)
        credit = None
    elif method == "span":
        credit = span_credit_matrix(run, contributors, generations)
    else:
        peer = PEERS.get(method)
        attributor = method if peer is None else KronfluenceInfluence(
            peer["strategy"], every_checkpoint=peer["every_checkpoint"],
            sample_targets=lm.sample_labels if peer["true_fisher"] else None, seed=params["seed"])
        credit = gradient_credit(trained, generations, contributors, doc_contributors, attributor, params["seed"])
    seconds = time.perf_counter() - start
    peak = _memory("VmHWM")
    out.send((credit, seconds, peak, peak - before))


def measure(root: str, params: dict[str, Any], method: str, threads: int
            ) -> tuple[np.ndarray | None, float, float, float]:
    """``method``'s credit, seconds, peak MiB and peak MiB over the loaded run, from a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_credit, args=(root, params, method, threads, send))
    process.start()
    result = receive.recv()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"the {method} process exited with {process.exitcode}")
    return result


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from datanet_lab import results_files
    from datanet_lab.experiments.compare_generation import compare_generation, spearman_per_generation, spearman_summary
    from datanet_lab.pipeline import generation as gen

    params = run_params(args)
    run = _open(args.run_dir, params)
    root = str(run.directory.parent)
    start = time.perf_counter()
    dn, trained = gen.build_generation(run), gen.train_generation(run)
    gen.index_generation(run)
    generations = gen.generate_texts(run)
    comparison = compare_generation(run, seeds=range(args.gen_loco_seeds), workers=args.workers, methods=KIT)
    print(f"generation run {run.directory} (lm_model {args.lm_model}): {len(dn.train_contributors)} training documents "
          f"of {len(comparison.contributors)} contributors, {len(trained.checkpoints)} checkpoints, "
          f"{len(generations)} generations; built and compared (LOCO over seeds 0..{args.gen_loco_seeds - 1}) in "
          f"{time.perf_counter() - start:.0f} s (cached steps are read back)")
    mean_truth = comparison.truth.mean(axis=0)
    seed = params["seed"]
    _, _, _, import_mib = measure(root, params, "import_kronfluence", args.threads)
    rows = []
    for method in ("span", *KIT, *PEERS):
        credit, seconds, peak, extra = measure(root, params, method, args.threads)
        shown = method.removesuffix("_fast")
        if shown in comparison.credit:  # the same run: the kit's methods reproduce the comparison's credit
            reference = comparison.credit[shown]
            if not np.allclose(credit, reference, rtol=1e-4, atol=1e-6 * np.abs(reference).max()):
                raise RuntimeError(f"{shown}: the credit recomputed in its own process differs from compare_generation's")
        rows.append({"method": shown, **spearman_summary(spearman_per_generation(credit, mean_truth), seed),
                     "seconds": seconds, "peak_mib": peak, "extra_mib": extra})
    random = comparison.table.set_index("method").loc["random"]
    rows.append({"method": "random", **{k: random[k] for k in ("spearman", "ci_low", "ci_high", "generations",
                                                               "undefined")}, "seconds": np.nan, "peak_mib": np.nan, "extra_mib": np.nan})
    table = pd.DataFrame(rows).astype({"generations": int, "undefined": int})
    print(f"Spearman with LOCO across {len(comparison.contributors)} contributors, per generation, mean over the "
          f"generations ranked (of {len(generations)}); seconds: attribution in a fresh process with the run loaded, "
          f"{args.threads} thread(s); peak_mib: that process's peak RSS while attributing, extra_mib: that peak "
          f"over its RSS before (importing kronfluence alone: +{import_mib:.0f} MiB)")
    mib = lambda m: "-" if np.isnan(m) else f"{m:.0f}"  # noqa: E731
    print(table.to_string(index=False, formatters={
        "spearman": "{:.3f}".format, "ci_low": "{:.3f}".format, "ci_high": "{:.3f}".format,
        "seconds": lambda s: "-" if np.isnan(s) else f"{s:.1f}", "peak_mib": mib, "extra_mib": mib}))
    ceiling = comparison.ceiling
    print(f"seed ceiling (one retrain seed's LOCO ranking predicting another's): "
          f"{'n/a (one seed)' if ceiling is None else f'{ceiling:.3f}'}")
    ranked = table.set_index("method")["spearman"]
    kit = ranked.drop([*PEERS, "random"]).idxmax()
    peer = ranked[list(PEERS)].idxmax()
    print(f"kronfluence's best variant: {peer}")
    print(f"lm attribution: best {kit} {ranked[kit]:.3f} vs kronfluence {ranked[peer]:.3f}, ceiling "
          f"{'n/a' if ceiling is None else f'{ceiling:.3f}'}")
    if args.results:
        figures = {f"{row['method']}.{key}": row[key] for row in rows
                   for key in ("spearman", "ci_low", "ci_high", "generations", "seconds", "peak_mib", "extra_mib")
                   if row["method"] != "random" or key not in ("seconds", "peak_mib", "extra_mib")}
        figures |= {"kronfluence_import_mib": import_mib, "best_kit_method": kit, "best_kit_spearman": ranked[kit],
                    "best_kronfluence_method": peer, "best_kronfluence_spearman": ranked[peer]}
        if ceiling is not None:
            figures["ceiling"] = ceiling
        undefined = sorted(name for name, value in figures.items()
                           if isinstance(value, (float, np.floating)) and not np.isfinite(value))
        if undefined:
            print(f"not written (undefined): {', '.join(undefined)}")
        results_files.write(args.results, {k: v for k, v in figures.items() if k not in undefined},
                            "python benchmarks/lm_attribution_bench.py " + " ".join(sys.argv[1:]),
                            params | {"threads": args.threads, "workers": args.workers})
        print(f"figures written to {args.results}")


if __name__ == "__main__":
    main()
