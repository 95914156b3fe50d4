"""Tests for attribution.metrics against scipy/sklearn-free hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.metrics import detection_auc, group_sums, lds, loco_correlation, seed_agreement


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
