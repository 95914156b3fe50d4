"""FastTracIn, CaptumTracIn, TRAK, Gauss-Newton influence and projected TracIn on a zoo of models,
against per-sample references: plain ``torch.autograd.grad`` of each sample's loss on a batch of
that sample alone, one sample at a time, and Captum's ``TracInCP`` per-sample loop (its default
mode, which differentiates every layer) where Captum takes the inputs. Models run in float64 so
rtol 1e-6 tests the method, not float32 rounding. Also: a property test over random MLPs, and
the refusals (batch statistics, dropout in training mode, coupling, a loss vmap cannot trace).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from captum.influence import TracInCP
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from attribution import TRAK, AttributionError, AttributionTask, CaptumTracIn, FastTracIn, GaussNewtonInfluence, ProjectedTracIn
from attribution.base import forward, n_samples, take
from datanet.models import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, C, T, VOCAB = 5, 3, 4, 11
LEARNING_RATES = (0.1, 0.05, 0.2)


class EmbedMean(nn.Module):
    """Integer token ids -> mean of their embeddings -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(VOCAB, 6), nn.Linear(6, C)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


class SelfAttention(nn.Module):
    """Hand-written single-head self-attention: q/k/v Linears on (n, T, d) input, LayerNorm, mean pool."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.inp, self.q, self.k, self.v = nn.Linear(D, d), nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # (n, T, d)
        weights = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(h.shape[-1]), dim=-1)  # (n, T, T)
        return self.head(self.norm(h + weights @ self.v(h)).mean(dim=1))


class TorchAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first) over (n, T, D) input, then a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.attention, self.head = nn.MultiheadAttention(D + 1, 2, batch_first=True), nn.Linear(D + 1, C)
        self.lift = nn.Linear(D, D + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        out, _ = self.attention(h, h, h, need_weights=False)
        return self.head(out.mean(dim=1))


class TwoInputs(nn.Module):
    """``model(a, b)``: a gated sum of two inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(D, 5), nn.Linear(3, 5), nn.Linear(5, C)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(a) * torch.tanh(self.b(b)))


class MaskedTokens(nn.Module):
    """``model(input_ids=..., attention_mask=...)``: masked mean of token embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm, self.head = nn.Embedding(VOCAB, 6), nn.LayerNorm(6), nn.Linear(6, C)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(self.head.weight.dtype)[..., None]  # (n, T, 1)
        return self.head(self.norm((self.embed(input_ids) * mask).sum(dim=1) / mask.sum(dim=1)))


class Shared(nn.Module):
    """One Linear applied twice per forward, and a weight used outside its module's forward (the
    hooks would miss that use: the factors' self-check sends every parameter to vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.twice, self.head = nn.Linear(D, 4), nn.Linear(4, 4), nn.Linear(4, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.twice(torch.tanh(self.twice(torch.tanh(self.first(x))))))
        return self.head(h) + h @ self.head.weight.T  # head.weight also used directly


class Branching(nn.Module):
    """A learnt scale behind Python control flow on tensor values, which vmap cannot trace (the
    vmap gradients loop over samples instead)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale if bool(torch.isfinite(x).all()) else x


class RewritesInput(nn.Module):
    """A Linear's input is overwritten in place after the Linear read it."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.head, self.side = nn.Linear(D, 4), nn.Linear(4, C), nn.Linear(D, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x * 1.0
        h = torch.tanh(self.first(z))
        z.add_(1.0)
        return self.head(h) + self.side(z)


def mlp(*, inplace: bool = False, norm: type[nn.Module] | None = None) -> nn.Sequential:
    act = lambda: nn.ReLU(inplace=inplace) if inplace else nn.Tanh()  # noqa: E731
    middle = [norm(6)] if norm is not None else []
    return nn.Sequential(nn.Linear(D, 6), *middle, act(), nn.Linear(6, 6), act(), nn.Linear(6, C))


def conv() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(27, 6), nn.ReLU(inplace=True), nn.Linear(6, C))


