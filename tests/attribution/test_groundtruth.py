"""Tests for attribution.groundtruth: cache keys, caching, LOCO and exact Shapley on known games."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch
import pytest

from attribution.groundtruth import (RetrainCache, exact_shapley, loco, permutation_shapley, random_subsets,
                                     retrainer_fingerprint, subset_key, subset_losses)
from datanet.convex import LogRegRetrainer, Outcome

VALUES = np.array([0.5, -0.2, 1.0, 0.3, 0.0, 0.7])


@dataclasses.dataclass
class _Game:
    """Test loss = 1 - Σ of included sample values (+ an interaction of samples 0 and 2); counts calls."""

    interaction: float = 0.0

    def __post_init__(self) -> None:
        self.calls = 0  # not a field: not part of the cache key

    def __call__(self, indices: np.ndarray, seed: int = 0) -> Outcome:
        self.calls += 1
        both = self.interaction * (0 in indices and 2 in indices)
        loss = np.full(2, 1.0 - VALUES[indices].sum() - both + 0.01 * seed)
        return Outcome(loss, -loss, 0.0)


def test_subset_key_ignores_order_and_duplicates_but_not_the_seed():
    assert subset_key(np.array([3, 1, 2]), 0) == subset_key(np.array([1, 2, 3, 3]), 0)
    assert subset_key(np.array([1, 2, 3]), 0) != subset_key(np.array([1, 2, 3]), 1)
    assert subset_key(np.array([1, 2]), 0) != subset_key(np.array([1, 2, 3]), 0)


def test_cache_retrains_each_subset_once_and_persists(tmp_path):
    game = _Game()
    cache = RetrainCache(game, workers=1, cache_dir=tmp_path)
    first = cache.outcomes([np.array([0, 1]), np.array([1, 0]), np.array([2])])
    assert game.calls == 2 and cache.retrains == 2
    np.testing.assert_allclose(first[0].loss, 1.0 - 0.3)
    cache.outcomes([np.array([2])])
    assert game.calls == 2
    fresh_game = _Game()
    again = RetrainCache(fresh_game, workers=1, cache_dir=tmp_path).outcomes([np.array([0, 1])])
    assert fresh_game.calls == 0
    np.testing.assert_allclose(again[0].loss, first[0].loss)
    assert not list(tmp_path.glob(".*"))  # no partial files left


def _logreg(l2: float = 1e-2, shift: float = 0.0) -> LogRegRetrainer:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    return LogRegRetrainer(x + shift, y, x[:6], y[:6], 2, l2)


@pytest.mark.parametrize("other", [_logreg(l2=1.0), _logreg(shift=0.5)], ids=["l2", "training_data"])
def test_a_cache_directory_is_reused_only_by_a_retrainer_with_the_same_parameters_and_data(tmp_path, other):
    subsets = [np.arange(40), np.arange(0, 40, 2)]
    first = RetrainCache(_logreg(), workers=1, cache_dir=tmp_path)
    losses = [o.loss for o in first.outcomes(subsets)]
    same = RetrainCache(_logreg(), workers=1, cache_dir=tmp_path)
    np.testing.assert_array_equal([o.loss for o in same.outcomes(subsets)], losses)
    assert same.retrains == 0
    changed = RetrainCache(other, workers=1, cache_dir=tmp_path)
    outcomes = changed.outcomes(subsets)
    assert changed.retrains == 2
    for outcome, subset, old in zip(outcomes, subsets, losses):
        np.testing.assert_allclose(outcome.loss, other(subset).loss, rtol=1e-12)
        assert not np.allclose(outcome.loss, old)


def test_the_fingerprint_covers_every_field_and_ignores_what_a_retrain_caches():
    retrainer = _logreg()
    before = retrainer_fingerprint(retrainer)
    retrainer(np.arange(20))  # computes and keeps the cached full-data fit
    assert retrainer_fingerprint(retrainer) == before == retrainer_fingerprint(_logreg())
    test_y = retrainer.test_y.copy()
    test_y[0] = 1 - test_y[0]
    for changed in (dataclasses.replace(retrainer, test_y=test_y), dataclasses.replace(retrainer, tol=1e-6),
                    dataclasses.replace(retrainer, train_x=retrainer.train_x.astype(np.float32))):
        assert retrainer_fingerprint(changed) != before


def test_a_cache_directory_refuses_a_retrainer_it_cannot_fingerprint(tmp_path):
    with pytest.raises(TypeError, match="must be a dataclass instance.*got function"):
        RetrainCache(lambda indices, seed: _Game()(indices, seed), workers=1, cache_dir=tmp_path)
    with pytest.raises(TypeError, match=r"_Game.interaction \(type object\)"):
        RetrainCache(_Game(interaction=object()), workers=1, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_worker_processes_give_the_same_outcomes():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    retrainer = LogRegRetrainer(x, y, x[:4], y[:4], 2)
    subsets = [np.arange(0, 40, k) for k in (1, 2, 3, 4)]
    parallel = RetrainCache(retrainer, workers=2).outcomes(subsets)
    for subset, outcome in zip(subsets, parallel):
        np.testing.assert_allclose(outcome.loss, retrainer(subset).loss, rtol=1e-12)


def test_loco_of_an_additive_game_is_each_groups_value():
    groups = np.array([0, 0, 1, 1, 2, 2])
    effect = loco(RetrainCache(_Game(), workers=1), groups, 3)
    np.testing.assert_allclose(effect, np.repeat([[0.3], [1.3], [0.7]], 2, axis=1))


def _shapley_by_permutations(value, n):
    """Average marginal contribution over all n! orders (the definition)."""
    total = np.zeros(n)
    for order in itertools.permutations(range(n)):
        seen = []
        for g in order:
            total[g] += value(seen + [g]) - value(seen)
            seen.append(g)
    return total / math.factorial(n)


def test_exact_shapley_matches_the_permutation_definition():
    groups = np.array([0, 1, 2, 3, 1, 0])
    game = _Game(interaction=0.8)
    shapley = exact_shapley(RetrainCache(game, workers=1), groups, 4)

    def value(chosen):
        return -float(game(np.flatnonzero(np.isin(groups, chosen))).loss.mean())

    np.testing.assert_allclose(shapley, _shapley_by_permutations(value, 4), rtol=1e-12)
    # Efficiency: the values add up to v(everyone) - v(nobody).
    assert shapley.sum() == pytest.approx(value([0, 1, 2, 3]) - value([]))


def test_exact_shapley_refuses_too_many_groups():
    with pytest.raises(ValueError, match="1..10 groups"):
        exact_shapley(RetrainCache(_Game(), workers=1), np.arange(11), 11)


def test_permutation_shapley_converges_to_exact_within_its_standard_error():
    groups = np.array([0, 1, 2, 3, 1, 0])
    cache = RetrainCache(_Game(interaction=0.8), workers=1)
    exact = exact_shapley(cache, groups, 4)
    value, error = permutation_shapley(cache, groups, 4, n_permutations=400, seed=1)
    assert (error > 0).any()
    assert (np.abs(value - exact) <= 4 * error + 1e-12).all()
    # An additive game has the same marginal in every order: exact, with zero error.
    additive, zero = permutation_shapley(RetrainCache(_Game(), workers=1), groups, 4, n_permutations=5)
    np.testing.assert_allclose(additive, [0.5 + 0.7, -0.2 + 0.0, 1.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(zero, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_shapley(cache, groups, 4, n_permutations=1)


def test_random_subsets_are_seeded_halves():
    masks = random_subsets(11, 50, 0.5, seed=3)
    assert masks.shape == (50, 11) and (masks.sum(axis=1) == 6).all()
    np.testing.assert_array_equal(masks, random_subsets(11, 50, 0.5, seed=3))
    assert not np.array_equal(masks, random_subsets(11, 50, 0.5, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        random_subsets(4, 2, 1.0)


def test_subset_losses_average_over_seeds():
    masks = random_subsets(6, 5, seed=0)
    losses = subset_losses(RetrainCache(_Game(), workers=1), masks, seeds=(0, 2))
    expected = np.array([1.0 - VALUES[m].sum() + 0.01 for m in masks])
    np.testing.assert_allclose(losses, np.repeat(expected[:, None], 2, axis=1))


@dataclasses.dataclass
class _ModuleHolder:
    layer: torch.nn.Module
    start: torch.Tensor
    dtype: torch.dtype = torch.float32


def test_the_fingerprint_covers_a_torch_module_by_structure_and_weights():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.1))
    holder = _ModuleHolder(layer, torch.zeros(2))
    before = retrainer_fingerprint(holder)
    assert retrainer_fingerprint(_ModuleHolder(layer, torch.zeros(2))) == before
    other_weights = _ModuleHolder(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.1)), torch.zeros(2))
    other_dropout = _ModuleHolder(torch.nn.Sequential(layer[0], torch.nn.Dropout(0.2)), torch.zeros(2))
    other_start = _ModuleHolder(layer, torch.ones(2))
    other_dtype = _ModuleHolder(layer, torch.zeros(2), torch.float64)
    others = (other_weights, other_dropout, other_start, other_dtype)
    assert len({before, *(retrainer_fingerprint(h) for h in others)}) == 5
