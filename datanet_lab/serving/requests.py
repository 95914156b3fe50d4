"""Inference inputs: read from a CSV, Parquet or JSONL file, or taken one at a time, and checked.

An input is one row of ``n_features`` finite numbers (the raw features the run's Datanet holds;
the model standardizes them itself). :func:`check_input` judges one row (an HTTP request's body),
:func:`check_batch` an array at once, :func:`read_requests` a file. Each refuses the first bad
input with a :class:`RequestError` naming the file, the row and the field, and returns nothing.

File formats:

- CSV (``.csv``): a header row naming the fields, then one input per row, ``n_features``
  columns. A header made of numbers is refused (it is a data row, and would be lost).
- Parquet (``.parquet``, ``.pq``): one input per row, ``n_features`` numeric columns.
- JSONL (``.jsonl``): one input per non-blank line, a JSON array of ``n_features`` numbers or an
  object whose ``"features"`` key holds that array (its other keys, e.g. an id, are left alone).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datanet import DatanetError
from datanet.data import is_number

REQUEST_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl")


class RequestError(DatanetError, ValueError):
    """An inference input that cannot be served: wrong width, a non-numeric or non-finite field,
    or an unreadable file; the message names the file, row and field."""


def _field(index: int, names: Sequence[str] | None) -> str:
    return f"field {index}" if names is None else f"field {index} ({names[index]!r})"


def check_input(values: Sequence[Any] | np.ndarray, n_features: int, names: Sequence[str] | None = None) -> np.ndarray:
    """``(n_features,)`` float64 copy of one input row.

    ``values`` is a sequence of numbers (ints or floats, numpy scalars included; ``bool`` and
    strings are not numbers). ``names`` (one per field) are quoted beside field indices in errors.

    Raises:
        RequestError (a ``ValueError``): not a flat sequence, the wrong number of fields, a field
            that is not a number, or one that is NaN or infinite; the message names the field.
    """
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (Sequence, np.ndarray)):
        raise RequestError(f"an input must be a sequence of {n_features} numbers, got {type(values).__name__}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise RequestError(f"an input must be one row of {n_features} numbers, got an array of shape {values.shape}")
    if len(values) != n_features:
        raise RequestError(f"wrong width: {len(values)} fields, expected {n_features}")
    for index, value in enumerate(values):
        if not is_number(value):
            raise RequestError(f"{_field(index, names)} is {value!r} ({type(value).__name__}), expected a number")
        if not math.isfinite(value):
            raise RequestError(f"{_field(index, names)} is {value!r}, expected a finite number")
    return np.array(values, dtype=np.float64)


def check_batch(x: np.ndarray, n_features: int, source: str = "inputs", names: Sequence[str] | None = None) -> np.ndarray:
    """``(n, n_features)`` float64 copy of a batch of inputs, checked at once (vectorised).

    Raises:
        RequestError: ``x`` is not a 2-D numeric (not bool) array of width ``n_features``, or
            holds NaN/inf; the message names ``source``, the first bad row (from 1) and its field.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise RequestError(f"{source}: expected an array of shape (n, {n_features}), got {x.shape}")
    if x.dtype.kind not in "iuf":
        raise RequestError(f"{source}: expected numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise RequestError(f"{source}: data row {row + 1}, {_field(int(column), names)} is {float(x[row, column])!r}, "
                           "expected a finite number")
    return x


def read_requests(path: str | Path, n_features: int) -> np.ndarray:
    """``(n, n_features)`` float64 inputs from a CSV, Parquet or JSONL file (formats in the module
    docstring), in file order.

    Raises:
        RequestError: an unknown suffix, a missing or unreadable file, no input, a numeric CSV
            header, the wrong number of fields, a non-numeric or non-finite field (naming the
            file, the data row from 1 or the JSONL line, and the field).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REQUEST_SUFFIXES:
        raise RequestError(f"request file {path} must end in one of {list(REQUEST_SUFFIXES)}")
    if not path.is_file():
        raise RequestError(f"request file not found: {path}")
    x = _read_jsonl(path, n_features) if suffix == ".jsonl" else _read_table(path, n_features)
    if not len(x):
        raise RequestError(f"request file {path} holds no input")
    return x


def _read_table(path: Path, n_features: int) -> np.ndarray:
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise RequestError(f"request file {path} is empty; expected a header row and inputs") from None
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt or foreign file
        raise RequestError(f"cannot read request file {path}: {type(exc).__name__}: {exc}") from exc
    names = [str(c) for c in frame.columns]
    if path.suffix.lower() == ".csv" and all(is_number(_as_number(name)) for name in names):
        raise RequestError(f"request file {path}: its first line {names} is numbers, not a header row naming the "
                           "fields; add a header row")
    if len(names) != n_features:
        raise RequestError(f"request file {path}: wrong width: {len(names)} columns {names}, expected {n_features}")
    if all(frame[c].dtype.kind in "iuf" for c in frame.columns):
        return check_batch(frame.to_numpy(dtype=np.float64, na_value=np.nan), n_features, f"request file {path}", names)
    rows = []  # a column of text, bools or dates: judge cell by cell (read_csv makes a column text for one text cell)
    for row, values in enumerate(frame.itertuples(index=False), start=1):
        try:
            rows.append(check_input([_as_number(v) if isinstance(v, str) else v for v in values], n_features, names))
        except RequestError as error:
            raise RequestError(f"request file {path}: data row {row}, {error}") from None
    return np.array(rows, dtype=np.float64)


def _as_number(text: str) -> Any:
    """``text`` as a float when it reads as one, else unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _read_jsonl(path: Path, n_features: int) -> np.ndarray:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read request file {path}: {type(exc).__name__}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"request file {path} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{where} is not JSON: {exc}") from None
        if isinstance(value, dict):
            if "features" not in value:
                raise RequestError(f"{where}: an object needs a 'features' key holding the input; keys: {sorted(value)}")
            value = value["features"]
        if not isinstance(value, list):
            raise RequestError(f"{where}: expected a JSON array of {n_features} numbers, got {type(value).__name__}")
        try:
            rows.append(check_input(value, n_features))
        except RequestError as error:
            raise RequestError(f"{where}: {error}") from None
    return np.array(rows, dtype=np.float64).reshape(len(rows), n_features)
