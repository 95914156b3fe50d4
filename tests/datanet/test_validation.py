"""Tests for datanet.validation: every rejection reason, duplicate handling, dataset_version."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from datanet.contributors import Submission
from datanet.validation import ACCEPTED, Schema, dataset_version, validate

SCHEMA = Schema(n_features=3, label_set=(0, 1, 2))


def sub(sample_id: str, features, label, contributor: str = "c00") -> Submission:
    return Submission(sample_id, contributor, tuple(features), label)


def judge(*submissions: Submission):
    return validate(list(submissions), SCHEMA)


def test_a_good_sample_is_accepted():
    [d] = judge(sub("s1", (1.0, 2, -3.5), 1))
    assert d.accepted and d.reason == ACCEPTED == "accepted"
    assert d.sample_id == "s1" and d.contributor == "c00"
    assert len(d.content_hash) == 64 and int(d.content_hash, 16) >= 0


def test_numpy_numbers_are_numbers():
    [d] = judge(sub("s1", (np.float64(1.0), np.int64(2), np.float32(3.0)), 2))
    assert d.accepted, d.reason


@pytest.mark.parametrize("features", [(1.0, 2.0), (1.0, 2.0, 3.0, 4.0), ()])
def test_wrong_width(features):
    [d] = judge(sub("s1", features, 0))
    assert not d.accepted
    assert d.reason.startswith("wrong width")
    assert f"{len(features)} features" in d.reason and "expected 3" in d.reason


@pytest.mark.parametrize("cell", ["n/a", "1.5", None, [1.0], b"1"])
def test_non_number_cell(cell):
    [d] = judge(sub("s1", (1.0, cell, 3.0), 0))
    assert not d.accepted
    assert d.reason.startswith("schema: feature 1")
    assert repr(cell) in d.reason


@pytest.mark.parametrize("cell", [True, False, np.bool_(True)])
def test_bool_is_not_a_number(cell):
    [d] = judge(sub("s1", (cell, 2.0, 3.0), 0))
    assert not d.accepted
    assert d.reason.startswith("schema: feature 0")


@pytest.mark.parametrize("cell", [float("nan"), float("inf"), float("-inf"), np.nan, np.float32("inf")])
def test_non_finite(cell):
    [d] = judge(sub("s1", (1.0, 2.0, cell), 0))
    assert not d.accepted
    assert d.reason.startswith("non-finite value")
    assert "feature 2" in d.reason


@pytest.mark.parametrize("cell", [1e39, -1e39, 1e308, np.float64(3.5e38), 10**39])
def test_a_value_beyond_float32_is_rejected(cell):
    # The Datanet holds features as float32: a larger magnitude would train on inf.
    [d] = judge(sub("s1", (1.0, cell, 3.0), 0))
    assert not d.accepted
    assert d.reason == f"value {cell!r} in feature 1 is beyond float32's range (magnitude <= 3.403e+38)"


def test_the_largest_float32_is_accepted():
    [d] = judge(sub("s1", (1.0, float(np.finfo(np.float32).max), -3.4e38), 0))
    assert d.accepted, d.reason


@pytest.mark.parametrize("label", [3, -1, "0", "not-a-label", None, 0.5])
def test_label_outside_the_set(label):
    [d] = judge(sub("s1", (1.0, 2.0, 3.0), label))
    assert not d.accepted
    assert d.reason.startswith("label")
    assert repr(label) in d.reason


def test_width_is_checked_before_everything_else():
    [d] = judge(sub("s1", (float("nan"), "x"), 99))
    assert d.reason.startswith("wrong width")


def test_exact_duplicate_first_copy_wins():
    decisions = judge(
        sub("a-0", (1.0, 2.0, 3.0), 1, "a"),
        sub("b-0", (4.0, 5.0, 6.0), 2, "b"),
        sub("b-1", (1.0, 2.0, 3.0), 1, "b"),
        sub("c-0", (1.0, 2.0, 3.0), 1, "c"),
    )
    assert [d.accepted for d in decisions] == [True, True, False, False]
    assert decisions[2].reason == "exact duplicate of a-0"
    assert decisions[3].reason == "exact duplicate of a-0"
    assert decisions[0].content_hash == decisions[2].content_hash == decisions[3].content_hash
    assert decisions[0].content_hash != decisions[1].content_hash


def test_same_features_other_label_is_not_a_duplicate():
    decisions = judge(sub("a", (1.0, 2.0, 3.0), 1), sub("b", (1.0, 2.0, 3.0), 2))
    assert [d.accepted for d in decisions] == [True, True]
    assert decisions[0].content_hash != decisions[1].content_hash


def test_a_rejected_sample_does_not_block_a_later_copy_being_judged_on_its_own():
    # Invalid content is never "seen": its copies get their own (non-duplicate) reason.
    decisions = judge(sub("a", (1.0, 2.0, 9.0), 7), sub("b", (1.0, 2.0, 9.0), 7))
    assert [d.accepted for d in decisions] == [False, False]
    assert all(d.reason.startswith("label") for d in decisions)


def test_one_decision_per_submission_in_order():
    subs = [sub(f"s{i}", (float(i), 0.0, 0.0), i % 3) for i in range(20)]
    decisions = validate(iter(subs), SCHEMA)
    assert [d.sample_id for d in decisions] == [s.sample_id for s in subs]
    assert all(d.accepted for d in decisions)
    assert len({d.content_hash for d in decisions}) == 20


# ---------------------------------------------------------------------------
# dataset_version.


def _samples(n: int = 12) -> list[Submission]:
    return [sub(f"s{i:02d}", (float(i), float(i * i), -float(i)), i % 3, f"c{i % 4}") for i in range(n)]


def test_version_format():
    version = dataset_version(validate(_samples(), SCHEMA))
    assert version.startswith("dv-")
    assert len(version) == 3 + 64
    int(version[3:], 16)


def test_version_is_order_independent():
    samples = _samples()
    base = dataset_version(validate(samples, SCHEMA))
    rng = random.Random(0)
    for _ in range(5):
        shuffled = samples[:]
        rng.shuffle(shuffled)
        assert dataset_version(validate(shuffled, SCHEMA)) == base
    decisions = validate(samples, SCHEMA)
    assert dataset_version(list(reversed(decisions))) == base


def test_version_ignores_ids_and_contributors():
    samples = _samples()
    renamed = [Submission("x" + s.sample_id, "other", s.features, s.label) for s in samples]
    assert dataset_version(validate(samples, SCHEMA)) == dataset_version(validate(renamed, SCHEMA))


@pytest.mark.parametrize("index", [0, 5, 11])
def test_version_changes_when_one_accepted_sample_changes(index):
    samples = _samples()
    base = dataset_version(validate(samples, SCHEMA))
    changed = samples[:]
    s = changed[index]
    changed[index] = Submission(s.sample_id, s.contributor, (s.features[0] + 0.5, *s.features[1:]), s.label)
    assert dataset_version(validate(changed, SCHEMA)) != base
    relabelled = samples[:]
    relabelled[index] = Submission(s.sample_id, s.contributor, s.features, (s.label + 1) % 3)
    assert dataset_version(validate(relabelled, SCHEMA)) != base


def test_version_changes_when_an_accepted_sample_is_dropped():
    samples = _samples()
    assert dataset_version(validate(samples, SCHEMA)) != dataset_version(validate(samples[:-1], SCHEMA))


def test_rejected_samples_do_not_change_the_version():
    samples = _samples()
    base = dataset_version(validate(samples, SCHEMA))
    junk = [
        sub("bad-width", (1.0,), 0),
        sub("bad-text", ("x", 1.0, 2.0), 0),
        sub("bad-nan", (float("nan"), 1.0, 2.0), 0),
        sub("bad-label", (1.0, 1.0, 2.0), 5),
        Submission("dup", "c9", samples[3].features, samples[3].label),
    ]
    with_junk = samples[:2] + junk[:3] + samples[2:] + junk[3:]
    decisions = validate(with_junk, SCHEMA)
    assert sum(not d.accepted for d in decisions) == len(junk)
    assert dataset_version(decisions) == base


def test_version_is_the_hash_of_the_sorted_accepted_hashes():
    decisions = validate(_samples(), SCHEMA)
    hashes = sorted(d.content_hash for d in decisions)
    expected = "dv-" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    assert dataset_version(decisions) == expected


def test_content_hash_is_sha256_of_compact_json_with_numbers_as_floats():
    [d] = judge(sub("s1", (1.0, 2, -3.5), 1))
    assert d.content_hash == hashlib.sha256(b"[[1.0,2.0,-3.5],1]").hexdigest()


def test_changing_number_types_does_not_dodge_the_duplicate_check():
    first, as_ints, negative_zero = judge(sub("s1", (1.0, 0.0, 2.0), 1), sub("s2", (1, 0, 2), 1), sub("s3", (1.0, -0.0, 2.0), 1))
    assert first.accepted
    assert (as_ints.accepted, negative_zero.accepted) == (False, False)
    assert as_ints.reason == negative_zero.reason == "exact duplicate of s1"
