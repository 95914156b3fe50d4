"""Tests for datanet.mlp_retrain: determinism per (subset, seed), checkpoints, the outcome it
returns, the learning-rate schedule, thread hygiene and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datanet.mlp_retrain import MLPRetrainer, mlp
from datanet.models import load_checkpoint

N, D, C = 60, 4, 3


def _retrainer(**settings) -> MLPRetrainer:
    rng = np.random.default_rng(0)
    x, test_x = rng.normal(size=(N, D)), rng.normal(size=(30, D))
    w = rng.normal(size=(D, C))
    return MLPRetrainer(x, np.argmax(x @ w, axis=1), test_x, np.argmax(test_x @ w, axis=1), C,
                        **({"hidden": 16, "epochs": 10, "n_checkpoints": 5} | settings))


def test_same_subset_and_seed_give_identical_outcomes_order_and_duplicates_ignored():
    r = _retrainer()
    rows = np.arange(0, N, 2)
    first = r(rows, 3)
    again = r(np.concatenate([rows[::-1], rows[:5]]), 3)
    assert np.array_equal(first.loss, again.loss) and np.array_equal(first.margin, again.margin)
    assert not np.array_equal(first.loss, r(rows, 4).loss)
    assert not np.array_equal(first.loss, r(rows[1:], 3).loss)


def test_outcome_is_the_trained_models_test_loss_and_it_learns():
    r = _retrainer(epochs=30)
    outcome = r(np.arange(N), 0)
    model, _ = r.train(np.arange(N), 0)
    with torch.no_grad():
        logits = model(torch.as_tensor(r.test_x, dtype=torch.float32)).double()
    expected = torch.nn.functional.cross_entropy(logits, torch.as_tensor(r.test_y), reduction="none").numpy()
    np.testing.assert_allclose(outcome.loss, expected, rtol=1e-6)
    assert outcome.loss.shape == outcome.margin.shape == (30,)
    assert outcome.accuracy > 0.6  # linearly separable classes, chance is 1/3


def test_checkpoints_are_evenly_spaced_and_the_last_is_the_model(tmp_path):
    r = _retrainer()
    model, paths = r.train(np.arange(N), 1, tmp_path)
    assert [p.name for p in paths] == [f"epoch_{e:03d}.pt" for e in (2, 4, 6, 8, 10)] == [f"epoch_{e:03d}.pt" for e in r.checkpoint_epochs()]
    rates = [torch.load(p, weights_only=True)["learning_rate"] for p in paths]
    assert all(a > b > 0 for a, b in zip(rates, rates[1:])) and rates[0] < r.learning_rate  # cosine decay
    replay = mlp(D, r.hidden, C, 99)
    load_checkpoint(replay, paths[-1])
    for p, q in zip(model.parameters(), replay.parameters()):
        assert torch.equal(p, q)


def test_restores_the_thread_count():
    threads = torch.get_num_threads()
    _retrainer(epochs=1, n_checkpoints=1)(np.arange(N), 0)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("settings, field", [({"hidden": 0}, "hidden"), ({"epochs": 2, "n_checkpoints": 5}, "n_checkpoints"),
                                             ({"learning_rate": 0.0}, "learning_rate"), ({"weight_decay": -1.0}, "weight_decay")])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ValueError, match=field):
        _retrainer(**settings)


def test_empty_subset_is_refused():
    with pytest.raises(ValueError, match="empty"):
        _retrainer()(np.array([], dtype=int), 0)
