"""Attribution methods that run on any trained model's checkpoints, by name.

A run's payouts use the method its ``attribution_method`` parameter names. Exact and CG influence
functions are left out: they assume a converged, strongly convex objective, which notebook 05
builds; Gauss-Newton influence (a positive semi-definite curvature) and TRAK run on any model.
"""

from __future__ import annotations

from collections.abc import Callable

from attribution.base import Attributor
from attribution.baselines import GradientDot, KNNShapley, RandomScores, RepresentationSimilarity
from attribution.fast_tracin import FastGradientDot, FastTracIn
from attribution.gauss_newton import GaussNewtonInfluence
from attribution.projection import ProjectedTracIn
from attribution.tracin import CaptumTracIn
from attribution.trak import TRAK

METHODS: dict[str, Callable[[int], Attributor]] = {
    "tracin_captum": lambda seed: CaptumTracIn(),
    "tracin_fast": lambda seed: FastTracIn(),
    "tracin_projected": lambda seed: ProjectedTracIn(seed=seed),
    "grad_dot": lambda seed: GradientDot(),
    "grad_dot_fast": lambda seed: FastGradientDot(),
    "grad_cosine": lambda seed: GradientDot(cosine=True),
    "representation_similarity": lambda seed: RepresentationSimilarity(),
    "knn_shapley": lambda seed: KNNShapley(),
    "trak": lambda seed: TRAK(seed=seed),
    "gauss_newton_if": lambda seed: GaussNewtonInfluence(),
    "random": lambda seed: RandomScores(seed),
}


def make_attributor(name: str, seed: int) -> Attributor:
    """A fresh attributor of method ``name``; ``seed`` feeds the methods that draw randomness."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name](seed)
