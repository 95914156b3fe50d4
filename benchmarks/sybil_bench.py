"""Benchmark: can copies farm credit? The sybil study and the near-copy threshold's calibration.

1. Calibration: on each bundled dataset (all contributors honest, no label noise; Datanet and
   training seeds 0, 1, 2), under each of the pipeline's models (10 epochs of SGD), every
   accepted sample's highest cosine
   similarity of last-layer loss gradients to another sample of its label
   (:func:`datanet_lab.experiments.sybil.natural_similarity`): quantiles over the seeds' samples, the maximum,
   and how many samples reach :data:`attribution.REDUNDANCY_SIMILARITY` (distinct samples that
   the roll-up would join).
2. The sybil study (:func:`datanet_lab.experiments.sybil.study`) on the default Datanet of ``--dataset``
   (scenario ``honest:6,noisy:2,duplicate:1,out_of_domain:1``, noise rate 0.2, seed 0) with
   contributor c00 copied, for ``--model`` (TracIn on its SGD checkpoints) and exact influence
   on the converged logistic regression.

Usage: ``python benchmarks/sybil_bench.py [--dataset digits] [--model logreg] [--skip-calibration]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import attribution
from datanet.models import MODELS
from datanet.training import TrainConfig
from datanet_lab import pipeline
from datanet_lab.experiments import sybil

DATASETS = ("digits", "wine", "breast_cancer")
SCENARIO, N_CONTRIBUTORS, NOISE_RATE, SEED, L2 = "honest:6,noisy:2,duplicate:1,out_of_domain:1", 10, 0.2, 0, 1e-2
CALIBRATION_SEEDS = (0, 1, 2)


def calibration(directory: Path) -> pd.DataFrame:
    """One row per (dataset, model): quantiles of the natural nearest-neighbour similarity."""
    rows = []
    for dataset in DATASETS:
        for model in MODELS:
            best = np.concatenate([
                sybil.natural_similarity(pipeline.planted_datanet(dataset, "", "honest:10", 10, 0.0, seed).datanet,
                                         TrainConfig(model=model, epochs=10, seed=seed), directory / f"{dataset}-{model}-{seed}")
                for seed in CALIBRATION_SEEDS])
            rows.append({"dataset": dataset, "model": model, "n": len(best), "median": np.median(best),
                         "q99": np.quantile(best, 0.99), "q999": np.quantile(best, 0.999), "max": best.max(),
                         "joined": int((best >= attribution.REDUNDANCY_SIMILARITY).sum())})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--model", default="logreg", choices=MODELS)
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_calibration:
            start = time.perf_counter()
            table = calibration(Path(tmp) / "calibration")
            print(f"natural similarity (threshold {attribution.REDUNDANCY_SIMILARITY}), {time.perf_counter() - start:.0f} s:")
            print(table.round(4).to_string(index=False))
        dn = pipeline.planted_datanet(args.dataset, "", SCENARIO, N_CONTRIBUTORS, NOISE_RATE, SEED).datanet
        start = time.perf_counter()
        table = sybil.study(dn, "c00", TrainConfig(model=args.model, epochs=10, seed=SEED), L2, Path(tmp) / "study")
        print(f"\nsybil study, {args.dataset}, TracIn on the {args.model}'s checkpoints / exact influence on the converged "
              f"logistic regression, {time.perf_counter() - start:.0f} s:")
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
