"""Tests for datanet_lab.experiments.compare (and its problem, evaluation and profiling) on a tiny wine Datanet."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import attribution
from datanet.training import TrainConfig
from datanet_lab import pipeline
from datanet_lab.experiments import compare, compare_mlp, evaluation, sybil
from datanet_lab.experiments.problem import Problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    p = Problem.planted("wine", "", "honest:2,noisy:2,out_of_domain:1", 5, 0.2, 0, 1e-2)
    methods = [attribution.InfluenceFunction(), attribution.FastTracIn(), attribution.RandomScores(0)]
    directory = tmp_path_factory.mktemp("comparison")
    return p, compare.compare(p, methods, directory, n_subsets=30, seed=0, workers=1), directory


def test_problem_marks_the_planted_bad_data(wine):
    p, _, _ = wine
    assert list(p.noisy_contributor) == [False, False, True, True, False]
    assert p.flipped_sample.any()
    assert set(np.flatnonzero(p.flipped_sample)) <= set(np.flatnonzero(np.isin(p.groups, [2, 3])))
    np.testing.assert_allclose(p.train_x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(p.train_x.std(axis=0), 1.0, rtol=1e-6)  # population std, as the models standardize


def test_a_runs_saved_datanet_gives_the_problem_its_parameters_build(wine, tmp_path):
    p, _, _ = wine
    run = pipeline.open_run(str(tmp_path), dataset="wine", n_contributors=5, scenario="honest:2,noisy:2,out_of_domain:1",
                            noise_rate=0.2, seed=0)
    saved = Problem.from_run(run, 1e-2)
    assert (tmp_path / "manifests" / "build.json").is_file()  # built by the pipeline's step, then read back
    for field in ("train_x", "train_y", "test_x", "test_y", "groups", "noisy_contributor", "flipped_sample"):
        np.testing.assert_array_equal(getattr(saved, field), getattr(p, field), err_msg=field)
    assert saved.behaviours == p.behaviours == ("honest", "honest", "noisy", "noisy", "out_of_domain")


def test_table_has_a_row_per_method_and_the_required_columns(wine):
    _, result, _ = wine
    table = result.table.set_index("method")
    assert list(table.index) == ["influence_exact", "tracin_fast", "random"]
    for column in ("lds_sample", "lds_contributor", "loco_corr", "noisy_auc", "seconds", "peak_mib"):
        assert table[column].notna().all(), column
    assert table.loc["influence_exact", "lds_sample"] > 0.8
    assert abs(table.loc["random", "lds_sample"]) < 0.3
    assert table.loc["influence_exact", "lds_sample"] > table.loc["random", "lds_sample"] + 0.5
    assert (result.removal.groupby("method").size() == 1 + len(evaluation.REMOVAL_FRACTIONS)).all()
    removal = result.removal.set_index(["method", "fraction"])["accuracy"]
    assert table.loc["random", "removal_0.1"] == removal["random", 0.1] - removal["random", 0.0]


def test_files_are_written(wine, tmp_path):
    _, result, _ = wine
    compare.write(result, tmp_path)
    written = pd.read_csv(tmp_path / "comparison.csv")
    assert list(written["method"]) == ["influence_exact", "tracin_fast", "random"]
    assert pd.read_csv(tmp_path / "lds_per_test.csv").shape[1] == 4


def test_retrains_cached_in_a_directory_are_reused_only_for_the_same_problem_and_l2(wine, tmp_path):
    p, result, directory = wine
    methods = [attribution.RandomScores(0)]
    kept = dict(n_subsets=30, seed=0, workers=1, removal=False)
    again = compare.compare(p, methods, directory, **kept)
    assert again.diagnostics["retrains"] == 0  # every retrain the fixture ran is reused
    np.testing.assert_allclose(again.lds["random"], result.lds["random"])
    needed = compare.compare(p, methods, tmp_path, **kept).diagnostics["retrains"]  # in an empty directory
    for other in (dataclasses.replace(p, l2=1.0), dataclasses.replace(p, test_y=(p.test_y + 1) % p.n_classes)):
        changed = compare.compare(other, methods, directory, **kept)
        assert changed.diagnostics["retrains"] == needed  # none reused
        assert not np.allclose(changed.lds["random"], result.lds["random"])


def test_copies_gain_with_summed_credit_and_not_once_the_earliest_submission_keeps_a_cluster(tmp_path):
    dn = pipeline.planted_datanet("wine", "", "honest:2,noisy:2,out_of_domain:1", 5, 0.2, 0).datanet
    config = TrainConfig(model="logreg", epochs=5, seed=0)
    table = sybil.study(dn, "c00", config, 1e-2, tmp_path, noises=(0.01, 0.05), identities=(3,)).set_index(["method", "noise"])
    assert len(table) == 4
    assert (table["gain_summed"] > 1.1).all()  # three identities, summed credit: the copies pay
    assert (table["gain_gradient"] <= 1.1).all() and (table["escaped"] <= 0.05).all()
    assert (table.loc["tracin", "copier_gradient"] <= 0.05).all()  # a later copy earns (almost) nothing
    assert table.loc[("tracin", 0.05), "gain_radius"] > 1.1  # 0.05 std escapes the input-space radius
    assert (table["retrain_value"] > 0.1).all() and (table["beyond_duplicate"].abs() < 0.05).all()
    with pytest.raises(ValueError, match="k >= 1, noise > 0"):
        sybil.with_copies(dn, "c00", 0, 0.01)
    with pytest.raises(ValueError, match="noise=0.0"):
        sybil.with_copies(dn, "c00", 2, 0.0)
    with pytest.raises(ValueError, match="'c09' with 0 accepted rows"):
        sybil.with_copies(dn, "c09", 2, 0.01)
    with pytest.raises(ValueError, match="unknown method 'trak'"):
        sybil.score(dn, "trak", config, 1e-2, tmp_path)


def test_mlp_comparison_averages_retrain_seeds_and_reports_their_ceiling(tmp_path):
    p = Problem.planted("wine", "", "honest:2,noisy:2,out_of_domain:1", 5, 0.2, 0)
    retrain = compare_mlp.retrainer(p)
    members = compare_mlp.EnsembleMembers(retrain, tmp_path / "models")
    methods = [attribution.GradientDot(), attribution.Ensemble(attribution.GaussNewtonInfluence, members, 2),
               attribution.RandomScores(0)]
    result = compare.compare(p, methods, tmp_path, n_subsets=12, target=members.full(), retrain=retrain, seeds=(0, 1),
                             shapley=False, workers=1)
    table = result.table.set_index("method")
    assert list(table.index) == ["grad_dot", "gauss_newton_if_x2", "random"]
    assert table["shapley_corr"].isna().all() and table["lds_contributor"].notna().all()
    assert 0.0 < result.diagnostics["ceiling"] <= 1.0
    assert table.loc["gauss_newton_if_x2", "lds_sample"] > table.loc["random", "lds_sample"] + 0.3
    # each of 12 sample and 12 contributor subsets, LOCO (5 + everyone) and 9 removal sets, per seed
    assert result.diagnostics["retrains"] <= 2 * (12 + 12 + 6 + 9)


def test_the_mlp_comparison_needs_two_retrain_seeds_and_a_model(wine, tmp_path):
    p, _, _ = wine
    with pytest.raises(ValueError, match="n_seeds must be >= 2"):
        compare_mlp.compare(p, tmp_path, n_seeds=1)
    with pytest.raises(ValueError, match="n_models must be >= 1"):
        compare_mlp.compare(p, tmp_path, n_models=0)
    assert not list(tmp_path.iterdir())  # refused before training anything


MEASURE = """
import gc, json, sys
import numpy as np
from datanet_lab.profiling import measure


class Cycle:  # garbage that only the cyclic collector frees
    def __init__(self):
        self.me, self.big = self, np.ones(128 * 2**20 // 8)


def collect_then_allocate():
    gc.collect()  # as an automatic collection inside the measured call would
    return np.ones(64 * 2**20 // 8).sum()


result, seconds, peak = measure(lambda: np.ones(64 * 2**20 // 8).sum())  # 64 MiB, touched, freed at once
small = measure(lambda: 1)[2]
Cycle()
print(json.dumps([float(result), seconds, peak, small, measure(collect_then_allocate)[2]]))
"""


def test_measure_sees_a_short_peak_restarts_its_mark_and_is_not_hidden_by_collected_garbage():
    """In a fresh interpreter: a long-lived one may serve a new array from memory already
    resident (freed by earlier work), whose RSS then does not grow at all."""
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True)
    result, seconds, peak, small, after_garbage = json.loads(done.stdout)
    assert result == 64 * 2**20 // 8 and seconds > 0
    assert 60 <= peak < 128
    assert small < 16  # the high-water mark restarts: the earlier peak does not count
    assert after_garbage >= 60
