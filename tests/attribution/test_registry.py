"""Every method a run can pay by gives finite (n_train, n_test) scores, is named by its registry key
and leaves the caller's model as it was; unknown names are refused."""

import numpy as np
import pytest
import torch

from attribution import METHODS, AttributionTask, make_attributor
from datanet.models import build_model
from datanet.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=generator), torch.randint(0, 3, (30,), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("mlp", x, 3)
    path = tmp_path_factory.mktemp("ckpt") / "epoch_001.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 0.1, "epoch": 1}, path)
    return AttributionTask(model, x, y, [path], load_checkpoint)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_scores_train_by_test(task, name):
    test_x, test_y = task.train_x[:7], task.train_y[:7]
    scores = make_attributor(name, seed=0).fit(task).scores(test_x, test_y)
    assert scores.shape == (30, 7) and np.isfinite(scores).all()
    assert np.ptp(scores) > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_method_is_named_by_its_key_and_leaves_the_callers_model_alone(task, name):
    method = make_attributor(name, seed=0)
    assert method.name == name
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    with torch.no_grad():  # the caller's model holds other weights than the task's last checkpoint
        for p in task.model.parameters():
            p.add_(1.0)
    moved = {k: v.clone() for k, v in task.model.state_dict().items()}
    method.fit(task).scores(task.train_x[:3], task.train_y[:3])
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, moved[key]), key
    task.model.load_state_dict(before)


def test_seeded_methods_repeat_and_tracin_variants_agree(task):
    test = (task.train_x[:5], task.train_y[:5])
    for name in ("random", "tracin_projected"):
        first = make_attributor(name, seed=3).fit(task).scores(*test)
        np.testing.assert_array_equal(first, make_attributor(name, seed=3).fit(task).scores(*test))
    captum = make_attributor("tracin_captum", 0).fit(task).scores(*test)
    np.testing.assert_allclose(make_attributor("tracin_fast", 0).fit(task).scores(*test), captum, rtol=1e-4, atol=1e-7)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="unknown attribution method 'shapley'; expected one of .*tracin_captum"):
        make_attributor("shapley", 0)
