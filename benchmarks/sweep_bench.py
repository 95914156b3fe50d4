"""Wall time of a sweep with 1 and 2 local workers (and 2 Dask workers), from a fresh directory.

    .venv/bin/python benchmarks/sweep_bench.py [configs/sweeps/tiny.yaml]

Prints one line per setting and the speed-up of 2 workers over 1. The machine's other load
counts: say what else ran when quoting these figures.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from datanet_lab.sweeps.sweep import run_sweep
from datanet_lab.sweeps.sweep_config import load

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (("local", 1), ("local", 2), ("dask", 2))


def main() -> None:
    config = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "configs" / "sweeps" / "tiny.yaml"
    sweep = load(config)
    seconds = {}
    for executor, workers in SETTINGS:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = run_sweep(sweep, out=out, executor=executor, workers=workers)
            seconds[executor, workers] = time.perf_counter() - start
        assert result.failures.empty, result.failures
        print(f"{sweep.name}: {len(sweep.runs)} runs, {executor} x{workers}: {seconds[executor, workers]:.1f} s wall")
    print(f"speed-up of 2 local workers over 1: {seconds['local', 1] / seconds['local', 2]:.2f}x")


if __name__ == "__main__":
    main()
