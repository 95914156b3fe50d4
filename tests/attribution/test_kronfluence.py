"""attribution.kronfluence_influence, kronfluence behind the kit's Attributor: its shape and sign
against the kit's gradient dot product and a finite step, EK-FAC against a naive EK-FAC written
here from the paper's definition, GPT-2 ``Conv1D`` conversion, true-Fisher label sampling for a
causal LM, and the refusals. Skipped only where kronfluence (in the lock) is not installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from attribution import AttributionError, AttributionTask, FastGradientDot
from attribution.kronfluence_influence import KronfluenceInfluence, linear_copy
from datanet.models import lm
from datanet.training import load_checkpoint

pytest.importorskip("kronfluence")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, M, D, C = 40, 6, 5, 3


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g),
            torch.randn(M, D, generator=g), torch.randint(0, C, (M,), generator=g))


def _task(tmp_path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_checkpoints: int = 1) -> AttributionTask:
    """``model`` saved at ``n_checkpoints`` checkpoints, each a gradient step after the last."""
    paths = []
    for t in range(n_checkpoints):
        if t:
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
        paths.append(tmp_path / f"epoch_{t:03d}.pt")
        torch.save({"state_dict": model.state_dict(), "learning_rate": 1.0}, paths[-1])
    return AttributionTask(model, x, y, paths, load_checkpoint)


def _mlp() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, C))


def test_identity_is_the_kits_gradient_dot_transposed_to_train_by_test(tmp_path):
    x, y, test_x, test_y = _data()
    task = _task(tmp_path, _mlp(), x, y)
    scores = KronfluenceInfluence("identity").fit(task).scores(test_x, test_y)
    assert scores.shape == (N, M) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, FastGradientDot().fit(task).scores(test_x, test_y), rtol=1e-4, atol=1e-5)


def test_a_positive_score_means_a_step_on_that_training_sample_lowers_the_test_loss(tmp_path):
    x, y, test_x, test_y = _data(1)
    task = _task(tmp_path, _mlp(), x, y)
    scores = KronfluenceInfluence("identity").fit(task).scores(test_x, test_y)
    model, step = task.own_copy().model, 1e-3
    task.load_checkpoint(model, str(task.checkpoints[-1]))
    before = nn.functional.cross_entropy(model(test_x), test_y, reduction="none").detach()
    checked = 0
    for i in np.flatnonzero(np.abs(scores).max(axis=1) > 0.1):  # upweight train i: one small step on its loss
        stepped = task.own_copy().model
        task.load_checkpoint(stepped, str(task.checkpoints[-1]))
        nn.functional.cross_entropy(stepped(x[i:i + 1]), y[i:i + 1], reduction="sum").backward()
        with torch.no_grad():
            for p in stepped.parameters():
                p -= step * p.grad
        drop = (before - nn.functional.cross_entropy(stepped(test_x), test_y, reduction="none")).detach().numpy()
        clear = np.abs(scores[i]) > 0.1
        assert np.array_equal(np.sign(drop[clear]), np.sign(scores[i, clear])), i
        checked += clear.sum()
    assert checked > N  # both signs occur among the pairs checked
    assert (scores > 0.1).any() and (scores < -0.1).any()


def _naive_ekfac(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 damping: float) -> np.ndarray:
    """EK-FAC (George et al. 2018) of a bias-free Linear under the summed cross-entropy, empirical
    Fisher: A = E[a aᵀ], S = E[δ δᵀ] with eigenvectors Q_A, Q_S; Λ = E[(Q_Sᵀ G_i Q_A)²]; score[i, j]
    = <G_i, Q_S ((Q_Sᵀ G_j Q_A) / (Λ + λ)) Q_Aᵀ>, with G = δ aᵀ per sample. float64 throughout."""
    w = model.weight.detach().double()

    def grads(a: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output gradients δ (n, C) and weight gradients δ aᵀ (n, C, D)."""
        delta = torch.softmax(a.double() @ w.T, dim=1) - nn.functional.one_hot(labels, C).double()
        return delta, delta[:, :, None] * a.double()[:, None, :]

    (delta, g_train), (_, g_test) = grads(x, y), grads(test_x, test_y)
    _, q_a = torch.linalg.eigh(x.double().T @ x.double() / N)
    _, q_s = torch.linalg.eigh(delta.T @ delta / N)
    lam = ((q_s.T @ g_train @ q_a) ** 2).mean(dim=0)
    preconditioned = q_s @ ((q_s.T @ g_test @ q_a) / (lam + damping)) @ q_a.T  # (M, C, D)
    return torch.einsum("icd,jcd->ij", g_train, preconditioned).numpy()


