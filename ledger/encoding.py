"""The bytes that are signed and hashed: statements, entries (the Merkle leaves) and tree heads.

All three are RFC 8785 canonical JSON. The payload is kept as its canonical text, so it is spliced
in verbatim instead of being re-canonicalized (the verifier's hot path). The other fields are
integers and strings from a restricted alphabet (actor ids, kinds, ISO timestamps, hex digests),
for which compact sorted ``json.dumps`` output *is* the RFC 8785 form.
"""

from __future__ import annotations

import json
import re

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""
_PLAIN = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')  # printable ASCII but '"' and '\\': nothing to escape


def _string(value: str) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def statement_bytes(kind: str, actor: str, payload_text: str) -> bytes:
    """What an actor signs: ``{"actor", "kind", "payload"}``; position and time are the log's."""
    return f'{{"actor":{_string(actor)},"kind":{_string(kind)},"payload":{payload_text}}}'.encode()


def entry_bytes(
    seq: int, kind: str, actor: str, timestamp: str, payload_text: str, prev_hash: str, signature: str
) -> bytes:
    """The raw entry: canonical JSON of every field but its own hash; it is the Merkle leaf."""
    return signed_entry_bytes(statement_bytes(kind, actor, payload_text), seq, timestamp, prev_hash, signature)


def signed_entry_bytes(statement: bytes, seq: int, timestamp: str, prev_hash: str, signature: str) -> bytes:
    """:func:`entry_bytes` of the entry whose :func:`statement_bytes` is ``statement``. The
    statement's keys (``actor``, ``kind``, ``payload``) sort before the log's, so the entry is the
    statement without its closing brace, then ``prev_hash``, ``seq``, ``signature``, ``timestamp``:
    a writer that has the statement (it signed it) need not encode it again."""
    return statement[:-1] + (
        f',"prev_hash":{_string(prev_hash)},"seq":{int(seq)},"signature":{_string(signature)},'
        f'"timestamp":{_string(timestamp)}}}'
    ).encode()


def head_bytes(size: int, root: str, timestamp: str) -> bytes:
    """What the log signs for a tree head: ``{"root", "size", "timestamp"}``."""
    return f'{{"root":{_string(root)},"size":{int(size)},"timestamp":{_string(timestamp)}}}'.encode()


def key_bytes(actor: str, role: str, public_key: str) -> bytes:
    """What a key signs to prove its holder registered it: ``{"actor", "public_key", "role"}``."""
    return f'{{"actor":{_string(actor)},"public_key":{_string(public_key)},"role":{_string(role)}}}'.encode()
