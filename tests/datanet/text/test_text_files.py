"""The user's own text files: CSV, Parquet, JSONL, and a clear error for each bad file."""

import pandas as pd
import pytest

from datanet.errors import DataSourceError
from datanet.text.files import load_text_file
from datanet.text.validation import sample_reason

ROWS = {"body": ["first text", "second text", "third text"], "tag": ["a", "b", "a"], "extra": [1, 2, 3]}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_loads_each_format(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    frame = pd.DataFrame(ROWS)
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    table = load_text_file(path, text_column="body", label_column="tag")
    assert table.texts == ("first text", "second text", "third text")
    assert table.labels == ("a", "b", "a")
    assert table.label_set == ("a", "b")
    assert table.sources == (f"mine{suffix}:1", f"mine{suffix}:2", f"mine{suffix}:3")
    assert table.name == "mine"


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataSourceError, match="not found: .*nope.csv"):
        load_text_file(tmp_path / "nope.csv", "body", "tag")
    with pytest.raises(DataSourceError, match=r"\.txt"):
        load_text_file(tmp_path / "mine.txt", "body", "tag")


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    with pytest.raises(DataSourceError, match="text_column 'text' not in .*mine.csv"):
        load_text_file(path, "text", "tag")
    with pytest.raises(DataSourceError, match="label_column 'label' not in"):
        load_text_file(path, "body", "label")


def test_non_string_text_names_the_row(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"body": "ok", "tag": "a"}\n{"body": 42, "tag": "b"}\n')
    with pytest.raises(DataSourceError, match="'body' of .*mine.jsonl holds 42 .*data row 2"):
        load_text_file(path, "body", "tag")


def test_nested_label_names_the_row(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"body": "ok", "tag": "a"}\n{"body": "x", "tag": "b"}\n{"body": "y", "tag": ["a", "b"]}\n')
    with pytest.raises(DataSourceError, match="'tag' of .*data row 3: a label must be a single value"):
        load_text_file(path, "body", "tag")


def test_duplicate_columns_and_keys_are_refused(tmp_path):
    csv = tmp_path / "dup.csv"
    csv.write_text("body,tag,body\nx,a,y\nz,b,w\n")
    with pytest.raises(DataSourceError, match=r"\['body'\] more than once"):
        load_text_file(csv, "body", "tag")
    jsonl = tmp_path / "dup.jsonl"
    jsonl.write_text('{"body": "x", "tag": "a", "body": "y"}\n')
    with pytest.raises(DataSourceError, match=r"line 1 names key\(s\) \['body'\] more than once"):
        load_text_file(jsonl, "body", "tag")


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"body": "x", "tag": "a"}\n{"body": \n')
    with pytest.raises(DataSourceError, match="line 2 is not JSON"):
        load_text_file(path, "body", "tag")
    path.write_text('{"body": "x", "tag": "a"}\n["x", "a"]\n')
    with pytest.raises(DataSourceError, match="line 2 is not a JSON object"):
        load_text_file(path, "body", "tag")


def test_fewer_than_two_classes(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"body": ["x", "y"], "tag": ["a", "a"]}).to_csv(path, index=False)
    with pytest.raises(DataSourceError, match="1 class"):
        load_text_file(path, "body", "tag")


def test_jsonl_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text('{"body": "x", "tag": "a"}\n{"body": "y", "tag": "b"}\n', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_text_file(path, "body", "tag").texts == ("x", "y")


def test_an_empty_jsonl_file_is_called_empty(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataSourceError, match=r"empty.jsonl is empty: it holds no JSON object line"):
        load_text_file(path, "body", "tag")


def test_deeply_nested_jsonl_names_the_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"body": "x", "tag": "a"}\n{"body": ' + "[" * 100_000 + "]" * 100_000 + ', "tag": "b"}\n')
    with pytest.raises(DataSourceError, match=r"deep.jsonl line 2 nests JSON arrays or objects too deeply"):
        load_text_file(path, "body", "tag")


def test_csv_text_cells_are_texts_as_written_and_bad_ones_left_to_validation(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("body,tag\nhello there,a\n,b\n42,a\n007,b\n")
    table = load_text_file(path, "body", "tag")
    assert table.texts == ("hello there", "", "42", "007")
    assert table.labels == ("a", "b", "a", "b")
    reasons = [sample_reason(t, label, set(table.label_set))[0] for t, label in zip(table.texts, table.labels)]
    assert reasons == ["", "empty or whitespace-only", "", ""]


def test_a_csv_text_column_of_numbers_is_read_as_text(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("body,tag\n1,a\n2.50,b\n-3,a\n")
    assert load_text_file(path, "body", "tag").texts == ("1", "2.50", "-3")


def test_a_null_or_missing_jsonl_text_is_an_empty_text(tmp_path):
    path = tmp_path / "null.jsonl"
    path.write_text('{"body": "x", "tag": "a"}\n{"body": null, "tag": "b"}\n{"tag": "a"}\n')
    assert load_text_file(path, "body", "tag").texts == ("x", "", "")
