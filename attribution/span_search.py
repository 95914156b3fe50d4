"""The ``vectorized`` span engine: infini-gram's on-disk suffix array (``table.0``) searched with
numpy, every start of every query at once; the spans of :mod:`attribution.spans`, without the
infini-gram package at query time.

Why hand-written: the infini-gram engine starts OS threads per query position (about three per
token), so a 200-token query costs milliseconds whatever the index size, and no library offers a
batched longest-match search of a suffix array in infini-gram's format (pointers of ``ratio``
little-endian bytes, suffixes sorted by their bytes); ``np.searchsorted`` needs the sorted keys in
memory, which a suffix array is not. The search itself is ``n_starts * log2(n_tokens)`` suffix
comparisons, a few thousand: done as a few dozen numpy steps over all starts together.

Order. ``table.0`` sorts the suffixes of tokenized.0 by their bytes: a u16 token compares by its
low byte first, i.e. as its byte-swapped id (:data:`SORT_KEY`), and a suffix that is a prefix of
another sorts first. Queries never hold ``0xffff``, the separator, so no match crosses a
document boundary. Rank 0 is the sentinel document's suffix ``[0]`` (:mod:`attribution.span_index`);
it is never searched.

The search, for each start ``l`` of a query ``q`` with at least ``min_len`` tokens left (all
starts advance in lockstep, one probe each per step; a start whose interval is empty drops out):

1. *Longest match*: ``q[l:]``'s place among the suffixes. First among the keys (the first
   :data:`KEY_TOKENS` tokens' bytes) of every :data:`SAMPLE`-th suffix, held in memory: one
   ``np.searchsorted``, leaving about ``SAMPLE`` ranks whenever ``q[l:l+8]`` is rare; then a binary
   search of the suffix array in those ranks. A probe compares from the prefix its two bounds
   already share with ``q[l:]`` (all suffixes between them share it too), :data:`WINDOW` tokens
   per gather, more only while they keep agreeing. The longest prefix of ``q[l:]`` in the corpus,
   of length ``L``, is the longer common prefix with the two suffixes around that place: the
   last probe (or the sampled bound) on either side.
2. *Count*: the suffixes starting with ``q[l:l+L]`` are a run of ranks next to that place. Two
   more binary searches, over ``max_count`` ranks on either side (and within the sampled bounds
   when ``L >= KEY_TOKENS``), find its ends; a run reaching a window's edge holds more than
   ``max_count`` suffixes and the start is dropped.
3. *Keep*: a span whose end does not exceed the running maximum of earlier ends is dropped
   (:func:`attribution.spans.keep_spans`, vectorized: a dropped span never raises the maximum).
4. *Occurrences*: the suffix array entries of each kept run, mapped to documents through offset.0.

A 200-token query takes a few dozen numpy steps, about 1 ms on 10M tokens
(``benchmarks/span_bench.py``); starting the engine reads every ``SAMPLE``-th entry (tens of ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attribution.base import AttributionError
from attribution.span_index import MAX_VOCAB, TOKEN_BYTES, Span, check_span_limits, check_tokens

WINDOW = 16
"""Tokens compared per gather: a probe usually differs within a few tokens of its known prefix."""
KEY_TOKENS = 8
"""Tokens in a sampled suffix's key: 16 bytes, compared as bytes (``S16``) in the table's order."""
SAMPLE = 32
"""Every ``SAMPLE``-th suffix's key is held in memory: ``n_tokens / SAMPLE * 16`` bytes."""
SORT_KEY = (((np.arange(MAX_VOCAB + 1) & 0xFF) << 8) | (np.arange(MAX_VOCAB + 1) >> 8)).astype(np.uint16)
"""The order of u16 tokens in the suffix array: the byte-swapped id (low byte first)."""


