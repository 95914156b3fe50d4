"""Tests for attribution.base: the input forms a task accepts, their errors, and per-sample losses."""

import pytest
import torch
from torch import nn

from attribution import AttributionTask, n_samples, per_sample_losses, take
from datanet.models import load_checkpoint


def _task(x, y, checkpoints=("epoch_001.pt",)) -> AttributionTask:
    return AttributionTask(nn.Linear(2, 2), x, y, list(checkpoints), load_checkpoint)


def test_tensor_tuple_and_mapping_inputs_share_their_first_dimension():
    ids, mask = torch.zeros(4, 3, dtype=torch.long), torch.ones(4, 3)
    for x in (ids, (ids, mask), {"input_ids": ids, "attention_mask": mask}):
        assert _task(x, torch.zeros(4, dtype=torch.long)).n_train == 4
        part = take(x, torch.tensor([2, 0]))
        assert type(part) is type(x) and n_samples(part) == 2
    assert torch.equal(take({"a": torch.arange(5)}, slice(1, 3))["a"], torch.tensor([1, 2]))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"inputs disagree on the number of samples: \{\"input 'ids'\": 4, \"input 'mask'\": 3\}"):
        n_samples({"ids": torch.zeros(4, 2), "mask": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="input 1 must be a tensor with a sample dimension, got Tensor ()"):
        n_samples((torch.zeros(2, 1), torch.tensor(1.0)))
    with pytest.raises(TypeError, match="got ndarray"):
        n_samples(torch.zeros(2, 2).numpy())
    with pytest.raises(ValueError, match="train_x has 4 samples but train_y has 3"):
        _task(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="checkpoints is empty"):
        _task(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), checkpoints=())


@pytest.mark.parametrize("loss_fn", [nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum"),
                                     nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0])),
                                     nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1),
                                     lambda out, y: nn.functional.cross_entropy(out, y) * 2.0])
def test_a_samples_loss_is_the_loss_of_a_batch_of_that_sample(loss_fn):
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(5, 3, generator=g, requires_grad=True), torch.randint(0, 3, (5,), generator=g)
    expected = torch.stack([loss_fn(out[i : i + 1], y[i : i + 1]).sum() for i in range(5)])
    actual = per_sample_losses(loss_fn, out, y)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(torch.autograd.grad(actual.sum(), out)[0], torch.autograd.grad(expected.sum(), out)[0])
