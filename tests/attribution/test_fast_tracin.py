"""Tests for attribution.fast_tracin.FastTracIn: equal to Captum's TracInCP and to a per-sample
autograd reference (for layers the Gram trick does not cover), chunking, streaming, self-influence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attribution import AttributionTask, CaptumTracIn, FastGradientDot, FastTracIn, GradientDot, Float16Memmap, GroupSums
from datanet.models import Standardize, build_model, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_FEATURES, N_CLASSES = 6, 4
LEARNING_RATES = (0.1, 0.05, 0.2)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_FEATURES, generator=g) * 2.0 + 1.0, torch.randint(0, N_CLASSES, (n,), generator=g)


class _Scaled(nn.Module):
    """A parameterised non-Linear layer (elementwise scale and shift): exercises the vmap fallback."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.ones(width)), nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _model(name: str, train_x: torch.Tensor) -> nn.Module:
    if name in ("logreg", "mlp"):
        return build_model(name, train_x, N_CLASSES)
    shared = nn.Linear(5, 5)
    layers = {
        # LayerNorm and a custom layer fall back to vmap; a bias-free Linear keeps the Gram trick.
        "mixed": [nn.Linear(N_FEATURES, 8, bias=False), nn.LayerNorm(8), nn.Tanh(), _Scaled(8), nn.Linear(8, N_CLASSES)],
        # A Linear called twice per forward (weight sharing) must fall back too.
        "shared": [nn.Linear(N_FEATURES, 5), nn.Tanh(), shared, nn.Tanh(), shared, nn.Linear(5, N_CLASSES)],
    }[name]
    return nn.Sequential(Standardize.fit(train_x), *layers)


