"""Tests for attribution.linear_head: the closed-form gradients and Hessian against autograd
(vmap per-sample gradients, jacrev-of-jacrev Hessian), when the closed form applies and when not,
and exact influence functions through both paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jacrev

from attribution import AttributionTask, InfluenceFunction
from attribution.gradients import SampleGradients
from attribution.linear_head import LinearSoftmaxHead
from datanet.convex import fit_logreg
from datanet.models import build_model
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D, C = 60, 5, 4


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g) * 3 + 1
    return x, torch.randint(0, C, (N,), generator=g)


def _logreg(x, bias=True) -> nn.Sequential:
    """The project's logreg (frozen standardization, then nn.Linear) with random weights."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_model("logreg", x, C)
        if not bias:
            model[1] = nn.Linear(D, C, bias=False)
    return model


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_and_hessian_equal_autograd(bias):
    x, y = _data()
    grads = SampleGradients(_logreg(x, bias), nn.CrossEntropyLoss(reduction="sum"))
    head = LinearSoftmaxHead.find(grads, x[:1])
    assert head is not None
    np.testing.assert_allclose(head.gradients(x, y), grads(x, y), rtol=1e-10, atol=1e-12)
    theta = grads.flatten(grads.params())
    reference = jacrev(jacrev(lambda t: grads.loss(grads.unflatten(t), x, y)))(theta)
    np.testing.assert_allclose(head.hessian(x), reference, rtol=1e-10, atol=1e-12)


def _mlp(x):
    return build_model("mlp", x, C)


def _frozen_bias(x):
    model = _logreg(x)
    model[1].bias.requires_grad_(False)
    return model


def _linear_not_last(x):
    return nn.Sequential(nn.Linear(D, C), nn.Tanh())


def _second_call(x):
    layer = nn.Linear(D, D)
    return nn.Sequential(layer, layer)


@pytest.mark.parametrize("make", [_mlp, _frozen_bias, _linear_not_last, _second_call])
def test_other_models_are_not_taken_for_a_linear_head(make):
    x, _ = _data()
    assert LinearSoftmaxHead.find(SampleGradients(make(x), nn.CrossEntropyLoss(reduction="sum")), x[:1]) is None


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
                                  nn.CrossEntropyLoss(reduction="sum", weight=torch.ones(C)), nn.MSELoss(reduction="sum")])
def test_other_losses_are_not_taken_for_softmax_cross_entropy(loss):
    x, _ = _data()
    assert LinearSoftmaxHead.find(SampleGradients(_logreg(x), loss), x[:1]) is None


def test_influence_through_the_closed_form_equals_autograd(tmp_path):
    x, y = _data(seed=2)
    test_x, test_y = _data(seed=3)
    model = _logreg(x)
    # Converge it so the Hessian is the one influence functions assume (the check holds at any weights).
    fit = fit_logreg(model[0](x).double().numpy(), y.numpy(), C, 0.05)
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(fit.weight))
        model[1].bias.copy_(torch.from_numpy(fit.bias))
    path = tmp_path / "final.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    task = AttributionTask(model, x, y, [path], load_checkpoint, weight_decay=0.05)
    closed = InfluenceFunction(damping=0.01).fit(task)
    assert closed._head is not None
    reference = InfluenceFunction(damping=0.01, structured=False).fit(task)
    assert reference._head is None
    np.testing.assert_allclose(closed.scores(test_x, test_y), reference.scores(test_x, test_y), rtol=1e-8, atol=1e-14)
