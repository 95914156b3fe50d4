"""The user's own text: a CSV, Parquet or JSONL file with a text column and a label column."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from datanet.data import checked_label_set, read_frame
from datanet.errors import DataSourceError
from datanet.text.table import TextTable, corpus_hash

TEXT_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl")


def load_text_file(path: str | Path, text_column: str, label_column: str) -> TextTable:
    """Load ``path`` as a :class:`TextTable`; ``sources`` are ``file:row`` (data rows from 1).

    Texts are kept as written (judging them is :mod:`datanet.text.validation`'s job: an empty
    text is a row it rejects, not a bad file): a CSV's text cells are read as strings (``007``
    stays ``007``, an empty cell is ``""``); in JSONL and Parquet a null or missing text is ``""``
    and any other non-string value is refused. Every label must be a single value.

    Raises:
        DataSourceError: an unknown suffix, a missing, unreadable or empty file, a column named
            twice, a missing text or label column, a non-string text, a nested label, fewer than 2
            classes.
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
    texts = _texts(path, frame, text_column)
    labels = frame[label_column].tolist()
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


def _texts(path: Path, frame: pd.DataFrame, column: str) -> list[str]:
    """The text ``column`` of ``frame`` (read from ``path``) as strings (:func:`load_text_file`)."""
    if path.suffix.lower() == ".csv":  # a CSV cell is text: no number parsing, no NaN for an empty cell
        return pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False)[column].tolist()
    texts = ["" if text is None or (isinstance(text, float) and math.isnan(text)) else text for text in frame[column]]
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataSourceError(f"text column {column!r} of {path} holds {text!r} ({type(text).__name__}) "
                                  f"in data row {row}: a text must be a string")
    return texts


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per non-blank line (a UTF-8 byte-order mark is skipped); an empty file, a
    malformed or too deeply nested line, or a key named twice is refused."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"cannot read text file {path}: {type(exc).__name__}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pairs = json.loads(line, object_pairs_hook=list)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"text file {path} line {number} is not JSON: {exc}") from exc
        except RecursionError:
            raise DataSourceError(f"text file {path} line {number} nests JSON arrays or objects too deeply "
                                  f"to read") from None
        if not isinstance(pairs, list) or not line.lstrip().startswith("{"):
            raise DataSourceError(f"text file {path} line {number} is not a JSON object: {line[:80]!r}")
        keys = [key for key, _ in pairs]
        repeated = sorted({k for i, k in enumerate(keys) if k in keys[:i]})
        if repeated:
            raise DataSourceError(f"text file {path} line {number} names key(s) {repeated} more than once")
        records.append(dict(pairs))
    if not records:
        raise DataSourceError(f"text file {path} is empty: it holds no JSON object line")
    return pd.DataFrame.from_records(records)
