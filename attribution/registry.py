"""Attribution methods that run on any trained model's checkpoints, by name.

A run's payouts use the method its ``attribution_method`` parameter names. Exact and CG influence
functions are left out: they assume a converged, strongly convex objective, which notebook 05
builds; Gauss-Newton influence (a positive semi-definite curvature) and TRAK run on any model, as
does ``ekfac_kronfluence``, the field's EK-FAC influence (kronfluence, the optional ``peers`` extra:
imported when the method is made).

Where a method lacks a capability (:class:`~attribution.base.Capabilities`) that a method computing
exactly its scores has (:data:`SAME_SCORES`), :func:`capable` names the latter: whatever uses it
records that name, the code that computed the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from attribution.base import Attributor, Capabilities
from attribution.baselines import GradientDot, KNNShapley, RandomScores, RepresentationSimilarity
from attribution.fast_tracin import FastGradientDot, FastTracIn
from attribution.gauss_newton import GaussNewtonInfluence
from attribution.kronfluence_influence import KronfluenceInfluence
from attribution.lograd import LoGradDot, LoGradTracIn
from attribution.projection import ProjectedTracIn
from attribution.tracin import CaptumTracIn
from attribution.trak import TRAK

METHODS: dict[str, Callable[[int], Attributor]] = {
    "tracin_captum": lambda seed: CaptumTracIn(),
    "tracin_fast": lambda seed: FastTracIn(),
    "tracin_projected": lambda seed: ProjectedTracIn(seed=seed),
    "tracin_lograd": lambda seed: LoGradTracIn(seed=seed),
    "grad_dot": lambda seed: GradientDot(),
    "grad_dot_fast": lambda seed: FastGradientDot(),
    "grad_dot_lograd": lambda seed: LoGradDot(seed=seed),
    "grad_cosine": lambda seed: GradientDot(cosine=True),
    "representation_similarity": lambda seed: RepresentationSimilarity(),
    "knn_shapley": lambda seed: KNNShapley(),
    "trak": lambda seed: TRAK(seed=seed),
    "gauss_newton_if": lambda seed: GaussNewtonInfluence(),
    "ekfac_kronfluence": lambda seed: KronfluenceInfluence(seed=seed),
    "random": lambda seed: RandomScores(seed),
}


SAME_SCORES: dict[str, str] = {
    "tracin_captum": "tracin_fast",
    "grad_dot": "grad_dot_fast",
}
"""A method, and the method that computes the same scores by other means (tests/attribution
compares each pair): the first is the reference, the second offers capabilities it lacks."""


def make_attributor(name: str, seed: int) -> Attributor:
    """A fresh attributor of method ``name``; ``seed`` feeds the methods that draw randomness."""
    return METHODS[_known(name)](seed)


def capable(name: str, capability: str) -> str | None:
    """The registry name of the method that computes method ``name``'s scores and declares
    ``capability`` (a field of :class:`~attribution.base.Capabilities`): ``name`` itself, else its
    :data:`SAME_SCORES` counterpart; ``None`` when neither declares it.

    Raises:
        ValueError: an unknown method or capability.
    """
    known = [f.name for f in fields(Capabilities)]
    if capability not in known:
        raise ValueError(f"unknown capability {capability!r}; expected one of {known}")
    for candidate in (_known(name), SAME_SCORES.get(name)):
        if candidate is not None and getattr(METHODS[candidate](0).capabilities, capability):
            return candidate
    return None


def _known(name: str) -> str:
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; expected one of {sorted(METHODS)}")
    return name
