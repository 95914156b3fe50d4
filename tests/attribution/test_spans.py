"""Tests for span attribution: the span engines (the vectorized search, infini-gram's engine and the
reference matcher) against each other and a brute-force matcher, document lookup, refusals, and
the span credit rule on hand-computed examples."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution import (
    ReferenceSpanMatcher,
    Span,
    SpanAttributor,
    SpanIndex,
    SpanTask,
    build_span_index,
    content_clusters,
    contributor_credit,
    reference_spans,
    span_credit,
    unigram_logprobs,
)
from attribution.base import AttributionError
from attribution.span_search import pointer_bytes
from attribution.spans import ENGINES

def examples(n: int) -> settings:
    """Few examples: each builds an index in a subprocess (about 0.2 s)."""
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def brute_force_spans(documents: list[list[int]], query: list[int], min_len: int, max_count: int) -> list[Span]:
    """The span rule read literally: every start, every length, every document position."""
    def occurrences(needle: list[int]) -> list[tuple[int, int]]:
        return [(d, o) for d, doc in enumerate(documents) for o in range(len(doc) - len(needle) + 1)
                if doc[o:o + len(needle)] == needle]

    kept, last_end = [], 0
    for start in range(len(query)):
        length = max((n for n in range(1, len(query) - start + 1) if occurrences(query[start:start + n])), default=0)
        found = occurrences(query[start:start + length])
        if length >= min_len and len(found) <= max_count and start + length > last_end:
            kept.append(Span(start, start + length, len(found), tuple(d for d, _ in found), tuple(o for _, o in found)))
            last_end = start + length
    return kept


def corpus(tokens: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[list[list[int]], list[list[int]]]]:
    """(documents, queries); queries mix copied document slices and fresh tokens, so spans occur."""
    documents = st.lists(st.lists(tokens, max_size=12), min_size=1, max_size=5)
    return documents.flatmap(lambda docs: st.tuples(st.just(docs), st.lists(
        st.lists(st.one_of(tokens, st.sampled_from([t for d in docs for t in d] or [0])), max_size=14)
        .map(lambda q: q + [t for d in docs[:1] for t in d[2:8]]),
        min_size=1, max_size=4)))


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> SpanIndex:
    """The documents ``[[1, 2, 3]]`` over a vocabulary of 5."""
    return build_span_index([[1, 2, 3]], tmp_path_factory.mktemp("small") / "index", vocab_size=5)


@pytest.fixture
def index_dir(tmp_path_factory: pytest.TempPathFactory):
    """A fresh not-yet-existing index path per call (hypothesis reuses the function's fixture)."""
    parent = tmp_path_factory.mktemp("spans")
    return lambda: parent / f"index{len(list(parent.iterdir()))}"


@examples(12)
@given(data=corpus(st.integers(0, 2)), min_len=st.integers(2, 4), max_count=st.integers(1, 6))
def test_engines_match_reference_and_brute_force(index_dir, data, min_len, max_count):
    documents, queries = data
    index = build_span_index(documents, index_dir(), vocab_size=3)
    matcher = ReferenceSpanMatcher(documents, vocab_size=3)
    engines = [SpanIndex.open(index.directory, engine) for engine in ENGINES]
    expected = [brute_force_spans(documents, query, min_len, max_count) for query in queries]
    assert [matcher.spans(query, min_len, max_count) for query in queries] == expected
    for engine in engines:
        assert [engine.spans(query, min_len, max_count) for query in queries] == expected, engine.engine
        assert engine.spans_batch([[]] + queries, min_len, max_count) == [[]] + expected, engine.engine


@examples(6)
@given(data=corpus(st.sampled_from([0, 1, 255, 256, 257, 511, 512, 65534])))
def test_engines_match_reference_when_tokens_differ_in_the_high_byte(index_dir, data):
    # the suffix array orders little-endian bytes, the reference compares token ids
    documents, queries = data
    index = build_span_index(documents, index_dir(), vocab_size=65535)
    expected = [reference_spans(documents, query, 2, 10) for query in queries]
    for engine in ("vectorized", "infini_gram"):
        assert SpanIndex.open(index.directory, engine).spans_batch(queries, 2, 10) == expected


def test_the_vectorized_search_matches_reference_on_a_repetitive_corpus(tmp_path, monkeypatch):
    # few distinct tokens (differing in either byte) give long matches, runs of thousands of
    # suffixes, and counts on both sides of max_count; small SAMPLE and WINDOW exercise the
    # sampled bounds and the comparisons that need several windows
    rng = np.random.default_rng(3)
    alphabet = np.array([0, 1, 255, 256, 257, 512])
    documents = [alphabet[rng.integers(0, 6, size=rng.integers(0, 90))].tolist() for _ in range(60)]
    documents[10] = documents[4] * 3 + documents[9][:20]  # long repeats
    built = build_span_index(documents, tmp_path / "index", vocab_size=600)
    matcher = ReferenceSpanMatcher(documents, vocab_size=600)
    queries = [documents[4][5:60] + documents[10][:40] + [599, 3] + documents[59], [1, 1, 0, 256] * 6, [599] * 5, []]
    queries += [alphabet[rng.integers(0, 6, size=40)].tolist() for _ in range(3)]
    limits = [(2, 10_000), (3, 5), (8, 1), (8, 40), (12, 3)]
    expected = {(m, c): [matcher.spans(q, m, c) for q in queries] for m, c in limits}
    assert any(len(s) > 1 and s[0].count > 1 for found in expected.values() for s in found)
    for sample, window in [(1, 1), (2, 3), (5, 2), (32, 16)]:
        monkeypatch.setattr("attribution.span_search.SAMPLE", sample)
        monkeypatch.setattr("attribution.span_search.WINDOW", window)
        index = SpanIndex.open(built.directory, "vectorized")
        for (m, c), spans in expected.items():
            assert [index.spans(q, m, c) for q in queries] == spans, (sample, window, m, c)
            assert index.spans_batch(queries, m, c) == spans, (sample, window, m, c)


def test_pointers_of_three_bytes_are_read(tmp_path):
    # over 32,768 tokens, tokenized.0 exceeds 64 KiB and infini-gram's pointers take 3 bytes
    rng = np.random.default_rng(4)
    documents = [rng.integers(0, 300, size=200).tolist() for _ in range(170)]
    index = build_span_index(documents, tmp_path / "index", vocab_size=300)
    n = (tmp_path / "index" / "tokenized.0").stat().st_size // 2
    assert pointer_bytes(n) == 3 == (tmp_path / "index" / "table.0").stat().st_size // n
    queries = [documents[d][s:s + 30] + rng.integers(0, 300, size=10).tolist() for d, s in [(0, 0), (99, 170), (169, 5)]]
    expected = [reference_spans(documents, query, 3, 5) for query in queries]
    assert all(expected) and index.spans_batch(queries, 3, 5) == expected


def test_spans_stop_at_document_boundaries_and_skip_absent_tokens(tmp_path):
    index = build_span_index([[1, 2, 3], [4, 5, 6], [6, 7], [7, 1, 2]], tmp_path / "index", vocab_size=10)
    for engine in ENGINES:
        index = SpanIndex.open(index.directory, engine)
        # [1, 2, 3] ends document 0 and [4, 5, 6] is document 1: two spans, never one across the boundary
        assert index.spans([1, 2, 3, 4, 5, 6], 2, 5) == [Span(0, 3, 1, (0,), (0,)), Span(3, 6, 1, (1,), (0,))]
        # the last document's end (before the sentinel), and ids no document holds
        assert index.spans([9, 7, 1, 2, 9, 8, 0, 0], 2, 5) == [Span(1, 4, 1, (3,), (0,))]
        assert index.spans([9, 8, 0, 9], 2, 5) == [] and index.spans([], 2, 5) == []
        assert index.spans_batch([[], [6, 7, 9], []], 2, 5) == [[], [Span(0, 2, 1, (2,), (0,))], []]
        assert index.spans_batch([], 2, 5) == []


@pytest.mark.parametrize("max_count, expected", [
    (40, [Span(0, 4, 40, tuple(range(40)), (1,) * 40)]),
    (39, []),  # and every shorter suffix of [5, 6, 7, 8] occurs as often
])
def test_a_span_occurring_exactly_max_count_times_is_kept(tmp_path, max_count, expected):
    documents = [[9, 5, 6, 7, 8]] * 40 + [[5, 6, 7]]
    index = build_span_index(documents, tmp_path / "index", vocab_size=10)
    for engine in ENGINES:
        assert SpanIndex.open(index.directory, engine).spans([5, 6, 7, 8], 2, max_count) == expected
    # its first three tokens occur 41 times
    assert index.spans([5, 6, 7, 1], 2, 41) == [Span(0, 3, 41, tuple(range(41)), (1,) * 40 + (0,))]
    assert index.spans([5, 6, 7, 1], 2, 40) == []


def test_query_sorting_before_every_suffix_still_matches(tmp_path):
    # [1, 1, 2] sorts before [1, 1, 5], the smallest suffix of the documents; the engine alone finds nothing
    index = build_span_index([[1, 1, 5]], tmp_path / "index", vocab_size=8)
    assert index.spans([1, 1, 2], 2, 10) == [Span(0, 2, 1, (0,), (0,))]


def test_occurrences_locate_the_span_and_documents_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 50, size=40).tolist() for _ in range(29)] + [[]]
    documents[7] = documents[3][5:25] + documents[12][:10]  # copies give multi-document spans
    index = build_span_index(documents, tmp_path / "index", vocab_size=50)
    assert [d.tolist() for d in index.documents()] == documents
    assert (index.n_docs, index.n_tokens, index.vocab_size) == (30, sum(map(len, documents)), 50)
    query = documents[3][5:25] + rng.integers(0, 50, size=10).tolist() + documents[20][2:14]
    spans = index.spans(query, 4, 100)
    assert {(s.start, s.end) for s in spans} >= {(0, 20), (30, 42)}
    for span in spans:
        assert len(span.documents) == len(span.offsets) == span.count
        assert list(zip(span.documents, span.offsets)) == sorted(zip(span.documents, span.offsets))
        for d, o in zip(span.documents, span.offsets):
            assert documents[d][o:o + span.length] == query[span.start:span.end]
    reopened = SpanIndex.open(tmp_path / "index")
    assert reopened.spans(query, 4, 100) == spans


