"""Text validation: each rule rejects its bad sample with a reason; duplicates are order-aware."""

import hashlib
import sys
import unicodedata

import pytest
from datasketch import MinHash

from datanet.text.validation import FORBIDDEN_CONTROLS, minhash, normalize, shingles, text_sha256, validate_texts

LABELS = ("numpy", "torch")
BASE = ("Compute the arithmetic mean along the specified axis and return a new array holding "
        "the result, unless an output array is given, in which case a reference to it is returned.")
OTHER = ("Load a serialized module from disk, move its parameters to the requested device and "
         "return it in evaluation mode so that dropout and batch normalization behave.")


def _one(text, label="numpy", **kwargs):
    return validate_texts([text], [label], LABELS, **kwargs).reasons[0]


def test_good_samples_are_accepted():
    result = validate_texts([BASE, OTHER], ["numpy", "torch"], LABELS)
    assert result.accepted == (True, True)
    assert result.reasons == ("", "")


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (" \t\n  ", "empty"),
    (b"caf\xe9 latte", "invalid UTF-8 at byte 3"),
    ("null\x00byte", "U+0000"),
    ("bell\x07", "U+0007"),
    ("x" * 101, "101 characters > max_chars 100"),
])
def test_each_single_sample_rule(text, reason):
    assert reason in _one(text, max_chars=100)


def test_tabs_newlines_and_valid_bytes_pass():
    assert _one("line one\tcol\r\nline two") == ""
    assert _one("café latte".encode("utf-8")) == ""


def test_token_limit_rejects_and_says_so():
    reason = _one("one two three four", max_tokens=3, count_tokens=lambda t: len(t.split()))
    assert "4 tokens > max_tokens 3" in reason and "not truncated" in reason
    assert _one("one two three", max_tokens=3, count_tokens=lambda t: len(t.split())) == ""
    with pytest.raises(ValueError, match="go together"):
        _one("x", max_tokens=3)


def test_unknown_label():
    assert "unknown label 'jax'" in _one(BASE, label="jax")


def test_exact_duplicate_after_nfkc_and_whitespace_names_the_first():
    variant = BASE.replace(" ", "\u00a0 \n", 3).replace("fi", "\ufb01")  # nbsp + newline, the fi ligature
    assert variant != BASE
    result = validate_texts([BASE, OTHER, variant], ["numpy", "torch", "numpy"], LABELS)
    assert result.accepted == (True, True, False)
    assert "exact duplicate of sample 0" in result.reasons[2]


def test_normalization_and_hash_are_the_documented_ones():
    text = "  A\u2003b\ufb01  "
    assert normalize(text) == "A bfi"
    assert text_sha256(text) == hashlib.sha256(unicodedata.normalize("NFKC", "A b\ufb01").encode()).hexdigest()


def test_light_edit_is_a_near_duplicate_of_the_earlier_sample_only():
    words = BASE.split()
    words[2], words[5] = words[5], words[2]
    words.insert(7, "quickly")
    edited = " ".join(words)
    result = validate_texts([OTHER, BASE, edited], ["torch", "numpy", "numpy"], LABELS,
                            names=["alice:0", "bob:0", "mallory:0"])
    assert result.accepted == (True, True, False)
    assert "near duplicate of bob:0" in result.reasons[2]
    reversed_order = validate_texts([edited, BASE], ["numpy", "numpy"], LABELS)
    assert reversed_order.accepted == (True, False)  # the first submission wins


def test_a_rejected_sample_does_not_block_a_later_one():
    result = validate_texts([BASE, BASE], ["jax", "numpy"], LABELS)
    assert result.accepted == (False, True)


def test_distinct_texts_are_not_near_duplicates_and_runs_are_deterministic():
    texts = [BASE, OTHER, "Draw a histogram of the data with the given number of bins and return the patches.",
             "Tokenize the input strings, pad them to the longest sequence and return attention masks."]
    first = validate_texts(texts, ["numpy", "torch", "numpy", "torch"], LABELS)
    assert all(first.accepted)
    assert validate_texts(texts, ["numpy", "torch", "numpy", "torch"], LABELS) == first


def test_bad_arguments():
    with pytest.raises(ValueError, match="lengths must match"):
        validate_texts(["a", "b"], ["numpy"], LABELS)
    with pytest.raises(ValueError, match="near_threshold"):
        validate_texts(["a"], ["numpy"], LABELS, near_threshold=0)


def test_forbidden_controls_are_unicode_category_cc_less_tab_newline_return():
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    expected = {c for c in every if unicodedata.category(c) == "Cc"} - set("\t\n\r")
    assert set(FORBIDDEN_CONTROLS.findall(every)) == expected


def test_minhash_equals_a_freshly_seeded_signature():
    for text, shingle, seed in ((BASE, 1, 1), (OTHER, 3, 7), (BASE, 2, 1)):
        reference = MinHash(num_perm=64, seed=seed)
        reference.update_batch([s.encode("utf-8") for s in sorted(shingles(text, shingle))])
        assert minhash(text, shingle, num_perm=64, seed=seed) == reference
    assert minhash(BASE) != minhash(OTHER)
