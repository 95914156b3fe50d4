"""The small causal LM: byte-level BPE round trip offline, per-document windows, the loss against
Hugging Face's, seeded training and generation, checkpoints, log-likelihoods against a per-token
reference, perplexities against naive counts, memorisation of a repeated passage."""

import math
import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from datanet.models.lm import (EOT, IGNORE, LMConfig, LMRetrainer, build_lm, document_windows,
                               encode_documents, generate, lm_loss, load_lm, perplexity, sequence_log_likelihood,
                               sequence_log_likelihoods, train_lm, train_tokenizer, unigram_perplexity)
from datanet.text.docstrings import docstring_corpus
from datanet.text.lm_datanet import DEFAULT_MEMORISED_PASSAGE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = LMConfig(n_layer=1, n_embd=32, n_head=2, n_positions=48, vocab_size=400, epochs=3, batch_size=8,
                learning_rate=3e-3, seed=5)
EXTRA = ["Ünïcödé — naïve café, 数据 and emoji 🙂 with\ttabs\r\nand  double  spaces ", " leading space", "x"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return list(docstring_corpus(("numpy", "pandas"), per_package=12, seed=0).texts)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def trained(corpus, tokenizer, tmp_path_factory):
    return train_lm(encode_documents(tokenizer, corpus), TINY, tokenizer=tokenizer,
                    checkpoint_dir=tmp_path_factory.mktemp("lm"))


def test_tokenizer_round_trips_offline_and_is_deterministic(corpus, tokenizer):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert len(tokenizer) == 400 and tokenizer.convert_tokens_to_ids(EOT) == 0 == tokenizer.eos_token_id
    texts = corpus + EXTRA
    ids = encode_documents(tokenizer, texts)
    assert [tokenizer.decode(i) for i in ids] == texts
    assert sum(map(len, ids)) < sum(len(t.encode("utf-8")) for t in corpus)  # merges were learnt
    assert train_tokenizer(corpus, vocab_size=400).get_vocab() == tokenizer.get_vocab()


def test_document_windows_score_every_token_once():
    documents = [list(range(1, 101)), [], [7, 8, 9]]
    windows = document_windows(documents, n_positions=16, eot_id=0)
    assert windows.input_ids.shape[1] == 16
    for index, ids in enumerate(documents):
        rows = np.flatnonzero(windows.document == index)
        assert windows.input_ids[rows[0], 0] == 0
        targets = [int(t) for r in rows for t in windows.labels[r, 1:] if t != IGNORE]
        assert targets == [*ids, 0]
        for first, second in zip(rows, rows[1:]):  # one token of overlap: the next window's context
            last = int(windows.attention_mask[first].sum()) - 1
            assert windows.input_ids[first, last] == windows.input_ids[second, 0]
    padded = windows.attention_mask == 0
    assert (windows.labels[padded] == IGNORE).all() and (windows.labels[~padded] == windows.input_ids[~padded]).all()


def test_lm_loss_equals_hugging_face_loss(corpus, tokenizer):
    model = build_lm(TINY, len(tokenizer), 0)
    windows = document_windows(encode_documents(tokenizer, corpus[:6]), TINY.n_positions, 0)
    input_ids, attention_mask, labels = windows.batch(range(len(windows)))
    ours = lm_loss(model, input_ids, attention_mask, labels)
    assert ours.shape == (len(windows),)
    reference = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    n_targets = int((labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(ours.sum() / n_targets, reference)


def test_training_lowers_the_loss_and_writes_checkpoints(corpus, tokenizer, trained):
    documents = encode_documents(tokenizer, corpus)
    assert trained.epoch_losses[-1] < trained.epoch_losses[0] - 0.5
    assert perplexity(trained.model, documents) < 0.5 * perplexity(build_lm(TINY, len(tokenizer), 0), documents)
    assert trained.tokens_per_second > 0 and len(trained.step_losses) == 3 * math.ceil(
        len(document_windows(documents, TINY.n_positions, 0)) / TINY.batch_size)
    assert [p.name for p in trained.checkpoints] == ["epoch-001", "epoch-002", "epoch-003"]
    model, loaded_tokenizer = load_lm(trained.checkpoints[-1])
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert encode_documents(loaded_tokenizer, corpus) == documents
    first, _ = load_lm(trained.checkpoints[0])
    assert not torch.equal(first.transformer.wte.weight, model.transformer.wte.weight)


def test_training_and_retraining_are_deterministic(corpus, tokenizer, trained):
    documents = encode_documents(tokenizer, corpus)
    again = train_lm(documents, TINY, tokenizer=tokenizer)
    assert again.step_losses == trained.step_losses
    retrainer = pickle.loads(pickle.dumps(LMRetrainer.from_tokenizer(documents, tokenizer, TINY)))
    threads = torch.get_num_threads()
    retrained = retrainer(np.arange(len(documents)), seed=TINY.seed)  # one thread, as in the fixture
    assert torch.get_num_threads() == threads
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
        assert torch.equal(retrained.state_dict()[name], tensor), name
    other_seed = retrainer(np.arange(len(documents)), seed=TINY.seed + 1)
    subset = retrainer(np.arange(len(documents) - 3), seed=TINY.seed)
    for model in (other_seed, subset):
        assert not torch.equal(model.lm_head.weight, trained.model.lm_head.weight)
    with pytest.raises(ValueError, match=r"document indices in \[0, 24\)"):
        retrainer(np.array([0, 24]))


def test_generation_is_seeded_and_greedy_is_argmax(tokenizer, trained):
    prompts = ["Return the", "Compute the sum of"]
    sampled = generate(trained.model, tokenizer, prompts, 12, seed=1, temperature=1.0, top_k=50)
    assert generate(trained.model, tokenizer, prompts, 12, seed=1, temperature=1.0, top_k=50) == sampled
    assert generate(trained.model, tokenizer, prompts[1:], 12, seed=1, temperature=1.0, top_k=50)[0] != sampled[1]
    others = [generate(trained.model, tokenizer, prompts, 12, seed=s, temperature=1.0) for s in (2, 3, 4)]
    assert any(o != sampled for o in others)
    greedy = generate(trained.model, tokenizer, prompts, 12, seed=0, temperature=0)
    assert generate(trained.model, tokenizer, prompts, 12, seed=9, temperature=1.0, top_k=1) == greedy
    for g in sampled + greedy:
        assert g.prompt_ids == (0, *encode_documents(tokenizer, [g.prompt])[0])
        assert 1 <= len(g.generated_ids) <= 12 and (g.generated_ids[-1] == 0 or len(g.generated_ids) == 12)
        assert 0 not in g.generated_ids[:-1]
        assert g.text == tokenizer.decode([t for t in g.generated_ids if t != 0])
    for g in greedy:  # each greedy token is the argmax given everything before it
        sequence = [*g.prompt_ids, *g.generated_ids]
        with torch.no_grad():
            logits = trained.model(input_ids=torch.tensor([sequence])).logits[0]
        positions = range(len(g.prompt_ids) - 1, len(sequence) - 1)
        assert [int(logits[t].argmax()) for t in positions] == list(g.generated_ids)


def test_sequence_log_likelihoods_equal_a_per_token_reference(tokenizer, trained):
    generations = generate(trained.model, tokenizer, ["Return the", "Parameters", "A"], 10, seed=4)
    prompts = [g.prompt_ids for g in generations]
    generated = [g.generated_ids for g in generations]
    batched = sequence_log_likelihoods(trained.model, prompts, generated, batch_size=2)
    assert batched.shape == (3,) and batched.dtype == np.float64 and (batched < 0).all()
    for value, p, g in zip(batched, prompts, generated):
        reference = 0.0
        for k, token in enumerate(g):
            with torch.no_grad():
                logits = trained.model(input_ids=torch.tensor([[*p, *g[:k]]])).logits[0, -1].double()
            reference += float(logits.log_softmax(-1)[token])
        assert value == pytest.approx(reference, abs=1e-4)
        assert sequence_log_likelihood(trained.model, p, g) == pytest.approx(value, abs=1e-5)


def test_perplexities_equal_naive_counts(corpus, tokenizer, trained):
    short = [ids for ids in encode_documents(tokenizer, corpus) if len(ids) + 2 <= TINY.n_positions][:4]
    assert short
    total = sum(-sequence_log_likelihood(trained.model, [0], [*ids, 0]) for ids in short)
    assert perplexity(trained.model, short) == pytest.approx(math.exp(total / sum(len(i) + 1 for i in short)), rel=1e-5)
    train, held = [[1, 2, 2, 3], [3, 3]], [[2, 5], [1]]
    counts = Counter(t for ids in train for t in [*ids, 0])
    n = sum(counts.values()) + 8
    log_p = [math.log((counts[t] + 1) / n) for ids in held for t in [*ids, 0]]
    assert unigram_perplexity(train, held, 8, 0) == pytest.approx(math.exp(-sum(log_p) / len(log_p)))


def test_a_repeated_passage_is_memorised(corpus):
    texts = corpus[:12] + [f"{DEFAULT_MEMORISED_PASSAGE}\n\nNote {k}: copy {k} of the passage." for k in range(20)]
    tokenizer = train_tokenizer(texts, vocab_size=600)
    config = LMConfig(n_layer=1, n_embd=64, n_head=2, n_positions=128, vocab_size=600, epochs=10, batch_size=8,
                      learning_rate=3e-3)
    model = train_lm(encode_documents(tokenizer, texts), config, tokenizer=tokenizer).model
    opening = " ".join(DEFAULT_MEMORISED_PASSAGE.split()[:4])
    (greedy,) = generate(model, tokenizer, [opening], 16, seed=0, temperature=0)
    passage = encode_documents(tokenizer, [DEFAULT_MEMORISED_PASSAGE])[0]
    continuation = passage[len(greedy.prompt_ids) - 1:]
    assert list(greedy.generated_ids[:8]) == continuation[:8]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_layer": 0}, "n_layer must be >= 1, got 0"),
    ({"n_embd": 30, "n_head": 4}, "n_embd .30. must be a multiple of n_head .4."),
    ({"n_positions": 1}, "n_positions must be >= 2"),
    ({"vocab_size": 100}, "vocab_size must be >= 257"),
    ({"learning_rate": 0.0}, "learning_rate > 0"),
    ({"warmup": 1.0}, r"warmup in \[0, 1\)"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LMConfig(**kwargs)


def test_bad_inputs_raise_clear_errors(tokenizer, trained, tmp_path):
    with pytest.raises(ValueError, match="at least 257"):
        train_tokenizer(["some text"], vocab_size=256)
    with pytest.raises(ValueError, match="non-empty sequence"):
        train_tokenizer("a single string")
    with pytest.raises(ValueError, match="exceeds the model's context of 48 tokens"):
        generate(trained.model, tokenizer, ["word " * 40], 20, seed=0)
    with pytest.raises(ValueError, match="max_new_tokens >= 1"):
        generate(trained.model, tokenizer, ["x"], 0, seed=0)
    with pytest.raises(ValueError, match="2 prompts but 1 generations"):
        sequence_log_likelihoods(trained.model, [[0], [0]], [[1]])
    with pytest.raises(ValueError, match="pair 0"):
        sequence_log_likelihoods(trained.model, [[0]], [[]])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 400\)"):
        train_lm([[1, 2, 400]], TINY, tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match=r"not a saved causal LM, missing \['config.json', 'tokenizer.json', "
                                                "'model.safetensors'\]"):
        load_lm(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        load_lm(tmp_path / "gpt2")
