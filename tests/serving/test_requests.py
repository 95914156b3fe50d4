"""Inference inputs: read from CSV/Parquet/JSONL and checked, each bad input named by file, row and field."""

import json

import numpy as np
import pandas as pd
import pytest

from datanet_lab.serving import RequestError, check_batch, check_input, read_requests

ROWS = np.array([[0.1, -2.5, 3e-7], [1e6, 0.0, -1.0 / 3.0]])
NAMES = ["alcohol", "malic_acid", "ash"]


def test_check_input_returns_a_float64_copy_of_a_row_of_numbers():
    values = [1, np.float32(0.5), np.int64(-3)]
    row = check_input(values, 3)
    assert row.dtype == np.float64
    np.testing.assert_array_equal(row, [1.0, 0.5, -3.0])


@pytest.mark.parametrize("values, reason", [
    ([1.0, 2.0], "wrong width: 2 fields, expected 3"),
    ([1.0, "2.0", 3.0], r"field 1 is '2.0' \(str\), expected a number"),
    ([1.0, 2.0, True], r"field 2 is True \(bool\), expected a number"),
    ([None, 2.0, 3.0], r"field 0 is None \(NoneType\), expected a number"),
    ([1.0, [2.0], 3.0], r"field 1 is \[2.0\] \(list\), expected a number"),
    ([1.0, float("nan"), 3.0], "field 1 is nan, expected a finite number"),
    ([1.0, 2.0, -float("inf")], "field 2 is -inf, expected a finite number"),
    ("1,2,3", "an input must be a sequence of 3 numbers, got str"),
    ({"features": [1, 2, 3]}, "got dict"),
    (np.zeros((1, 3)), r"one row of 3 numbers, got an array of shape \(1, 3\)"),
])
def test_check_input_refuses_a_bad_row_with_its_reason(values, reason):
    with pytest.raises(ValueError, match=reason):
        check_input(values, 3)


def test_check_input_names_fields_when_given_names():
    with pytest.raises(RequestError, match=r"field 1 \('malic_acid'\) is 'x'"):
        check_input([1.0, "x", 2.0], 3, NAMES)


def test_check_batch_finds_the_first_bad_row_and_field():
    x = np.zeros((4, 3))
    x[2, 1], x[3, 0] = np.inf, np.nan
    with pytest.raises(RequestError, match=r"batch: data row 3, field 1 is inf"):
        check_batch(x, 3, "batch")
    with pytest.raises(RequestError, match=r"expected an array of shape \(n, 3\), got \(4,\)"):
        check_batch(np.zeros(4), 3)
    with pytest.raises(RequestError, match="expected numbers, got dtype bool"):
        check_batch(np.zeros((2, 3), dtype=bool), 3)
    assert check_batch(np.ones((2, 3), dtype=np.int32), 3).dtype == np.float64


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_read_requests_returns_the_written_inputs_in_order(tmp_path, suffix):
    path = tmp_path / f"requests{suffix}"
    if suffix == ".csv":
        pd.DataFrame(ROWS, columns=NAMES).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(ROWS, columns=NAMES).to_parquet(path)
    else:  # an array, a blank line, then an object with an id beside its features
        path.write_text(json.dumps(ROWS[0].tolist()) + "\n\n" + json.dumps({"id": "r2", "features": ROWS[1].tolist()}) + "\n")
    x = read_requests(path, 3)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, ROWS)


@pytest.mark.parametrize("text, reason", [
    ("alcohol,malic_acid,ash\n1,2,3\n4,oops,6\n", r"data row 2, field 1 \('malic_acid'\) is 'oops' \(str\)"),
    ("alcohol,malic_acid,ash\n1,2,3\n4,5,\n", r"data row 2, field 2 \('ash'\) is nan, expected a finite number"),
    ("alcohol,malic_acid,ash\n1,2,inf\n", r"data row 1, field 2 \('ash'\) is inf"),
    ("alcohol,malic_acid\n1,2\n", r"wrong width: 2 columns \['alcohol', 'malic_acid'\], expected 3"),
    ("alcohol,malic_acid,ash,label\n1,2,3,0\n", "wrong width: 4 columns"),
    ("alcohol,malic_acid,ash\n", "holds no input"),
    ("", "holds no input"),
    ("0,1,2\n4,5,6\n", r"first line \['0', '1', '2'\] is ambiguous: pandas' default column names, or a data row"),
    ("alcohol,2,ash\n1,2,3\n", "mixes numbers and text: neither a header naming the fields nor a row of numbers"),
    ("1,oops,3\n4,5,6\n", "mixes numbers and text"),
    ("alcohol,malic_acid,ash\n1,2,3,4\n5,6,7,8\n", r"its header names 3 columns .*, its first data row has 4"),
    ("alcohol,malic_acid,ash\n1,2,3\n5,6,7,8\n", "cannot read request file .*Expected 3 fields in line 3, saw 4"),
    ("1,2,3\n5,6,7,8\n", "cannot read request file .*Expected 3 fields in line 2, saw 4"),
    ("alcohol,ash,alcohol\n1,2,3\n", r"names column\(s\) \['alcohol'\] more than once"),
    ("alcohol,malic_acid,ash\n1,2,1e39\n", r"data row 1, field 2 \('ash'\) is 1e\+39, beyond the float32 range"),
    ("alcohol,malic_acid,ash\n1,2,3\n1," + "9" * 400 + ",3\n",
     r"data row 2, field 1 \('malic_acid'\) is an integer of 400 digits, beyond the float32 range"),
    ("alcohol,malic_acid,ash\n1,2,3\nTrue,2,3\n", r"data row 2, field 0 \('alcohol'\) is 'True' \(str\)"),
])
def test_a_bad_csv_is_refused_naming_the_file_row_and_field(tmp_path, text, reason):
    path = tmp_path / "requests.csv"
    path.write_text(text)
    with pytest.raises(RequestError, match=reason) as caught:
        read_requests(path, 3)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("lines, reason", [
    (["[1, 2, 3]", "[1, 2]"], "line 2: wrong width: 2 fields, expected 3"),
    (["[1, 2, 3]", "", '[1, "2", 3]'], r"line 3: field 1 is '2' \(str\), expected a number"),
    (["[1, 2, NaN]"], "line 1: field 2 is nan, expected a finite number"),
    (["[1, 2, 3", "[1, 2, 3]"], "line 1 is not JSON"),
    (['{"inputs": [1, 2, 3]}'], r"line 1: an object needs a 'features' key holding the input; keys: \['inputs'\]"),
    (['"1, 2, 3"'], "line 1: expected a JSON array of 3 numbers, got str"),
    (["[true, 2, 3]"], r"line 1: field 0 is True \(bool\)"),
    (["", "  "], "holds no input"),
])
def test_a_bad_jsonl_is_refused_naming_the_file_and_line(tmp_path, lines, reason):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RequestError, match=reason) as caught:
        read_requests(path, 3)
    assert str(path) in str(caught.value)


