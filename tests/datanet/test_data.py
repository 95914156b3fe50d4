"""Tests for datanet.data: load_table (bundled sets, CSV/Parquet files, errors) and split_test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import datasets as sk_datasets

from datanet.data import Table, load_table, split_test
from datanet.errors import DataSourceError

# ---------------------------------------------------------------------------
# Bundled datasets: shapes and labels straight from scikit-learn.


@pytest.mark.parametrize(
    "name, loader",
    [
        ("digits", sk_datasets.load_digits),
        ("wine", sk_datasets.load_wine),
        ("breast_cancer", sk_datasets.load_breast_cancer),
    ],
)
def test_builtin_dataset_matches_sklearn(name, loader):
    bunch = loader()
    table = load_table(name)
    assert table.name == name
    assert table.features.shape == bunch.data.shape
    assert table.labels.shape == bunch.target.shape
    assert len(table) == bunch.data.shape[0]
    np.testing.assert_array_equal(table.features, bunch.data)
    np.testing.assert_array_equal(table.labels, bunch.target)
    assert table.feature_names == tuple(str(n) for n in bunch.feature_names)
    assert table.label_set == tuple(sorted(set(bunch.target.tolist())))
    assert table.valid_rows().all()


def test_digits_is_an_8x8_image_and_others_are_not():
    assert load_table("digits").image_shape == (8, 8)
    assert load_table("wine").image_shape is None
    assert load_table("breast_cancer").image_shape is None


# ---------------------------------------------------------------------------
# Files.


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x1": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5],
            "kind": ["dog", "cat", "dog", "bird", "cat", "dog"],
            "x2": [10, 20, 30, 40, 50, 60],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".CSV"])
def test_file_with_string_labels(tmp_path, suffix):
    path = tmp_path / f"animals{suffix}"
    frame = _frame()
    if suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    table = load_table(str(path), label_column="kind")
    assert table.name == "animals"
    assert table.feature_names == ("x1", "x2")
    assert table.features.shape == (6, 2)
    assert table.features.dtype == object
    assert table.labels.tolist() == ["dog", "cat", "dog", "bird", "cat", "dog"]
    assert table.label_set == ("bird", "cat", "dog")
    assert [float(v) for v in table.features[:, 0]] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert [float(v) for v in table.features[:, 1]] == [10, 20, 30, 40, 50, 60]
    assert table.valid_rows().tolist() == [True] * 6
    assert table.image_shape is None


def test_csv_label_column_in_the_middle_is_removed_from_features(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,label,b\n1,0,2\n3,1,4\n")
    table = load_table(str(path), label_column="label")
    assert table.feature_names == ("a", "b")
    assert table.features.tolist() == [[1, 2], [3, 4]]
    assert table.labels.tolist() == [0, 1]
    assert table.label_set == (0, 1)


def test_csv_text_cell_is_kept_as_raw_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1.5,1,p\noops,2,q\n2.5,3,p\n3.0,4,q\n")
    table = load_table(str(path), label_column="y")
    cell = table.features[1, 0]
    assert isinstance(cell, str) and cell == "oops"
    # The row with the text cell is the only invalid one.
    assert table.valid_rows().tolist() == [True, False, True, True]


def test_csv_text_cell_leaves_the_other_cells_of_its_column_numeric(tmp_path):
    from datanet.validation import Schema, validate
    from datanet.contributors import Submission

    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1.5,1,p\noops,2,q\n2.5,3,p\n3.0,4,q\n")
    table = load_table(str(path), label_column="y")
    submissions = [Submission(str(i), "c00", tuple(table.features[i].tolist()), table.labels[i]) for i in range(4)]
    accepted = [d.accepted for d in validate(submissions, Schema(2, table.label_set))]
    assert accepted == [True, False, True, True]


def test_a_value_beyond_float32_makes_the_row_invalid(tmp_path):
    # float64 holds 1e39, float32 (the models' precision) does not: such a row is never held out
    # as a test row, and validators reject it when a contributor submits it.
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1.5,1,p\n1e39,2,q\n2.5,-1e308,p\n3.4e38,4,q\n")
    table = load_table(str(path), label_column="y")
    assert table.valid_rows().tolist() == [True, False, False, True]


def test_file_missing_label_cell_makes_the_row_invalid(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,p\n2,\n3,q\n")
    table = load_table(str(path), label_column="y")
    assert table.label_set == ("p", "q")
    assert table.valid_rows().tolist() == [True, False, True]


# ---------------------------------------------------------------------------
# Errors: each a DataSourceError naming what is wrong.


def test_unknown_dataset_name():
    with pytest.raises(DataSourceError, match="mnist-like"):
        load_table("mnist-like")


def test_a_label_column_for_a_bundled_dataset_is_refused():
    with pytest.raises(DataSourceError, match="label_column 'y' applies to a file dataset.*'wine'"):
        load_table("wine", label_column="y")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("a,y\n1,2\n")
    with pytest.raises(DataSourceError, match="data.txt"):
        load_table(str(path), label_column="y")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(DataSourceError, match="nowhere.csv"):
        load_table(str(path), label_column="y")


def test_directory_is_not_a_file(tmp_path):
    path = tmp_path / "folder.csv"
    path.mkdir()
    with pytest.raises(DataSourceError, match="folder.csv"):
        load_table(str(path), label_column="y")


def test_garbage_parquet(tmp_path):
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not parquet at all \x00\x01\x02" * 10)
    with pytest.raises(DataSourceError, match="garbage.parquet"):
        load_table(str(path), label_column="y")


def test_binary_csv(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfa" + bytes(range(256)) * 4)
    with pytest.raises(DataSourceError, match="binary.csv"):
        load_table(str(path), label_column="y")


def test_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataSourceError, match="empty.csv"):
        load_table(str(path), label_column="y")


def test_missing_label_column(tmp_path):
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(DataSourceError, match="'species'"):
        load_table(str(path), label_column="species")


def test_empty_label_column_for_a_file(tmp_path):
    path = tmp_path / "needs_label.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(DataSourceError, match="label_column") as info:
        load_table(str(path))
    assert "needs_label.csv" in str(info.value)


def test_header_only_file(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,y\n")
    with pytest.raises(DataSourceError, match="header.csv"):
        load_table(str(path), label_column="y")


def test_label_only_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("y\n1\n2\n")
    with pytest.raises(DataSourceError, match="labels.csv"):
        load_table(str(path), label_column="y")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_repeated_column_name_is_refused_not_renamed(tmp_path, suffix):
    path = tmp_path / f"twice{suffix}"
    if suffix == ".csv":
        path.write_text("a,y,y\n1,0,0\n2,1,1\n3,0,0\n")
    else:
        columns = [pa.array([1.0, 2.0, 3.0]), pa.array([0, 1, 0]), pa.array([0, 1, 0])]
        pq.write_table(pa.table(columns, names=["a", "y", "y"]), path)
    with pytest.raises(DataSourceError, match=rf"twice{suffix} names column\(s\) \['y'\] more than once"):
        load_table(str(path), label_column="y")


def test_a_column_named_like_a_pandas_rename_is_not_a_repeat(tmp_path):
    path = tmp_path / "dotted.csv"
    path.write_text("y.1,y\n1,0\n2,1\n")
    assert load_table(str(path), label_column="y").feature_names == ("y.1",)


@pytest.mark.parametrize("label", [{"k": 1}, [1, 2]])
def test_a_nested_label_is_refused_naming_its_row(tmp_path, label):
    path = tmp_path / "nested.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [label, label, label]}).to_parquet(path)
    with pytest.raises(DataSourceError, match=r"label column 'y' of .*nested.parquet holds .* in data row 1: a label must be a single value"):
        load_table(str(path), label_column="y")


def test_a_single_label_class_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,y\n1,cat\n2,cat\n3,\n")
    with pytest.raises(DataSourceError, match=r"label column 'y' of .*one.csv holds 1 class\(es\) \['cat'\]: classification needs at least 2"):
        load_table(str(path), label_column="y")


# ---------------------------------------------------------------------------
# split_test.


def _mixed_table() -> Table:
    """120 rows, 3 labels (60/40/20); rows 0, 7, 50 have NaN/inf/text, rows 3, 90 a foreign label."""
    rng = np.random.default_rng(123)
    features = rng.normal(size=(120, 4)).astype(object)
    labels = np.array([0] * 60 + [1] * 40 + [2] * 20, dtype=object)
    features[0, 1] = float("nan")
    features[7, 3] = float("inf")
    features[50, 0] = "n/a"
    labels[3] = 9
    labels[90] = "x"
    return Table("mixed", features, labels, ("f0", "f1", "f2", "f3"), (0, 1, 2))


def _valid_by_hand(table: Table) -> np.ndarray:
    out = []
    for row, label in zip(table.features, table.labels):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)
        out.append(numeric and label in table.label_set)
    return np.array(out)


def test_valid_rows_matches_a_hand_check():
    table = _mixed_table()
    expected = _valid_by_hand(table)
    assert sorted(np.flatnonzero(~expected).tolist()) == [0, 3, 7, 50, 90]
    np.testing.assert_array_equal(table.valid_rows(), expected)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_is_disjoint_covers_all_and_tests_only_valid(seed):
    table = _mixed_table()
    pool, test = split_test(table, 0.25, seed)
    assert len(np.intersect1d(pool, test)) == 0
    assert sorted(np.concatenate([pool, test]).tolist()) == list(range(len(table)))
    assert len(set(pool.tolist())) == len(pool) and len(set(test.tolist())) == len(test)
    valid = _valid_by_hand(table)
    assert valid[test].all()
    invalid = np.flatnonzero(~valid)
    assert set(invalid.tolist()) <= set(pool.tolist())
    assert len(test) == math.ceil(0.25 * valid.sum())


def test_split_is_stratified():
    table = _mixed_table()
    valid = _valid_by_hand(table)
    pool, test = split_test(table, 0.25, seed=3)
    for label in table.label_set:
        n_label = sum(1 for i in np.flatnonzero(valid) if table.labels[i] == label)
        n_test = sum(1 for i in test if table.labels[i] == label)
        assert abs(n_test - 0.25 * n_label) <= 1, (label, n_label, n_test)


def test_split_of_digits_is_stratified():
    table = load_table("digits")
    pool, test = split_test(table, 0.2, seed=0)
    for label in table.label_set:
        n_label = int((table.labels == label).sum())
        n_test = int((table.labels[test] == label).sum())
        assert abs(n_test - 0.2 * n_label) <= 1


def test_split_is_deterministic_by_seed():
    table = _mixed_table()
    a_pool, a_test = split_test(table, 0.25, seed=11)
    b_pool, b_test = split_test(table, 0.25, seed=11)
    np.testing.assert_array_equal(a_pool, b_pool)
    np.testing.assert_array_equal(a_test, b_test)
    c_pool, c_test = split_test(table, 0.25, seed=12)
    assert not np.array_equal(a_test, c_test)


def test_split_refuses_too_few_valid_rows():
    features = np.array([[1.0], [float("nan")], [2.0], [float("nan")]], dtype=object)
    table = Table("tiny", features, np.array([0, 1, 1, 0], dtype=object), ("f",), (0, 1))
    with pytest.raises(DataSourceError, match="tiny"):
        split_test(table, 0.5, seed=0)


def test_split_of_a_small_table_raises_data_source_error_or_succeeds():
    features = np.arange(12.0).reshape(6, 2).astype(object)
    table = Table("small", features, np.array([0, 0, 1, 1, 2, 2], dtype=object), ("a", "b"), (0, 1, 2))
    try:
        pool, test = split_test(table, 0.2, seed=0)
    except DataSourceError:
        return
    assert sorted(np.concatenate([pool, test]).tolist()) == list(range(6))
