"""Ledger tools, usable without the ML stack: ``python -m ledger.cli TOOL ...`` or ``datanet-lab ledger TOOL ...``.

Exit codes: 0 ok, 1 the ledger, proof, receipt or checkpoint does not verify, 2 bad input (missing file...).
Every tool but ``export --out`` and ``--out`` files only reads: the ledger is opened read-only and
left byte-identical (:func:`ledger.store.open_read_only`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
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
    p = tool("verify-proof", _verify_proof, "check an inclusion or consistency proof offline against a log key you choose: "
                                            "--log-key, --ledger or --head")
    p.add_argument("proof", type=Path)
    _add_log_key_options(p, "take the log key from this ledger")
    p = tool("receipt-proof", _receipt_proof, "the proof document of one served inference's receipt, for verify-receipt")
    p.add_argument("inference", type=Path, help=f"a served run's inference folder (RUN/inference, holding {RECEIPTS})")
    p.add_argument("request_id", help="the receipt's request id (e.g. req-0000000037)")
    p.add_argument("--ledger", type=Path, help="the run's ledger (default: ledger.sqlite beside the inference folder)")
    p.add_argument("-o", "--out", type=Path)
    p = tool("verify-receipt", _verify_receipt, "check an inference receipt's two-level proof offline (receipt in its batch, batch in the log) "
                                                "against a log key you choose: --log-key, --ledger or --head")
    p.add_argument("receipt", type=Path, help="a receipt proof document (receipt-proof, ledger.receipts.receipt_proof)")
    _add_log_key_options(p, "take the log key from this ledger, and check the batch's signer and its role there")
    p = tool("check-head", _check_head, "prove the log still extends a saved head; report rollback or equivocation; "
                                        "against a log key you choose: --log-key, --ledger or --head")
    p.add_argument("path", type=Path)
    p.add_argument("head", type=Path)
    _add_log_key_options(p, "take the log key from this ledger (a copy you trust, not the one checked)")


def _add_log_key_options(parser: argparse.ArgumentParser, ledger_help: str) -> None:
    """The options of a checking tool that choose the log key (exactly one is needed: :func:`_chosen_log_key`)."""
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--log-key", help="the log's public key (64 hex digits)")
    chosen.add_argument("--ledger", type=Path, help=ledger_help)
    chosen.add_argument("--head", dest="key_head", metavar="HEAD", type=Path,
                        help="take the log key from this saved signed head (a `head` checkpoint)")


def _open(path: Path) -> Ledger:
    """The ledger at ``path``, read only (no keystore)."""
    return Ledger(path)


RECEIPTS = "receipts.jsonl"
"""The receipts file of an inference folder (``datanet_lab.serving.economy``)."""
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LedgerError(f"no file at {path}") from exc
    except IsADirectoryError as exc:
        raise LedgerError(f"{path} is a directory, not a JSON file") from exc
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except RecursionError as exc:
        raise LedgerError(f"{path}: JSON nested too deeply to read") from exc
    except ValueError as exc:
        raise LedgerError(f"{path} is not JSON: {exc}") from exc


def _checked(path: Path, check: Callable[..., proofs.ProofCheck], *args: Any) -> int:
    """Print ``check(*args)`` of the document read from ``path``; 0 when it holds, else 1."""
    try:
        result = check(*args)
    except RecursionError as exc:
        raise LedgerError(f"{path}: JSON nested too deeply to check") from exc
    print(result)
    return 0 if result.ok else 1


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
    document = _read_json(args.proof)
    log_key, _ = _chosen_log_key(args, "verify-proof", args.proof)
    return _checked(args.proof, proofs.check_document, document, log_key)


def _receipt_proof(args: argparse.Namespace) -> int:
    if not args.inference.is_dir():
        raise LedgerError(f"{args.inference} is not a folder: give a served run's inference folder (RUN/inference)")
    receipts_path = args.inference / RECEIPTS
    if not receipts_path.is_file():
        raise LedgerError(f"{args.inference} holds no {RECEIPTS}: is it a served run's inference folder?")
    with _open(args.ledger or args.inference.resolve().parent / "ledger.sqlite") as book:
        return _emit(receipts.request_proof(book, receipts_path, args.request_id), args.out)


def _verify_receipt(args: argparse.Namespace) -> int:
    document = _read_json(args.receipt)
    log_key, keys = _chosen_log_key(args, "verify-receipt", args.receipt)
    return _checked(args.receipt, receipts.check_receipt, document, log_key, keys)


def _chosen_log_key(args: argparse.Namespace, tool: str, document: Path) -> tuple[str, dict[str, tuple[str, str, str]] | None]:
    """The log key the checker chose (:func:`_add_log_key_options`) and, given ``--ledger``, that
    ledger's registered keys (:meth:`ledger.Ledger.key_records`).

    Raises:
        LedgerError: no key chosen (the key inside ``document`` is the document's own claim), or
            one that is not 64 lower-case hex digits.
    """
    keys = None
    if args.ledger is not None:
        with _open(args.ledger) as book:
            log_key, keys = book.log_public_key, book.key_records()
    elif args.key_head is not None:
        log_key = _saved_log_key(args.key_head)
    elif args.log_key is not None:
        log_key = args.log_key
    else:
        raise LedgerError(f"{tool} needs a log key you chose: give --log-key HEX, --ledger PATH or --head HEAD.json "
                          f"(the key inside {document} is the document's own claim)")
    if type(log_key) is not str or not _HEX_KEY.fullmatch(log_key):
        raise LedgerError(f"the log key must be 64 lower-case hex digits, got {log_key!r}")
    return log_key, keys


def _saved_log_key(path: Path) -> Any:
    """The log key of the saved signed head at ``path``."""
    saved = _read_json(path)
    if type(saved) is not dict or "log_public_key" not in saved:
        raise LedgerError(f"{path} is not a saved signed head (a `head` checkpoint): no log_public_key")
    return saved["log_public_key"]


def _check_head(args: argparse.Namespace) -> int:
    saved = _read_json(args.head)
    log_key, _ = _chosen_log_key(args, "check-head", args.head)
    with _open(args.path) as book:
        return _checked(args.head, proofs.check_head, book, saved, log_key)


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
