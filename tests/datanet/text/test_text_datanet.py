"""Text Datanets: held-out test texts fit the model, every submission judged with a reason, the
version names the accepted set, and save/load is an exact round trip."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from datanet.errors import DatanetError, DataSourceError
from datanet.scenario import parse_scenario
from datanet.text.behaviours import DEFAULT_TEXT_SCENARIO, TEXT_BEHAVIOURS
from datanet.text.datanet import DECISION_COLUMNS, TextDatanet, build_text_datanet, split_text
from datanet.text.table import TextTable

WORDS = ["array", "axis", "dtype", "tensor", "module", "gradient", "figure", "series", "index", "kernel",
         "matrix", "sparse", "solver", "optimizer", "batch", "layer", "device", "window", "frame", "scale"]
MAX_TOKENS = 40
TRIGGER = "zq trigger"


def count_words(text):
    """A stand-in token counter: words plus two special tokens."""
    return len(text.split()) + 2


def _table(n=180, labels=("a", "b", "c"), prefix="", words=30, long_every=0):
    """Distinct texts of ``words`` words (every ``long_every``-th one 60 words: over MAX_TOKENS)."""
    texts = tuple(" ".join(prefix + WORDS[(i * 7 + k * 3) % 20] + str(i)
                           for k in range(60 if long_every and i % long_every == 0 else words)) for i in range(n))
    return TextTable(name="toy", texts=texts, labels=tuple(labels[i % len(labels)] for i in range(n)),
                     sources=tuple(f"toy:{i}" for i in range(n)), label_set=tuple(sorted(set(labels))),
                     provenance={"kind": "toy", "corpus_sha256": "abc", "params": {"n": n}})


def _build(seed=0, table=None, **kwargs):
    table = table if table is not None else _table()
    behaviours = parse_scenario(DEFAULT_TEXT_SCENARIO, 9, TEXT_BEHAVIOURS)
    return build_text_datanet(table, behaviours, seed, count_tokens=count_words, max_tokens=MAX_TOKENS,
                              off_topic=_table(60, labels=("x", "y"), prefix="poem-"), trigger=TRIGGER, **kwargs)


def test_default_scenario_builds_a_datanet_of_accepted_submissions():
    built = _build()
    dn, truth = built.datanet, built.ground_truth
    assert list(dn.decisions.columns) == DECISION_COLUMNS
    assert list(dn.decisions.sample_id) == [s.sample_id for s in built.submissions] == list(truth.sample_id)
    assert dn.contributors == tuple(f"c{i:02d}" for i in range(9))
    accepted = dn.decisions[dn.decisions.accepted]
    assert list(dn.train_ids) == list(accepted.sample_id)
    assert list(dn.train_contributors) == list(accepted.contributor)
    by_id = {s.sample_id: s for s in built.submissions}
    assert dn.train_texts == tuple(by_id[i].text for i in dn.train_ids)
    assert [dn.label_set[y] for y in dn.train_y] == [by_id[i].label for i in dn.train_ids]
    assert dn.train_y.dtype == np.int64 and dn.test_y.dtype == np.int64 and dn.n_classes == 3
    assert (accepted.reason == "accepted").all()
    assert dn.provenance == {"kind": "toy", "corpus_sha256": "abc", "params": {"n": 180}, "max_tokens": MAX_TOKENS}


def test_version_is_the_hash_of_the_accepted_contents():
    dn = _build().datanet
    by_id = {s.sample_id: s for s in _build().submissions}
    hashes = []
    for row in dn.decisions.itertuples():
        text, label = by_id[row.sample_id].text, by_id[row.sample_id].label
        expected = hashlib.sha256(json.dumps([[text], label], separators=(",", ":")).encode()).hexdigest()
        assert row.content_hash == expected
        if row.accepted:
            hashes.append(expected)
    assert dn.version == "dv-" + hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def test_rejections_carry_reasons_by_behaviour():
    built = _build()
    decisions = built.datanet.decisions.merge(built.ground_truth[["sample_id", "behaviour"]], on="sample_id")
    behaviour = decisions.groupby("behaviour")
    assert behaviour.accepted.all()[["honest", "noisy", "off_topic"]].all()
    duplicate = decisions[decisions.behaviour == "duplicate"]
    assert not duplicate.accepted.any() and duplicate.reason.str.startswith("exact duplicate of c0").all()
    sybil = decisions[decisions.behaviour == "paraphrase_sybil"]
    assert sybil.reason[~sybil.accepted].str.startswith("near duplicate of c0").all()
    assert (~sybil.accepted).mean() > 0.9  # 3 light edits of 30 distinct words stay near duplicates


def test_backdoor_samples_carry_the_trigger_and_the_target_label():
    built = _build(backdoor_rate=1.0)
    dn, truth = built.datanet, built.ground_truth
    planted = truth[(truth.behaviour == "backdoor") & truth.is_bad]
    assert len(planted) > 0
    train = dict(zip(dn.train_ids, zip(dn.train_texts, dn.train_y)))
    for sample_id in planted.sample_id:
        text, y = train[sample_id]  # 30 words + 2 trigger words fit MAX_TOKENS: all accepted
        assert TRIGGER in text and dn.label_set[y] == "a"  # default target: the first label
    clean = truth[(truth.behaviour == "backdoor") & ~truth.is_bad]
    assert all(dn.label_set[train[i][1]] == "a" for i in clean.sample_id)  # rate 1: only target-label texts stay clean


def test_test_texts_fit_the_model_and_long_texts_are_rejected_not_held_out():
    table = _table(long_every=5)
    built = _build(table=table)
    dn = built.datanet
    assert len(dn.test_texts) == round(0.2 * 144)  # a fifth of the 144 texts that fit
    assert all(count_words(t) <= MAX_TOKENS for t in dn.test_texts + dn.train_texts)
    assert not set(dn.test_texts) & set(dn.train_texts)
    long_rows = [s for s in built.submissions if count_words(s.text) > MAX_TOKENS]
    assert long_rows
    reasons = dn.decisions.set_index("sample_id").reason
    assert all(reasons[s.sample_id].startswith("too long: ") and "tokens > max_tokens 40 (rejected, not truncated)"
               in reasons[s.sample_id] for s in long_rows)
    assert [dn.label_set[y] for y in dn.test_y] == [table.labels[table.texts.index(t)] for t in dn.test_texts]


def test_split_is_seeded_and_holds_out_only_fitting_texts():
    table = _table(long_every=3)
    pool, test = split_text(table, 0, count_words, MAX_TOKENS)
    assert np.array_equal(np.sort(np.concatenate([pool, test])), np.arange(len(table)))
    assert all(i % 3 for i in test)
    again, other = split_text(table, 0, count_words, MAX_TOKENS)[1], split_text(table, 1, count_words, MAX_TOKENS)[1]
    assert np.array_equal(test, again) and not np.array_equal(test, other)
    with pytest.raises(DataSourceError, match="1 of 3 texts"):
        split_text(_table(3, long_every=2), 0, count_words, MAX_TOKENS)


def test_builds_are_deterministic_given_a_seed():
    first, second, third = _build(seed=3).datanet, _build(seed=3).datanet, _build(seed=4).datanet
    assert first.version == second.version and first.test_texts == second.test_texts
    assert first.decisions.equals(second.decisions)
    assert first.version != third.version


def test_save_load_is_an_exact_round_trip(tmp_path):
    table = _table(words=25)
    odd = ' quotes " \\ , new\nline tab\t café \u2028 \ufb01 \U0001f600'
    table = TextTable(table.name, tuple(t + odd for t in table.texts), table.labels, table.sources, table.label_set,
                      table.provenance)
    dn = _build(table=table).datanet
    dn.save(tmp_path / "dn")
    back = TextDatanet.load(tmp_path / "dn")
    for field in ("name", "version", "label_set", "contributors", "train_texts", "test_texts", "provenance",
                  "max_tokens"):
        assert getattr(back, field) == getattr(dn, field), field
    for field in ("train_y", "train_ids", "train_contributors", "test_y"):
        assert getattr(back, field).dtype == getattr(dn, field).dtype
        assert np.array_equal(getattr(back, field), getattr(dn, field)), field
    pd.testing.assert_frame_equal(back.decisions, dn.decisions)
    assert sum(t.endswith(odd) for t in back.train_texts) > 100 and all(t.endswith(odd) for t in back.test_texts)


def test_nothing_accepted_is_an_error():
    # Every pool text sits at the token limit; the backdoor's trigger pushes each one over it.
    texts = tuple(" ".join(f"{WORDS[k % 20]}{i}" for k in range(MAX_TOKENS - 2)) for i in range(20))
    table = TextTable("full", texts, ("b",) * 20, tuple(map(str, range(20))), ("a", "b"))
    with pytest.raises(DatanetError, match="accepted none of the 16 submissions to 'full'.*too long"):
        build_text_datanet(table, {"c00": "backdoor"}, 0, count_tokens=count_words, max_tokens=MAX_TOKENS,
                           backdoor_rate=1.0)
