"""Inference inputs: read from a CSV, Parquet or JSONL file, or taken one at a time, and checked.

An input is one row of ``n_features`` numbers (the raw features the run's Datanet holds; the model
standardizes them itself), each finite once it is a :data:`MODEL_DTYPE` (float32, the precision
the served models compute in): ``1e308`` is a finite float64 but an infinite float32, so it is
refused. :func:`check_input` judges one row (an HTTP request's body), :func:`check_batch` an
array at once, :func:`read_requests` a file. Each refuses the first bad input with a
:class:`RequestError` naming the file, the row and the field, and returns nothing.

File formats:

- CSV (``.csv``): one input per row, ``n_features`` columns, after an optional header row. The
  first line is a header when none of its cells is a number; given the run's feature names, a
  header must name exactly those features (in any order: columns are taken by name). A first
  line of numbers is a data row, except ``0, 1, ..., n_features - 1`` (the column names pandas
  writes for an unnamed frame), which is refused as ambiguous; a first line mixing numbers and
  text is refused too. No line is ever dropped unread.
- Parquet (``.parquet``, ``.pq``): one input per row, ``n_features`` numeric columns, named as
  the run's features (in any order) when those are given.
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
MODEL_DTYPE = np.float32
"""The precision the served models compute in: every input value must be finite in it."""
_OUT_OF_RANGE = f"beyond the float32 range the model computes in (magnitude at most {float(np.finfo(MODEL_DTYPE).max):.8g})"


class RequestError(DatanetError, ValueError):
    """An inference input that cannot be served: wrong width, a non-numeric field, one that is not
    finite as a float32, or an unreadable file; the message names the file, row and field."""


def _field(index: int, names: Sequence[str] | None) -> str:
    return f"field {index}" if names is None else f"field {index} ({names[index]!r})"


def _fits(x: np.ndarray | float) -> np.ndarray:
    """Whether each value of float64 ``x`` is finite once it is a :data:`MODEL_DTYPE`."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(np.asarray(x, dtype=np.float64).astype(MODEL_DTYPE))


def _shown(value: Any) -> str:
    """``value`` quoted in an error: a long integer by its digit count, else its ``repr`` cut to 40 characters."""
    if isinstance(value, int) and abs(value) > 10**40:  # str() refuses past 4300 digits; log10 is off by one near 10**k
        digits = math.floor(math.log10(abs(value))) + 1
        digits += (abs(value) >= 10**digits) - (abs(value) < 10 ** (digits - 1))
        return f"an integer of {digits} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def _problem(value: Any) -> str | None:
    """Why ``value`` cannot be an input field, or ``None`` when it can."""
    if not is_number(value):
        return f"is {_shown(value)} ({type(value).__name__}), expected a number"
    try:
        number = float(value)
    except OverflowError:  # an int past the float64 range
        return f"is {_shown(value)}, {_OUT_OF_RANGE}"
    if not math.isfinite(number):
        return f"is {_shown(value)}, expected a finite number"
    if not _fits(number):
        return f"is {_shown(value)}, {_OUT_OF_RANGE}"
    return None