def test_max_count_drops_frequent_spans_and_kept_spans_extend_the_coverage(tmp_path):
    documents = [[1, 2, 3, 4], [1, 2, 3, 9], [2, 3, 4, 5, 6]]
    index = build_span_index(documents, tmp_path / "index", vocab_size=10)
    # start 0: [1, 2, 3, 4] in document 0; start 1: [2, 3, 4, 5, 6] in document 2; later starts end inside
    assert index.spans([1, 2, 3, 4, 5, 6], 2, 5) == [Span(0, 4, 1, (0,), (0,)), Span(1, 6, 1, (2,), (0,))]
    # start 0: [1, 2, 3] twice; start 1: [2, 3] three times, inside [0, 3) unless [1, 2, 3] is dropped
    assert index.spans([1, 2, 3, 7], 2, 3) == [Span(0, 3, 2, (0, 1), (0, 0))]
    assert index.spans([1, 2, 3, 7], 2, 2) == [Span(0, 3, 2, (0, 1), (0, 0))]
    assert index.spans([1, 2, 3, 7], 2, 1) == []  # too frequent spans are dropped, not shortened
    assert index.spans([9, 2, 3, 7], 2, 3) == [Span(1, 3, 3, (0, 1, 2), (1, 1, 0))]
    assert index.spans([1, 2, 3, 7], 3, 3) == [Span(0, 3, 2, (0, 1), (0, 0))]
    assert index.spans([1, 2, 3, 7], 4, 3) == []
    assert index.spans([7, 8, 9], 2, 5) == [] and index.spans([], 2, 5) == []


