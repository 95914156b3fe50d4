"""Tests for attribution.metrics against scipy/sklearn-free hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.metrics import detection_auc, detection_aucs, group_sums, lds, loco_correlation, seed_agreement


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return np.corrcoef(ra, rb)[0, 1]


def test_lds_is_the_per_test_spearman_of_subset_sums_against_minus_loss():
    rng = np.random.default_rng(0)
    scores, masks, losses = rng.normal(size=(12, 3)), rng.random((20, 12)) < 0.5, rng.normal(size=(20, 3))
    expected = [_spearman(masks @ scores[:, j], -losses[:, j]) for j in range(3)]
    np.testing.assert_allclose(lds(scores, masks, losses), expected, rtol=1e-12)


def test_perfect_attribution_of_an_additive_truth_has_lds_one():
    rng = np.random.default_rng(1)
    scores, masks = rng.normal(size=(10, 2)), rng.random((15, 10)) < 0.5
    np.testing.assert_allclose(lds(scores, masks, 3.0 - 2.0 * (masks @ scores)), 1.0)
    np.testing.assert_allclose(lds(-scores, masks, 3.0 - 2.0 * (masks @ scores)), -1.0)


def test_lds_refuses_shapes_that_disagree():
    with pytest.raises(ValueError, match="shapes disagree"):
        lds(np.ones((4, 2)), np.ones((3, 5), dtype=bool), np.ones((3, 2)))


def test_group_sums_and_correlations():
    scores = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(group_sums(scores, np.array([1, 0, 1]), 3), [[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]])
    assert loco_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 40.0])) == pytest.approx(1.0)
    assert detection_auc(np.array([0.1, 0.9, 0.8, 0.2]), np.array([False, True, True, False])) == 1.0
    assert detection_auc(np.array([0.9, 0.1, 0.8, 0.2]), np.array([False, True, False, True])) == 0.0
    assert np.isnan(detection_auc(np.array([0.1, 0.2]), np.array([False, False])))


def test_seed_agreement_is_one_for_identical_seeds_and_needs_two():
    rng = np.random.default_rng(0)
    losses = rng.random((20, 4))
    np.testing.assert_allclose(seed_agreement([losses, losses]), 1.0)
    np.testing.assert_allclose(seed_agreement([losses, -losses]), -1.0)
    unrelated = seed_agreement([losses, rng.random((20, 4))])
    assert np.all(np.abs(unrelated) < 0.8)
    with pytest.raises(ValueError, match=">= 2 retrain seeds"):
        seed_agreement([losses])


def test_noisy_auc_ranks_credit_per_accepted_sample_among_honest_and_noisy_groups():
    # g0, g1 honest (credit 1 per sample), g2 noisy (0.55 per sample but 4 samples: the largest
    # sum), g3 out of domain (very harmful), g4 a duplicate whose rows were all rejected.
    groups = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3])
    credit = np.array([1.0, 1.0, 1.0, 1.0, 0.9, 0.9, -0.2, 0.6, -5.0])
    flipped = np.array([False] * 6 + [True, False, False])
    noisy = np.array([False, False, True, False, False])
    aucs = detection_aucs(credit[:, None], groups, noisy, flipped, ("honest", "honest", "noisy", "out_of_domain", "duplicate"))
    assert aucs["noisy_auc"] == 1.0  # 0.55 per sample < 1.0 of each honest group
    assert aucs["noisy_auc_all"] == 0.0  # summed, g2 (2.2) looks best of all; g3 and g4 look worse
    assert aucs["noisy_sample_auc"] == 1.0  # the flipped sample has the least credit among g0..g2's
    assert aucs["noisy_sample_auc_all"] == pytest.approx(7 / 8)  # g3's sample outranks it
    # Without behaviours, g3 and g4 count as honest: g4 (no rows) drops out, g3 ranks below g2.
    assert detection_aucs(credit[:, None], groups, noisy, flipped)["noisy_auc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="one row per training sample"):
        detection_aucs(credit[:, None], groups[:-1], noisy, flipped)
    with pytest.raises(ValueError, match="2 behaviours for 5 groups"):
        detection_aucs(credit[:, None], groups, noisy, flipped, ("honest", "noisy"))
