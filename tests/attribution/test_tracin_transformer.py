"""FastTracIn on transformers against Captum's per-sample loop (``TracInCP`` with
``sample_wise_grads_per_batch=False``, through :class:`CaptumTracIn`) and the zoo's naive
per-sample reference, with TRAK and Gauss-Newton influence against their naive references.

Models (float64, 2 checkpoints a few SGD steps apart, padding that varies across samples):
the fine-tuned text model :class:`TopLayerClassifier` (one BertLayer -> masked mean pool ->
Linear) over ``{"hidden_states", "attention_mask"}``, and :class:`MiniLMClassifier` over integer
``{"input_ids", "attention_mask"}`` with its embeddings and bottom layer frozen (as fine-tuned)
or trainable, all on a tiny random BERT. The top layer also runs in float32, the dtype it is
fine-tuned in, at rtol 1e-4.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attribution import TRAK, AttributionTask, CaptumTracIn, FastTracIn, GaussNewtonInfluence
from attribution.base import forward
from datanet.models import load_checkpoint, save_checkpoint
from datanet.models.encoders import MiniLMClassifier, TopLayerClassifier
from tests.attribution.test_token_ig import CLS, SEP, C, PAD, VOCAB, tiny_encoder
from tests.attribution.test_tracin_zoo import Problem, _close, _naive_gauss_newton, _naive_trak, naive_tracin

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, N_TRAIN, N_TEST = 7, 9, 5
STEP_SIZES = (0.2, 0.1)
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


def _lengths(n: int, g: torch.Generator) -> torch.Tensor:
    """Real lengths from 2 to ``WIDTH``, the shortest and the longest always present."""
    lengths = torch.randint(2, WIDTH + 1, (n,), generator=g)
    lengths[:2] = torch.tensor([2, WIDTH])
    return lengths


def _mask(lengths: torch.Tensor) -> torch.Tensor:
    return (torch.arange(WIDTH)[None] < lengths[:, None]).long()


def _tokens(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    lengths = _lengths(n, g)
    ids = torch.randint(4, VOCAB, (n, WIDTH), generator=g)
    ids[:, 0] = CLS
    ids[torch.arange(n), lengths - 1] = SEP
    mask = _mask(lengths)
    return {"input_ids": ids * mask + PAD * (1 - mask), "attention_mask": mask}


def _hidden(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    mask = _mask(_lengths(n, g))
    hidden = torch.randn(n, WIDTH, tiny_encoder().config.hidden_size, generator=g, dtype=torch.float64)
    return {"hidden_states": hidden * mask[..., None], "attention_mask": mask}  # 0 at padding, as encode gives


def top_layer() -> nn.Module:
    return TopLayerClassifier.from_encoder(tiny_encoder(), C, seed=0)


def minilm_frozen() -> nn.Module:
    encoder = tiny_encoder()
    return MiniLMClassifier(encoder, TopLayerClassifier.from_encoder(encoder, C, seed=0))


def minilm_trainable() -> nn.Module:
    return minilm_frozen().requires_grad_(True)


CASES: dict[str, tuple[Callable[[], nn.Module], Callable, dict[str, str]]] = {  # model, inputs, hooked Linears
    "top_layer": (top_layer, _hidden, {f"layer.{linear}": "positions" for linear in LINEARS} | {"head": "gram"}),
    "minilm_frozen": (minilm_frozen, _tokens, {f"classifier.layer.{linear}": "positions" for linear in LINEARS}
                      | {"classifier.head": "gram"}),
    "minilm_trainable": (minilm_trainable, _tokens, {f"{layer}.{linear}": "positions" for layer in ("bottom.0", "classifier.layer")
                                                     for linear in LINEARS} | {"classifier.head": "gram"}),
}


def _problem(name: str, directory: Path, dtype: torch.dtype = torch.float64) -> Problem:
    """The model after each of 2 rounds of 3 full-batch SGD steps (checkpoints weighed by their step size)."""
    make, inputs, _ = CASES[name]
    g = torch.Generator().manual_seed(0)
    model = make().to(dtype).eval()  # dropout is off in these models; eval mode all the same
    cast = lambda x: {k: v.to(dtype) if v.is_floating_point() else v for k, v in x.items()}  # noqa: E731
    train_x, test_x = cast(inputs(N_TRAIN, g)), cast(inputs(N_TEST, g))
    train_y, test_y = torch.randint(0, C, (N_TRAIN,), generator=g), torch.randint(0, C, (N_TEST,), generator=g)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=STEP_SIZES[0])
    paths = []
    for epoch, lr in enumerate(STEP_SIZES, 1):
        optimizer.param_groups[0]["lr"] = lr
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(forward(model, train_x), train_y).backward()
            optimizer.step()
        paths.append(save_checkpoint(model, directory, epoch, lr))
    task = AttributionTask(model, train_x, train_y, paths, load_checkpoint)
    return Problem(model, task, test_x, test_y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_tracin_equals_captums_per_sample_loop(tmp_path, name):
    p = _problem(name, tmp_path)
    before = copy.deepcopy(p.model.state_dict())
    fast = FastTracIn(batch_size=4, test_batch_size=3).fit(p.task)
    assert fast.hooked_layers == CASES[name][2]  # the fast paths are taken
    scores = fast.scores(p.test_x, p.test_y)
    captum = CaptumTracIn(batch_size=4).fit(p.task)
    assert captum.mode == "loop"  # Captum's per-sample loop: LayerNorm and embeddings are beyond its fast mode
    expected = captum.scores(p.test_x, p.test_y)
    _close(scores, expected)
    _close(naive_tracin(p), expected)  # the two references agree
    _close(fast.self_influence(), np.diag(captum.scores(p.task.train_x, p.task.train_y)))
    for key, value in p.model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key]), key


def test_the_top_layers_non_linear_parameters_get_vmap_gradients(tmp_path):
    """LayerNorm weights go to torch.func.vmap, which traces the top layer (no per-sample loop)."""
    fast = FastTracIn().fit(_problem("top_layer", tmp_path).task)
    assert fast._other is not None and not fast._other.looped
    fast.factors(fast._task.train_x, fast._task.train_y)
    assert not fast._other.looped
    assert sorted(fast._other.names) == sorted(f"layer.{part}.LayerNorm.{kind}" for part in ("attention.output", "output")
                                               for kind in ("weight", "bias"))


def test_fast_tracin_equals_captum_in_float32_at_rtol_1e_4(tmp_path):
    p = _problem("top_layer", tmp_path, torch.float32)
    scores = FastTracIn(batch_size=4, test_batch_size=3).fit(p.task).scores(p.test_x, p.test_y)
    expected = CaptumTracIn(batch_size=4).fit(p.task).scores(p.test_x, p.test_y)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["top_layer", "minilm_frozen"])
def test_trak_equals_its_naive_reference(tmp_path, name):
    p = _problem(name, tmp_path)
    _close(TRAK(ridge=0.5).fit(p.task).scores(p.test_x, p.test_y), _naive_trak(p, 0.5))


@pytest.mark.parametrize("name", ["top_layer", "minilm_frozen"])
def test_gauss_newton_equals_its_naive_reference(tmp_path, name):
    p = _problem(name, tmp_path)
    _close(GaussNewtonInfluence(ridge=0.5, rank=C).fit(p.task).scores(p.test_x, p.test_y), _naive_gauss_newton(p, 0.5))