def frozen(*, bias: bool = True) -> nn.Sequential:
    model = mlp()
    model[0].requires_grad_(False)  # a whole frozen layer
    if bias:
        model[4].bias.requires_grad_(False)  # a frozen bias beside a trained weight
    return model


def eval_mode(model: nn.Module) -> nn.Module:
    return model.eval()


def _dense(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, D, generator=g, dtype=torch.float64)


def _labels(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=g)


INPUTS: dict[str, Callable[[int, torch.Generator], object]] = {
    "dense": _dense,
    "image": lambda n, g: torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64),
    "sequence": lambda n, g: torch.randn(n, T, D, generator=g, dtype=torch.float64),
    "ids": lambda n, g: torch.randint(0, VOCAB, (n, T), generator=g),
    "pair": lambda n, g: (_dense(n, g), torch.randn(n, 3, generator=g, dtype=torch.float64)),
    "tokens": lambda n, g: {"input_ids": torch.randint(0, VOCAB, (n, T), generator=g),
                            "attention_mask": (torch.arange(T)[None] < torch.randint(1, T + 1, (n, 1), generator=g)).long()},
}


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A test loss other than the training loss: minus the true class's logit, summed."""
    return -logits.gather(1, y[:, None]).sum()


GRAM3 = {"0": "gram", "2": "gram", "4": "gram"}


@dataclass
class Case:
    make: Callable[[], nn.Module]
    inputs: str
    hooked: dict[str, str]
    loss_fn: Callable = nn.CrossEntropyLoss(reduction="sum")
    test_loss_fn: Callable | None = None
    targets: Callable[[int, torch.Generator], torch.Tensor] = _labels


ZOO = {
    "conv": Case(conv, "image", {"4": "gram", "6": "gram"}),
    "inplace_relu": Case(lambda: mlp(inplace=True), "dense", GRAM3),
    "layernorm": Case(lambda: mlp(norm=nn.LayerNorm), "dense", {"0": "gram", "3": "gram", "5": "gram"}),
    "batchnorm_eval": Case(lambda: eval_mode(mlp(norm=nn.BatchNorm1d)), "dense", {"0": "gram", "3": "gram", "5": "gram"}),
    "dropout_eval": Case(lambda: eval_mode(nn.Sequential(nn.Linear(D, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, C))), "dense",
                         {"0": "gram", "3": "gram"}),
    "embedding": Case(EmbedMean, "ids", {"head": "gram"}),
    "self_attention": Case(SelfAttention, "sequence", {"inp": "positions", "q": "positions", "k": "positions", "v": "positions",
                                                      "head": "gram"}),
    "multihead_attention": Case(TorchAttention, "sequence", {"head": "gram", "lift": "positions"}),
    "tuple_inputs": Case(TwoInputs, "pair", {"a": "gram", "b": "gram", "head": "gram"}),
    "dict_inputs": Case(MaskedTokens, "tokens", {"head": "gram"}),
    "mean_loss": Case(mlp, "dense", GRAM3, nn.CrossEntropyLoss()),
    "weighted_mean_loss": Case(mlp, "dense", GRAM3, nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))),
    "mse_mean_loss": Case(lambda: mlp(inplace=True), "dense", GRAM3, nn.MSELoss(),
                          targets=lambda n, g: torch.randn(n, C, generator=g, dtype=torch.float64)),
    "test_loss": Case(mlp, "dense", GRAM3, test_loss_fn=margin),
    "frozen": Case(frozen, "dense", {"2": "gram", "4": "gram"}),
    "frozen_layer": Case(lambda: frozen(bias=False), "dense", {"2": "gram", "4": "gram"}),
    "shared": Case(Shared, "dense", {}),
    "python_branch": Case(lambda: nn.Sequential(nn.Linear(D, 6), Branching(6), nn.Tanh(), nn.Linear(6, C)), "dense",
                          {"0": "gram", "3": "gram"}),
}


@dataclass
class Problem:
    model: nn.Module
    task: AttributionTask
    test_x: object
    test_y: torch.Tensor


