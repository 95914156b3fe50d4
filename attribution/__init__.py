"""Training-data and feature attribution; computes scores and knows nothing of the ledger.

Score matrices are ``(n_train, n_test)`` everywhere: ``[i, j]`` = train ``i`` on test ``j``,
positive = helped.
"""

from attribution.base import AttributionError, AttributionTask, Attributor, Inputs, n_samples, per_sample_losses, require_finite, take
from attribution.baselines import GradientDot, KNNShapley, RandomScores, RepresentationSimilarity, TrainingLoss
from attribution.ensemble import Ensemble
from attribution.fast_tracin import FastGradientDot, FastTracIn
from attribution.gauss_newton import GaussNewtonInfluence
from attribution.influence import InfluenceFunction
from attribution.kronfluence_influence import KronfluenceInfluence
from attribution.integrated_gradients import FeatureAttributions, integrated_gradients
from attribution.layer_projection import LayerProjection
from attribution.lograd import LoGradDot, LoGradTracIn
from attribution.projection import ProjectedTracIn
from attribution.registry import METHODS, make_attributor
from attribution.rollup import (
    REDUNDANCY_RADIUS,
    REDUNDANCY_SIMILARITY,
    content_clusters,
    contributor_credit,
    contributor_credit_per_test,
    earliest_members,
    last_layer_gradients,
    project_to_span,
    redundancy_clusters,
    sample_credit,
    shared_credit,
    similarity_clusters,
)
from attribution.spans import (
    ReferenceSpanMatcher,
    Span,
    SpanAttributor,
    SpanCredit,
    SpanIndex,
    SpanTask,
    build_span_index,
    reference_spans,
    span_credit,
    unigram_logprobs,
)
from attribution.streaming import Float16Memmap, GroupSums
from attribution.token_ig import TokenAttributions, token_attributions, trigger_mass
from attribution.tracin import CaptumTracIn
from attribution.trak import TRAK

__all__ = [
    "REDUNDANCY_RADIUS",
    "REDUNDANCY_SIMILARITY",
    "AttributionError",
    "AttributionTask",
    "Attributor",
    "CaptumTracIn",
    "Ensemble",
    "FastGradientDot",
    "FastTracIn",
    "Float16Memmap",
    "FeatureAttributions",
    "GaussNewtonInfluence",
    "GradientDot",
    "GroupSums",
    "Inputs",
    "InfluenceFunction",
    "KronfluenceInfluence",
    "METHODS",
    "KNNShapley",
    "LayerProjection",
    "LoGradDot",
    "LoGradTracIn",
    "ProjectedTracIn",
    "RandomScores",
    "RepresentationSimilarity",
    "TRAK",
    "TokenAttributions",
    "TrainingLoss",
    "SpanAttributor",
    "SpanTask",
    "content_clusters",
    "contributor_credit",
    "contributor_credit_per_test",
    "earliest_members",
    "integrated_gradients",
    "last_layer_gradients",
    "make_attributor",
    "n_samples",
    "per_sample_losses",
    "project_to_span",
    "redundancy_clusters",
    "require_finite",
    "sample_credit",
    "shared_credit",
    "similarity_clusters",
    "take",
    "token_attributions",
    "trigger_mass",
]
