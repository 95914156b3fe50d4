"""attribution.token_ig on a tiny random MiniLMClassifier (float64): completeness against the
model's own logits, exact zeros where the input equals the baseline, batching and padding that do
not change a sample's attributions, the refusals, and trigger_mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from attribution import TokenAttributions, token_attributions, trigger_mass
from attribution.token_ig import baseline_ids
from datanet.models.encoders import ATTENTION, MiniLMClassifier, TopLayerClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLS, SEP, PAD, VOCAB, C = 2, 3, 0, 40, 3
LENGTHS = (7, 4, 2, 5)


def tiny_encoder() -> BertModel:
    """A random 2-layer BertModel of width 16 (eager attention, as MiniLM is loaded), in eval mode."""
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, pad_token_id=PAD, attn_implementation=ATTENTION)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return BertModel(config, add_pooling_layer=False).eval()


def tiny_minilm(dtype: torch.dtype = torch.float64) -> MiniLMClassifier:
    """:class:`MiniLMClassifier` (frozen embeddings and bottom layer, trainable top layer and head)
    on :func:`tiny_encoder`, its head scaled so that logits are of order 1."""
    encoder = tiny_encoder()
    model = MiniLMClassifier(encoder, TopLayerClassifier.from_encoder(encoder, C, seed=0)).to(dtype).eval()
    with torch.no_grad():
        model.classifier.head.weight.mul_(20.0)
    return model


def _tokens(lengths=LENGTHS, width: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.full((len(lengths), width), PAD)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.cat([torch.tensor([CLS]), torch.randint(4, VOCAB, (n - 2,), generator=g), torch.tensor([SEP])])
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask}


def _attribute(model, tokens, targets, **kwargs) -> TokenAttributions:
    return token_attributions(model, tokens["input_ids"], tokens["attention_mask"], targets, model.embeddings,
                              cls_id=CLS, sep_id=SEP, pad_id=PAD, **kwargs)


def _targets(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens["input_ids"], tokens["attention_mask"]).argmax(dim=1)


def test_the_baseline_keeps_cls_and_sep_at_each_real_length():
    tokens = _tokens()
    expected = torch.full((4, 8), PAD)
    for i, n in enumerate(LENGTHS):
        expected[i, 0], expected[i, n - 1] = CLS, SEP
    assert torch.equal(baseline_ids(tokens["input_ids"], tokens["attention_mask"], cls_id=CLS, sep_id=SEP, pad_id=PAD), expected)


@pytest.mark.parametrize("target_kind", ["predicted", "other"])
def test_attributions_sum_to_the_logit_gap_and_delta_is_that_residual(target_kind):
    model, tokens = tiny_minilm(), _tokens()
    targets = _targets(model, tokens)
    if target_kind == "other":
        targets = (targets + 1) % C
    result = _attribute(model, tokens, targets, n_steps=64)
    baseline = baseline_ids(tokens["input_ids"], tokens["attention_mask"], cls_id=CLS, sep_id=SEP, pad_id=PAD)
    with torch.no_grad():
        gap = (model(tokens["input_ids"], tokens["attention_mask"]) - model(baseline, tokens["attention_mask"]))
    gap = gap.gather(1, targets[:, None])[:, 0].numpy()  # f(x) - f(baseline) for each target logit
    assert result.attributions.shape == (4, 8) and result.attributions.dtype == np.float64
    content = np.array(LENGTHS) > 2  # [CLS] [SEP] alone is its own baseline: no gap
    assert np.abs(gap[content]).min() > 0.05 and np.all(gap[~content] == 0.0)
    np.testing.assert_allclose(result.attributions.sum(axis=1), gap, rtol=1e-6, atol=1e-8)  # completeness
    np.testing.assert_allclose(result.convergence_delta, result.attributions.sum(axis=1) - gap, atol=1e-12)
    np.testing.assert_array_equal(result.targets, targets.numpy())


def test_tokens_equal_to_the_baseline_get_exactly_zero():
    model, tokens = tiny_minilm(), _tokens()
    result = _attribute(model, tokens, _targets(model, tokens))
    for i, n in enumerate(LENGTHS):
        assert np.all(result.attributions[i, n:] == 0.0)  # padding
        assert result.attributions[i, 0] == 0.0 and result.attributions[i, n - 1] == 0.0  # [CLS], [SEP]
        if n > 2:
            assert np.all(result.attributions[i, 1 : n - 1] != 0.0)
    ids, values = result.sample(1)
    np.testing.assert_array_equal(ids, tokens["input_ids"][1, :4].numpy())
    np.testing.assert_array_equal(values, result.attributions[1, :4])


def test_batching_and_padding_leave_each_sample_unchanged():
    model, tokens = tiny_minilm(), _tokens()
    targets = _targets(model, tokens)
    whole = _attribute(model, tokens, targets, n_steps=8, internal_batch_size=64)
    chunked = _attribute(model, tokens, targets, n_steps=8, internal_batch_size=3)
    np.testing.assert_allclose(chunked.attributions, whole.attributions, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(chunked.convergence_delta, whole.convergence_delta, atol=1e-12)
    for i, n in enumerate(LENGTHS):  # alone, without padding
        alone = _attribute(model, {k: v[i : i + 1, :n] for k, v in tokens.items()}, targets[i : i + 1], n_steps=8)
        np.testing.assert_allclose(alone.attributions[0], whole.attributions[i, :n], rtol=1e-8, atol=1e-11)


def _bad_mask() -> torch.Tensor:
    mask = _tokens()["attention_mask"].clone()
    mask[0, 2] = 0  # a hole inside the real tokens
    return mask


@pytest.mark.parametrize(("change", "message"), [
    ({"input_ids": _tokens()["input_ids"][0]}, r"input_ids must be a 2-D integer tensor \(n, L\)"),
    ({"input_ids": _tokens()["input_ids"].double()}, "input_ids must be a 2-D integer tensor"),
    ({"attention_mask": _tokens()["attention_mask"][:, :5]}, r"attention_mask has shape \(4, 5\), input_ids \(4, 8\)"),
    ({"attention_mask": _bad_mask()}, "attention_mask row 0 is not 1s on at least 2 leading tokens then 0s"),
    ({"targets": torch.zeros(3, dtype=torch.long)}, r"targets must be an integer tensor of shape \(4,\)"),
    ({"targets": torch.tensor([0, 1, 2, C])}, rf"targets must be class indices in \[0, {C}\)"),
    ({"cls_id": 5}, r"sample 0 must start with \[CLS\] \(id 5\)"),
    ({"n_steps": 0}, "n_steps and internal_batch_size must be >= 1"),
])
def test_bad_input_is_refused_by_name(change, message):
    model, tokens = tiny_minilm(), _tokens()
    args = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"], "targets": torch.zeros(4, dtype=torch.long),
            "cls_id": CLS} | change
    with pytest.raises(ValueError, match=message):
        token_attributions(model, args["input_ids"], args["attention_mask"], args["targets"], model.embeddings,
                           cls_id=args["cls_id"], sep_id=SEP, pad_id=PAD, n_steps=change.get("n_steps", 4))


def test_a_model_in_training_mode_is_refused():
    model, tokens = tiny_minilm().train(), _tokens()
    with pytest.raises(ValueError, match="the model is in training mode .*call model.eval"):
        _attribute(model, tokens, torch.zeros(4, dtype=torch.long))


def test_trigger_mass_counts_whole_phrase_occurrences_only():
    ids = np.array([[2, 7, 8, 9, 7, 3],    # the phrase (7, 8) once, a lone 7 later
                    [2, 9, 9, 9, 3, 0],    # no trigger
                    [2, 7, 8, 7, 8, 3]])   # twice
    attributions = np.array([[0.0, 1.0, -3.0, 2.0, 4.0, 0.0],
                             [0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
                             [0.0, -1.0, 1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(trigger_mass(attributions, ids, [7, 8]), [4 / 10, 0.0, 1.0])
    np.testing.assert_allclose(trigger_mass(attributions, ids, [9]), [2 / 10, 1.0, 0.0])


def test_trigger_mass_refuses_what_it_cannot_define():
    ids = np.array([[2, 7, 3]])
    with pytest.raises(ValueError, match="sample 0 has no attribution mass"):
        trigger_mass(np.zeros((1, 3)), ids, [7])
    with pytest.raises(ValueError, match="trigger_ids must be a non-empty sequence"):
        trigger_mass(np.ones((1, 3)), ids, [])
    with pytest.raises(ValueError, match=r"attributions \(1, 2\) and input_ids \(1, 3\)"):
        trigger_mass(np.ones((1, 2)), ids, [7])