def _problem(case: Case, directory, n_train: int = 9, n_test: int = 5) -> Problem:
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = case.make().double()
    paths = []
    for epoch, lr in enumerate(LEARNING_RATES, 1):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5 + 0.1)
        paths.append(save_checkpoint(model, directory, epoch, lr))
    make_x = INPUTS[case.inputs]
    train_x, train_y, test_x, test_y = make_x(n_train, g), case.targets(n_train, g), make_x(n_test, g), case.targets(n_test, g)
    task = AttributionTask(model, train_x, train_y, paths, load_checkpoint, case.loss_fn, test_loss_fn=case.test_loss_fn)
    return Problem(model, task, test_x, test_y)


def _gradients(model: nn.Module, x, y, loss_fn) -> torch.Tensor:
    """``(n, P)`` per-sample gradients, one ``autograd.grad`` per sample (the naive reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(n_samples(x)):
        loss = loss_fn(forward(model, take(x, slice(i, i + 1))), y[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    return torch.stack(rows).double()


def naive_tracin(p: Problem) -> np.ndarray:
    model, task = copy.deepcopy(p.model), p.task
    scores = torch.zeros(task.n_train, n_samples(p.test_x), dtype=torch.float64)
    for path in task.checkpoints:
        lr = load_checkpoint(model, path)
        scores += lr * _gradients(model, task.train_x, task.train_y, task.loss_fn) @ _gradients(model, p.test_x, p.test_y, task.test_loss).T
    return scores.numpy()


def naive_self_influence(p: Problem) -> np.ndarray:
    model, task = copy.deepcopy(p.model), p.task
    out = torch.zeros(task.n_train, dtype=torch.float64)
    for path in task.checkpoints:
        lr = load_checkpoint(model, path)
        out += lr * (_gradients(model, task.train_x, task.train_y, task.loss_fn) ** 2).sum(dim=1)
    return out.numpy()


def captum_loop(p: Problem) -> np.ndarray:
    """Captum's per-sample loop (``sample_wise_grads_per_batch=False``) with the per-sample losses
    as its ``reduction="none"`` loss; tensor and tuple inputs only."""
    task = p.task
    as_tuple = lambda x: x if isinstance(x, tuple) else (x,)  # noqa: E731
    per_sample = lambda loss: lambda out, y: torch.stack([loss(out[i : i + 1], y[i : i + 1]).sum() for i in range(len(y))])  # noqa: E731
    model = copy.deepcopy(p.model)
    layers = sorted({n.rpartition(".")[0] for n, q in model.named_parameters() if q.requires_grad})
    frozen_any = any(not q.requires_grad for q in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracin = TracInCP(model, TensorDataset(*as_tuple(task.train_x), task.train_y), checkpoints=[str(c) for c in task.checkpoints],
                          checkpoints_load_func=load_checkpoint, loss_fn=per_sample(task.loss_fn),
                          test_loss_fn=per_sample(task.test_loss), layers=layers if frozen_any else None,
                          sample_wise_grads_per_batch=False, batch_size=4)
        return tracin.influence((*as_tuple(p.test_x), p.test_y), show_progress=False).double().numpy().T


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-6) -> None:
    assert np.abs(expected).max() > 1e-3  # the comparison is not trivially about zeros
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_fast_tracin_equals_the_per_sample_references(tmp_path, name):
    p = _problem(ZOO[name], tmp_path)
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    fast = FastTracIn(batch_size=4, test_batch_size=3).fit(p.task)
    assert fast.hooked_layers == ZOO[name].hooked  # the fast paths are taken where they are exact
    if name == "python_branch":
        assert fast._other.looped
    scores = fast.scores(p.test_x, p.test_y)
    expected = naive_tracin(p)
    _close(scores, expected)
    _close(fast.self_influence(), naive_self_influence(p))
    if not isinstance(p.task.train_x, dict) and name != "frozen":  # Captum takes neither dicts nor half-frozen layers
        _close(captum_loop(p), expected)  # the two references agree
    for key, value in p.model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ["conv", "inplace_relu", "layernorm", "embedding", "tuple_inputs", "dict_inputs",
                                  "weighted_mean_loss", "test_loss", "frozen_layer", "shared"])
def test_captum_tracin_equals_the_naive_reference(tmp_path, name):
    p = _problem(ZOO[name], tmp_path)
    method = CaptumTracIn(batch_size=4).fit(p.task)
    _close(method.scores(p.test_x, p.test_y), naive_tracin(p))


def test_captum_tracin_refuses_a_layer_captum_would_unfreeze(tmp_path):
    with pytest.raises(ValueError, match="module '4' mixes trainable and frozen parameters"):
        CaptumTracIn().fit(_problem(ZOO["frozen"], tmp_path).task)


def test_captum_uses_its_fast_mode_only_where_it_is_exact(tmp_path):
    modes = {name: CaptumTracIn().fit(_problem(ZOO[name], tmp_path / name).task).mode
             for name in ("inplace_relu", "layernorm", "embedding", "mean_loss", "frozen_layer")}
    assert modes == {"inplace_relu": "sample_wise", "layernorm": "loop", "embedding": "loop", "mean_loss": "loop",
                     "frozen_layer": "loop"}


def _naive_trak(p: Problem, ridge: float) -> np.ndarray:
    model = copy.deepcopy(p.model)
    load_checkpoint(model, p.task.checkpoints[-1])
    train = _gradients(model, p.task.train_x, p.task.train_y, p.task.loss_fn)
    test = _gradients(model, p.test_x, p.test_y, p.task.test_loss)
    lam = ridge * float((train * train).sum(dim=1).mean())
    hessian = train.T @ train + lam * torch.eye(train.shape[1], dtype=torch.float64)
    return (train @ torch.linalg.solve(hessian, test.T)).numpy()


def _naive_gauss_newton(p: Problem, ridge: float) -> np.ndarray:
    """``G (Σ_i J_iᵀ Λ_i J_i + λI)⁻¹ gᵀ`` with every curvature direction (rank = n_classes)."""
    model = copy.deepcopy(p.model)
    load_checkpoint(model, p.task.checkpoints[-1])
    params = [q for q in model.parameters() if q.requires_grad]
    hessian = 0.0
    for i in range(p.task.n_train):
        logits = forward(model, take(p.task.train_x, slice(i, i + 1)))[0]  # (C,)
        jac = torch.stack([torch.cat([(torch.zeros_like(q) if g is None else g).reshape(-1) for q, g in
                                      zip(params, torch.autograd.grad(logits[c], params, retain_graph=True, allow_unused=True))])
                           for c in range(C)])  # (C, P)
        prob = torch.softmax(logits.detach(), dim=0)
        hessian = hessian + jac.T @ (torch.diag(prob) - prob[:, None] * prob[None, :]) @ jac
    lam = ridge * float(torch.trace(hessian)) / p.task.n_train
    train = _gradients(model, p.task.train_x, p.task.train_y, p.task.loss_fn)
    test = _gradients(model, p.test_x, p.test_y, p.task.test_loss)
    return (train @ torch.linalg.solve(hessian + lam * torch.eye(len(hessian), dtype=torch.float64), test.T)).numpy()


NON_LINEAR = ["conv", "layernorm", "embedding", "self_attention", "multihead_attention", "tuple_inputs", "dict_inputs",
              "test_loss", "frozen", "mse_mean_loss"]


@pytest.mark.parametrize("name", NON_LINEAR)
def test_trak_equals_its_naive_reference(tmp_path, name):
    p = _problem(ZOO[name], tmp_path)
    _close(TRAK(ridge=0.5).fit(p.task).scores(p.test_x, p.test_y), _naive_trak(p, 0.5))


@pytest.mark.parametrize("name", NON_LINEAR)
def test_gauss_newton_equals_its_naive_reference_or_refuses_the_loss(tmp_path, name):
    p = _problem(ZOO[name], tmp_path)
    method = GaussNewtonInfluence(ridge=0.5, rank=C)
    if isinstance(p.task.loss_fn, nn.MSELoss):
        with pytest.raises(ValueError, match="CrossEntropyLoss.*MSELoss"):
            method.fit(p.task)
        return
    _close(method.fit(p.task).scores(p.test_x, p.test_y), _naive_gauss_newton(p, 0.5))


@pytest.mark.parametrize("name", NON_LINEAR)
def test_projected_tracin_approximates_exact_tracin(tmp_path, name):
    """Gaussian projections to many more dimensions than parameters keep inner products within a few %."""
    p = _problem(ZOO[name], tmp_path)
    projected = ProjectedTracIn(dim=20_000, seed=1).fit(p.task).scores(p.test_x, p.test_y)
    exact = naive_tracin(p)
    assert np.abs(projected - exact).max() < 0.1 * np.abs(exact).max()


ACTIVATIONS = [nn.ReLU, lambda: nn.ReLU(inplace=True), nn.Tanh, nn.GELU, lambda: nn.LeakyReLU(0.1, inplace=True)]


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=0, max_size=3), bias=st.lists(st.booleans(), min_size=4, max_size=4),
       frozen_weights=st.lists(st.booleans(), min_size=4, max_size=4), activation=st.integers(0, len(ACTIVATIONS) - 1),
       reduction=st.sampled_from(["sum", "mean"]), seed=st.integers(0, 2**16))
def test_random_mlps_equal_the_naive_reference(tmp_path_factory, widths, bias, frozen_weights, activation, reduction, seed):
    sizes = [D, *widths, C]
    layers: list[nn.Module] = []
    for k, (d_in, d_out) in enumerate(zip(sizes, sizes[1:])):
        linear = nn.Linear(d_in, d_out, bias=bias[k])
        linear.weight.requires_grad_(not frozen_weights[k])
        layers += [linear, ACTIVATIONS[activation]()]
    model = nn.Sequential(*layers[:-1])
    if not any(q.requires_grad for q in model.parameters()):
        model[-1].weight.requires_grad_(True)
    case = Case(lambda: model, "dense", {}, nn.CrossEntropyLoss(reduction=reduction))
    g = torch.Generator().manual_seed(seed)
    p = _problem(case, tmp_path_factory.mktemp("mlp"), n_train=int(torch.randint(1, 7, (1,), generator=g)), n_test=3)
    expected = naive_tracin(p)
    scores = FastTracIn(batch_size=4, test_batch_size=2).fit(p.task).scores(p.test_x, p.test_y)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9 + 1e-7 * np.abs(expected).max())


def test_batchnorm_in_training_mode_is_refused_by_name(tmp_path):
    p = _problem(Case(lambda: mlp(norm=nn.BatchNorm1d), "dense", {}), tmp_path)
    for method in (FastTracIn(), CaptumTracIn(), TRAK(), GaussNewtonInfluence(), ProjectedTracIn()):
        with pytest.raises(AttributionError, match=r"module '1' \(BatchNorm1d\) normalises with batch statistics"):
            method.fit(p.task)


def test_dropout_in_training_mode_is_refused_by_name(tmp_path):
    p = _problem(Case(lambda: nn.Sequential(nn.Linear(D, 6), nn.Dropout(0.5), nn.Linear(6, C)), "dense", {}), tmp_path)
    with pytest.raises(AttributionError, match=r"module '1' \(Dropout\) drops units at random"):
        FastTracIn().fit(p.task)


class _Centre(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0)


def test_a_model_coupling_samples_is_refused(tmp_path):
    p = _problem(Case(lambda: nn.Sequential(nn.Linear(D, 6), _Centre(), nn.Linear(6, C)), "dense", {}), tmp_path)
    with pytest.raises(AttributionError, match="changes with the rest of its batch"):
        FastTracIn().fit(p.task)


def test_a_model_overwriting_a_saved_input_is_refused(tmp_path):
    """The hooks keep a Linear's input uncopied; autograd itself refuses a model that overwrites it."""
    p = _problem(Case(RewritesInput, "dense", {}), tmp_path)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        FastTracIn().fit(p.task)


def test_a_loss_vmap_cannot_trace_is_refused_by_name(tmp_path):
    def branching(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        return loss if loss.item() > 0 else -loss

    p = _problem(Case(mlp, "dense", {}, branching), tmp_path)
    with pytest.raises(ValueError, match="the loss <function .*branching.* cannot be evaluated one sample at a time"):
        FastTracIn().fit(p.task)
