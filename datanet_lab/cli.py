"""The ``datanet-lab`` command line: run the default batch, verify a ledger."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import ledger
from datanet import DatanetError
from datanet_lab.params import coerce
from datanet_lab.runner import run_batch


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 verification/run failure, 2 bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (DatanetError, ledger.LedgerError) as exc:
        print(f"datanet-lab: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ledger.LedgerIntegrityError) else 2


def _run(args: argparse.Namespace) -> int:
    params = {name: coerce(name, value) for name, value in args.param}
    run_dir = run_batch(params, out=args.out)
    payouts = pd.read_csv(run_dir / "payouts.csv", keep_default_na=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"run written to {run_dir}")
    print(f"test accuracy {metrics['test_accuracy']:.4f}; ledger: {metrics['ledger']['entries']} entries, "
          f"head {metrics['ledger']['head_hash']}")
    print(payouts.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = ledger.verify(args.path)
    print(report)
    return 0 if report.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datanet-lab", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="execute the notebook batch into results/<run_id>/")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (repeatable)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results directory (default: results)")
    run.set_defaults(handler=_run)
    ledger_cmd = commands.add_parser("ledger", help="ledger tools").add_subparsers(required=True, metavar="TOOL")
    verify = ledger_cmd.add_parser("verify", help="check every hash and link; exit 1 naming the first bad entry")
    verify.add_argument("path", type=Path)
    verify.set_defaults(handler=_verify)
    return parser


if __name__ == "__main__":
    sys.exit(main())
