"""Tests for attribution.rollup: sample credit and per-contributor sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attribution import contributor_credit, redundancy_clusters, sample_credit, shared_credit


def _hand_credit(scores, contributors, all_contributors) -> dict[str, float]:
    totals = {c: 0.0 for c in all_contributors}
    for i, who in enumerate(contributors):
        row_mean = sum(float(v) for v in scores[i]) / scores.shape[1]
        if who in totals:
            totals[who] += row_mean
    return totals


def test_sample_credit_is_the_row_mean():
    scores = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]])
    np.testing.assert_allclose(sample_credit(scores), [2.0, 1.0])


def test_contributor_credit_small_example():
    scores = np.array([[1.0, 3.0], [2.0, 2.0], [-4.0, 0.0], [0.5, 0.5]])
    credit = contributor_credit(scores, ["b", "a", "b", "a"], ["a", "b", "c"])
    assert isinstance(credit, pd.Series)
    assert credit.name == "attribution"
    assert list(credit.index) == ["a", "b", "c"]
    np.testing.assert_allclose(credit.to_numpy(), [2.0 + 0.5, 2.0 - 2.0, 0.0])


def test_contributor_credit_follows_all_contributors_order():
    scores = np.array([[1.0], [2.0], [3.0]])
    credit = contributor_credit(scores, np.array(["c01", "c00", "c01"]), ["c02", "c01", "c00"])
    assert list(credit.index) == ["c02", "c01", "c00"]
    assert credit.to_dict() == {"c02": 0.0, "c01": 4.0, "c00": 2.0}


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_train=st.integers(1, 12),
    n_test=st.integers(1, 5),
    n_contributors=st.integers(1, 5),
)
def test_contributor_credit_matches_a_hand_loop(data, n_train, n_test, n_contributors):
    scores = data.draw(
        hnp.arrays(np.float64, (n_train, n_test), elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))
    )
    everyone = [f"c{i:02d}" for i in range(n_contributors)]
    contributors = data.draw(st.lists(st.sampled_from(everyone), min_size=n_train, max_size=n_train))
    credit = contributor_credit(scores, contributors, everyone)
    expected = _hand_credit(scores, contributors, everyone)
    assert list(credit.index) == everyone
    for c in everyone:
        assert credit[c] == pytest.approx(expected[c], rel=1e-9, abs=1e-9)
    for c in set(everyone) - set(contributors):
        assert credit[c] == 0.0
    # Credit is conserved: the contributors' sum is the sum of sample credits.
    assert credit.sum() == pytest.approx(scores.mean(axis=1).sum(), rel=1e-9, abs=1e-6)


def test_no_training_rows_gives_zero_for_everyone():
    credit = contributor_credit(np.zeros((0, 3)), [], ["a", "b"])
    assert credit.to_dict() == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad):
    scores = np.ones((3, 2))
    scores[1, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        contributor_credit(scores, ["a", "b", "a"], ["a", "b"])
    with pytest.raises(ValueError, match="1 non-finite"):
        sample_credit(scores)


@pytest.mark.parametrize("n_ids", [2, 4, 0])
def test_contributor_count_must_match_the_rows(n_ids):
    with pytest.raises(ValueError, match=f"{n_ids} contributor ids for 3 training rows"):
        contributor_credit(np.ones((3, 2)), ["a"] * n_ids, ["a"])


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2)])
def test_scores_must_be_two_dimensional(shape):
    with pytest.raises(ValueError, match="n_train, n_test"):
        sample_credit(np.ones(shape))


def _spread_points(n=40, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_near_copies_of_the_same_label_form_one_cluster_and_nothing_else_does():
    x = _spread_points()
    y = np.arange(len(x)) % 3
    rng = np.random.default_rng(1)
    copied = [3, 7, 7, 20]  # sample 7 copied twice
    features = np.concatenate([x, x[copied] + rng.normal(0, 1e-4, (len(copied), x.shape[1]))])
    labels = np.concatenate([y, y[copied]])
    clusters = redundancy_clusters(features, labels)
    assert clusters.shape == (len(features),)
    assert len(np.unique(clusters)) == len(x)  # every original, its copies joined to it
    for k, i in enumerate(copied):
        assert clusters[len(x) + k] == clusters[i]
    # A copy with another label is not redundant: it says something else about the same input.
    relabelled = labels.copy()
    relabelled[len(x)] = (labels[len(x)] + 1) % 3
    assert len(np.unique(redundancy_clusters(features, relabelled))) == len(x) + 1


def test_the_radius_is_relative_to_the_data_scale():
    x = _spread_points(seed=2)
    features = np.concatenate([x, x[:1] + 0.05])  # 0.05 per coordinate off sample 0
    labels = np.zeros(len(features), dtype=int)
    joined = redundancy_clusters(features, labels)
    assert joined[-1] == joined[0]
    assert np.array_equal(redundancy_clusters(features * 1e3, labels), joined)  # same data in other units
    assert len(np.unique(redundancy_clusters(features, labels, radius=0.0))) == len(features)


def test_shared_credit_lets_a_cluster_earn_one_members_mean():
    credit = np.array([1.0, 3.0, 5.0, -2.0, 4.0])
    clusters = np.array([0, 0, 1, 2, 2])
    shared = shared_credit(credit, clusters)
    np.testing.assert_allclose(shared, [1.0, 1.0, 5.0, 0.5, 0.5])
    np.testing.assert_allclose(np.bincount(clusters, shared), [2.0, 5.0, 1.0])  # cluster means
    np.testing.assert_array_equal(shared_credit(credit, np.arange(5)), credit)  # singletons keep theirs


def test_duplicating_rows_under_another_identity_earns_nothing_extra():
    scores = np.array([[2.0, 4.0], [1.0, 1.0], [0.5, 0.5]])
    alone = contributor_credit(scores, ["a", "b", "b"], ["a", "b", "s"], clusters=np.array([0, 1, 2]))
    copied = np.concatenate([scores, scores[:1]])  # a's sample accepted again for sybil s
    together = contributor_credit(copied, ["a", "b", "b", "s"], ["a", "b", "s"], clusters=np.array([0, 1, 2, 0]))
    assert together["a"] + together["s"] == pytest.approx(alone["a"])
    assert together["b"] == pytest.approx(alone["b"])
    assert contributor_credit(copied, ["a", "b", "b", "s"], ["a", "b", "s"])[["a", "s"]].sum() == pytest.approx(2 * alone["a"])


def test_bad_cluster_input_is_refused():
    with pytest.raises(ValueError, match="3 cluster ids for 2 credits"):
        shared_credit(np.ones(2), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="one label per row"):
        redundancy_clusters(np.ones((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="radius must be >= 0"):
        redundancy_clusters(np.ones((3, 2)), np.zeros(3), radius=-1.0)
