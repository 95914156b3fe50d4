"""The ``sweep``, ``report`` and ``reproduce`` subcommands of ``datanet-lab``."""

from __future__ import annotations

import argparse
from pathlib import Path

from datanet_lab.sweeps import report, reproduce, sweep, sweep_config
from datanet_lab.batch.executors import EXECUTORS


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the three subcommands on the ``datanet-lab`` parser's subcommands."""
    run = commands.add_parser("sweep", help="execute a YAML sweep into runs/<sweep>/<run_id>/ (resumable)")
    run.add_argument("config", type=Path, help="the sweep file, e.g. configs/sweeps/tiny.yaml")
    run.add_argument("--executor", choices=sorted(EXECUTORS), default="local", help="where runs execute (default: local)")
    run.add_argument("--workers", type=int, default=1, help="parallel runs (default: 1)")
    run.add_argument("--scheduler", help="address of a running Dask scheduler (with --executor dask)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="runs directory (default: runs)")
    run.add_argument("--max-runs", type=int, default=sweep_config.MAX_RUNS,
                     help=f"refuse a grid of more runs (default: {sweep_config.MAX_RUNS})")
    run.set_defaults(handler=_sweep)
    summary = commands.add_parser("report", help="aggregate a sweep's metrics into a CSV and figures")
    summary.add_argument("sweep_dir", type=Path, help="runs/<sweep>")
    summary.add_argument("--out", type=Path, help="report directory (default: SWEEP_DIR/report)")
    summary.add_argument("--over", default="seed", help="the parameter to average over (default: seed)")
    summary.set_defaults(handler=_report)
    again = commands.add_parser("reproduce", help="re-execute a sweep's run from its ledger record and compare")
    again.add_argument("run_dir", type=Path, help="runs/<sweep>/<run_id>")
    again.add_argument("--out", type=Path, help="a fresh directory (default: a new temporary one)")
    again.set_defaults(handler=_reproduce)


def _sweep(args: argparse.Namespace) -> int:
    """Exit 0 when every run finished, 1 when some failed (listed in failures.csv)."""
    loaded = sweep_config.load(args.config, args.max_runs)
    result = sweep.run_sweep(loaded, args.out, args.executor, args.workers, args.scheduler)
    print(f"sweep {result.directory}: {result.skipped} already finished, {result.done} done, "
          f"{len(result.failures)} failed")
    if len(result.failures):
        print(result.failures.to_string(index=False))
    return 1 if len(result.failures) else 0


def _report(args: argparse.Namespace) -> int:
    out = report.write_report(args.sweep_dir, args.out, args.over)
    print(f"report written to {out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    """Exit 0 when every metric and output hash matches its record, 1 otherwise."""
    comparison = reproduce.reproduce(args.run_dir, args.out)
    print(f"reproduced {comparison.run_id} in {comparison.directory}")
    if comparison.failure:
        print(f"the run failed: {comparison.failure}")
    rows = comparison.rows
    for kind, group in rows.groupby("kind", sort=False):
        print(f"{kind}: {int(group['match'].sum())}/{len(group)} match")
    mismatched = rows[~rows["match"]]
    if len(mismatched):
        print(mismatched.to_string(index=False))
    packages = mismatched[mismatched["name"].str.startswith("package ")]
    if len(packages):
        print(f"the environment differs from the recorded one in {len(packages)} package(s) (listed above): "
              f"numbers are reproducible for the locked set (make install from requirements.lock)")
    print("REPRODUCED" if comparison.ok else "NOT REPRODUCED")
    return 0 if comparison.ok else 1
