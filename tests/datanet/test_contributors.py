"""Tests for datanet.contributors.deal: shares, planted behaviours, ground truth kept apart."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from datanet.contributors import GROUND_TRUTH_COLUMNS, Submission, deal
from datanet.data import Table
from datanet.errors import ScenarioError
from datanet.scenario import BEHAVIOURS

N_WINE = 178


def _wine_table(extra_invalid_row: bool = False) -> Table:
    """Wine as a Table; optionally one extra invalid row (huge values, foreign label) at the end."""
    bunch = sk_datasets.load_wine()
    features, labels = bunch.data.astype(np.float64), bunch.target.copy()
    if extra_invalid_row:
        features = np.vstack([features, np.full((1, features.shape[1]), 1e9)])
        labels = np.append(labels, 99)
    return Table("wine", features, labels, tuple(bunch.feature_names), (0, 1, 2))


BEHAVIOURS_MIX = {
    "c00": "honest",
    "c01": "noisy",
    "c02": "duplicate",
    "c03": "out_of_domain",
    "c04": "malformed",
    "c05": "honest",
}


@pytest.fixture(scope="module")
def table() -> Table:
    return _wine_table(extra_invalid_row=True)


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    # Every wine row but the last few (a held-out stand-in), never the invalid extra row.
    return np.arange(N_WINE - 8)


@pytest.fixture(scope="module")
def dealt(table, pool):
    return deal(table, pool, BEHAVIOURS_MIX, noise_rate=0.3, seed=5)


def _by(submissions, contributor):
    return [s for s in submissions if s.contributor == contributor]


def test_ground_truth_has_one_row_per_submission(dealt):
    submissions, truth = dealt
    assert list(truth.columns) == GROUND_TRUTH_COLUMNS
    assert len(truth) == len(submissions)
    assert truth["sample_id"].tolist() == [s.sample_id for s in submissions]
    assert truth["contributor"].tolist() == [s.contributor for s in submissions]
    assert truth["behaviour"].tolist() == [BEHAVIOURS_MIX[s.contributor] for s in submissions]
    assert len(set(truth["sample_id"])) == len(truth)
    assert set(truth["behaviour"]) <= set(BEHAVIOURS)
    # is_bad <=> a reason was given.
    assert (truth["is_bad"] == (truth["reason"] != "")).all()


def test_shares_are_disjoint_equal_ish_and_cover_the_pool(dealt, pool):
    _, truth = dealt
    originals = [c for c, b in BEHAVIOURS_MIX.items() if b != "duplicate"]
    shares = {c: truth.loc[truth["contributor"] == c, "source_row"].tolist() for c in originals}
    sizes = [len(rows) for rows in shares.values()]
    assert max(sizes) - min(sizes) <= 1
    everything = [r for rows in shares.values() for r in rows]
    assert len(everything) == len(set(everything)), "a pool row was dealt twice"
    assert sorted(everything) == sorted(pool.tolist())
    # The duplicate contributor has no rows of its own.
    assert (truth.loc[truth["contributor"] == "c02", "source_row"] == -1).all()


def test_sample_ids_are_contributor_and_counter(dealt):
    submissions, _ = dealt
    for contributor in BEHAVIOURS_MIX:
        ids = [s.sample_id for s in _by(submissions, contributor)]
        assert ids == [f"{contributor}-{k:05d}" for k in range(len(ids))]


def test_honest_submits_its_rows_unchanged(dealt, table):
    submissions, truth = dealt
    for contributor in ("c00", "c05"):
        rows = truth.loc[truth["contributor"] == contributor, "source_row"].tolist()
        subs = _by(submissions, contributor)
        assert len(subs) == len(rows) > 0
        for s, r in zip(subs, rows):
            assert s.features == tuple(float(v) for v in table.features[r])
            assert s.label == int(table.labels[r])
        assert not truth.loc[truth["contributor"] == contributor, "is_bad"].any()


@pytest.mark.parametrize("noise_rate", [0.0, 0.25, 0.3, 0.7, 1.0])
def test_noisy_flips_exactly_round_rate_times_n(table, pool, noise_rate):
    behaviours = {"c00": "honest", "c01": "noisy", "c02": "noisy"}
    submissions, truth = deal(table, pool, behaviours, noise_rate=noise_rate, seed=2)
    for contributor in ("c01", "c02"):
        subs = _by(submissions, contributor)
        rows = truth.loc[truth["contributor"] == contributor, "source_row"].tolist()
        marked = truth.loc[truth["contributor"] == contributor, "is_bad"].tolist()
        flipped = []
        for s, r, bad in zip(subs, rows, marked):
            assert s.features == tuple(float(v) for v in table.features[r]), "noisy must not touch features"
            original = int(table.labels[r])
            if s.label != original:
                flipped.append(True)
                assert s.label in table.label_set
            else:
                flipped.append(False)
            assert bad == flipped[-1]
        assert sum(flipped) == round(noise_rate * len(subs))


def test_noisy_reason_names_both_labels(dealt, table):
    submissions, truth = dealt
    noisy = truth[(truth["contributor"] == "c01") & truth["is_bad"]]
    assert len(noisy) > 0
    by_id = {s.sample_id: s for s in submissions}
    for _, row in noisy.iterrows():
        original = int(table.labels[row["source_row"]])
        new = by_id[row["sample_id"]].label
        assert row["reason"] == f"label flipped from {original!r} to {new!r}"


def test_duplicate_copies_one_original_exactly(dealt):
    submissions, truth = dealt
    copies = _by(submissions, "c02")
    assert copies
    contents = [(s.features, s.label) for s in copies]
    sources = [
        c for c, b in BEHAVIOURS_MIX.items()
        if b != "duplicate" and [(s.features, s.label) for s in _by(submissions, c)] == contents
    ]
    assert len(sources) == 1
    # Copies come after every original submission.
    first_copy = next(i for i, s in enumerate(submissions) if s.contributor == "c02")
    assert all(s.contributor == "c02" for s in submissions[first_copy:])
    originals = _by(submissions, sources[0])
    reasons = truth.loc[truth["contributor"] == "c02", "reason"].tolist()
    assert reasons == [f"copy of {o.sample_id} from {sources[0]}" for o in originals]
    assert truth.loc[truth["contributor"] == "c02", "is_bad"].all()


def test_every_duplicate_copies_someone(table, pool):
    behaviours = {"c00": "honest", "c01": "honest", "c02": "duplicate", "c03": "duplicate", "c04": "duplicate"}
    for seed in range(4):
        submissions, _ = deal(table, pool, behaviours, noise_rate=0.0, seed=seed)
        originals = {c: [(s.features, s.label) for s in _by(submissions, c)] for c in ("c00", "c01")}
        for dup in ("c02", "c03", "c04"):
            content = [(s.features, s.label) for s in _by(submissions, dup)]
            assert content in originals.values()


def test_out_of_domain_reflects_across_the_valid_range(dealt, table):
    submissions, truth = dealt
    # Range over the valid rows only, computed here from the raw table (the extra row is invalid).
    raw = np.asarray(table.features, dtype=np.float64)
    valid = np.isfinite(raw).all(axis=1) & np.isin(table.labels, table.label_set)
    assert not valid[-1] and valid[:-1].all()
    low, high = raw[valid].min(axis=0), raw[valid].max(axis=0)
    rows = truth.loc[truth["contributor"] == "c03", "source_row"].tolist()
    subs = _by(submissions, "c03")
    assert len(subs) == len(rows) > 0
    for s, r in zip(subs, rows):
        np.testing.assert_allclose(np.array(s.features), low + high - raw[r], rtol=0, atol=1e-9)
        assert s.label == int(table.labels[r])
    assert truth.loc[truth["contributor"] == "c03", "is_bad"].all()


def _broken(features: tuple, label, table: Table) -> bool:
    """Independent check that a row breaks the schema."""
    if len(features) != table.features.shape[1]:
        return True
    if label not in table.label_set:
        return True
    for v in features:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return True
        if not math.isfinite(v):
            return True
    return False


def test_malformed_rows_are_each_broken(dealt, table):
    submissions, truth = dealt
    subs = _by(submissions, "c04")
    assert len(subs) >= 4
    for s in subs:
        assert _broken(s.features, s.label, table), s
    assert truth.loc[truth["contributor"] == "c04", "is_bad"].all()
    # All four kinds of breakage occur.
    reasons = Counter(truth.loc[truth["contributor"] == "c04", "reason"])
    assert len(reasons) == 4


def test_honest_rows_are_not_broken(dealt, table):
    submissions, _ = dealt
    for s in _by(submissions, "c00"):
        assert not _broken(s.features, s.label, table)


def test_ground_truth_never_leaks_into_submissions(dealt):
    submissions, truth = dealt
    assert [f.name for f in dataclasses.fields(Submission)] == ["sample_id", "contributor", "features", "label"]
    words = set(BEHAVIOURS) | {"bad", "flip", "copy", "dup", "noisy", "malformed"}
    for s in submissions:
        assert isinstance(s, Submission)
        assert not any(w in s.sample_id for w in words)
        assert not any(w in s.contributor for w in words)
        assert s.contributor in BEHAVIOURS_MIX
    reasons = set(truth["reason"]) - {""}
    for s in submissions:
        for value in (*s.features, s.label):
            assert value not in reasons


def test_deal_is_deterministic_by_seed(table, pool):
    a_subs, a_truth = deal(table, pool, BEHAVIOURS_MIX, noise_rate=0.3, seed=9)
    b_subs, b_truth = deal(table, pool, BEHAVIOURS_MIX, noise_rate=0.3, seed=9)
    assert _same(a_subs, b_subs)
    assert a_truth.equals(b_truth)
    c_subs, c_truth = deal(table, pool, BEHAVIOURS_MIX, noise_rate=0.3, seed=10)
    assert not _same(a_subs, c_subs)
    assert not a_truth["source_row"].equals(c_truth["source_row"])


def _same(a: list[Submission], b: list[Submission]) -> bool:
    """Equality that treats NaN as equal to NaN (malformed rows hold NaN)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x.sample_id, x.contributor, x.label, len(x.features)) != (y.sample_id, y.contributor, y.label, len(y.features)):
            return False
        for u, v in zip(x.features, y.features):
            if u != v and not (isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v)):
                return False
    return True


@pytest.mark.parametrize("noise_rate", [-0.1, 1.5, float("nan")])
def test_bad_noise_rate(table, pool, noise_rate):
    with pytest.raises(ScenarioError, match="noise_rate"):
        deal(table, pool, {"c00": "honest"}, noise_rate=noise_rate, seed=0)


def test_pool_too_small_for_the_contributors(table):
    behaviours = {"c00": "honest", "c01": "honest", "c02": "honest", "c03": "duplicate"}
    with pytest.raises(ScenarioError, match="3 contributors"):
        deal(table, np.arange(2), behaviours, noise_rate=0.0, seed=0)