def _checkpoints(name: str, train_x: torch.Tensor, directory) -> tuple[nn.Module, list]:
    """A model and three checkpoints of random weights, each with its own learning rate."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _model(name, train_x)
    paths = []
    for epoch, lr in enumerate(LEARNING_RATES, 1):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.2)
        paths.append(save_checkpoint(model, directory, epoch, lr))
    return model, paths


def _autograd_reference(model, paths, train_x, train_y, test_x, test_y) -> np.ndarray:
    """Σ_t lr_t g_i · g_j with each per-sample gradient from its own autograd call, in float64."""

    def grads(x, y):
        params = [p for p in model.parameters() if p.requires_grad]
        rows = []
        for xi, yi in zip(x, y):
            loss = nn.functional.cross_entropy(model(xi[None]), yi[None], reduction="sum")
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double())
        return torch.stack(rows)

    scores = np.zeros((len(train_x), len(test_x)))
    for path in paths:
        lr = load_checkpoint(model, path)
        scores += lr * (grads(train_x, train_y) @ grads(test_x, test_y).T).numpy()
    return scores


def _task(model, paths, train_x, train_y) -> AttributionTask:
    return AttributionTask(model, train_x, train_y, paths, load_checkpoint)


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    assert np.abs(expected).max() > 1e-2  # the comparison is not trivially about zeros
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("model_name", ["logreg", "mlp"])
@pytest.mark.parametrize(("batch_size", "test_batch_size"), [(2048, 2048), (7, 5)])
def test_equals_captum_tracincp(tmp_path, model_name, batch_size, test_batch_size):
    train_x, train_y = _data(40, seed=1)
    test_x, test_y = _data(13, seed=2)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    captum = CaptumTracIn().fit(_task(model, paths, train_x, train_y)).scores(test_x, test_y)
    fast = FastTracIn(batch_size, test_batch_size).fit(_task(model, paths, train_x, train_y)).scores(test_x, test_y)
    assert fast.shape == (40, 13) and fast.dtype == np.float64
    _close(fast, captum)


@pytest.mark.parametrize("model_name", ["mixed", "shared", "mlp"])
def test_equals_the_autograd_reference(tmp_path, model_name):
    train_x, train_y = _data(11, seed=3)
    test_x, test_y = _data(6, seed=4)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    fast = FastTracIn(batch_size=4, test_batch_size=4).fit(_task(model, paths, train_x, train_y)).scores(test_x, test_y)
    _close(fast, _autograd_reference(model, paths, train_x, train_y, test_x, test_y))


@pytest.mark.parametrize("model_name", ["mlp", "mixed"])
def test_an_input_gram_is_shared_across_checkpoints_only_while_the_inputs_are_equal(tmp_path, model_name):
    """The first Linear's input (standardised features) is the same at every checkpoint, so its
    input Gram is computed once per block; a layer forced onto that path although its input
    changes with the checkpoint gets its Gram recomputed, so no score changes."""
    train_x, train_y = _data(11, seed=3)
    test_x, test_y = _data(6, seed=4)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    reference = _autograd_reference(model, paths, train_x, train_y, test_x, test_y)
    tracin = FastTracIn(batch_size=4, test_batch_size=4, cache_mb=0.0).fit(_task(model, paths, train_x, train_y))
    assert tracin._shared_inputs == [0]
    _close(tracin.scores(test_x, test_y), reference)
    tracin._shared_inputs = list(range(sum(kind == "gram" for kind in tracin.hooked_layers.values())))
    assert len(tracin._shared_inputs) == 2
    _close(tracin.scores(test_x, test_y), reference)


@pytest.mark.parametrize("cache_mb", [256.0, 0.0])
def test_scoring_again_reuses_the_training_factors_and_gives_the_reference(tmp_path, cache_mb):
    train_x, train_y = _data(17, seed=5)
    first_x, first_y = _data(6, seed=6)
    second_x, second_y = _data(9, seed=7)
    model, paths = _checkpoints("mixed", train_x, tmp_path)
    tracin = FastTracIn(batch_size=5, test_batch_size=4, cache_mb=cache_mb).fit(_task(model, paths, train_x, train_y))
    tracin.scores(first_x, first_y)
    _close(tracin.scores(second_x, second_y),
           _autograd_reference(model, paths, train_x, train_y, second_x, second_y))


@pytest.mark.parametrize("model_name", ["mixed", "mlp"])
def test_a_small_block_budget_splits_the_training_rows_and_changes_no_score(tmp_path, model_name):
    train_x, train_y = _data(13, seed=8)
    test_x, test_y = _data(5, seed=9)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    sinks = []
    tiny = FastTracIn(block_mb=1e-4).fit(_task(model, paths, train_x, train_y))  # ~100 bytes: one row per block
    tiny.stream(test_x, test_y, lambda start, block: sinks.append((start, len(block))))
    assert sinks == [(i, 1) for i in range(13)]
    _close(tiny.scores(test_x, test_y), _autograd_reference(model, paths, train_x, train_y, test_x, test_y))
    with pytest.raises(ValueError, match="block_mb"):
        FastTracIn(block_mb=0)


@pytest.mark.parametrize("model_name", ["mixed", "shared", "mlp"])
def test_fast_gradient_dot_equals_gradient_dot_at_the_last_checkpoint(tmp_path, model_name):
    train_x, train_y = _data(12, seed=10)
    test_x, test_y = _data(5, seed=11)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    fast = FastGradientDot(block_mb=1e-3).fit(_task(model, paths, train_x, train_y)).scores(test_x, test_y)
    plain = GradientDot().fit(_task(model, paths, train_x, train_y)).scores(test_x, test_y)
    _close(fast, plain)
    load_checkpoint(model, paths[-1])  # the reference: unweighted gradient dots at the last checkpoint only
    _close(fast, _autograd_reference(model, paths[-1:], train_x, train_y, test_x, test_y) / LEARNING_RATES[-1])


@pytest.mark.parametrize("model_name", ["mixed", "mlp"])
def test_self_influence_is_the_diagonal(tmp_path, model_name):
    train_x, train_y = _data(9, seed=5)
    model, paths = _checkpoints(model_name, train_x, tmp_path)
    tracin = FastTracIn(batch_size=4).fit(_task(model, paths, train_x, train_y))
    _close(tracin.self_influence(), np.diag(_autograd_reference(model, paths, train_x, train_y, train_x, train_y)))


def test_stream_sinks_match_the_dense_scores(tmp_path):
    train_x, train_y = _data(23, seed=6)
    test_x, test_y = _data(5, seed=7)
    model, paths = _checkpoints("mlp", train_x, tmp_path)
    tracin = FastTracIn(batch_size=6, test_batch_size=2).fit(_task(model, paths, train_x, train_y))
    dense = tracin.scores(test_x, test_y)
    groups = np.arange(23) % 3
    sums, memmap = GroupSums(groups, 4, 5), Float16Memmap(tmp_path / "scores.f16", (23, 5))
    starts = []

    def both(start, block):
        starts.append(start)
        sums(start, block)
        memmap(start, block)

    tracin.stream(test_x, test_y, both)
    assert starts == [0, 6, 12, 18]
    for g in range(3):
        np.testing.assert_allclose(sums.totals[g], dense[groups == g].sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sums.totals[3], 0.0)
    memmap.array.flush()
    stored = np.memmap(tmp_path / "scores.f16", np.float16, "r", shape=(23, 5))
    np.testing.assert_allclose(stored.astype(np.float64), dense, rtol=1e-3, atol=1e-3 * np.abs(dense).max())


def test_float16_memmap_refuses_overflow_and_nan(tmp_path):
    sink = Float16Memmap(tmp_path / "s.f16", (2, 2))
    with pytest.raises(ValueError, match="overflows float16"):
        sink(0, np.array([[1e6, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="row 1 holds non-finite"):
        sink(1, np.array([[np.nan, 0.0]], dtype=np.float32))


def test_group_sums_refuse_out_of_range_groups():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        GroupSums([0, 2], 2, 3)


def test_refuses_use_before_fit_and_bad_batch_sizes():
    train_x, train_y = _data(4, seed=8)
    with pytest.raises(RuntimeError, match="before fit"):
        FastTracIn().scores(train_x, train_y)
    with pytest.raises(ValueError, match="batch sizes"):
        FastTracIn(batch_size=0)
