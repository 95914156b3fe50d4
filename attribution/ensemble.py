"""Average any method's scores over independently trained models (the TRAK ensemble insight).

On a non-convex model one training run's attribution carries that run's seed (initialisation,
batch order) as noise; retraining ground truth averaged over seeds does not. Averaging a method's
``(n_train, n_test)`` scores over ``n_models`` models trained with different seeds (on the whole
training set, or, as TRAK does and ``benchmarks/mlp_lds_bench.py`` does, each on a random half of
it) estimates the seed-averaged influence instead; every member's task lists the whole training
set, whose rows are scored. The first member is the task's own model;
the others come from ``member(task, k)`` for ``k = 1 .. n_models - 1`` (e.g. retrain with seed
``k``), so an ensemble of one is exactly its base method.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attribution.base import AttributionTask, Attributor, Inputs, require_finite

MemberFactory = Callable[[AttributionTask, int], AttributionTask]
"""``(task, k) -> task`` of the ``k``-th independently trained model on the same training data."""


class Ensemble(Attributor):
    """Mean of ``base()`` scores over ``n_models`` trained models.

    Args:
        base: makes a fresh attributor (one per member, fitted and dropped in turn, so memory is
            one member's at a time).
        member: ``(task, k) -> AttributionTask`` of the ``k``-th other model; called lazily, once
            per ``k`` (results are kept, so scoring again does not retrain).
        n_models: ensemble size, including the task's own model (default 10).
    """

    def __init__(self, base: Callable[[], Attributor], member: MemberFactory, n_models: int = 10) -> None:
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        self.base, self.member, self.n_models = base, member, n_models
        self.name = f"{base().name}_x{n_models}"
        self._members: list[AttributionTask] = []

    def fit(self, task: AttributionTask) -> Ensemble:
        self._members = [task]
        return self

    def members(self) -> list[AttributionTask]:
        """The ``n_models`` tasks, training the missing ones."""
        if not self._members:
            raise RuntimeError(f"{self.name}: members() called before fit(task)")
        while len(self._members) < self.n_models:
            k = len(self._members)
            other = self.member(self._members[0], k)
            if other.n_train != self._members[0].n_train:
                raise ValueError(f"{self.name}: member {k} has {other.n_train} training rows, the task "
                                 f"{self._members[0].n_train}; members must score the same training set")
            self._members.append(other)
        return self._members

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        total = None
        for task in self.members():
            part = self.base().fit(task).scores(test_x, test_y)
            total = part if total is None else total + part
        return require_finite(total / self.n_models, self.name)
