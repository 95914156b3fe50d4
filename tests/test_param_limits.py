"""The batch parameters' upper limits and cross-parameter checks: what they refuse is in
tests/test_bad_input.py; here, that they hold what the limits promise and let documented runs pass."""

import pytest


from datanet.models import lm
from datanet.text.lm_datanet import MAX_PROMPT_BYTES
from datanet_lab.params import DEFAULTS, GEN_POSITIONS, MAX_UNITS, ParameterError, check, coerce, resolve
from datanet_lab.pipeline.generation.train_step import lm_config

MAKE_RUN_TEXT = {"text_per_package": 220, "text_lds_subsets": 12, "text_ig_examples": 4}
MAKE_RUN_GENERATION = {"gen_per_contributor": 20, "gen_epochs": 12, "gen_width": 96, "gen_vocab_size": 3072,
                       "gen_prompts": 12, "gen_loco_seeds": 2}
"""The Makefile's ``run-text`` and ``run-generation`` parameters."""


def test_the_generation_batch_gpt2_has_the_positions_the_limit_assumes():
    assert lm_config(DEFAULTS).gpt2_config(DEFAULTS["gen_vocab_size"], 0).n_positions == GEN_POSITIONS


def test_the_longest_prompt_and_generation_fit_the_positions():
    # A byte-level BPE with no merges: one token per byte, the worst case for a prompt of
    # MAX_PROMPT_BYTES bytes (multi-byte characters included).
    tokenizer = lm.train_tokenizer(["a few words"], vocab_size=257)
    prompt = "é" * (MAX_PROMPT_BYTES // 2) + "x" * (MAX_PROMPT_BYTES % 2)
    assert len(prompt.encode()) == MAX_PROMPT_BYTES
    config = lm.LMConfig(n_embd=8, n_positions=GEN_POSITIONS)
    model = lm.build_lm(config, len(tokenizer), tokenizer.convert_tokens_to_ids(lm.EOT), seed=0)
    most = resolve({"gen_max_new_tokens": GEN_POSITIONS - 1 - MAX_PROMPT_BYTES})["gen_max_new_tokens"]
    (generation,) = lm.generate(model, tokenizer, [prompt], most, seed=0, temperature=1.0)
    assert len(generation.prompt_ids) == 1 + MAX_PROMPT_BYTES
    with pytest.raises(ParameterError, match="gen_max_new_tokens must be <= "):
        resolve({"gen_max_new_tokens": most + 1})


@pytest.mark.parametrize("params", [MAKE_RUN_TEXT, MAKE_RUN_GENERATION])
def test_the_makefile_runs_pass(params):
    assert check(params)


def test_rounds_up_to_what_the_dataset_serves():
    # wine leaves 142 training rows; the plan draws 6 + 7 + 8 + 7 per later round with one row per batch.
    assert check({"dataset": "wine", "rounds": 20, "round_rows": 142})["rounds"] == 20
    with pytest.raises(ParameterError, match=r"rounds=21: dataset 'wine' leaves 142 training rows, .* \(147\)"):
        check({"dataset": "wine", "rounds": 21})
    with pytest.raises(ParameterError, match="round_rows=143: more rows per batch than the 142 training rows"):
        check({"dataset": "wine", "round_rows": 143})


@pytest.mark.parametrize("name, good", [("gen_temperature", 0.0), ("gen_temperature", 0.01), ("gen_width", 1024),
                                        ("text_per_package", 1000), ("inference_requests", 100_000), ("rounds", 100)])
def test_the_limits_themselves_pass(name, good):
    assert resolve({name: good})[name] == good


def test_the_inference_fees_may_total_the_largest_exact_integer():
    fee = MAX_UNITS // DEFAULTS["inference_requests"]
    assert resolve({"inference_fee": fee})["inference_fee"] == fee
    with pytest.raises(ParameterError, match=f"inference_fee={fee + 1} x inference_requests=2000"):
        resolve({"inference_fee": fee + 1})


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("1", True), ("0", False)])
def test_a_bool_parameter_is_read_from_its_command_line_spelling(text, value):
    assert coerce("compare_shapley", text) is value


def test_a_bool_parameter_refuses_other_text():
    with pytest.raises(ParameterError, match="'compare_shapley' must be one of"):
        coerce("compare_shapley", "no")  # bool("no") would be True
