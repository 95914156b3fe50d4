"""Tests for datanet_lab.compare on a tiny wine Datanet: the table's shape and sanity, files written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import attribution
from datanet_lab import compare, compare_mlp, sybil

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    p = compare.problem("wine", "", "honest:2,noisy:2,out_of_domain:1", 5, 0.2, 0, 1e-2)
    methods = [attribution.InfluenceFunction(), attribution.FastTracIn(), attribution.RandomScores(0)]
    directory = tmp_path_factory.mktemp("comparison")
    return p, compare.compare(p, methods, directory, n_subsets=30, seed=0, workers=1), directory


def test_problem_marks_the_planted_bad_data(wine):
    p, _, _ = wine
    assert list(p.noisy_contributor) == [False, False, True, True, False]
    assert p.flipped_sample.any()
    assert set(np.flatnonzero(p.flipped_sample)) <= set(np.flatnonzero(np.isin(p.groups, [2, 3])))
    np.testing.assert_allclose(p.train_x.mean(axis=0), 0.0, atol=1e-5)


def test_table_has_a_row_per_method_and_the_required_columns(wine):
    _, result, _ = wine
    table = result.table.set_index("method")
    assert list(table.index) == ["influence_exact", "tracin_fast", "random"]
    for column in ("lds_sample", "lds_contributor", "loco_corr", "noisy_auc", "seconds", "peak_mib"):
        assert table[column].notna().all(), column
    assert table.loc["influence_exact", "lds_sample"] > 0.8
    assert abs(table.loc["random", "lds_sample"]) < 0.3
    assert table.loc["influence_exact", "lds_sample"] > table.loc["random", "lds_sample"] + 0.5
    assert (result.removal.groupby("method").size() == 1 + len(compare.REMOVAL_FRACTIONS)).all()


def test_files_are_written(wine, tmp_path):
    _, result, _ = wine
    compare.write(result, tmp_path)
    written = pd.read_csv(tmp_path / "comparison.csv")
    assert list(written["method"]) == ["influence_exact", "tracin_fast", "random"]
    assert pd.read_csv(tmp_path / "lds_per_test.csv").shape[1] == 4


@pytest.mark.parametrize("method", [attribution.InfluenceFunction, attribution.FastTracIn])
def test_near_copies_gain_with_summed_credit_and_not_with_the_redundancy_aware_rollup(wine, tmp_path, method):
    p, _, _ = wine
    assert sybil.sybil_gain(p, method, 0, 1, tmp_path) == pytest.approx(1.0)
    assert sybil.sybil_gain(p, method, 0, 3, tmp_path, redundancy_aware=False) > 1.1
    assert sybil.sybil_gain(p, method, 0, 3, tmp_path) <= 1.1
    with pytest.raises(ValueError, match="k >= 1"):
        sybil.sybil_gain(p, method, 0, 0, tmp_path)
    with pytest.raises(ValueError, match="jitter >= 0"):
        sybil.sybil_gain(p, method, 0, 2, tmp_path, jitter=-1.0)


def test_noisy_auc_ranks_credit_per_accepted_sample_among_honest_and_noisy_contributors():
    # c0, c1 honest (credit 1 per sample), c2 noisy (0.5 per sample but 4 samples: the largest
    # sum), c3 out of domain (very harmful), c4 a duplicate whose rows were all rejected.
    groups = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3])
    credit = np.array([1.0, 1.0, 1.0, 1.0, 0.9, 0.9, -0.2, 0.6, -5.0])
    flipped = np.array([False] * 6 + [True, False, False])
    p = compare.Problem(np.zeros((9, 1)), np.zeros(9, dtype=int), np.zeros((1, 1)), np.zeros(1, dtype=int), 2, groups,
                        ("c0", "c1", "c2", "c3", "c4"), np.array([False, False, True, False, False]), flipped, 0.01,
                        ("honest", "honest", "noisy", "out_of_domain", "duplicate"))
    aucs = compare.detection_aucs(p, credit[:, None])
    assert aucs["noisy_auc"] == 1.0  # 0.55 per sample < 1.0 of each honest contributor
    assert aucs["noisy_auc_all"] == 0.0  # summed, c2 (2.2) looks best of all; c3 and c4 look worse
    assert aucs["noisy_sample_auc"] == 1.0  # the flipped sample has the least credit among c0..c2's
    assert aucs["noisy_sample_auc_all"] == pytest.approx(7 / 8)  # c3's sample outranks it


def test_mlp_comparison_averages_retrain_seeds_and_reports_their_ceiling(tmp_path):
    p = compare.problem("wine", "", "honest:2,noisy:2,out_of_domain:1", 5, 0.2, 0)
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