def test_a_bad_parquet_is_refused_naming_the_row_and_field(tmp_path):
    path = tmp_path / "requests.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, np.nan], "c": [5.0, 6.0]}).to_parquet(path)
    with pytest.raises(RequestError, match=r"data row 2, field 1 \('b'\) is nan"):
        read_requests(path, 3)
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [5.0, 6.0]}).to_parquet(path)
    with pytest.raises(RequestError, match=r"data row 1, field 1 \('b'\) is 'x' \(str\)"):
        read_requests(path, 3)
    path.write_bytes(b"not parquet")
    with pytest.raises(RequestError, match="cannot read request file"):
        read_requests(path, 3)


def test_an_unknown_suffix_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(RequestError, match=r"must end in one of \['.csv', '.parquet', '.pq', '.jsonl'\]"):
        read_requests(tmp_path / "requests.txt", 3)
    with pytest.raises(RequestError, match="request file not found"):
        read_requests(tmp_path / "absent.csv", 3)


def test_a_csv_without_a_header_keeps_its_first_row(tmp_path):
    """A first row of numbers is data, even when its values repeat (pandas would rename a header's
    repeated ``0.0`` to ``0.0.1``, which reads as text)."""
    rows = np.array([[0.0, 0.0, 1.5], [2.0, 2.0, 2.0], [-1.0, 0.25, 1e-3]])
    path = tmp_path / "requests.csv"
    pd.DataFrame(rows).to_csv(path, index=False, header=False)
    np.testing.assert_array_equal(read_requests(path, 3), rows)
    np.testing.assert_array_equal(read_requests(path, 3, NAMES), rows)  # positional: the run's order


def test_a_header_must_name_the_runs_features_and_selects_them_by_name(tmp_path):
    path = tmp_path / "requests.csv"
    pd.DataFrame(ROWS[:, ::-1], columns=NAMES[::-1]).to_csv(path, index=False)
    np.testing.assert_array_equal(read_requests(path, 3, NAMES), ROWS)
    pd.DataFrame(ROWS, columns=["alcohol", "malic_acid", "ASH"]).to_csv(path, index=False)
    with pytest.raises(RequestError, match=r"columns are not the run's features: missing \['ash'\], unknown \['ASH'\]"):
        read_requests(path, 3, NAMES)
    parquet = tmp_path / "requests.parquet"
    pd.DataFrame(ROWS[:, ::-1], columns=NAMES[::-1]).to_parquet(parquet)
    np.testing.assert_array_equal(read_requests(parquet, 3, NAMES), ROWS)
    pd.DataFrame(ROWS, columns=["a", "b", "c"]).to_parquet(parquet)
    with pytest.raises(RequestError, match=r"missing \['alcohol', 'malic_acid', 'ash'\]"):
        read_requests(parquet, 3, NAMES)


@pytest.mark.parametrize("value, shown", [
    (1e308, r"1e\+308"), (-3.5e38, r"-3.5e\+38"), (10**400, "an integer of 401 digits"),
    (np.float64(1e39), r"(np\.float64\()?1e\+39\)?"),
])
def test_a_value_past_float32_is_refused_naming_its_field(value, shown):
    """The model computes in float32: 1e308 is finite in float64 but infinite there."""
    with pytest.raises(RequestError, match=rf"field 1 is {shown}, beyond the float32 range the model computes in"):
        check_input([1.0, value, 2.0], 3)
    assert check_input([1.0, 3.4e38, -3.4e38], 3)[1] == 3.4e38
    x = np.array([[1.0, 2.0, 3.0], [1.0, 1e308, 3.0]])
    with pytest.raises(RequestError, match=r"batch: data row 2, field 1 is 1e\+308, beyond the float32 range"):
        check_batch(x, 3, "batch")


@pytest.mark.parametrize("lines, reason", [
    (["[1, 2, 3]", "[" * 100_000 + "]" * 100_000], "line 2 is not JSON this reader takes: nested too deeply"),
    (["[1, " + "9" * 400 + ", 3]"], "line 1: field 1 is an integer of 400 digits, beyond the float32 range"),
    (["[1, " + "9" * 5000 + ", 3]"], "line 1 is not JSON this reader takes: Exceeds the limit"),
    (["[1, 2, 1e308]"], r"line 1: field 2 is 1e\+308, beyond the float32 range"),
])
def test_a_jsonl_past_what_can_be_read_or_served_is_refused_naming_the_line(tmp_path, lines, reason):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RequestError, match=reason):
        read_requests(path, 3)
