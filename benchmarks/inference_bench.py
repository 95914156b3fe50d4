"""End-to-end payable inference: attributed, fee-split, receipted and committed inferences per second.

    .venv/bin/python benchmarks/inference_bench.py [--logreg-requests 20000] [--mlp-requests 10000]
        [--batch-size 256] [--repeats 3] [--proofs all|N] [--threads 1] [--results docs/results/inference_bench.json]

Builds a default-parameter logreg run and an mlp run (digits, 10 contributors, 10 epochs,
tracin_captum) in a temporary directory with the pipeline's own steps, then, per run, ``--repeats``
times in turn (the best of each kept, so that a moment of the machine's other load does not decide
the ratio):

- the reference: the run's QueryAttributor alone over the same requests and micro-batches
  (predict + attribute + roll-up, nothing paid or recorded);
- serve-sim (:func:`datanet_lab.serving.sim.serve_sim`): the same requests served, split,
  accrued, receipted and committed batch by batch (each batch's file and ledger writes overlap the
  next batch's serving), the epoch closed; inferences/s against the target (>= 5,000/s logreg,
  >= 1,000/s mlp), met or missed, and the per-request cost split.

End to end against the reference: the ledger side must cost no more than the attribution, i.e.
end-to-end throughput >= :data:`RATIO` (0.5) of attribution alone's, measured in the same run:
met or missed per model. Then every committed receipt is proven against the ledger and checked
offline (or ``--proofs N`` of them, drawn at random; the line says how many), and attribution alone
is timed one request at a time (micro-batches of 1, ``--single-requests`` of them): what serving
without batching would cost. The last line reads
``serving: <ratio> of attribution alone (logreg), <ratio> (mlp)``.

``--results`` writes the figures (:mod:`datanet_lab.results_files`) to a JSON file.

One process, one torch thread by default: the machine's other load counts, so say what else ran
when quoting these figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from datanet_lab import pipeline, results_files
from datanet_lab.serving import QueryAttributor
from datanet_lab.serving.economy import check_receipts
from datanet_lab.serving.sim import request_inputs, serve_sim

TARGETS = {"logreg": 5_000.0, "mlp": 1_000.0}
"""Inferences per second, end to end."""
RATIO = 0.5
"""End-to-end throughput at least this fraction of attribution alone's (the same requests and
micro-batches, the same run): the ledger side costs no more than the attribution."""


def attribution_only(run: pipeline.Run, requests: int, batch_size: int) -> float:
    """Seconds the run's attributor alone takes over the requests serve-sim serves (seed 0) in
    micro-batches of ``batch_size``."""
    attributor = QueryAttributor.from_run(run)
    x = request_inputs(run, attributor.n_features, requests, None, 0)
    start = time.perf_counter()
    for first in range(0, len(x), batch_size):
        attributor.attribute(x[first : first + batch_size])
    return time.perf_counter() - start


def bench(directory: Path, model: str, requests: int, batch_size: int, proofs: int | None,
          single_requests: int, repeats: int) -> dict[str, float | int | bool]:
    """Build, measure (best of ``repeats``, reference and serve-sim in turn) and prove one model's
    run; print its lines; return its figures (``ok``: the target was met and every checked
    receipt proved; ``ratio_met``: end to end >= :data:`RATIO` of attribution alone)."""
    start = time.perf_counter()
    run = pipeline.open_run(str(directory / model), model=model)
    pipeline.attribute(run)
    print(f"{model}: run built, trained and attributed in {time.perf_counter() - start:.1f} s")
    references, results = [], []
    for _ in range(repeats):  # the run directory carries on from one sim to the next
        references.append(requests / attribution_only(run, requests, batch_size))
        results.append(serve_sim(run, requests=requests, batch_size=batch_size, seed=0, draw=False, log=None))
    reference, result = max(references), max(results, key=lambda r: r.throughput)
    met, ratio = result.throughput >= TARGETS[model], result.throughput / reference
    split = ", ".join(f"{phase} {seconds / requests * 1e6:.0f} us ({share:.0%})"
                      for (phase, seconds), share in zip(result.timings.items(), result.cost_split.values()))
    print(f"{model}: {requests:,} inferences end to end in {result.seconds:.2f} s = {result.throughput:,.0f}/s "
          f"(best of {repeats}), target >= {TARGETS[model]:,.0f}/s: {'met' if met else 'missed'}; attribution alone "
          f"{reference:,.0f}/s (best of {repeats})")
    print(f"{model}: per request {1e6 / result.throughput:.0f} us: {split}")
    print(f"{model}: end to end = {ratio:.2f} of attribution alone, limit >= {RATIO}: "
          f"{'met' if ratio >= RATIO else 'missed'}")
    start = time.perf_counter()
    found = check_receipts(run, sample=proofs)
    print(f"{model}: receipts proven and checked offline: {found.checked:,} of {found.total:,} "
          f"({'all' if found.checked == found.total else 'a random sample'}), {len(found.failures)} failed, "
          f"{time.perf_counter() - start:.1f} s" + "".join(f"\n  {f}" for f in found.failures))
    single = single_requests / attribution_only(run, single_requests, 1)
    print(f"{model}: attribution alone one request at a time: {single:,.0f}/s ({single_requests:,} requests)")
    return {"ok": met and found.ok, "met": met, "per_second": result.throughput, "target": TARGETS[model],
            "target_shortfall_pct": 100 * (1 - result.throughput / TARGETS[model]), "attribution_per_second": reference,
            "ratio": ratio, "ratio_met": ratio >= RATIO,
            "single_attribution_per_second": single, "request_us": 1e6 / result.throughput,
            **{f"{phase}_us": seconds / requests * 1e6 for phase, seconds in result.timings.items()},
            "receipts_checked": found.checked, "receipts_total": found.total, "receipts_failed": len(found.failures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logreg-requests", type=int, default=20_000)
    parser.add_argument("--mlp-requests", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="reference and serve-sim runs per model, best kept")
    parser.add_argument("--proofs", default="all", help="receipts to prove per run: all, or a number drawn at random")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--single-requests", type=int, default=1_000, help="requests attributed one at a time")
    parser.add_argument("--results", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    proofs = None if args.proofs == "all" else int(args.proofs)
    with tempfile.TemporaryDirectory(prefix="inference-bench-") as out:
        found = {model: bench(Path(out), model, requests, args.batch_size, proofs, args.single_requests, args.repeats)
                 for model, requests in (("logreg", args.logreg_requests), ("mlp", args.mlp_requests))}
    print(f"targets: {sum(f['ok'] for f in found.values())} of {len(found)} met with every checked receipt provable; "
          f"end to end >= {RATIO} of attribution alone: {sum(f['ratio_met'] for f in found.values())} of {len(found)}")
    if args.results:
        figures = {f"{model}.{name}": value for model, own in found.items() for name, value in own.items()}
        figures |= {"receipts_checked": sum(f["receipts_checked"] for f in found.values()),
                    "receipts_total": sum(f["receipts_total"] for f in found.values()), "target.ratio": RATIO}
        results_files.write(args.results, figures,
                            "python benchmarks/inference_bench.py " + " ".join(sys.argv[1:]),
                            {"logreg_requests": args.logreg_requests, "mlp_requests": args.mlp_requests,
                             "batch_size": args.batch_size, "repeats": args.repeats, "proofs": args.proofs,
                             "threads": args.threads, "single_requests": args.single_requests})
        print(f"figures written to {args.results}")
    print(f"serving: {found['logreg']['ratio']:.2f} of attribution alone (logreg), {found['mlp']['ratio']:.2f} (mlp)")


if __name__ == "__main__":
    main()
