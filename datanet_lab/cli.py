"""The ``datanet-lab`` command line: run the default batch, verify a ledger.

``datanet-lab ledger ...`` builds only the ledger tools' parser and imports no ML stack (torch,
pandas, numpy, transformers), so a ledger tool starts as fast as ``python -m ledger.cli``; the
other commands import what they need.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import ledger
from ledger.cli import add_commands as add_ledger_commands

LEDGER = "ledger"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 verification/run failure, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _ledger_parser() if argv[:1] == [LEDGER] else _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except Exception as exc:
        if not _bad_input(exc):
            raise
        print(f"datanet-lab: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ledger.LedgerIntegrityError) else 2


def _bad_input(exc: Exception) -> bool:
    """A ledger or Datanet error (reported in one line). A ``DatanetError`` can only come from a
    command that imported ``datanet``, so a ledger tool need not import it to tell."""
    datanet = sys.modules.get("datanet")
    return isinstance(exc, ledger.LedgerError) or (datanet is not None and isinstance(exc, datanet.DatanetError))


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from datanet_lab.params import ParameterError, coerce
    from datanet_lab.batch.runner import GENERATION_NOTEBOOKS, NOTEBOOKS, TEXT_NOTEBOOKS, run_batch

    names = [name for name, _ in args.param]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated:
        values = [value for name, value in args.param if name == repeated]
        raise ParameterError(f"parameter {repeated!r} given {len(values)} times ({', '.join(map(repr, values))}): give it once")
    params = {name: coerce(name, value) for name, value in args.param}
    if args.text and args.generation:
        raise ParameterError("--text and --generation each choose a batch: give one")
    names = TEXT_NOTEBOOKS if args.text else GENERATION_NOTEBOOKS if args.generation else NOTEBOOKS
    start = time.perf_counter()
    run_dir = run_batch(params, out=args.out, names=names)
    seconds = time.perf_counter() - start
    print(f"run written to {run_dir}")
    if args.text or args.generation:
        written = _write_results(run_dir, args, seconds)
        print(f"figures written to {written}")
    if args.generation:
        return _print_generation(run_dir / "generation")
    if args.text:
        run_dir = run_dir / "text"
        for table in ("comparison.csv", "backdoor.csv"):
            print(pd.read_csv(run_dir / table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    payouts = pd.read_csv(run_dir / "payouts.csv", keep_default_na=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = ledger.verify(run_dir / "ledger.sqlite")  # after the whole batch (notebook 09 extends the payout's ledger)
    print(f"test accuracy {metrics['test_accuracy']:.4f}; ledger: {report.entries} entries, head {report.head_hash}, "
          f"{'verified' if report.ok else 'FAILED verification: ' + str(report)}")
    print(payouts.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _write_results(run_dir: Path, args: argparse.Namespace, seconds: float) -> Path:
    """Write the text or generation batch's figures to ``<run>/<text|generation>/results.json``
    (:mod:`datanet_lab.results_files`); a generation batch's also hold its wall time and the peak
    RSS of its largest process (the notebook's kernel)."""
    import resource

    import yaml

    from datanet_lab import results_files
    from datanet_lab.batch.runner import GENERATION_NOTEBOOKS, NOTEBOOK_DIR, TEXT_NOTEBOOKS, declared_parameters
    from datanet_lab.params import RUN_DIR

    kind = "text" if args.text else "generation"
    command = " ".join(["datanet-lab run", f"--{kind}", *(f"-p {name} {value}" for name, value in args.param)])
    declared = set().union(*(declared_parameters(NOTEBOOK_DIR / name)
                             for name in (TEXT_NOTEBOOKS if args.text else GENERATION_NOTEBOOKS))) - {RUN_DIR}
    params = {k: v for k, v in yaml.safe_load((run_dir / "params.yaml").read_text()).items() if k in declared}
    if args.text:
        figures = results_files.text_figures(run_dir)
    else:  # ru_maxrss of the waited-for children: the largest one's peak, in KiB on Linux
        figures = results_files.generation_figures(run_dir) | {
            "batch.seconds": round(seconds), "batch.peak_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}
    path = run_dir / kind / "results.json"
    results_files.write(path, figures, command, params)
    return path


def _print_generation(run_dir: Path) -> int:
    """Print a generation run's training summary, comparison table and payments per contributor."""
    import pandas as pd

    summary = json.loads((run_dir / "training" / "summary.json").read_text())
    print(f"GPT-2 trained in {summary['seconds']} s ({summary['tokens_per_second']} tokens/s); held-out perplexity "
          f"{summary['validation_perplexity']:.1f} (unigram {summary['unigram_perplexity']:.1f})")
    print(pd.read_csv(run_dir / "comparison.csv").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    paid = pd.read_csv(run_dir / "credit" / "generation_credit.csv")
    print(paid.groupby("contributor")[["credit", "units"]].sum().to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


def _check_generation(args: argparse.Namespace) -> int:
    from attribution import AttributionError
    from datanet_lab.generation_check import check_generations  # the LM stack, only for this tool

    try:
        checks = check_generations(args.run_dir)
    except (AttributionError, FileNotFoundError) as error:
        print(f"datanet-lab: error: {error}", file=sys.stderr)
        return 1
    for check in checks:
        print(check)
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} generation payments re-check" + (f"; {failed} FAILED" if failed else ""))
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    """Every command's parser (imports the ML stack: the serving and sweep commands need it)."""
    from datanet_lab.serving.cli import add_commands as add_serving_commands
    from datanet_lab.sweeps.sweep_cli import add_commands as add_sweep_commands

    parser, commands = _top_parser()
    run = commands.add_parser("run", help="execute the notebook batch into results/<run_id>/")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (repeatable)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results directory (default: results)")
    run.add_argument("--text", action="store_true",
                     help="run the text batch (a text Datanet on MiniLM, into <run>/text/) instead of the default batch")
    run.add_argument("--generation", action="store_true",
                     help="run the generation batch (a GPT-2 on an LM Datanet, span credit per generation, into "
                          "<run>/generation/) instead of the default batch")
    run.set_defaults(handler=_run)
    add_sweep_commands(commands)
    add_serving_commands(commands)
    _add_ledger_command(commands)
    return parser


def _ledger_parser() -> argparse.ArgumentParser:
    """The parser of ``datanet-lab ledger ...`` alone (no ML stack imported)."""
    parser, commands = _top_parser()
    _add_ledger_command(commands)
    return parser


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="datanet-lab", description=__doc__.split("\n\n")[0])
    return parser, parser.add_subparsers(required=True, metavar="COMMAND")


def _add_ledger_command(commands: argparse._SubParsersAction) -> None:
    ledger_cmd = commands.add_parser(LEDGER, help="ledger tools").add_subparsers(required=True, metavar="TOOL")
    add_ledger_commands(ledger_cmd)
    check = ledger_cmd.add_parser("check-generation", help="re-check every generation payment of a generation run "
                                                           "offline (spans, credit, units); exit 1 naming the first bad one")
    check.add_argument("run_dir", type=Path, help="a generation run directory (<run>/generation)")
    check.set_defaults(handler=_check_generation)


if __name__ == "__main__":
    sys.exit(main())
