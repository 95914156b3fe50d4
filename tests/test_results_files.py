"""Results files (:mod:`datanet_lab.results_files`): what the long runs and the benchmarks write for
the README's checked figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datanet_lab import results_files


def test_a_results_file_holds_the_figures_the_command_and_the_environment(tmp_path):
    path = tmp_path / "nested" / "bench.json"
    written = results_files.write(path, {"b.speed": np.float64(1 / 3), "a.count": np.int64(7), "name": "g0003",
                                         "met": np.bool_(False)}, "python benchmarks/x_bench.py", {"sizes": (1.0, 10.0)})
    assert results_files.read(path) == written
    text = path.read_text()
    assert text == json.dumps(written, indent=2, sort_keys=True) + "\n"
    assert list(written["figures"]) == ["a.count", "b.speed", "met", "name"]
    assert written["figures"] == {"a.count": 7, "b.speed": 0.333333, "met": False, "name": "g0003"}
    assert written["parameters"] == {"sizes": [1.0, 10.0]} and written["command"] == "python benchmarks/x_bench.py"
    assert written["environment"]["packages"]["numpy"] == np.__version__


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, [1, 2]])
def test_a_figure_that_is_not_a_finite_number_or_a_string_is_refused_naming_it(tmp_path, value):
    with pytest.raises(ValueError, match="'x.y'"):
        results_files.write(tmp_path / "r.json", {"x.y": value}, "cmd")
    assert not (tmp_path / "r.json").exists()


def test_a_file_that_is_not_a_results_file_is_refused(tmp_path):
    (tmp_path / "r.json").write_text('{"figures": {}}')
    with pytest.raises(ValueError, match="command"):
        results_files.read(tmp_path / "r.json")
