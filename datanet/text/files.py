"""The user's own text: a CSV, Parquet or JSONL file with a text column and a label column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from datanet.data import checked_label_set, read_frame
from datanet.errors import DataSourceError
from datanet.text.table import TextTable, corpus_hash

TEXT_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl")


def load_text_file(path: str | Path, text_column: str, label_column: str) -> TextTable:
    """Load ``path`` as a :class:`TextTable`; ``sources`` are ``file:row`` (data rows from 1).

    Texts are kept as written (judging them is :mod:`datanet.text.validation`'s job), but every
    text cell must be a string and every label a single value.

    Raises:
        DataSourceError: an unknown suffix, a missing or unreadable file, a column named twice, a
            missing text or label column, a non-string text, a nested label, fewer than 2 classes.
    """
    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataSourceError(f"text file {path} must end in one of {list(TEXT_SUFFIXES)}")
    if not path.is_file():
        raise DataSourceError(f"text file not found: {path}")
    frame = _read_jsonl(path) if path.suffix.lower() == ".jsonl" else read_frame(path)
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if not column:
            raise DataSourceError(f"{role} is required for {path}; columns: {list(frame.columns)}")
        if column not in frame.columns:
            raise DataSourceError(f"{role} {column!r} not in {path}; columns: {list(frame.columns)}")
    if text_column == label_column:
        raise DataSourceError(f"text_column and label_column of {path} are both {text_column!r}")
    if len(frame) == 0:
        raise DataSourceError(f"text file {path} has no data rows")
    texts = frame[text_column].tolist()
    labels = frame[label_column].tolist()
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataSourceError(f"text column {text_column!r} of {path} holds {text!r} ({type(text).__name__}) "
                                  f"in data row {row}: a text must be a string")
    label_set = checked_label_set(labels, label_column, path)
    return TextTable(
        name=path.stem,
        texts=tuple(texts),
        labels=tuple(labels),
        sources=tuple(f"{path.name}:{row}" for row in range(1, len(texts) + 1)),
        label_set=label_set,
        provenance={"kind": "file", "path": str(path), "text_column": text_column,
                    "label_column": label_column, "corpus_sha256": corpus_hash(texts, labels)},
    )


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per non-blank line; a malformed line or a key named twice is refused."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"cannot read text file {path}: {type(exc).__name__}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pairs = json.loads(line, object_pairs_hook=list)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"text file {path} line {number} is not JSON: {exc}") from exc
        if not isinstance(pairs, list) or not line.lstrip().startswith("{"):
            raise DataSourceError(f"text file {path} line {number} is not a JSON object: {line[:80]!r}")
        keys = [key for key, _ in pairs]
        repeated = sorted({k for i, k in enumerate(keys) if k in keys[:i]})
        if repeated:
            raise DataSourceError(f"text file {path} line {number} names key(s) {repeated} more than once")
        records.append(dict(pairs))
    return pd.DataFrame.from_records(records)
