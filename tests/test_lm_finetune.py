"""The fine-tuning setting and the user's own model: a base pretrained once and cached by its key,
fine-tuning that starts from the base's weights, leave-one-out retraining that redoes only the
fine-tune, a model directory of the user's loaded through ``lm_model``, and refusal of anything
that is not a local model directory (nothing is downloaded)."""

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datanet.models import lm, lm_base  # noqa: E402
from datanet_lab.params import ParameterError, check_lm_model  # noqa: E402
from datanet_lab.pipeline import generation as gen  # noqa: E402
from datanet_lab.pipeline.run import open_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_SPEC = lm_base.BaseSpec(packages=("json", "unittest"), per_package=12,
                             config=lm.LMConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=300, epochs=1, batch_size=8))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base pretrained into a fresh cache."""
    return lm_base.pretrained_base(TINY_SPEC, tmp_path_factory.mktemp("cache"))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_cached_base_is_reused_and_another_config_is_another_base(base, monkeypatch):
    summary = json.loads((base / lm_base.BASE_FILE).read_text())
    assert summary["key"] == base.name.removeprefix("base-") and summary["documents"] == 24
    monkeypatch.setattr(lm, "train_lm", lambda *a, **k: pytest.fail("a cached base was pretrained again"))
    assert lm_base.pretrained_base(TINY_SPEC, base.parent) == base
    other = lm_base.BaseSpec(TINY_SPEC.packages, TINY_SPEC.per_package, lm.LMConfig(**{**vars(TINY_SPEC.config), "seed": 1}))
    assert lm_base.base_key(lm_base.base_corpus(other), other.config) != summary["key"]


def test_an_unfinished_base_build_is_not_reused(tmp_path):
    staging = tmp_path / ".base-0123456789abcdef-99"  # what a killed build leaves
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    built = lm_base.pretrained_base(TINY_SPEC, tmp_path)
    assert (built / lm_base.BASE_FILE).is_file() and lm.load_lm(built)[0].config.n_embd == 16


def test_fine_tuning_starts_from_the_base_weights(base):
    model, tokenizer = lm.load_lm(base)
    config = lm.LMConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=300, epochs=1, batch_size=4, learning_rate=1e-9)
    start = lm.build_lm(config, len(tokenizer), lm.eot_id(tokenizer), seed=5, base=base)
    assert all(torch.equal(a, b) for a, b in zip(state(start).values(), state(model).values()))
    documents = lm.encode_documents(tokenizer, ["A short text about the base.", "Another text, fine-tuned on."])
    tuned = lm.train_lm(documents, config, tokenizer=tokenizer, base=base).model
    moved = max(float((a - b).abs().max()) for a, b in zip(state(tuned).values(), state(model).values()))
    assert 0 < moved < 1e-6  # a tiny rate moves the base a little: it was the starting point
    scratch = lm.train_lm(documents, config, tokenizer=tokenizer).model
    assert max(float((a - b).abs().max()) for a, b in zip(state(scratch).values(), state(model).values())) > 1e-3


def test_leave_one_out_retraining_redoes_only_the_fine_tune(base):
    _, tokenizer = lm.load_lm(base)
    documents = lm.encode_documents(tokenizer, [f"Document {k} says something about testing code." for k in range(5)])
    config = lm.LMConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=300, epochs=2, batch_size=2, seed=3)
    trained = lm.train_lm(documents, config, tokenizer=tokenizer, base=base).model
    retrainer = lm.LMRetrainer.from_tokenizer(documents, tokenizer, config, base)
    again = retrainer(np.arange(5), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(state(again).values(), state(trained).values()))
    scratch = lm.LMRetrainer.from_tokenizer(documents, tokenizer, config)(np.arange(5), seed=3)
    assert not all(torch.equal(a, b) for a, b in zip(state(scratch).values(), state(trained).values()))


def test_a_base_of_another_vocabulary_is_refused(base):
    with pytest.raises(ValueError, match="300 token embeddings, but the tokenizer has 512"):
        lm.build_lm(lm.LMConfig(), 512, 0, base=base)


@pytest.mark.parametrize("value, match", [
    ("gpt2", "not 'scratch' or 'pretrained' nor a local directory"),
    ("openai-community/gpt2", "never downloaded"),
])
def test_a_model_name_that_is_not_a_local_directory_is_refused(value, match):
    with pytest.raises(ParameterError, match=match):
        check_lm_model(value)


def test_a_directory_without_a_tokenizer_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ParameterError, match=r"lacks \['tokenizer.json'\]"):
        check_lm_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a saved causal LM"):
        lm.load_model(tmp_path)


def test_the_users_own_model_directory_is_fine_tuned_by_the_generation_run(base, tmp_path):
    """A model saved with ``save_pretrained`` elsewhere, loaded through ``lm_model`` as a user's
    would be: the run fine-tunes it, generates with it and records its weights' hash."""
    users = tmp_path / "my-model"
    model, tokenizer = lm.load_lm(base)
    model.save_pretrained(users)
    tokenizer.save_pretrained(users)
    check_lm_model(str(users))
    run = gen.generation_run(open_run(str(tmp_path / "run"), lm_model=str(users), gen_per_contributor=1, gen_epochs=1,
                                      gen_prompts=2, gen_max_new_tokens=8, gen_temperature=0.0))
    trained = gen.train_generation(run)
    assert trained.base == users.resolve() and len(trained.tokenizer) == len(tokenizer)
    assert trained.summary["base_validation_perplexity"] > 0
    with run.ledger() as book:
        record = next(iter(book.entries("training_run"))).payload
    assert record["base"]["sha256"] == lm_base.hashlib.sha256((users / "model.safetensors").read_bytes()).hexdigest()
    assert len(gen.generate_texts(run)) == 2
    reloaded = gen.train_generation(run)  # read back from the run, base included
    assert reloaded.base == users.resolve()


def test_lora_trains_only_adapters_and_its_retrain_reproduces_it(base):
    """LoRA fine-tuning: the merged model differs from the base only by a low-rank update of each
    adapted weight, and the leave-one-out retrainer (same documents and seed) gives it bit for bit."""
    _, tokenizer = lm.load_lm(base)
    documents = lm.encode_documents(tokenizer, [f"Document {k} says something about testing code." for k in range(4)])
    config = lm.LMConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=300, epochs=2, batch_size=2, learning_rate=1e-2,
                         lora_rank=2)
    tuned = lm.train_lm(documents, config, tokenizer=tokenizer, base=base).model
    start = state(lm.load_model(base))
    delta = {k: v - start[k] for k, v in state(tuned).items()}
    changed = [k for k, d in delta.items() if d.abs().max() > 0]
    assert changed and all(k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for k in changed)
    for k in changed:  # rank 2 up to float32 rounding of the merge
        singular = torch.linalg.svdvals(delta[k].double())
        assert singular[2] < 1e-3 * singular[0], (k, singular[:4])
    again = lm.LMRetrainer.from_tokenizer(documents, tokenizer, config, base)(np.arange(4), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(state(again).values(), state(tuned).values()))


def test_lora_without_a_base_is_refused():
    from datanet_lab.params import resolve
    with pytest.raises(ParameterError, match="lm_lora_rank=4: LoRA adapters fine-tune a base model"):
        resolve({"lm_lora_rank": 4})
    windows = lm.document_windows([[1, 2, 3]], 8, 0)
    with pytest.raises(ValueError, match="LoRA adapters fine-tune a base model"):
        lm.fit_windows(windows, lm.LMConfig(n_layer=1, n_embd=16, n_head=2, lora_rank=2), 300, 0, 0)
