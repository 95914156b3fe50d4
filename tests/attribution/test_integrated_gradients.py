"""Tests for attribution.integrated_gradients: exactness on a linear model, completeness on an MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution import FeatureAttributions, integrated_gradients
from datanet.models import build_model

N_FEATURES, N_CLASSES = 5, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(model_name: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    train_x = torch.randn(40, N_FEATURES, generator=g) * 3.0 + 2.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(model_name, train_x, N_CLASSES)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(4.0)  # sharpen the logits so the ReLU kinks matter
    inputs = torch.randn(6, N_FEATURES, generator=g) * 3.0 + 2.0
    return model.eval(), train_x, inputs


def test_linear_model_attributions_are_exact():
    model, train_x, inputs = _setup("logreg")
    baseline = train_x.mean(dim=0)
    result = integrated_gradients(model, inputs, baseline, n_steps=16)
    assert isinstance(result, FeatureAttributions)
    standardize, linear = model[0], model[1]
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1)
        # d logit_t / d x_k = W[t, k] / std_k for (x - mean) / std followed by a linear layer.
        slopes = (linear.weight[targets] / standardize.std).double()
        expected = (inputs.double() - baseline.double()) * slopes
    assert result.attributions.shape == (6, N_FEATURES)
    assert result.attributions.dtype == np.float64
    np.testing.assert_array_equal(result.targets, targets.numpy())
    np.testing.assert_allclose(result.attributions, expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.convergence_delta, 0.0, atol=1e-4)


@pytest.mark.parametrize("model_name", ["logreg", "mlp"])
def test_completeness(model_name):
    model, train_x, inputs = _setup(model_name, seed=1)
    baseline = train_x.mean(dim=0)
    result = integrated_gradients(model, inputs, baseline, n_steps=128)
    with torch.no_grad():
        logits = model(inputs).double()
        targets = logits.argmax(dim=1)
        base_logits = model(baseline[None]).double()[0]
        gap = (logits[torch.arange(len(inputs)), targets] - base_logits[targets]).numpy()
    assert np.abs(gap).max() > 0.1
    np.testing.assert_array_equal(result.targets, targets.numpy())
    sums = result.attributions.sum(axis=1)
    np.testing.assert_allclose(sums, gap, rtol=1e-2, atol=1e-2 * np.abs(gap).max())
    # convergence_delta is exactly the completeness gap, as documented.
    np.testing.assert_allclose(result.convergence_delta, sums - gap, atol=1e-4 * max(1.0, np.abs(gap).max()))


def test_input_equal_to_baseline_gets_zero_attribution():
    model, train_x, _ = _setup("mlp", seed=2)
    baseline = train_x.mean(dim=0)
    result = integrated_gradients(model, baseline[None].clone(), baseline)
    np.testing.assert_allclose(result.attributions, 0.0, atol=1e-7)


def test_a_feature_equal_to_its_baseline_gets_zero():
    model, train_x, inputs = _setup("mlp", seed=3)
    baseline = train_x.mean(dim=0)
    inputs = inputs.clone()
    inputs[:, 2] = baseline[2]
    result = integrated_gradients(model, inputs, baseline)
    np.testing.assert_allclose(result.attributions[:, 2], 0.0, atol=1e-7)


def test_inputs_are_not_modified():
    model, train_x, inputs = _setup("mlp", seed=4)
    before = inputs.clone()
    integrated_gradients(model, inputs, train_x.mean(dim=0))
    assert torch.equal(inputs, before)
    assert not inputs.requires_grad