def check_input(values: Sequence[Any] | np.ndarray, n_features: int, names: Sequence[str] | None = None) -> np.ndarray:
    """``(n_features,)`` float64 copy of one input row.

    ``values`` is a sequence of numbers (ints or floats, numpy scalars included; ``bool`` and
    strings are not numbers). ``names`` (one per field) are quoted beside field indices in errors.

    Raises:
        RequestError (a ``ValueError``): not a flat sequence, the wrong number of fields, a field
            that is not a number, or one that is not finite as a float32; the message names the field.
    """
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (Sequence, np.ndarray)):
        raise RequestError(f"an input must be a sequence of {n_features} numbers, got {type(values).__name__}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise RequestError(f"an input must be one row of {n_features} numbers, got an array of shape {values.shape}")
    if len(values) != n_features:
        raise RequestError(f"wrong width: {len(values)} fields, expected {n_features}")
    for index, value in enumerate(values):
        problem = _problem(value)
        if problem is not None:
            raise RequestError(f"{_field(index, names)} {problem}")
    return np.array(values, dtype=np.float64)


def check_batch(x: np.ndarray, n_features: int, source: str = "inputs", names: Sequence[str] | None = None) -> np.ndarray:
    """``(n, n_features)`` float64 copy of a batch of inputs, checked at once (vectorised).

    Raises:
        RequestError: ``x`` is not a 2-D numeric (not bool) array of width ``n_features``, or
            holds a value that is not finite as a float32; the message names ``source``, the
            first bad row (from 1) and its field.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise RequestError(f"{source}: expected an array of shape (n, {n_features}), got {x.shape}")
    if x.dtype.kind not in "iuf":
        raise RequestError(f"{source}: expected numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = ~_fits(x)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise RequestError(f"{source}: data row {row + 1}, {_field(int(column), names)} {_problem(float(x[row, column]))}")
    return x


def read_requests(path: str | Path, n_features: int, names: Sequence[str] | None = None) -> np.ndarray:
    """``(n, n_features)`` float64 inputs from a CSV, Parquet or JSONL file (formats in the module
    docstring), in file order. ``names``: the run's feature names, which a CSV header or Parquet
    columns must name (columns are then taken in this order).

    Raises:
        RequestError: an unknown suffix, a missing or unreadable file, no input, an ambiguous CSV
            first line, columns that are not the run's features, the wrong number of fields, a
            non-numeric field or one not finite as a float32 (naming the file, the data row from 1
            or the JSONL line, and the field).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REQUEST_SUFFIXES:
        raise RequestError(f"request file {path} must end in one of {list(REQUEST_SUFFIXES)}")
    if not path.is_file():
        raise RequestError(f"request file not found: {path}")
    if suffix == ".jsonl":
        x = _read_jsonl(path, n_features)
    else:
        frame = _read_csv(path, n_features, names) if suffix == ".csv" else _read_parquet(path, names)
        x = _table_inputs(frame, f"request file {path}", n_features)
    if not len(x):
        raise RequestError(f"request file {path} holds no input")
    return x


def _reading(path: Path, read: Any, **options: Any) -> pd.DataFrame:
    """``read(path, **options)`` with its failures as a :class:`RequestError` naming ``path``."""
    try:
        return read(path, **options)
    except pd.errors.EmptyDataError:
        raise RequestError(f"request file {path} holds no input") from None
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt or foreign file
        raise RequestError(f"cannot read request file {path}: {type(exc).__name__}: {exc}") from exc


def _read_csv(path: Path, n_features: int, names: Sequence[str] | None) -> pd.DataFrame:
    """The CSV's data rows (its first line judged as the module docstring says), columns named
    after the header, or after ``names`` (positional columns when ``None``) in a file without one."""
    first = _reading(path, pd.read_csv, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    numbers = [_as_number(cell) for cell in first]
    if all(is_number(value) for value in numbers):
        if numbers == list(range(n_features)):
            raise RequestError(f"request file {path}: its first line {first} is ambiguous: pandas' default column "
                               "names, or a data row; write the run's feature names as the header")
        frame = _reading(path, pd.read_csv, header=None)  # a later row wider than the first is a parse error
        if names is not None and frame.shape[1] == len(names):  # a wrong width is refused by _table_inputs
            frame.columns = list(names)
        return frame
    if any(is_number(value) for value in numbers):
        raise RequestError(f"request file {path}: its first line {first} mixes numbers and text: neither a header "
                           "naming the fields nor a row of numbers")
    frame = _reading(path, pd.read_csv, header=None, skiprows=1)  # header=0 would take extra data columns as an index
    if frame.shape[1] != len(first):
        raise RequestError(f"request file {path}: its header names {len(first)} columns {first}, its first data row "
                           f"has {frame.shape[1]}")
    return _named(frame.set_axis(first, axis=1), path, names)


def _read_parquet(path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    frame = _reading(path, pd.read_parquet)
    return _named(frame.set_axis([str(c) for c in frame.columns], axis=1), path, names)


def _named(frame: pd.DataFrame, path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    """``frame`` with its columns in the order of ``names``, which they must be exactly (any when ``None``)."""
    columns = list(frame.columns)
    repeated = sorted({c for i, c in enumerate(columns) if c in columns[:i]})
    if repeated:
        raise RequestError(f"request file {path} names column(s) {repeated} more than once; columns: {columns}")
    if names is None or columns == list(names):
        return frame
    missing, unknown = [n for n in names if n not in columns], [c for c in columns if c not in names]
    if missing or unknown:
        raise RequestError(f"request file {path}: its columns are not the run's features: missing {missing}, "
                           f"unknown {unknown}; expected {list(names)}")
    return frame[list(names)]


def _table_inputs(frame: pd.DataFrame, source: str, n_features: int) -> np.ndarray:
    """``frame``'s rows as checked inputs: at once when every column is numeric, else cell by cell
    (``read_csv`` makes a whole column text for one text cell). Named columns are quoted in errors."""
    names = None if isinstance(frame.columns, pd.RangeIndex) else [str(c) for c in frame.columns]
    if frame.shape[1] != n_features:
        listed = "" if names is None else f" {names}"
        raise RequestError(f"{source}: wrong width: {frame.shape[1]} columns{listed}, expected {n_features}")
    if all(dtype.kind in "iuf" for dtype in frame.dtypes):
        return check_batch(frame.to_numpy(dtype=np.float64, na_value=np.nan), n_features, source, names)
    rows = []
    for row, values in enumerate(frame.itertuples(index=False), start=1):
        try:
            rows.append(check_input([_as_number(v) if isinstance(v, str) else v for v in values], n_features, names))
        except RequestError as error:
            raise RequestError(f"{source}: data row {row}, {error}") from None
    return np.array(rows, dtype=np.float64).reshape(len(rows), n_features)


def _as_number(text: str) -> Any:
    """``text`` as an int or a float when it reads as one, else unchanged."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
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
        except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer past Python's digit limit
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RequestError(f"{where} is not JSON this reader takes: {reason}") from None
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
