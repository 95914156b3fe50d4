"""Capabilities are declared on the attributor's class and honest: a declared one is implemented,
an undeclared one is refused by name, and the registry names the method that computes another's
scores with a capability it lacks."""

import dataclasses

import numpy as np
import pytest
import torch

from attribution import AttributionTask, Attributor, CaptumTracIn, make_attributor
from attribution.base import Capabilities
from attribution.registry import SAME_SCORES, capable
from datanet.models import build_model
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMPLEMENTS = {"gradient_factors": ("factors", "checkpoint_weights"), "self_influence": ("self_influence",)}
"""The :class:`Attributor` members each capability stands for."""


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A tiny MLP with two checkpoints of different learning rates."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 4, generator=generator), torch.randint(0, 3, (24,), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_model("mlp", x, 3)
    paths = []
    for epoch, rate in ((1, 0.1), (2, 0.05)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        paths.append(tmp_path_factory.mktemp("ckpt") / f"epoch_{epoch:03d}.pt")
        torch.save({"state_dict": model.state_dict(), "learning_rate": rate, "epoch": epoch}, paths[-1])
    return AttributionTask(model, x, y, paths, load_checkpoint)


def test_the_capabilities_stand_for_the_members_they_name():
    assert set(IMPLEMENTS) == {f.name for f in dataclasses.fields(Capabilities)}


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


@pytest.mark.parametrize("cls", _subclasses(Attributor), ids=lambda c: c.__name__)
def test_an_attributor_declares_exactly_the_capabilities_its_class_implements(cls):
    for capability, members in IMPLEMENTS.items():
        implemented = {getattr(cls, m) is not getattr(Attributor, m) for m in members}
        assert implemented == {getattr(cls.capabilities, capability)}, capability


def test_a_capability_not_declared_is_refused_naming_the_method(task):
    captum = CaptumTracIn().fit(task)
    assert captum.capabilities == Capabilities()
    with pytest.raises(NotImplementedError, match=r"tracin_captum: CaptumTracIn declares no self_influence"):
        captum.self_influence()
    with pytest.raises(NotImplementedError, match=r"tracin_captum: CaptumTracIn declares no gradient_factors"):
        captum.checkpoint_weights
    with pytest.raises(NotImplementedError, match=r"declares no gradient_factors"):
        captum.factors(task.train_x, task.train_y)


def test_capable_names_the_method_that_computes_the_scores_with_the_capability():
    assert capable("tracin_captum", "gradient_factors") == "tracin_fast"
    assert capable("tracin_fast", "gradient_factors") == "tracin_fast"
    assert capable("grad_dot", "self_influence") == "grad_dot_fast"
    assert capable("trak", "gradient_factors") is None
    assert capable("grad_cosine", "self_influence") is None
    with pytest.raises(ValueError, match="unknown attribution method 'shapley'"):
        capable("shapley", "gradient_factors")
    with pytest.raises(ValueError, match="unknown capability 'hessian'; expected one of"):
        capable("tracin_fast", "hessian")


@pytest.mark.parametrize("reference", sorted(SAME_SCORES))
def test_same_scores_pairs_compute_the_same_scores(task, reference):
    test = (task.train_x[:6], task.train_y[:6])
    expected = make_attributor(reference, 0).fit(task).scores(*test)
    np.testing.assert_allclose(make_attributor(SAME_SCORES[reference], 0).fit(task).scores(*test), expected,
                               rtol=1e-4, atol=1e-6 * np.abs(expected).max())