def test_ekfac_matches_a_naive_ekfac_and_sums_over_checkpoints(tmp_path):
    x, y, test_x, test_y = _data(2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Linear(D, C, bias=False)
    task = _task(tmp_path, model, x, y, n_checkpoints=2)
    damping = 1e-3
    expected = []
    for path in task.checkpoints:
        state = nn.Linear(D, C, bias=False)
        load_checkpoint(state, str(path))
        expected.append(_naive_ekfac(state, x, y, test_x, test_y, damping))
    last = KronfluenceInfluence("ekfac", damping=damping).fit(task).scores(test_x, test_y)
    np.testing.assert_allclose(last, expected[-1], rtol=2e-3, atol=1e-3 * np.abs(expected[-1]).max())
    summed = KronfluenceInfluence("ekfac", every_checkpoint=True, damping=damping).fit(task).scores(test_x, test_y)
    np.testing.assert_allclose(summed, sum(expected), rtol=2e-3, atol=1e-3 * np.abs(sum(expected)).max())
    identity = KronfluenceInfluence("identity").fit(task).scores(test_x, test_y)
    assert np.corrcoef(last.ravel(), identity.ravel())[0, 1] < 0.99  # the curvature changes the scores


def test_linear_copy_computes_the_same_gpt2_with_no_conv1d_left():
    model = lm.build_lm(lm.LMConfig(n_layer=1, n_embd=8, n_head=2, n_positions=8, vocab_size=257), 40, 0, seed=0)
    ids = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=ids).logits
    converted = linear_copy(model)
    assert not any(isinstance(m, Conv1D) for m in converted.modules())
    torch.testing.assert_close(converted(input_ids=ids).logits, before, rtol=1e-5, atol=1e-6)


def test_sample_labels_draws_each_target_from_the_previous_positions_distribution():
    labels = torch.tensor([[5, 1, 2, lm.IGNORE], [6, lm.IGNORE, 3, 4]])
    logits = torch.full((2, 4, 9), -1e4)
    favourite = torch.tensor([[7, 8, 0, 1], [2, 3, 4, 5]])  # the one likely token at each position
    logits.scatter_(2, favourite[:, :, None], 0.0)
    sampled = lm.sample_labels(logits, labels, torch.Generator().manual_seed(0))
    assert sampled.tolist() == [[5, 7, 8, lm.IGNORE], [6, lm.IGNORE, 3, 4]]


def test_true_fisher_on_a_causal_lm_scores_windows_by_generations(tmp_path):
    config = lm.LMConfig(n_layer=1, n_embd=8, n_head=2, n_positions=6, vocab_size=257)
    model = lm.build_lm(config, 30, 0, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    windows = lm.document_windows([torch.randint(1, 30, (n,), generator=g).tolist() for n in (4, 9, 7)], 6, 0)
    path = tmp_path / "final.pt"
    torch.save({"state_dict": lm.LogitsOnly(model).state_dict(), "learning_rate": 1.0}, path)
    task = AttributionTask(lm.LogitsOnly(model), {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask},
                           windows.labels, [path], load_checkpoint, loss_fn=lm.causal_lm_loss)
    test_x, test_y = lm.generation_batch([[0, 3], [0]], [[4, 5, 6], [7, 8]])
    method = KronfluenceInfluence(sample_targets=lm.sample_labels, damping=None).fit(task)
    scores = method.scores(test_x, test_y)
    assert scores.shape == (len(windows), 2) and np.isfinite(scores).all() and np.ptp(scores) > 0
    self_scores = method.scores(task.train_x, task.train_y)
    assert (np.diag(self_scores) > 0).all()  # a window helps its own likelihood


def test_refusals_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown kronfluence strategy 'eigen'"):
        KronfluenceInfluence("eigen")
    with pytest.raises(RuntimeError, match="call fit before scores"):
        KronfluenceInfluence().scores(torch.zeros(1, D), torch.zeros(1, dtype=torch.long))
    x, y, _, _ = _data()
    task = _task(tmp_path, nn.Sequential(nn.Flatten()), x, y)
    with pytest.raises(AttributionError, match="the model has none"):
        KronfluenceInfluence().fit(task)
    task = _task(tmp_path, nn.Sequential(nn.modules.linear.NonDynamicallyQuantizableLinear(D, C)), x, y)
    with pytest.raises(AttributionError, match=r"these subclass them: \['model.0 \(NonDynamicallyQuantizableLinear\)'\]"):
        KronfluenceInfluence().fit(task)
    monkeypatch.setitem(sys.modules, "kronfluence", None)
    with pytest.raises(ImportError, match=r"the optional `peers` extra"):
        KronfluenceInfluence()
