"""Experiments as engine steps keyed by their parameters (datanet_lab.pipeline.experiment)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datanet_lab import pipeline
from datanet_lab.experiments import compare
from datanet_lab.pipeline import experiment, manifest
from datanet_lab.experiments.problem import Problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WINE = dict(dataset="wine", n_contributors=3, scenario="honest:2,noisy:1", epochs=1, signing_keys="seeded")


@dataclasses.dataclass
class Result:
    table: pd.DataFrame
    truth: np.ndarray
    credit: dict[str, np.ndarray]
    ceiling: float | None
    names: list[str]
    diagnostics: dict


def _result(value: float) -> Result:
    return Result(pd.DataFrame({"method": ["a", "b"], "lds": [value, np.nan], "n": [1, 2]}),
                  np.arange(6.0).reshape(1, 2, 3) * value, {"z": np.ones(2), "a": np.zeros((2, 2))}, None, ["x", "y"],
                  {"ceiling": np.float64(value), "retrains": np.int64(3), "method": {"cg_iterations": 4}})


@pytest.fixture
def built(tmp_path) -> pipeline.Run:
    run = pipeline.open_run(str(tmp_path / "run"), **WINE)
    pipeline.build(run)
    return run


def _counted(value: float, calls: list[Path]):
    def compute(scratch: Path) -> Result:
        calls.append(scratch)
        return _result(value)
    return compute


def _assert_equal(found: Result, expected: Result) -> None:
    pd.testing.assert_frame_equal(found.table, expected.table)
    np.testing.assert_array_equal(found.truth, expected.truth)
    assert list(found.credit) == list(expected.credit)  # in order
    for name in expected.credit:
        np.testing.assert_array_equal(found.credit[name], expected.credit[name])
    assert (found.ceiling, found.names) == (expected.ceiling, expected.names)
    assert found.diagnostics == {"ceiling": float(expected.diagnostics["ceiling"]), "retrains": 3,
                                 "method": {"cg_iterations": 4}}


def test_an_experiment_is_read_back_for_the_same_parameters_and_computed_beside_it_for_others(built):
    calls: list[Path] = []
    first = experiment.run_experiment(built, "cmp", {"k": 1}, ("build",), _counted(2.0, calls), Result)
    _assert_equal(first, _result(2.0))
    assert calls == [built.directory / "cmp"]  # the scratch folder shared by every parameter set
    again = experiment.run_experiment(built, "cmp", {"k": 1}, ("build",), _counted(9.0, calls), Result)
    _assert_equal(again, _result(2.0))
    assert len(calls) == 1  # read back, not computed
    other = experiment.run_experiment(built, "cmp", {"k": 2}, ("build",), _counted(3.0, calls), Result)
    _assert_equal(other, _result(3.0))
    assert len(calls) == 2
    folders = sorted(p.name for p in (built.directory / "cmp").iterdir())
    assert len(folders) == 2 and all(len(name) == 16 for name in folders)
    manifests = sorted(p.name for p in (built.directory / "manifests").glob("cmp-*.json"))
    assert manifests == [f"cmp-{name}.json" for name in folders]
    recorded = json.loads((built.directory / "manifests" / manifests[0]).read_text())
    assert set(recorded["inputs"]) == {"build"} and set(recorded["params"]) == {"cmp.k"}


def test_an_experiment_whose_input_changed_is_refused(built):
    experiment.run_experiment(built, "cmp", {"k": 1}, ("build",), _counted(2.0, []), Result)
    edited = json.loads(manifest.manifest_path(built.directory, "build").read_text())
    edited["outputs"] = dict(edited["outputs"])  # same content, other bytes: the input manifest changed
    manifest.manifest_path(built.directory, "build").write_text(json.dumps(edited, indent=4))
    with pytest.raises(manifest.ManifestError, match=r"cmp-[0-9a-f]{16}: its input manifests/build.json changed"):
        experiment.run_experiment(built, "cmp", {"k": 1}, ("build",), _counted(2.0, []), Result)


def test_an_experiment_stopped_before_its_manifest_is_computed_again(built, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(manifest, "write", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("stopped")))
        with pytest.raises(KeyboardInterrupt):
            experiment.run_experiment(built, "cmp", {"k": 1}, (), _counted(2.0, []), Result)
    calls: list[Path] = []
    _assert_equal(experiment.run_experiment(built, "cmp", {"k": 1}, (), _counted(2.0, calls), Result), _result(2.0))
    assert len(calls) == 1 and not (built.directory / ".staging").exists()


def test_a_field_no_file_can_hold_is_refused_by_name(tmp_path):
    @dataclasses.dataclass
    class Odd:
        model: object

    with pytest.raises(TypeError, match=r"Odd: a field fields.json cannot hold \(object value"):
        experiment.save_result(Odd(object()), tmp_path / "odd")


def test_a_comparison_in_a_run_directory_answers_for_its_own_problem(built):
    """Notebook 05 run again in the same run directory with another L2 or noise rate computes its
    own comparison; asked again, each is read back."""
    kept = dict(n_subsets=6, seed=0, shapley=False, projection_dim=16)
    results = {}
    for l2 in (1e-2, 1.0):
        problem = Problem.planted("wine", "", "honest:2,noisy:1", 3, 0.2, 0, l2)
        results[l2] = compare.compare_in_run(built, "comparison", problem, **kept)
    assert not np.allclose(results[1e-2].lds["influence_exact"], results[1.0].lds["influence_exact"])
    again = compare.compare_in_run(built, "comparison", Problem.planted("wine", "", "honest:2,noisy:1", 3, 0.2, 0, 1e-2),
                                   **kept)
    pd.testing.assert_frame_equal(again.table, results[1e-2].table)
    assert len(list((built.directory / "manifests").glob("comparison-*.json"))) == 2
