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
low byte first, i.e. as its byte-swapped id (:func:`sort_key`), and a suffix that is a prefix of
another sorts first. Queries never hold ``0xffff``, the separator, so no match crosses a
document boundary. Rank 0 is the sentinel document's suffix ``[0]`` (:mod:`attribution.span_index`);
it is never searched.

The search, for each start ``l`` of a query ``q`` (all starts advance in lockstep, one probe each
per step; a start whose interval is empty drops out):

1. *Longest match*: a binary search for ``q[l:]`` among the suffixes starting with ``q[l]`` (their
   ranks come from the corpus' token counts, so a rare first token needs few steps). A probe
   compares from the prefix its two bounds already share with ``q[l:]`` (all suffixes between
   them share it too), :data:`WINDOW` tokens per gather, more only while they keep agreeing. The
   longest prefix of ``q[l:]`` in the corpus, of length ``L``, is the longer common prefix with the
   two suffixes around ``q[l:]``'s place: the last probe on either side.
2. *Count*: the suffixes starting with ``q[l:l+L]`` are a run of ranks next to that place. Two
   more binary searches, over ``max_count`` ranks on either side, find its ends; a run reaching a
   window's edge holds more than ``max_count`` suffixes and the start is dropped.
3. *Keep*: a span whose end does not exceed the running maximum of earlier ends is dropped
   (:func:`attribution.spans.keep_spans`, vectorized).
4. *Occurrences*: the suffix array entries of each kept run, mapped to documents through offset.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attribution.base import AttributionError
from attribution.span_index import MAX_VOCAB, TOKEN_BYTES, Span, check_span_limits, check_tokens

WINDOW = 16
"""Tokens compared per gather: a probe usually differs within a few tokens of its known prefix."""
COUNT_CHUNK = 1 << 22
"""Tokens counted per step when the engine starts (bounds the temporary int64 copy)."""


def sort_key(tokens: np.ndarray) -> np.ndarray:
    """The order of u16 tokens in the suffix array: the byte-swapped id (low byte first)."""
    tokens = tokens.astype(np.int64)
    return ((tokens & 0xFF) << 8) | (tokens >> 8)


def pointer_bytes(n_tokens: int) -> int:
    """Bytes per suffix-array entry that infini-gram's indexer writes for ``n_tokens`` u16 tokens:
    ``ceil(log2(file bytes) / 8)`` (``infini_gram.indexing``)."""
    return int(np.ceil(np.log2(n_tokens * TOKEN_BYTES) / 8))


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
        if ratio in (1, 2, 4, 8):
            self._table = np.memmap(table, dtype=f"<u{ratio}", mode="r")
        else:  # entries of 3, 5, 6 or 7 bytes: read byte by byte
            self._table = np.memmap(table, dtype=np.uint8, mode="r").reshape(n, ratio)
        self._weights = 256 ** np.arange(ratio, dtype=np.int64)
        self._tokens = tokens
        self._first = np.asarray(separators[:-1], dtype=np.int64) + 1  # (n_docs,) first token of each document
        self.vocab_size = vocab_size
        counts = np.zeros(MAX_VOCAB + 1, dtype=np.int64)  # by token id
        for start in range(0, n, COUNT_CHUNK):
            counts += np.bincount(tokens[start:start + COUNT_CHUNK], minlength=MAX_VOCAB + 1)
        by_key = np.zeros_like(counts)
        by_key[sort_key(np.arange(MAX_VOCAB + 1))] = counts
        ends = np.cumsum(by_key)  # (65536,) end rank of the suffixes starting with each key
        self._bucket_hi = ends[sort_key(np.arange(MAX_VOCAB + 1))]  # by token id
        self._bucket_lo = self._bucket_hi - counts
        self._bucket_lo[0] += 1  # rank 0 is the sentinel [0], shorter than every other suffix starting with 0
        if self._positions(np.zeros(1, dtype=np.int64))[0] != n - 1:
            raise AttributionError(f"span index {table}: its first suffix is not the sentinel document at token "
                                   f"{n - 1}; table.0 is not the suffix array of this tokenized.0")

    def _positions(self, ranks: np.ndarray) -> np.ndarray:
        """``(k,)`` token index in tokenized.0 of the suffixes at ``ranks``."""
        entries = self._table[ranks]
        pointers = entries.astype(np.int64) if entries.ndim == 1 else entries.astype(np.int64) @ self._weights
        return pointers // TOKEN_BYTES

    def _compare(self, positions: np.ndarray, query: np.ndarray, starts: np.ndarray, known: np.ndarray,
                 limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Common prefix of the suffixes at ``positions`` with ``query[starts:starts + limits]``,
        given that the first ``known < limits`` tokens agree, capped at ``limits``; and whether
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
            found = differ[np.arange(len(rows)), first]
            done = rows[found]
            common[done] = common[done] + first[found]
            inside = common[done] < limits[done]
            pick = np.arange(len(rows))[found]
            below[done] = inside & (sort_key(corpus[pick, first[found]]) < sort_key(wanted[pick, first[found]]))
            rows = rows[~found]
            common[rows] += WINDOW
        return common, below

    def _bound(self, query: np.ndarray, starts: np.ndarray, limits: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               common_lo: np.ndarray, common_hi: np.ndarray, after_prefix: np.ndarray) -> tuple[np.ndarray, ...]:
        """Batched binary search in ranks ``[lo, hi)`` for the first suffix ``>= query[starts:starts +
        limits]`` (``after_prefix`` false) or ``>`` it and not starting with it (true); every suffix
        in ``[lo, hi)`` starts with ``query[starts]``. ``common_lo``/``common_hi``: a lower bound of
        the common prefix of the suffixes at ``lo - 1`` and ``hi`` with the query slice. Returns the
        rank found and the common prefixes of the suffixes just below and at it (the last probes
        on each side; the given bounds where none was probed). The arrays are updated in place."""
        rows = np.flatnonzero(lo < hi)
        while rows.size:
            mid = (lo[rows] + hi[rows]) // 2
            known = np.maximum(np.minimum(common_lo[rows], common_hi[rows]), 1)
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
        lengths = np.array([len(q) for q in queries], dtype=np.int64)
        begins = np.cumsum(lengths) - lengths  # (n_queries,) first row of each query
        query = np.concatenate(queries + [np.zeros(WINDOW, dtype=np.int64)]).astype(np.uint16)  # padded for windows
        starts = np.arange(int(lengths.sum()))  # one row per start of every query
        owner = np.repeat(np.arange(len(queries)), lengths)
        limits = begins[owner] + lengths[owner] - starts  # tokens from each start to its query's end
        first = query[starts]

        # 1. longest match: the insertion rank of query[start:] among the suffixes starting with query[start]
        zeros = np.zeros(len(starts), dtype=np.int64)
        rank, below, above = self._bound(query, starts, limits, self._bucket_lo[first], self._bucket_hi[first].copy(),
                                         zeros.copy(), zeros.copy(), np.zeros(len(starts), dtype=bool))
        length = np.maximum(below, above)
        holder = np.where(below >= above, rank - 1, rank)  # a suffix holding the match

        # 2. count: the ends of the run of suffixes starting with the match, within max_count of holder
        rows = np.flatnonzero(length >= min_len)
        holder, length, lo_limit, hi_limit = holder[rows], length[rows], self._bucket_lo[first[rows]], self._bucket_hi[first[rows]]
        both = np.concatenate
        k = len(rows)
        ends, _, _ = self._bound(query, both([starts[rows]] * 2), both([length] * 2),
                                 both([np.maximum(holder - max_count, lo_limit), holder + 1]),
                                 both([holder, np.minimum(holder + max_count + 1, hi_limit)]),
                                 both([np.zeros(k, dtype=np.int64), length]), both([length, np.zeros(k, dtype=np.int64)]),
                                 np.repeat([False, True], k))
        lo, count = ends[:k], ends[k:] - ends[:k]

        # 3. keep: counted at most max_count times and ending after every earlier candidate of its query
        ok = count <= max_count
        rows, lo, count, length = rows[ok], lo[ok], count[ok], length[ok]
        span_end = owner[rows] * (int(lengths.max(initial=0)) + 1) + (starts[rows] - begins[owner[rows]]) + length
        kept = span_end > np.concatenate([[-1], np.maximum.accumulate(span_end)[:-1]])
        rows, lo, count, length = rows[kept], lo[kept], count[kept], length[kept]

        # 4. occurrences, sorted by corpus position within each span (= by document, then offset)
        span_of = np.repeat(np.arange(len(rows)), count)
        ranks = np.arange(int(count.sum())) + np.repeat(lo - (np.cumsum(count) - count), count)
        positions = self._positions(ranks)
        order = np.lexsort((positions, span_of))
        positions = positions[order]
        documents = np.searchsorted(self._first, positions, side="right") - 1
        offsets = positions - self._first[documents]
        cuts = np.cumsum(count)[:-1]
        found: list[list[Span]] = [[] for _ in queries]
        for row, n, end, docs, offs in zip(rows.tolist(), count.tolist(), length.tolist(),
                                           np.split(documents, cuts), np.split(offsets, cuts)):
            g = int(owner[row])
            start = row - int(begins[g])
            found[g].append(Span(start, start + end, n, tuple(docs.tolist()), tuple(offs.tolist())))
        return found
