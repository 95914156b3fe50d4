"""Tests for attribution.ensemble: an ensemble of one is its base, a larger one is the mean of its
members' scores, members are built once, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attribution import AttributionTask, FastTracIn, GradientDot
from attribution.ensemble import Ensemble
from attribution.trak import TRAK
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, M, D, C = 12, 4, 3, 3


class Models:
    """Member factory: model ``k`` is a fresh random MLP on the same data, saved as one checkpoint."""

    def __init__(self, directory, rows=N):
        generator = torch.Generator().manual_seed(0)
        self.directory, self.calls = directory, []
        self.x, self.y = torch.randn(rows, D, generator=generator), torch.randint(0, C, (rows,), generator=generator)
        self.test = torch.randn(M, D, generator=generator), torch.randint(0, C, (M,), generator=generator)

    def task(self, k: int) -> AttributionTask:
        with torch.random.fork_rng():
            torch.manual_seed(k)
            model = nn.Sequential(nn.Linear(D, 5), nn.ReLU(), nn.Linear(5, C))
        path = self.directory / f"model_{k}.pt"
        torch.save({"state_dict": model.state_dict(), "learning_rate": 0.5}, path)
        return AttributionTask(model, self.x, self.y, [path], load_checkpoint)

    def __call__(self, task: AttributionTask, k: int) -> AttributionTask:
        self.calls.append(k)
        return self.task(k)


@pytest.mark.parametrize("base", [GradientDot, FastTracIn, TRAK])
def test_ensemble_of_one_is_its_base(tmp_path, base):
    models = Models(tmp_path)
    task = models.task(0)
    scores = Ensemble(base, models, 1).fit(task).scores(*models.test)
    assert np.array_equal(scores, base().fit(task).scores(*models.test))
    assert models.calls == []


def test_ensemble_is_the_mean_of_member_scores_and_trains_each_member_once(tmp_path):
    models = Models(tmp_path)
    ensemble = Ensemble(TRAK, models, 3).fit(models.task(0))
    scores = ensemble.scores(*models.test)
    reference = np.mean([TRAK().fit(models.task(k)).scores(*models.test) for k in range(3)], axis=0)
    np.testing.assert_allclose(scores, reference, rtol=1e-12)
    assert scores.shape == (N, M) and ensemble.name == "trak_x3"
    assert np.array_equal(ensemble.scores(*models.test), scores)  # deterministic, no retraining
    assert models.calls == [1, 2]


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="n_models"):
        Ensemble(GradientDot, Models(tmp_path), 0)
    models = Models(tmp_path)
    with pytest.raises(RuntimeError, match="before fit"):
        Ensemble(GradientDot, models, 2).scores(*models.test)
    other = Models(tmp_path, rows=N + 1)
    with pytest.raises(ValueError, match="same training set"):
        Ensemble(GradientDot, lambda task, k: other.task(k), 2).fit(models.task(0)).scores(*models.test)
