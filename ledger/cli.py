"""Ledger tools, usable without the ML stack: ``python -m ledger.cli TOOL ...`` or ``datanet-lab ledger TOOL ...``.

Exit codes: 0 ok, 1 the ledger, proof, receipt or checkpoint does not verify, 2 bad input (missing file...).
Every tool but ``export --out`` and ``--out`` files only reads: the ledger is opened read-only and
left byte-identical (:func:`ledger.store.open_read_only`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger import proofs, receipts
from ledger.errors import LedgerError, LedgerIntegrityError
from ledger.export import export
from ledger.store import Ledger
from ledger.verify import verify

_SHOW_COLUMNS = ("seq", "kind", "actor", "timestamp", "payload")


def add_commands(tools: argparse._SubParsersAction) -> None:
    """Add the ledger tools to ``tools`` (the sub-parsers of a ``ledger`` command)."""
    def tool(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser = tools.add_parser(name, help=help_text)
        parser.set_defaults(handler=handler)
        return parser

    p = tool("verify", _verify, "check chain, Merkle tree, heads and signatures of a ledger or an export; exit 1 naming the first bad entry")
    p.add_argument("path", type=Path, help="ledger.sqlite or an export .jsonl")
    p.add_argument("--workers", type=int, default=2, help="processes checking signatures (default 2)")
    p = tool("show", _show, "print the entries as a table")
    p.add_argument("path", type=Path)
    p.add_argument("--kind")
    p.add_argument("--actor")
    p = tool("export", _export, "write entries, signed tree heads and public keys as JSONL")
    p.add_argument("path", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = tool("head", _head, "print a signed tree head (a checkpoint for check-head)")
    p.add_argument("path", type=Path)
    p.add_argument("--size", type=int, help="the head of this many entries (default: the latest)")
    p.add_argument("--out", type=Path)
    p = tool("prove", _prove, "inclusion proof of one entry in the latest signed head, as JSON")
    p.add_argument("path", type=Path)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--out", type=Path)
    p = tool("consistency", _consistency, "consistency proof from an earlier signed head to the latest, as JSON")
    p.add_argument("path", type=Path)
    p.add_argument("--old-size", type=int, required=True)
    p.add_argument("--out", type=Path)
    p = tool("verify-proof", _verify_proof, "check an inclusion or consistency proof offline")
    p.add_argument("proof", type=Path)
    p.add_argument("--log-key", help="pin the log's public key (hex)")
    p = tool("verify-receipt", _verify_receipt, "check an inference receipt's two-level proof offline (receipt in its batch, batch in the log)")
    p.add_argument("receipt", type=Path, help="a receipt proof document (ledger.receipts.receipt_proof)")
    p.add_argument("--log-key", help="pin the log's public key (hex)")
    p = tool("check-head", _check_head, "prove the log still extends a saved head; report rollback or equivocation")
    p.add_argument("path", type=Path)
    p.add_argument("head", type=Path)
    p.add_argument("--log-key", help="pin the log's public key (hex)")


def _open(path: Path) -> Ledger:
    """The ledger at ``path``, read only (no keystore)."""
    return Ledger(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LedgerError(f"no file at {path}") from exc
    except ValueError as exc:
        raise LedgerError(f"{path} is not JSON: {exc}") from exc


def _emit(document: dict[str, Any], out: Path | None) -> int:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            out.write_text(text)
        except OSError as exc:
            raise LedgerError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
        print(f"written to {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = verify(args.path, workers=args.workers)
    print(report)
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    with _open(args.path) as book:
        rows = [(str(e.seq), e.kind, e.actor, e.timestamp, json.dumps(e.payload, sort_keys=True)[:80])
                for e in book.entries(args.kind, args.actor)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(_SHOW_COLUMNS)]
    for row in [_SHOW_COLUMNS, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.out.exists() and args.path.exists() and args.out.samefile(args.path):
        raise LedgerError(f"--out {args.out} is the ledger itself; export to another file")
    with _open(args.path) as book:
        lines = export(book, args.out)
    print(f"exported {lines} lines to {args.out}")
    return 0


def _head(args: argparse.Namespace) -> int:
    with _open(args.path) as book:
        return _emit(proofs.head_document(book, args.size), args.out)


def _prove(args: argparse.Namespace) -> int:
    with _open(args.path) as book:
        return _emit(proofs.inclusion_document(book, args.seq), args.out)


def _consistency(args: argparse.Namespace) -> int:
    with _open(args.path) as book:
        return _emit(proofs.consistency_document(book, args.old_size), args.out)


def _verify_proof(args: argparse.Namespace) -> int:
    check = proofs.check_document(_read_json(args.proof), args.log_key)
    print(check)
    return 0 if check.ok else 1


def _verify_receipt(args: argparse.Namespace) -> int:
    check = receipts.check_receipt(_read_json(args.receipt), args.log_key)
    print(check)
    return 0 if check.ok else 1


def _check_head(args: argparse.Namespace) -> int:
    saved = _read_json(args.head)
    with _open(args.path) as book:
        check = proofs.check_head(book, saved, args.log_key)
    print(check)
    return 0 if check.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ledger.cli``."""
    parser = argparse.ArgumentParser(prog="python -m ledger.cli", description=__doc__)
    add_commands(parser.add_subparsers(required=True, metavar="TOOL"))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LedgerError as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, LedgerIntegrityError) else 2


if __name__ == "__main__":
    sys.exit(main())
