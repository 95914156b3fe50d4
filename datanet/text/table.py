"""A loaded text source and the hash that names its content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TextTable:
    """A text source: ``texts`` (n,) with ``labels`` (n,) and where each came from, ``sources`` (n,).

    ``label_set`` is the sorted set of valid labels; a label's class index is its position.
    ``provenance`` records what the content depends on (package versions, file path) and its
    ``corpus_sha256`` (:func:`corpus_hash`).
    """

    name: str
    texts: tuple[str, ...]
    labels: tuple
    sources: tuple[str, ...]
    label_set: tuple
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)


def corpus_hash(texts: Sequence[str], labels: Sequence) -> str:
    """SHA-256 hex digest of the ordered (text, label) pairs (JSON, UTF-8): any change to a text,
    a label or the order changes it."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    pairs = [[text, label] for text, label in zip(texts, labels)]
    payload = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
