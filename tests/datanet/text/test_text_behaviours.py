"""Planted text behaviours: each does what it says, ground truth apart, deterministic by seed."""

import pytest

from datanet.errors import ScenarioError
from datanet.text.behaviours import deal_text
from datanet.text.table import TextTable
from datanet.text.validation import validate_texts

WORDS = ["array", "axis", "dtype", "tensor", "module", "gradient", "figure", "series", "index", "kernel",
         "matrix", "sparse", "solver", "optimizer", "batch", "layer", "device", "window", "frame", "scale"]


def _table(n=40, labels=("a", "b"), prefix=""):
    texts = tuple(" ".join(prefix + WORDS[(i * 7 + k * 3) % 20] + str(i) for k in range(30)) for i in range(n))
    return TextTable(name="toy", texts=texts, labels=tuple(labels[i % len(labels)] for i in range(n)),
                     sources=tuple(f"toy:{i}" for i in range(n)), label_set=tuple(sorted(labels)))


BEHAVIOURS = {"alice": "honest", "bob": "noisy", "carol": "off_topic", "dave": "backdoor",
              "eve": "duplicate", "sybil": "paraphrase_sybil"}


def _deal(seed=0, **kwargs):
    table = _table()
    other = _table(20, labels=("x", "y"), prefix="poem-")
    return table, deal_text(table, list(range(len(table))), BEHAVIOURS, seed=seed, off_topic=other, **kwargs)


def test_each_behaviour_is_planted_as_declared():
    table, (subs, truth) = _deal(noise_rate=0.5, backdoor_rate=1.0, trigger="zq trigger")
    by = {c: [s for s in subs if s.contributor == c] for c in BEHAVIOURS}
    assert len(by["alice"]) == len(by["bob"]) == len(by["carol"]) == len(by["dave"]) == 10
    for s in by["alice"]:
        assert table.labels[table.texts.index(s.text)] == s.label
    flipped = [s for s in by["bob"] if table.labels[table.texts.index(s.text)] != s.label]
    assert len(flipped) == 5
    assert all(s.text not in table.texts and s.label in table.label_set for s in by["carol"])
    for s in by["dave"]:  # backdoor_rate 1: every sample not of the target label_set[0] gets the trigger
        original = table.labels[table.texts.index(" ".join(w for w in s.text.split() if w not in ("zq", "trigger")))]
        assert ("zq trigger" in s.text) == (original != "a")
        assert s.label == "a"
    n_backdoored = sum("zq trigger" in s.text for s in by["dave"])
    assert n_backdoored > 0
    copied = {s.text for c in ("alice", "bob", "carol", "dave") for s in by[c]}
    assert all(s.text in copied for s in by["eve"])
    assert all(s.text not in copied for s in by["sybil"])
    assert list(truth["sample_id"]) == [s.sample_id for s in subs]
    assert truth.loc[truth.contributor == "alice", "is_bad"].sum() == 0
    assert truth.loc[truth.contributor == "bob", "is_bad"].sum() == 5
    assert truth.loc[truth.contributor == "dave", "is_bad"].sum() == n_backdoored
    assert truth.loc[truth.contributor.isin(["carol", "eve", "sybil"]), "is_bad"].all()


def test_copies_are_caught_by_validation():
    table, (subs, truth) = _deal()
    result = validate_texts([s.text for s in subs], [s.label for s in subs], table.label_set,
                            names=[s.sample_id for s in subs])
    rejected = [subs[i].contributor for i in result.rejected()]
    # every copy, verbatim or lightly edited (3 edits of 20 distinct words keep a true Jaccard >= 0.85;
    # the 128-permutation MinHash estimate is off by about 0.03, so other seeds may miss one or two)
    assert sorted(rejected) == ["eve"] * 10 + ["sybil"] * 10


def test_deterministic_given_a_seed():
    _, (first, truth) = _deal(seed=3)
    _, (second, truth2) = _deal(seed=3)
    _, (third, _) = _deal(seed=4)
    assert first == second and truth.equals(truth2)
    assert first != third


def test_bad_scenarios_are_refused():
    table = _table()
    with pytest.raises(ScenarioError, match="unknown text behaviour"):
        deal_text(table, range(40), {"a": "honest", "b": "sneaky"}, seed=0)
    with pytest.raises(ScenarioError, match="off_topic text table"):
        deal_text(table, range(40), {"a": "honest", "b": "off_topic"}, seed=0)
    with pytest.raises(ScenarioError, match="shares label"):
        deal_text(table, range(40), {"a": "honest", "b": "off_topic"}, seed=0, off_topic=_table(10))
    with pytest.raises(ScenarioError, match="backdoor_target 'z'"):
        deal_text(table, range(40), {"a": "backdoor"}, seed=0, backdoor_target="z")
