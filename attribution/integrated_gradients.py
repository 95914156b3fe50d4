"""Feature-level attribution of test predictions with Captum's Integrated Gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn


@dataclass(frozen=True)
class FeatureAttributions:
    """``attributions`` (n_samples, n_features) toward ``targets`` (n_samples,), and each row's
    completeness gap ``convergence_delta`` (n_samples,): sum of attributions minus
    ``f(x) - f(baseline)`` for the target logit (0 for an exact path integral)."""

    attributions: np.ndarray
    targets: np.ndarray
    convergence_delta: np.ndarray


def integrated_gradients(
    model: nn.Module, inputs: torch.Tensor, baseline: torch.Tensor, n_steps: int = 64
) -> FeatureAttributions:
    """Attribute each input's predicted-class logit to its features, along a straight path from
    ``baseline`` (``(n_features,)``, e.g. the training mean) to the input."""
    model.eval()
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1)
    baselines = baseline.expand_as(inputs)
    attributions, delta = IntegratedGradients(model).attribute(
        inputs.detach().clone().requires_grad_(), baselines=baselines, target=targets, n_steps=n_steps, return_convergence_delta=True
    )
    return FeatureAttributions(attributions.detach().double().numpy(), targets.numpy(), delta.detach().double().numpy())
