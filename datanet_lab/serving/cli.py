"""The ``serve-sim`` and ``serve`` subcommands of ``datanet-lab``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from datanet_lab.serving.runs import ServingError
from datanet_lab.serving.server import add_command as add_serve_command
from datanet_lab.serving.sim import MAX_REQUESTS, serve_sim


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``serve-sim`` and ``serve`` on the ``datanet-lab`` parser's subcommands."""
    sim = commands.add_parser("serve-sim", help="serve a finished run as paid, receipted inferences and measure it")
    sim.add_argument("run_dir", type=Path, help="a run directory whose build, train and attribute steps are done")
    sim.add_argument("--requests", type=int, help=f"inferences to serve, inputs cycled (default: one pass over the inputs; "
                                                  f"at most {MAX_REQUESTS:,})")
    sim.add_argument("--inputs", type=Path, help="a CSV (with a header naming the run's features, or none), Parquet or "
                                                 "JSONL file of inputs (default: the run's test set)")
    sim.add_argument("--batch-size", type=int, default=256, help="inferences per micro-batch and commit (default: 256)")
    sim.add_argument("--fee", type=int, default=1000, help="units per inference (default: 1000)")
    sim.add_argument("--top-k", type=int, default=5, help="top contributors per receipt (default: 5)")
    sim.add_argument("--seed", type=int, default=0, help="order of the test set's passes, an integer >= 0 (default: 0)")
    sim.add_argument("--threads", type=int, default=1,
                     help="torch threads (default: 1; micro-batches are small, and more threads thrash on a busy machine)")
    sim.set_defaults(handler=_serve_sim)
    add_serve_command(commands)


def _serve_sim(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ServingError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    serve_sim(args.run_dir, requests=args.requests, inputs=args.inputs, batch_size=args.batch_size, fee=args.fee,
              top_k=args.top_k, seed=args.seed)
    return 0
