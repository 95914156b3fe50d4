"""Tests for attribution.rollup: sample credit, per-contributor sums, near-copy clusters in input
and gradient space, and the earliest member of a cluster keeping its credit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import torch
from torch import nn

from attribution import (
    REDUNDANCY_SIMILARITY,
    contributor_credit,
    last_layer_gradients,
    project_to_span,
    redundancy_clusters,
    sample_credit,
    content_clusters,
    shared_credit,
    similarity_clusters,
)
from datanet import build_datanet, load_table, parse_scenario
from datanet.training import TrainConfig, train


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


def test_the_earliest_member_keeps_its_clusters_mean_credit():
    credit = np.array([1.0, 3.0, 5.0, -2.0, 4.0])
    clusters = np.array([0, 0, 1, 2, 2])
    order = np.array([50, 20, 0, 90, 10])  # sample 1 was submitted before 0, sample 4 before 3
    np.testing.assert_allclose(shared_credit(credit, clusters, order), [0.0, 2.0, 5.0, 0.0, 1.0])


def test_a_later_copier_earns_nothing_and_the_original_keeps_one_samples_credit():
    scores = np.array([[2.0, 4.0], [1.0, 1.0], [2.5, 3.5]])  # row 2: a copy of row 0, submitted later by s
    clusters, order = np.array([0, 1, 0]), np.array([3, 7, 12])
    credit = contributor_credit(scores, ["a", "b", "s"], ["a", "b", "s"], clusters, order)
    assert credit.to_dict() == {"a": pytest.approx(3.0), "b": pytest.approx(1.0), "s": 0.0}
    # Submitted first, the copy's owner would keep it: the rule follows the order, not the owner.
    swapped = contributor_credit(scores, ["a", "b", "s"], ["a", "b", "s"], clusters, np.array([12, 7, 3]))
    assert swapped.to_dict() == {"a": 0.0, "b": pytest.approx(1.0), "s": pytest.approx(3.0)}


def test_bad_order_is_refused():
    credit, clusters = np.ones(3), np.array([0, 0, 1])
    with pytest.raises(ValueError, match="1 ranks repeat"):
        shared_credit(credit, clusters, np.array([4, 4, 5]))
    with pytest.raises(ValueError, match="one integer rank per sample"):
        shared_credit(credit, clusters, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="one integer rank per sample"):
        shared_credit(credit, clusters, np.arange(2))
    with pytest.raises(ValueError, match="cluster ids must be integers >= 0"):
        shared_credit(credit, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="pass clusters with it"):
        contributor_credit(np.ones((3, 1)), ["a"] * 3, ["a"], order=np.arange(3))


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def test_last_layer_gradients_are_the_output_layers_loss_gradients():
    model, x, y = _mlp(), torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    a, delta = last_layer_gradients(model, x, y)
    assert a.shape == (5, 7) and delta.shape == (5, 3) and a.dtype == delta.dtype == np.float64
    head = model[2]
    for i in range(5):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        weight, bias = torch.autograd.grad(loss, [head.weight, head.bias])
        expected = torch.cat([weight, bias[:, None]], dim=1).double().numpy()  # (C, d + 1)
        np.testing.assert_allclose(np.outer(delta[i], a[i]), expected, rtol=1e-5, atol=1e-7)


def test_a_layer_without_bias_has_no_bias_column():
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    x, y = torch.randn(2, 4), torch.tensor([1, 2])
    a, _ = last_layer_gradients(model, x, y)
    np.testing.assert_allclose(a, x.double().numpy())


def test_a_confidently_fitted_samples_gradient_keeps_its_direction():
    model = nn.Sequential(nn.Linear(1, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[40.0], [0.0], [1.0]]))
        model[0].bias.zero_()
    _, delta = last_layer_gradients(model, torch.ones(1, 1), torch.tensor([0]))
    others = np.exp([0.0 - 40.0, 1.0 - 40.0])  # p_1, p_2 up to a factor 1 + O(e^-39)
    np.testing.assert_allclose(delta[0], [-others.sum(), others[0], others[1]], rtol=1e-12)


def test_last_layer_gradients_refuse_what_they_cannot_compute():
    with pytest.raises(ValueError, match="output of the last nn.Linear"):
        last_layer_gradients(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one class index in"):
        last_layer_gradients(_mlp(), torch.randn(2, 4), torch.tensor([0, 3]))


def test_similarity_clusters_join_same_label_rows_pointing_the_same_way():
    features = np.array([[1.0, 0.0], [2.0, 0.001], [0.0, 1.0], [0.0, 0.0], [3.0, 0.0]])
    labels = np.array([0, 0, 0, 0, 1])
    clusters = similarity_clusters(features, labels)
    assert clusters[0] == clusters[1]  # same direction, another length
    assert len({clusters[0], clusters[2], clusters[3], clusters[4]}) == 4  # orthogonal, zero, other label
    assert len(np.unique(similarity_clusters(features, labels, threshold=1.0))) == 5


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 30), threshold=st.floats(0.05, 1.0))
def test_factored_features_cluster_as_their_outer_products(seed, n, threshold):
    rng = np.random.default_rng(seed)
    a, delta = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    a[n // 2 :] = a[: n - n // 2] + rng.normal(0, 0.01, (n - n // 2, 3))  # near-copies in the second half
    delta[n // 2 :] = delta[: n - n // 2]
    labels = rng.integers(0, 2, n)
    flat = (delta[:, :, None] * a[:, None, :]).reshape(n, -1)
    same = lambda c: c[:, None] == c[None, :]  # noqa: E731
    np.testing.assert_array_equal(same(similarity_clusters((a, delta), labels, threshold, block_size=7)),
                                  same(similarity_clusters(flat, labels, threshold)))


def test_projection_keeps_what_the_reference_sees_and_drops_the_rest():
    reference = [np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), np.array([[0.0, 2.0]])]  # spans e1, e2 | e2
    features = [np.array([[3.0, 4.0, 5.0]]), np.array([[1.0, 7.0]])]
    a, delta = project_to_span(features, reference)
    assert a.shape == (1, 2) and delta.shape == (1, 1)
    np.testing.assert_allclose(np.linalg.norm(a), 5.0)  # the third coordinate, orthogonal to the reference, is gone
    np.testing.assert_allclose(np.abs(delta), [[7.0]])
    # Two vectors that differ only off the reference's span become the same vector.
    original, copy = np.array([[1.0, 2.0, 0.0]]), np.array([[1.0, 2.0, 9.0]])
    np.testing.assert_allclose(project_to_span([original], reference[:1])[0], project_to_span([copy], reference[:1])[0])
    with pytest.raises(ValueError, match="2 feature factors for 1 reference"):
        project_to_span(features, reference[:1])
    with pytest.raises(ValueError, match="same number of columns"):
        project_to_span([np.ones((2, 3))], [np.ones((2, 2))])


def test_bad_similarity_input_is_refused():
    with pytest.raises(ValueError, match="one row per label"):
        similarity_clusters((np.ones((3, 2)), np.ones((2, 2))), np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        similarity_clusters(np.array([[1.0], [np.nan]]), np.zeros(2))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="threshold must be in"):
            similarity_clusters(np.ones((2, 2)), np.zeros(2), threshold=bad)
    with pytest.raises(ValueError, match="block_size"):
        similarity_clusters(np.ones((2, 2)), np.zeros(2), block_size=0)


@pytest.mark.parametrize(("dataset", "model"), [
    ("wine", "logreg"), ("wine", "mlp"), ("breast_cancer", "logreg"), ("breast_cancer", "mlp"),
    pytest.param("digits", "logreg", marks=pytest.mark.slow), pytest.param("digits", "mlp", marks=pytest.mark.slow),
])
def test_copies_with_noise_0_05_join_their_originals_and_distinct_samples_never_join(dataset, model, tmp_path):
    dn = build_datanet(load_table(dataset, ""), parse_scenario("honest:4", 4), 0.0, 0).datanet
    rows = np.flatnonzero(dn.train_contributors == "c00")
    std = dn.train_x.std(axis=0)  # the copies' noise: 0.05 std on every feature that varies
    noise = np.random.default_rng(0).normal(0.0, 0.05, (len(rows), dn.train_x.shape[1])) * std
    n = len(dn.train_y)
    copied = dataclasses.replace(dn, train_x=np.concatenate([dn.train_x, dn.train_x[rows] + noise.astype(np.float32)]),
                                 train_y=np.concatenate([dn.train_y, dn.train_y[rows]]))
    trained = train(copied, TrainConfig(model=model, epochs=10, seed=0), tmp_path)
    gradients = last_layer_gradients(trained.model, torch.from_numpy(copied.train_x), torch.from_numpy(copied.train_y))
    test = last_layer_gradients(trained.model, torch.from_numpy(dn.test_x), torch.from_numpy(dn.test_y))
    clusters = similarity_clusters(project_to_span(gradients, test), copied.train_y)
    assert len(np.unique(clusters[:n])) == n  # no two distinct samples joined
    joined = np.mean(clusters[n:] == clusters[rows])
    # Measured: 100% (wine), 97-99% (digits, breast_cancer's MLP), 89% (breast_cancer's logistic regression).
    assert joined >= 0.85, f"{joined:.1%} of the copies joined their original at similarity {REDUNDANCY_SIMILARITY}"


def test_a_verbatim_copys_gradient_credit_goes_to_the_earliest_submission():
    # rows 0 and 2 are the same content (equal hashes, equal scores); row 2 was submitted first
    scores = np.array([[1.0, 3.0], [0.5, 0.5], [1.0, 3.0]])
    clusters = content_clusters(["h", "g", "h"])
    credit = contributor_credit(scores, ["copier", "b", "author"], ["author", "b", "copier"], clusters, np.array([5, 1, 2]))
    assert credit.to_dict() == {"author": 2.0, "b": 0.5, "copier": 0.0}
    assert clusters.tolist() == [0, 1, 0]