@pytest.mark.parametrize("documents, vocab_size, message", [
    ([[1, 2]], 65536, "vocab_size"),
    ([[1, 2]], 0, "vocab_size"),
    ([[1, 2], [3, 65535]], 65535, "document 1: token id 65535 at position 1"),
    ([[1, 2], [3, 10]], 10, "document 1: token id 10 at position 1"),
    ([[1, -1]], 10, "document 0: token id -1"),
    ([[1.5]], 10, "integer token ids"),
    ([], 10, "documents is empty"),
])
def test_bad_documents_are_refused_and_nothing_is_written(tmp_path, documents, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        build_span_index(documents, tmp_path / "index", vocab_size=vocab_size)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_rebuilt(tmp_path):
    build_span_index([[1, 2, 3]], tmp_path / "index", vocab_size=5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()}
    with pytest.raises(FileExistsError, match="already exists"):
        build_span_index([[4, 4, 4]], tmp_path / "index", vocab_size=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        build_span_index([[4, 4, 4]], tmp_path / "empty", vocab_size=5)
    assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "index"]


def test_an_index_works_under_a_path_holding_the_engines_file_words(tmp_path):
    # the engine sorts its files by these words, matched against the whole path
    documents, query = [[1, 2, 3, 4], [2, 3, 4, 5], [6, 7]], [9, 2, 3, 4, 5, 6, 7]
    expected = reference_spans(documents, query, 2, 10)
    assert len(expected) == 2
    built = tmp_path / "stable" / "portable-runs"
    built.mkdir(parents=True)
    assert build_span_index(documents, built / "index", vocab_size=10).spans(query, 2, 10) == expected
    copied = tmp_path / "tokenized offset metadata metaoff unigram" / "table"
    shutil.copytree(built / "index", copied)
    for engine in ENGINES:
        assert SpanIndex.open(copied, engine).spans(query, 2, 10) == expected


def test_the_reference_engine_needs_no_suffix_array(tmp_path):
    documents, query = [[1, 2, 3, 4], [2, 3, 4, 5]], [1, 2, 3, 4, 5]
    index = build_span_index(documents, tmp_path / "index", vocab_size=10, engine="reference")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["datanet-span-index.json", "offset.0",
                                                                      "tokenized.0"]
    assert index.engine == "reference"
    assert index.spans(query, 2, 10) == [Span(0, 4, 1, (0,), (0,)), Span(1, 5, 1, (1,), (0,))]
    assert [d.tolist() for d in index.documents()] == documents
    for engine in ("vectorized", "infini_gram"):
        with pytest.raises(FileNotFoundError, match="table.0 is missing .*built for the reference engine"):
            SpanIndex.open(tmp_path / "index", engine)
    with pytest.raises(ValueError, match=r"span engine must be one of \['vectorized', 'infini_gram', 'reference'\], "
                                         r"got 'suffix'"):
        SpanIndex.open(tmp_path / "index", "suffix")
    with pytest.raises(ValueError, match="span engine must be one of"):
        build_span_index(documents, tmp_path / "other", vocab_size=10, engine="suffix")
    assert not (tmp_path / "other").exists()


def test_import_attribution_does_not_load_infini_gram():
    probe = "import sys, attribution, attribution.spans; print('infini_gram' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_reference_and_vectorized_engines_run_without_the_infini_gram_package(tmp_path):
    built = build_span_index([[1, 2, 3, 4]], tmp_path / "built", vocab_size=10)  # infini-gram's indexer
    probe = ("import sys; sys.modules['infini_gram'] = None  # importing it now fails\n"
             "from attribution.spans import SpanIndex, build_span_index\n"
             f"index = build_span_index([[1, 2, 3, 4]], {str(tmp_path / 'index')!r}, 10, engine='reference')\n"
             "print(index.spans([0, 2, 3, 4], 2, 5))\n"
             f"print(SpanIndex.open({str(built.directory)!r}, 'vectorized').spans([0, 2, 3, 4], 2, 5))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == [repr([Span(1, 4, 1, (0,), (1,))])] * 2


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("attribution.span_index.sys.executable", "/bin/false")
    with pytest.raises(AttributionError, match="span index build failed"):
        build_span_index([[1, 2, 3]], tmp_path / "index", vocab_size=5)
    assert list(tmp_path.iterdir()) == []


def test_open_checks_the_corpus(tmp_path):
    index = build_span_index([[1, 2, 3], [3, 2, 1]], tmp_path / "index", vocab_size=5)
    with pytest.raises(IndexError, match="document 2"):
        index.document(2)
    corpus_file = tmp_path / "index" / "tokenized.0"
    data = bytearray(corpus_file.read_bytes())
    data[2] = 4  # document 0's first token: 1 -> 4
    corpus_file.write_bytes(bytes(data))
    with pytest.raises(AttributionError, match="SHA-256"):
        SpanIndex.open(tmp_path / "index")
    (tmp_path / "index" / "datanet-span-index.json").write_text("{")
    with pytest.raises(AttributionError, match="datanet-span-index.json: not JSON"):
        SpanIndex.open(tmp_path / "index")
    (tmp_path / "index" / "table.0").unlink()
    with pytest.raises(FileNotFoundError, match="table.0"):
        SpanIndex.open(tmp_path / "index")


def test_a_table_that_is_not_the_suffix_array_is_refused(tmp_path):
    index = build_span_index([[1, 2, 3], [3, 2, 1]], tmp_path / "index", vocab_size=5)
    table = tmp_path / "index" / "table.0"
    entries = table.read_bytes()  # 10 tokens (3 separators, the sentinel 0): one byte each
    table.write_bytes(entries[::-1])
    with pytest.raises(AttributionError, match="its first suffix is not the sentinel document at token 9"):
        SpanIndex.open(index.directory).spans([1, 2], 2, 5)
    table.write_bytes(entries[:-1])
    with pytest.raises(AttributionError, match="table.0: 9 bytes, expected 10 suffix-array entries of 1 bytes"):
        SpanIndex.open(index.directory).spans([1, 2], 2, 5)


@pytest.mark.parametrize("query, min_len, max_count, message", [
    ([1, 5], 2, 3, "query: token id 5 at position 1"),
    ([1, 2], 1, 3, "min_len"),
    ([1, 2], 2, 0, "max_count"),
])
def test_bad_queries_are_refused(small_index, query, min_len, max_count, message):
    engines = [SpanIndex.open(small_index.directory, engine) for engine in ENGINES]
    for matcher in engines + [ReferenceSpanMatcher([[1, 2, 3]], vocab_size=5)]:
        with pytest.raises(ValueError, match=message):
            matcher.spans(query, min_len, max_count)
    for index in engines:  # a batch names the query
        with pytest.raises(ValueError, match=message.replace("query", "query 1")):
            index.spans_batch([[1, 2], query], min_len, max_count)


def test_unigram_logprobs_by_hand():
    # counts of ids 0..3 in 5 tokens: 2, 0, 1, 2; add-one over 5 + 4
    assert np.allclose(unigram_logprobs([[0, 3, 0], [2, 3]], 4), np.log([3 / 9, 1 / 9, 2 / 9, 3 / 9]))


def test_span_credit_by_hand():
    # documents: 0 alice (h1), 1 bob (h1, a later copy of 0), 2 carol (h2), 3 bob (h3), 4 alice (h4)
    contributors, order, hashes = ["alice", "bob", "carol", "bob", "alice"], [10, 20, 5, 30, 40], ["h1", "h1", "h2", "h3", "h4"]
    token_logprob = np.log([0.5, 0.25, 0.5, 0.125, 0.5])
    spans = [Span(0, 2, 3, (0, 1, 2), (0, 0, 4)),  # weight log 2 + log 4 = 3 log 2: alice (doc 0) and carol
             Span(1, 4, 1, (3,), (3,)),  # 2 + 1 + 3 = 6 log 2 to bob
             Span(3, 5, 3, (3, 4, 4), (0, 2, 7))]  # 3 + 1 = 4 log 2 split by bob and alice (doc 4 twice counts once)
    result = span_credit(spans, contributors, order, hashes, token_logprob)
    ln2 = math.log(2)
    assert result.credit.to_dict() == pytest.approx({"alice": 3.5 * ln2, "bob": 8 * ln2, "carol": 1.5 * ln2})
    rows = result.breakdown
    assert rows[["span", "contributor"]].values.tolist() == [[0, "alice"], [0, "carol"], [1, "bob"], [2, "bob"], [2, "alice"]]
    assert rows["documents"].tolist() == [(0,), (2,), (3,), (3,), (4,)]
    assert rows["weight"].tolist() == pytest.approx([3 * ln2, 3 * ln2, 6 * ln2, 4 * ln2, 4 * ln2])


def test_copies_are_credited_to_the_earliest_and_credit_sums_to_the_weights(tmp_path):
    rng = np.random.default_rng(1)
    original = rng.integers(0, 40, size=30).tolist()
    documents = [rng.integers(0, 40, size=30).tolist(), original, original, rng.integers(0, 40, size=30).tolist()]
    contributors, order = ["ann", "copier", "author", "dan"], [0, 5, 2, 1]  # the author submitted first
    hashes = [str(d) for d in documents]
    query = original[3:20] + documents[3][:12]
    spans = build_span_index(documents, tmp_path / "index", vocab_size=40).spans(query, 4, 10)
    logprob = unigram_logprobs(documents, 40)[query]
    result = span_credit(spans, contributors, order, hashes, logprob)
    assert result.credit["copier"] == 0 and result.credit["author"] > 0 and result.credit["dan"] > 0
    assert result.credit.sum() == pytest.approx(sum(-logprob[s.start:s.end].sum() for s in spans))
    assert (result.breakdown.groupby("contributor")["share"].sum().reindex(result.credit.index, fill_value=0)
            == result.credit).all()
    assert span_credit([], contributors, order, hashes, logprob).credit.tolist() == [0.0] * 4


@pytest.mark.parametrize("change, message", [
    ({"doc_order": [0, 0]}, "ranks repeat"),
    ({"doc_hashes": ["a"]}, "same documents"),
    ({"token_logprob": np.array([0.1, -1.0, -1.0])}, "token_logprob"),
    ({"token_logprob": np.array([-1.0])}, "outside the 1 tokens"),
    ({"spans": [Span(0, 2, 1, (2,), (0,))]}, r"documents in \[0, 2\)"),
])
def test_span_credit_refuses_bad_input(change, message):
    arguments = {"spans": [Span(0, 2, 1, (0,), (0,))], "doc_contributors": ["a", "b"], "doc_order": [0, 1],
                 "doc_hashes": ["x", "y"], "token_logprob": np.array([-1.0, -1.0, -1.0])} | change
    with pytest.raises(ValueError, match=message):
        span_credit(**arguments)


# documents 0 ann, 1 bob (a later verbatim copy of 0), 2 cat, 3 ann (a second document holding 2's tokens)
SPAN_DOCS = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [7, 8, 9, 4, 5, 6], [9, 4, 5, 6, 7, 8]]
SPAN_CONTRIBUTORS, SPAN_ORDER, SPAN_HASHES = ["ann", "bob", "cat", "ann"], np.array([3, 7, 1, 9]), ["h0", "h0", "h2", "h3"]
SPAN_QUERIES = [[1, 2, 3, 0, 9, 4, 5, 6], [7, 8, 9, 4], [0, 0, 0]]


def span_attributor(order=SPAN_ORDER) -> SpanAttributor:
    logprob = unigram_logprobs(SPAN_DOCS, 10)
    task = SpanTask(ReferenceSpanMatcher(SPAN_DOCS, vocab_size=10), logprob, 2, 10, SPAN_CONTRIBUTORS,
                    content_clusters(SPAN_HASHES), order)
    return SpanAttributor().fit(task)


def test_span_attributor_scores_equal_a_naive_per_document_computation():
    logprob = unigram_logprobs(SPAN_DOCS, 10)
    expected = np.zeros((len(SPAN_DOCS), len(SPAN_QUERIES)))
    for g, query in enumerate(SPAN_QUERIES):
        for span in reference_spans(SPAN_DOCS, query, 2, 10):
            weight = -logprob[query[span.start:span.end]].sum()
            # each holder counts as the earliest document of its hash
            credited = {min((d for d in range(4) if SPAN_HASHES[d] == SPAN_HASHES[h]), key=lambda d: SPAN_ORDER[d])
                        for h in span.documents}
            owners = {SPAN_CONTRIBUTORS[d] for d in credited}
            for d in range(4):  # a copy scores what its content's credited document earns
                source = [e for e in credited if SPAN_HASHES[e] == SPAN_HASHES[d]]
                if source:
                    siblings = [e for e in credited if SPAN_CONTRIBUTORS[e] == SPAN_CONTRIBUTORS[source[0]]]
                    expected[d, g] += weight / len(owners) / len(siblings)
    scores = span_attributor().scores(SPAN_QUERIES)
    assert scores.shape == (4, 3) and (scores[:, 0] > 0).all() and (scores[:, 2] == 0).all()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[0, 0] == scores[1, 0]  # a verbatim copy scores what its content earns


def test_the_roll_up_of_span_scores_is_span_credit():
    attributor = span_attributor()
    for query in SPAN_QUERIES:
        spans = attributor.spans(query)
        scores = attributor.scores([query])
        rolled = contributor_credit(scores, SPAN_CONTRIBUTORS, ["ann", "bob", "cat"], content_clusters(SPAN_HASHES), SPAN_ORDER)
        credit = span_credit(spans, SPAN_CONTRIBUTORS, SPAN_ORDER, SPAN_HASHES, unigram_logprobs(SPAN_DOCS, 10)[query]).credit
        # the per-span shares, summed by contributor: span credit as it was computed before the attributor
        by_span = credit.index.map(span_credit(spans, SPAN_CONTRIBUTORS, SPAN_ORDER, SPAN_HASHES,
                                               unigram_logprobs(SPAN_DOCS, 10)[query]).breakdown
                                   .groupby("contributor")["share"].sum()).fillna(0.0)
        assert rolled.tolist() == credit.tolist() == by_span.tolist()
    assert rolled.index.tolist() == ["ann", "bob", "cat"]


@pytest.mark.parametrize("order, earliest", [(SPAN_ORDER, "ann"), (np.array([7, 3, 1, 9]), "bob")])
def test_a_verbatim_copys_span_credit_goes_to_the_earliest_submission(order, earliest):
    scores = span_attributor(order).scores(SPAN_QUERIES[:1])
    credit = contributor_credit(scores, SPAN_CONTRIBUTORS, ["ann", "bob", "cat"], content_clusters(SPAN_HASHES), order)
    other = ({"ann", "bob"} - {earliest}).pop()
    copy_doc = 1 if earliest == "ann" else 0
    # the copier earns nothing; the earliest earns the shared content's score as well
    assert credit[other] == (scores[3, 0] if other == "ann" else 0.0)
    assert credit[earliest] == pytest.approx(scores[copy_doc, 0] + (scores[3, 0] if earliest == "ann" else 0.0))


def test_a_span_task_describing_different_documents_is_refused():
    task = SpanTask(ReferenceSpanMatcher(SPAN_DOCS, vocab_size=10), unigram_logprobs(SPAN_DOCS, 10), 2, 10,
                    SPAN_CONTRIBUTORS, content_clusters(SPAN_HASHES[:3]), SPAN_ORDER)
    with pytest.raises(ValueError, match="same documents, got 4, 3 and 4"):
        SpanAttributor().fit(task)