def pointer_bytes(n_tokens: int) -> int:
    """Bytes per suffix-array entry that infini-gram's indexer writes for ``n_tokens`` u16 tokens:
    ``ceil(log2(file bytes) / 8)`` (``infini_gram.indexing``)."""
    return int(np.ceil(np.log2(n_tokens * TOKEN_BYTES) / 8))


def as_keys(tokens: np.ndarray) -> np.ndarray:
    """``(k,)`` ``S16`` keys of ``(k, KEY_TOKENS)`` tokens: their little-endian bytes, which compare
    as the table orders suffixes (a key padded with token 0 never sorts after its suffix)."""
    return np.ascontiguousarray(tokens, dtype="<u2").view(f"S{KEY_TOKENS * TOKEN_BYTES}").ravel()


def common_prefix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(k,)`` tokens the rows of two ``(k, m)`` arrays share from their start."""
    differ = a != b
    return np.where(differ.any(axis=1), differ.argmax(axis=1), a.shape[1])


class SuffixArraySearch:
    """The spans of queries over tokenized.0 and its suffix array table.0, both memory-mapped.

    Args:
        tokens: ``(n,)`` ``<u2`` tokenized.0 (separators and the sentinel document included).
        table: path of table.0, ``n`` entries of :func:`pointer_bytes` bytes each.
        separators: ``(n_docs + 1,)`` token index of each document's ``0xffff``, the sentinel's last.
        vocab_size: query token ids must lie in ``[0, vocab_size)``.
    """

    def __init__(self, tokens: np.ndarray, table: Path, separators: np.ndarray, vocab_size: int) -> None:
        n = len(tokens)
        ratio = pointer_bytes(n)
        size = table.stat().st_size
        if size != ratio * n:
            raise AttributionError(f"span index {table}: {size} bytes, expected {n} suffix-array entries of "
                                   f"{ratio} bytes for tokenized.0's {n} tokens")
        # plain ndarray views of the maps: np.memmap's own indexing costs microseconds per call
        if ratio in (1, 2, 4, 8):
            self._table = np.memmap(table, dtype=f"<u{ratio}", mode="r").view(np.ndarray)
        else:  # entries of 3, 5, 6 or 7 bytes: read byte by byte
            self._table = np.memmap(table, dtype=np.uint8, mode="r").view(np.ndarray).reshape(n, ratio)
        self._weights = 256 ** np.arange(ratio, dtype=np.int64)
        self._tokens = np.asarray(tokens)  # a plain ndarray over the map
        self._first = np.asarray(separators[:-1], dtype=np.int64) + 1  # (n_docs,) first token of each document
        self.vocab_size = vocab_size
        if self._positions(np.zeros(1, dtype=np.int64))[0] != n - 1:
            raise AttributionError(f"span index {table}: its first suffix is not the sentinel document at token "
                                   f"{n - 1}; table.0 is not the suffix array of this tokenized.0")
        self._every = SAMPLE
        self._sample_tokens = self._window(self._positions(np.arange(0, n, SAMPLE)))  # (ceil(n / SAMPLE), KEY_TOKENS)
        self._samples = as_keys(self._sample_tokens)  # sorted, as the suffixes at ranks 0, SAMPLE, 2 SAMPLE, ...

    def _positions(self, ranks: np.ndarray) -> np.ndarray:
        """``(k,)`` token index in tokenized.0 of the suffixes at ``ranks``."""
        entries = self._table[ranks]
        pointers = entries.astype(np.int64) if entries.ndim == 1 else entries.astype(np.int64) @ self._weights
        return pointers // TOKEN_BYTES

    def _window(self, positions: np.ndarray) -> np.ndarray:
        """``(k, KEY_TOKENS)`` tokens from ``positions``, token 0 past the corpus' end."""
        at = positions[:, None] + np.arange(KEY_TOKENS)
        return np.where(at < len(self._tokens), self._tokens[np.minimum(at, len(self._tokens) - 1)], 0)

    def _compare(self, positions: np.ndarray, query: np.ndarray, starts: np.ndarray, known: np.ndarray,
                 limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Common prefix of the suffixes at ``positions`` with ``query[starts:starts + limits]``,
        given that the first ``known <= limits`` tokens agree, capped at ``limits``; and whether
        each suffix sorts before that query slice (``False`` where it starts with it)."""
        common, below = known.copy(), np.zeros(len(positions), dtype=bool)
        rows, window = np.arange(len(positions)), np.arange(WINDOW)
        last = len(self._tokens) - 1
        while rows.size:
            at = common[rows, None] + window  # (k, WINDOW)
            # reads past the end are clamped: only the suffix [0] (never probed) meets the end before a separator
            corpus = self._tokens[np.minimum(positions[rows, None] + at, last)]
            wanted = query[starts[rows, None] + at]
            differ = (corpus != wanted) | (at >= limits[rows, None])
            first = differ.argmax(axis=1)
            found = np.flatnonzero(differ[np.arange(len(rows)), first])
            done, first = rows[found], first[found]
            common[done] += first
            c, w = corpus[found, first], wanted[found, first]
            below[done] = (common[done] < limits[done]) & (SORT_KEY[c] < SORT_KEY[w])
            rows = np.delete(rows, found)
            common[rows] += WINDOW
        return common, below

    def _bound(self, query: np.ndarray, starts: np.ndarray, limits: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               common_lo: np.ndarray, common_hi: np.ndarray, after_prefix: np.ndarray) -> tuple[np.ndarray, ...]:
        """Batched binary search in ranks ``[lo, hi)`` for the first suffix ``>= query[starts:starts +
        limits]`` (``after_prefix`` false) or ``>`` it and not starting with it (true).
        ``common_lo``/``common_hi``: the common prefix (or a lower bound of it) of the suffixes at
        ``lo - 1`` and ``hi`` with the query slice. Returns the rank found and the common prefixes
        of the suffixes just below and at it (the last probes on each side; the given bounds where
        none was probed). The arrays are updated in place."""
        rows = np.flatnonzero(lo < hi)
        while rows.size:
            mid = (lo[rows] + hi[rows]) // 2
            known = np.minimum(common_lo[rows], common_hi[rows])
            common, below = self._compare(self._positions(mid), query, starts[rows], known, limits[rows])
            right = below | (after_prefix[rows] & (common == limits[rows]))
            up, down = rows[right], rows[~right]
            lo[up], common_lo[up] = mid[right] + 1, common[right]
            hi[down], common_hi[down] = mid[~right], common[~right]
            rows = rows[lo[rows] < hi[rows]]
        return lo, common_lo, common_hi

    def spans(self, query: Sequence[int], min_len: int, max_count: int) -> list[Span]:
        """:meth:`attribution.spans.SpanIndex.spans`, by this search."""
        check_span_limits(min_len, max_count)
        return self._search([check_tokens(query, self.vocab_size, "query")], min_len, max_count)[0]

    def spans_batch(self, queries: Sequence[Sequence[int]], min_len: int, max_count: int) -> list[list[Span]]:
        """:meth:`spans` of each query, searched together."""
        check_span_limits(min_len, max_count)
        return self._search([check_tokens(q, self.vocab_size, f"query {g}") for g, q in enumerate(queries)],
                            min_len, max_count)

    def _search(self, queries: list[np.ndarray], min_len: int, max_count: int) -> list[list[Span]]:
        """The spans of the checked ``queries`` (module docstring, steps 1-4)."""
        n = len(self._tokens)
        lengths = np.array([len(q) for q in queries], dtype=np.int64)
        begins = np.cumsum(lengths) - lengths  # (n_queries,) first row of each query
        pad = np.zeros(max(WINDOW, KEY_TOKENS), dtype=np.int64)
        query = np.concatenate(queries + [pad]).astype(np.uint16)  # padded for windowed reads
        owner = np.repeat(np.arange(len(queries)), lengths)
        limits = begins[owner] + lengths[owner] - np.arange(len(owner))  # tokens from each start to its query's end
        starts = np.flatnonzero(limits >= min_len)  # one row per start that may begin a span
        owner, limits = owner[starts], limits[starts]

        # 1. longest match: the place of query[start:] among the suffixes, first among the sampled keys
        head = query[starts[:, None] + np.arange(KEY_TOKENS)]
        head[np.arange(KEY_TOKENS) >= limits[:, None]] = 0
        keys = as_keys(head)
        after, before = np.searchsorted(self._samples, keys, "left"), np.searchsorted(self._samples, keys, "right")
        # the sampled suffixes at ranks (after - 1) * SAMPLE and before * SAMPLE bound the place; rank 0,
        # the sentinel, is never searched (counted as sharing nothing)
        lo, hi = np.maximum((after - 1) * self._every + 1, 1), np.minimum(before * self._every, n)
        sampled = len(self._samples)
        common_lo = np.where(after >= 2, np.minimum(common_prefix(self._sample_tokens[after - 1], head), limits), 0)
        common_hi = np.where(before < sampled, np.minimum(
            common_prefix(self._sample_tokens[np.minimum(before, sampled - 1)], head), limits), 0)
        rank, below, above = self._bound(query, starts, limits, lo.copy(), hi.copy(), common_lo, common_hi,
                                         np.zeros(len(starts), dtype=bool))
        length = np.maximum(below, above)
        holder = np.where(below >= above, rank - 1, rank)  # a suffix holding the match

        # 2. count: the ends of the run of suffixes starting with the match, within max_count of holder
        # (and within the sampled bounds when the match covers the whole key)
        rows = np.flatnonzero(length >= min_len)
        holder, length = holder[rows], length[rows]
        whole = length >= KEY_TOKENS
        floor, ceiling = np.where(whole, lo[rows], 1), np.where(whole, hi[rows], n)
        k, nothing, both = len(rows), np.zeros(len(rows), dtype=np.int64), np.concatenate
        ends, _, _ = self._bound(query, both([starts[rows]] * 2), both([length] * 2),
                                 both([np.maximum(holder - max_count, floor), holder + 1]),
                                 both([holder, np.minimum(holder + max_count + 1, ceiling)]),
                                 both([nothing, length]), both([length, nothing]), np.repeat([False, True], k))
        lo, count = ends[:k], ends[k:] - ends[:k]

        # 3. keep: counted at most max_count times and ending after every earlier candidate of its query
        ok = count <= max_count
        rows, lo, count, length = rows[ok], lo[ok], count[ok], length[ok]
        span_start = starts[rows] - begins[owner[rows]]
        span_end = owner[rows] * (int(lengths.max(initial=0)) + 1) + span_start + length
        kept = span_end > np.concatenate([[-1], np.maximum.accumulate(span_end)[:-1]])
        rows, lo, count, length, span_start = rows[kept], lo[kept], count[kept], length[kept], span_start[kept]

        # 4. occurrences, sorted by corpus position within each span (= by document, then offset)
        span_of = np.repeat(np.arange(len(rows)), count)
        ranks = np.arange(int(count.sum())) + np.repeat(lo - (np.cumsum(count) - count), count)
        positions = self._positions(ranks)
        positions = positions[np.lexsort((positions, span_of))]
        documents = np.searchsorted(self._first, positions, side="right") - 1
        offsets = positions - self._first[documents]
        cuts = np.cumsum(count)[:-1]
        found: list[list[Span]] = [[] for _ in queries]
        for g, start, size, n_found, docs, offs in zip(owner[rows].tolist(), span_start.tolist(), length.tolist(),
                                                        count.tolist(), np.split(documents, cuts),
                                                        np.split(offsets, cuts)):
            found[g].append(Span(start, start + size, n_found, tuple(docs.tolist()), tuple(offs.tolist())))
        return found
