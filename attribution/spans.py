"""Span attribution: credit generated text to the training documents that hold its spans verbatim.

A *generation* (``query``, token ids) is matched against a corpus of tokenized documents as the
infini-gram engine does it (the OLMoTrace rule): for every start ``l`` take the longest prefix of
``query[l:]`` that occurs in some document (a match never crosses a document boundary); keep it if
it is at least ``min_len`` tokens long and occurs at most ``max_count`` times in the corpus; then,
scanning ``l`` upwards, keep a span only if its end exceeds the end of every span kept before it
(a span inside an earlier one adds nothing).

:class:`SpanIndex` (:mod:`attribution.span_index`, re-exported here) answers this over an on-disk
index with one of three engines (:data:`ENGINES`), which find the same spans: ``vectorized`` (the
default, :mod:`attribution.span_search`) and ``infini_gram`` search the suffix array infini-gram's
indexer builds, with numpy or with infini-gram's engine; ``reference``, :class:`ReferenceSpanMatcher`
(and :func:`reference_spans`), answers it in memory with numpy and ``pydivsufsort``: the oracle of
the tests, the offline re-checker of span evidence, and the engine free of infini-gram's package.

:func:`span_credit` turns spans into contributor credit (floats, positive = the contributor's data
supplied the span): each span is worth its information content, shared among the contributors
holding it, a copy of an earlier submission earning nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydivsufsort import divsufsort

from attribution.base import Attributor
from attribution.rollup import content_clusters, contributor_credit, earliest_members
from attribution.span_index import (
    ENGINES,
    MAX_VOCAB,
    MIN_SPAN_LEN,
    Span,
    SpanIndex,
    build_span_index,
    check_span_limits,
    check_tokens,
    check_vocab_size,
)

__all__ = ["ENGINES", "MAX_VOCAB", "MIN_SPAN_LEN", "ReferenceSpanMatcher", "Span", "SpanAttributor", "SpanCredit",
           "SpanIndex", "SpanTask",
           "build_span_index", "reference_spans", "span_credit", "unigram_logprobs"]


def keep_spans(candidates: Sequence[Span]) -> list[Span]:
    """The engine's last filter: ``candidates`` (by increasing start) whose end exceeds the end of
    every span kept before them."""
    kept, last_end = [], 0
    for span in candidates:
        if span.end > last_end:
            kept.append(span)
            last_end = span.end
    return kept


class ReferenceSpanMatcher:
    """In-memory span matcher over ``documents``, with exactly :class:`SpanIndex`'s semantics.

    It exists as the oracle the engine is tested against and as the offline re-checker of span
    evidence (recompute a generation's spans from the documents alone): numpy and a suffix array
    from ``pydivsufsort``, no ML stack and no on-disk index. Hand-written binary searches (one
    numpy comparison per probe) keep it short and obviously right rather than fast.

    The corpus is one ``uint16`` array, each document preceded by ``0xffff``; query ids are
    ``< 0xffff``, so no match crosses a document boundary.
    """

    def __init__(self, documents: Sequence[Sequence[int]], vocab_size: int = MAX_VOCAB) -> None:
        vocab_size = check_vocab_size(vocab_size)
        parts, starts, position = [], [], 0
        for i, document in enumerate(documents):
            tokens = check_tokens(document, vocab_size, f"document {i}")
            parts += [np.array([MAX_VOCAB], dtype=np.uint16), tokens.astype(np.uint16)]
            starts.append(position + 1)
            position += 1 + len(tokens)
        if not starts:
            raise ValueError("documents is empty: nothing to match against")
        self.vocab_size = vocab_size
        self._corpus = np.concatenate(parts)  # (n,) uint16, separators included
        self._starts = np.asarray(starts, dtype=np.int64)  # (n_docs,) corpus position of each document's first token
        self._sa = np.asarray(divsufsort(self._corpus), dtype=np.int64)  # (n,) suffix start positions, sorted

    def _lcp(self, position: int, query: np.ndarray) -> int:
        """Length of the common prefix of the corpus suffix at ``position`` and ``query``."""
        n = min(len(query), len(self._corpus) - position)
        differ = np.flatnonzero(self._corpus[position:position + n] != query[:n])
        return int(differ[0]) if differ.size else n

    def _bound(self, query: np.ndarray, after_prefix: bool) -> int:
        """First suffix-array rank whose suffix is ``>= query`` (``after_prefix=False``), or whose
        suffix does not start with ``query`` and is ``> query`` (``after_prefix=True``)."""
        lo, hi = 0, len(self._sa)
        while lo < hi:
            mid = (lo + hi) // 2
            position = int(self._sa[mid])
            k = self._lcp(position, query)
            if k == len(query):
                below = after_prefix  # the suffix starts with query
            else:  # a suffix that ends inside query sorts first; else the first differing token decides
                below = position + k == len(self._corpus) or self._corpus[position + k] < query[k]
            if below:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _longest_prefix(self, query: np.ndarray) -> int:
        """Length of the longest prefix of ``query`` occurring in the corpus: the longest common
        prefix with one of the two suffixes around ``query``'s place in the suffix array."""
        rank = self._bound(query, after_prefix=False)
        return max((self._lcp(int(self._sa[r]), query) for r in (rank - 1, rank) if 0 <= r < len(self._sa)), default=0)

    def spans(self, query: Sequence[int], min_len: int, max_count: int) -> list[Span]:
        """The spans of ``query`` (module docstring), by increasing start."""
        check_span_limits(min_len, max_count)
        query = check_tokens(query, self.vocab_size, "query").astype(np.uint16)
        candidates = []
        for start in range(len(query)):
            length = self._longest_prefix(query[start:])
            if length < min_len:
                continue
            needle = query[start:start + length]
            lo, hi = self._bound(needle, after_prefix=False), self._bound(needle, after_prefix=True)
            if hi - lo > max_count:
                continue
            positions = self._sa[lo:hi]
            documents = np.searchsorted(self._starts, positions, side="right") - 1
            order = np.lexsort((positions, documents))
            candidates.append(Span(start, start + length, hi - lo, tuple(documents[order].tolist()),
                                   tuple((positions - self._starts[documents])[order].tolist())))
        return keep_spans(candidates)


def reference_spans(documents: Sequence[Sequence[int]], query: Sequence[int], min_len: int, max_count: int) -> list[Span]:
    """:meth:`ReferenceSpanMatcher.spans` on a matcher built for this one query (build a
    :class:`ReferenceSpanMatcher` once to match many)."""
    return ReferenceSpanMatcher(documents).spans(query, min_len, max_count)


def unigram_logprobs(documents: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """``(vocab_size,)`` ``log p(t)`` of each token id under the corpus' unigram counts with
    add-one smoothing: ``log((count(t) + 1) / (n_tokens + vocab_size))``, all ``< 0``."""
    vocab_size = check_vocab_size(vocab_size)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i, document in enumerate(documents):
        counts += np.bincount(check_tokens(document, vocab_size, f"document {i}"), minlength=vocab_size)
    return np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)


@dataclass(frozen=True)
class SpanTask:
    """What :class:`SpanAttributor` reads: the span index of the training documents, how to match
    and weigh, and who submitted each document.

    Not an :class:`~attribution.base.AttributionTask`: span credit needs no model, loss or
    checkpoint, only the index. It does need the contributors, content clusters and submission
    order that the roll-up (:func:`attribution.rollup.contributor_credit`) also takes, because a
    span's weight is shared per contributor, counting verbatim copies once.

    Args:
        index: a :class:`SpanIndex` or :class:`ReferenceSpanMatcher` of the ``n_docs`` documents.
        logprob: ``(vocab_size,)`` ``log p`` of each token id (:func:`unigram_logprobs`).
        min_len, max_count: the matcher's limits (:meth:`SpanIndex.spans`).
        contributors: ``(n_docs,)`` contributor id of each document.
        clusters: ``(n_docs,)`` cluster ids joining verbatim copies (:func:`attribution.rollup.content_clusters`).
        order: ``(n_docs,)`` distinct integer submission ranks (earlier = smaller).
    """

    index: SpanIndex | ReferenceSpanMatcher
    logprob: np.ndarray
    min_len: int
    max_count: int
    contributors: Sequence[str]
    clusters: np.ndarray
    order: np.ndarray


class SpanAttributor(Attributor):
    """Span attribution as scores: ``(n_docs, n_generations)``, ``[d, g]`` = the span credit of
    document ``d``'s content on generation ``g`` (positive = its spans helped produce ``g``).

    Each span of ``g`` (:meth:`spans`) weighs its information content; the contributors of the
    distinct contents holding it share that weight equally (a content counts as its earliest
    submission, :func:`attribution.rollup.earliest_members`), each contributor's share split
    equally over its contents holding the span (:meth:`breakdown`). Every verbatim copy of a content
    scores what the content earns; :func:`attribution.rollup.contributor_credit` with the task's
    ``clusters`` and ``order`` then gives it to the earliest submission, the one duplicate rule of
    span and gradient credit.
    """

    name = "span"

    def fit(self, task: SpanTask) -> SpanAttributor:
        """Check ``task``'s per-document fields agree; returns ``self``."""
        n_docs = len(task.contributors)
        if len(task.clusters) != n_docs or len(task.order) != n_docs:
            raise ValueError(f"contributors, clusters and order must describe the same documents, got "
                             f"{n_docs}, {len(task.clusters)} and {len(task.order)} entries")
        check_span_limits(task.min_len, task.max_count)
        self.task = task
        self._earliest = earliest_members(task.clusters, task.order)
        return self

    def spans(self, query: Sequence[int]) -> list[Span]:
        """The spans of ``query`` in the task's index, under its limits."""
        return self.task.index.spans(list(query), self.task.min_len, self.task.max_count)

    def breakdown(self, spans: Sequence[Span], query: Sequence[int]) -> pd.DataFrame:
        """One row per (span, credited contributor) of ``query``'s ``spans`` (:class:`SpanCredit`)."""
        return span_breakdown(spans, self.task.logprob[list(query)], self.task.contributors, self._earliest)

    def document_scores(self, breakdown: pd.DataFrame) -> np.ndarray:
        """``(n_docs,)`` the scores of one generation from its :meth:`breakdown`."""
        return document_scores(breakdown, self._earliest)

    def scores(self, test_x: Sequence[Sequence[int]], test_y: None = None) -> np.ndarray:
        """``(n_docs, n_generations)`` scores of the generations ``test_x`` (token ids); ``test_y`` is unused."""
        columns = [self.document_scores(self.breakdown(self.spans(query), query)) for query in test_x]
        return np.stack(columns, axis=1) if columns else np.zeros((len(self.task.contributors), 0))


@dataclass(frozen=True)
class SpanCredit:
    """What :func:`span_credit` computed.

    ``credit``: float per contributor (index: every contributor in ``doc_contributors``, sorted;
    0 for none), the roll-up of :class:`SpanAttributor` scores. ``breakdown``: one row per (span,
    credited contributor) with columns ``span`` (index into ``spans``), ``start``, ``end``,
    ``weight`` (the span's information content), ``contributor``, ``documents`` (tuple of the
    contributor's credited documents) and ``share`` (``weight`` / the span's credited contributors).
    """

    credit: pd.Series
    breakdown: pd.DataFrame


def span_breakdown(spans: Sequence[Span], token_logprob: np.ndarray, doc_contributors: Sequence[str],
                   earliest: np.ndarray) -> pd.DataFrame:
    """:attr:`SpanCredit.breakdown` of ``spans``: each span weighs ``-sum token_logprob[start:end]``,
    shared equally by the contributors of its credited documents, the distinct ``earliest[d]``
    (each document's earliest verbatim copy) of the documents ``d`` holding it."""
    n_docs = len(doc_contributors)
    logprob = np.asarray(token_logprob, dtype=np.float64)
    if logprob.ndim != 1 or not np.all(np.isfinite(logprob)) or np.any(logprob > 0):
        raise ValueError(f"token_logprob must be a 1-D array of finite log-probabilities <= 0, got shape "
                         f"{logprob.shape}, max {logprob.max() if logprob.size else None}")
    rows = []
    for k, span in enumerate(spans):
        if not 0 <= span.start < span.end <= len(logprob):
            raise ValueError(f"span {k} [{span.start}, {span.end}) lies outside the {len(logprob)} tokens of token_logprob")
        if not span.documents or not all(0 <= d < n_docs for d in span.documents):
            raise ValueError(f"span {k} must name documents in [0, {n_docs}), got {span.documents}")
        holders: dict[str, list[int]] = {}
        for d in sorted({int(earliest[d]) for d in span.documents}):
            holders.setdefault(doc_contributors[d], []).append(d)
        weight = -float(logprob[span.start:span.end].sum())
        rows += [(k, span.start, span.end, weight, c, tuple(docs), weight / len(holders)) for c, docs in holders.items()]
    return pd.DataFrame(rows, columns=["span", "start", "end", "weight", "contributor", "documents", "share"])


def document_scores(breakdown: pd.DataFrame, earliest: np.ndarray) -> np.ndarray:
    """``(n_docs,)`` :class:`SpanAttributor` scores of one query from its :func:`span_breakdown`:
    each row's ``share`` split equally over its ``documents``; every document scores what its
    earliest verbatim copy ``earliest[d]`` earned."""
    pieces = pd.DataFrame({"document": breakdown["documents"],
                           "share": breakdown["share"] / breakdown["documents"].map(len)}).explode("document")
    # pandas' group sum (compensated) adds a document's pieces as it adds a contributor's shares
    credited = pieces.groupby("document")["share"].sum().reindex(range(len(earliest)), fill_value=0.0)
    return credited.to_numpy(dtype=np.float64)[earliest]


def span_credit(spans: Sequence[Span], doc_contributors: Sequence[str], doc_order: Sequence[int],
                doc_hashes: Sequence[str], token_logprob: np.ndarray) -> SpanCredit:
    """Credit each contributor for the spans its documents supplied (positive = supplied).

    A span ``s = query[a:b]`` weighs its information content under the unigram model,
    ``w(s) = -sum_{t=a}^{b-1} token_logprob[t]``: length times rarity. Among the documents
    holding ``s``, those with the same content hash count once, as the one submitted first
    (smallest ``doc_order``); the contributors ``C(s)`` of these credited documents share ``w(s)``
    equally, so contributor ``c`` earns ``sum_s w(s) * [c in C(s)] / |C(s)|``. A copy of an earlier
    document under another identity earns nothing for that span; the credits sum to
    ``sum_s w(s)``. This is :class:`SpanAttributor`'s scores of the one query rolled up by
    :func:`attribution.rollup.contributor_credit` with the content-hash clusters.

    Args:
        spans: from :meth:`SpanIndex.spans` or :func:`reference_spans` on one query.
        doc_contributors: ``(n_docs,)`` contributor id of each document.
        doc_order: ``(n_docs,)`` distinct integers, each document's submission rank (earlier =
            smaller, e.g. the ledger sequence number of its contribution).
        doc_hashes: ``(n_docs,)`` content hash of each document.
        token_logprob: ``(len(query),)`` ``log p`` of each query token, e.g.
            ``unigram_logprobs(documents, vocab_size)[query]``; finite and ``<= 0``.

    Returns:
        :class:`SpanCredit`, the per-contributor credit and the per-span breakdown.
    """
    n_docs = len(doc_contributors)
    order = np.asarray(doc_order)
    if len(order) != n_docs or len(doc_hashes) != n_docs:
        raise ValueError(f"doc_contributors, doc_order and doc_hashes must describe the same documents, got "
                         f"{n_docs}, {len(order)} and {len(doc_hashes)} entries")
    if n_docs and order.dtype.kind not in "iu":
        raise ValueError(f"doc_order must hold integer submission ranks, got dtype {order.dtype}")
    clusters = content_clusters(doc_hashes)
    earliest = earliest_members(clusters, order)
    breakdown = span_breakdown(spans, token_logprob, doc_contributors, earliest)
    scores = document_scores(breakdown, earliest)[:, None]
    credit = contributor_credit(scores, doc_contributors, sorted(set(doc_contributors)), clusters, order)
    return SpanCredit(credit=credit.rename("credit").rename_axis("contributor"), breakdown=breakdown)
