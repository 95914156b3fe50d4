"""JSONL export of a ledger (keys, entries, signed heads) that :func:`ledger.verify` checks offline.

Line 1 is ``{"type": "log", "format": FORMAT, "log_public_key": ...}``; then one line per public
key (``"type": "key"``), per entry (``"type": "entry"``, the payload as a JSON object) and per
signed tree head (``"type": "head"``). No SQLite is needed to read it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ledger.canonical import canonical_json
from ledger.errors import LedgerError
from ledger.store import COLUMNS, Ledger, SignedHead
from ledger.verify import LogContents

FORMAT = "datanet-ledger-export/1"
_ENTRY_FIELDS = COLUMNS.split(", ")


def export(book: Ledger, out: str | Path) -> int:
    """Write ``book`` to ``out`` as JSONL (atomically: a partial file is never left); return the line count."""
    out = Path(out)
    lines: list[dict[str, Any]] = [{"type": "log", "format": FORMAT, "log_public_key": book.log_public_key}]
    lines += [{"type": "key", "actor": a, "role": r, "public_key": k, "proof": p} for a, (r, k, p) in book.key_records().items()]
    lines += [{"type": "entry", **e.to_dict()} for e in book.entries()]
    lines += [{"type": "head", **h.to_dict()} for h in book.heads()]
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LedgerError(f"cannot write the export to {out}: {exc.strerror or exc}") from exc
    return len(lines)


def read_export(path: str | Path) -> LogContents:
    """Parse an export; raises :class:`LedgerError` naming the line of anything unreadable, of a
    key repeated inside a JSON object (readers disagree on which value counts), or of a second key
    line for an actor (an actor's key is registered once)."""
    path = Path(path)
    rows, heads, keys, key_lines, log_key = [], [], {}, {}, None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, 1):
            try:
                line = json.loads(text, object_pairs_hook=_unique_keys)
                kind = line["type"]
                if number == 1:
                    if kind != "log" or line.get("format") != FORMAT:
                        raise LedgerError(f"{path}:1: not a ledger export (expected format {FORMAT!r})")
                    log_key = line["log_public_key"]
                elif kind == "key":
                    actor = line["actor"]
                    if actor in key_lines:
                        raise LedgerError(f"{path}:{number}: a second key line for actor {actor!r} (the first is line "
                                          f"{key_lines[actor]}); an actor's key is registered once")
                    key_lines[actor] = number
                    keys[actor] = (line["role"], line["public_key"], line["proof"])
                elif kind == "entry":
                    line["payload"] = canonical_json(line["payload"]).decode("utf-8")
                    rows.append(tuple(line[f] for f in _ENTRY_FIELDS))
                elif kind == "head":
                    heads.append(SignedHead(line["size"], line["root"], line["timestamp"], line["signature"]))
                else:
                    raise LedgerError(f"{path}:{number}: unknown line type {kind!r}")
            except RecursionError as exc:
                raise LedgerError(f"{path}:{number}: unreadable export line: JSON nested too deeply") from exc
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LedgerError(f"{path}:{number}: unreadable export line: {exc!r}") from exc
    if log_key is None and not rows:
        raise LedgerError(f"{path} is empty or not a ledger export")
    heads.sort(key=lambda h: h.size if isinstance(h.size, int) else -1)
    return LogContents(rows, heads, keys, log_key)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object, refused when a key appears twice in it."""
    found = dict(pairs)
    if len(found) != len(pairs):
        repeated = sorted({k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1})
        raise ValueError(f"key(s) {repeated} appear twice in one JSON object")
    return found
