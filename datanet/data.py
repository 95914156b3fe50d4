"""Load a source table: one of scikit-learn's bundled datasets, or the user's CSV/Parquet file.

A :class:`Table` keeps each row's raw feature values (``dtype=object`` for files, so a text cell
stays text) because judging rows is the validators' job, not the loader's.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from datanet.errors import DataSourceError

BUILTIN_DATASETS: dict[str, Callable[[], Any]] = {
    "digits": sk_datasets.load_digits,
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
}
IMAGE_SHAPES = {"digits": (8, 8)}
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest finite float32: models compute in float32, where a larger magnitude becomes inf."""
FILE_SUFFIXES = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


@dataclass(frozen=True)
class Table:
    """A loaded source: ``features`` (n_rows, n_features) raw values and ``labels`` (n_rows,).

    ``label_set`` is the sorted set of valid labels; a label's class index is its position.
    ``image_shape`` is set when rows are flattened images (digits: 8×8).
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    label_set: tuple
    image_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def valid_rows(self) -> np.ndarray:
        """Boolean mask (n_rows,) of rows whose features are all numbers float32 holds finitely
        (:func:`is_float32_value`) and whose label is valid."""
        finite = np.array([all(is_float32_value(v) for v in row) for row in self.features], dtype=bool)
        in_set = pd.Series(self.labels).isin(self.label_set).to_numpy()
        return finite & in_set


def is_number(value: Any) -> bool:
    """A real number that is not a bool (``True`` is an int to Python, not a feature value)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_float32_value(value: Any) -> bool:
    """A number that float32, the models' precision, holds as a finite value (NaN, inf and
    magnitudes beyond :data:`FLOAT32_MAX` never)."""
    return is_number(value) and abs(value) <= FLOAT32_MAX


def _cell_value(value: Any) -> Any:
    """A file cell as a number when its text reads as one, else as it is (validators judge it).

    ``read_csv`` makes a whole column text when one cell is text; this undoes that per cell.
    """
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_table(dataset: str, label_column: str = "") -> Table:
    """Load ``dataset``: a bundled name (``digits``, ``wine``, ``breast_cancer``) or a file path.

    Raises:
        DataSourceError: an unknown name, a missing or unreadable file, a missing label column,
            a label column named for a bundled dataset (whose labels are fixed).
    """
    if dataset in BUILTIN_DATASETS:
        if label_column:
            raise DataSourceError(f"label_column {label_column!r} applies to a file dataset; the bundled dataset "
                                  f"{dataset!r} has its own labels (leave label_column empty)")
        bunch = BUILTIN_DATASETS[dataset]()
        return Table(
            name=dataset,
            features=np.asarray(bunch.data, dtype=np.float64),
            labels=np.asarray(bunch.target),
            feature_names=tuple(str(n) for n in bunch.feature_names),
            label_set=tuple(sorted(np.unique(bunch.target).tolist())),
            image_shape=IMAGE_SHAPES.get(dataset),
        )
    path = Path(dataset)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataSourceError(
            f"unknown dataset {dataset!r}: expected one of {sorted(BUILTIN_DATASETS)} "
            f"or a path ending in {sorted(FILE_SUFFIXES)}"
        )
    return _load_file(path, label_column)


def _load_file(path: Path, label_column: str) -> Table:
    if not path.is_file():
        raise DataSourceError(f"dataset file not found: {path}")
    frame = read_frame(path)
    if not label_column:
        raise DataSourceError(f"label_column is required for a file dataset ({path}); columns: {list(frame.columns)}")
    if label_column not in frame.columns:
        raise DataSourceError(f"label column {label_column!r} not in {path}; columns: {list(frame.columns)}")
    if len(frame) == 0 or frame.shape[1] < 2:
        raise DataSourceError(f"dataset file {path} needs at least one row and one feature column besides {label_column!r}")
    labels = frame[label_column].to_numpy(dtype=object)
    label_set = checked_label_set(labels, label_column, path)
    features = frame.drop(columns=[label_column])
    return Table(
        name=path.stem,
        features=np.vectorize(_cell_value, otypes=[object])(features.to_numpy(dtype=object)),
        labels=labels,
        feature_names=tuple(str(c) for c in features.columns),
        label_set=label_set,
    )


def checked_label_set(labels: Sequence[Any], label_column: str, path: Path) -> tuple[Any, ...]:
    """The sorted classes of a file's ``labels`` (missing values left out); refused when a label
    is not a single value (a dict, list or array) or fewer than 2 classes remain."""
    for row, label in enumerate(labels, start=1):
        if not pd.api.types.is_scalar(label):
            raise DataSourceError(f"label column {label_column!r} of {path} holds {label!r} ({type(label).__name__}) "
                                  f"in data row {row}: a label must be a single value (text or a number)")
    label_set = tuple(sorted({label for label in labels if not pd.isna(label)}, key=str))
    if len(label_set) < 2:
        raise DataSourceError(f"label column {label_column!r} of {path} holds {len(label_set)} class(es) "
                              f"{list(label_set)}: classification needs at least 2")
    return label_set


def read_frame(path: Path) -> pd.DataFrame:
    """The file's table; refused when it names a column twice (one would be renamed silently)."""
    try:
        columns = _column_names(path)
        repeated = sorted({c for i, c in enumerate(columns) if c in columns[:i]})
        if not repeated:
            return FILE_SUFFIXES[path.suffix.lower()](path)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt or foreign file
        raise DataSourceError(f"cannot read dataset file {path}: {type(exc).__name__}: {exc}") from exc
    raise DataSourceError(f"dataset file {path} names column(s) {repeated} more than once; columns: {columns}")


def _column_names(path: Path) -> list[str]:
    """A file's column names as written (``read_csv`` renames a repeated ``y`` to ``y.1``)."""
    if path.suffix.lower() != ".csv":
        return pq.read_schema(path).names
    first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return first.iloc[0].tolist() if len(first) else []


def split_test(table: Table, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (pool, test): a stratified held-out test set drawn from the valid rows only.

    Every invalid row stays in the pool, where contributors submit it and validators reject it.
    """
    valid = np.flatnonzero(table.valid_rows())
    if len(valid) < 2 * len(table.label_set):
        raise DataSourceError(
            f"dataset {table.name!r} has {len(valid)} valid rows: too few to hold out a test set "
            f"over {len(table.label_set)} labels"
        )
    labels = pd.Series(table.labels[valid]).astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    stratify = labels if counts.min() >= 2 else None
    try:
        pool_valid, test = train_test_split(valid, test_size=test_fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:  # e.g. fewer test rows than labels to stratify over
        raise DataSourceError(f"cannot hold out a test set from dataset {table.name!r}: {exc}") from exc
    pool = np.sort(np.concatenate([pool_valid, np.setdiff1d(np.arange(len(table)), valid)]))
    return pool, np.sort(test)
