"""Training-data and feature attribution; computes scores and knows nothing of the ledger.

Score matrices are ``(n_train, n_test)`` everywhere: ``[i, j]`` = train ``i`` on test ``j``,
positive = helped.
"""

from attribution.base import AttributionTask, Attributor
from attribution.integrated_gradients import FeatureAttributions, integrated_gradients
from attribution.rollup import contributor_credit, sample_credit
from attribution.tracin import CaptumTracIn

__all__ = [
    "AttributionTask",
    "Attributor",
    "CaptumTracIn",
    "FeatureAttributions",
    "contributor_credit",
    "integrated_gradients",
    "sample_credit",
]
