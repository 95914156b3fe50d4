"""An on-disk index of tokenized documents, queried by a span engine (:data:`ENGINES`); the
:class:`Span` it returns and the input checks it shares with :mod:`attribution.spans` (the public
module, which re-exports everything here that callers need).

Layout of an index directory (infini-gram's v4 ``u16`` format, one shard)::

    tokenized.0              u16 little-endian: per document 0xffff then its tokens; then the
                             sentinel document [0] (below)
    offset.0                 u64: byte offset of each document's 0xffff in tokenized.0, sentinel last
    table.0                  the suffix array, built by ``python -m infini_gram.indexing``: one
                             entry per token of tokenized.0, its byte offset in ``ceil(log2(size of
                             tokenized.0) / 8)`` little-endian bytes, sorted by the suffixes' bytes;
                             absent from an index built for the ``reference`` engine
    datanet-span-index.json  {format, n_docs, n_tokens, vocab_size, corpus_sha256}: n_docs and
                             n_tokens count the caller's documents, not the sentinel;
                             corpus_sha256 is the SHA-256 of tokenized.0

The infini-gram engine sorts the files of its index directory by matching the words
``tokenized``/``table``/``offset``/``metadata``/``metaoff``/``unigram`` against each file's
whole path, so a directory such as ``runs/stable/index`` would be misread. It is therefore handed
the directory as ``/proc/self/fd/<n>``, an open descriptor of it, whose path holds none of these
words (infini-gram ships for Linux only). The package is imported on the first query, never by
``import attribution``.

The sentinel: when a suffix sorts before every suffix of the corpus, infini-gram 2.6's longest-
prefix search inspects no neighbour and reports 0 (its ``max(0, start - 1)`` wraps around when
``start`` is 0). The one-token document ``[0]`` at the very end makes the suffix ``00 00`` the
smallest of all, below any query; it can only add matches of one token, which ``min_len >= 2``
(:data:`~attribution.spans.MIN_SPAN_LEN`) never keeps.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attribution.base import AttributionError
from attribution.files import file_sha256

if TYPE_CHECKING:
    from attribution.span_search import SuffixArraySearch
    from attribution.spans import ReferenceSpanMatcher

MAX_VOCAB = 0xFFFF
"""Largest vocabulary of a u16 index: token ids ``0 .. 65534``; ``0xffff`` separates documents."""

MIN_SPAN_LEN = 2
"""Shortest ``min_len`` accepted: one shared token is no evidence of copying, and
:class:`SpanIndex` relies on it (its sentinel document holds one token)."""


@dataclass(frozen=True)
class Span:
    """``query[start:end]`` occurs verbatim ``count`` times in the corpus.

    ``documents[k]`` and ``offsets[k]`` locate occurrence ``k``: the tokens
    ``document(documents[k])[offsets[k] : offsets[k] + end - start]`` equal the span. One entry per
    occurrence (``len(documents) == count``), sorted by ``(document, offset)``; a document holding
    the span twice appears twice.
    """

    start: int
    end: int
    count: int
    documents: tuple[int, ...]
    offsets: tuple[int, ...]

    @property
    def length(self) -> int:
        """Tokens in the span, ``end - start``."""
        return self.end - self.start


def check_tokens(tokens: Sequence[int], vocab_size: int, what: str) -> np.ndarray:
    """``tokens`` as a 1-D ``int64`` array, or ``ValueError`` naming ``what``, the position and the
    value of the first token id outside ``[0, vocab_size)``."""
    array = np.asarray(tokens)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-D sequence of integer token ids, got dtype {array.dtype}, "
                         f"shape {array.shape}")
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise ValueError(f"{what}: token id {array[bad[0]]} at position {bad[0]} is outside [0, {vocab_size})"
                         + (" (0xffff separates documents in a u16 index)" if array[bad[0]] >= MAX_VOCAB else ""))
    return array.astype(np.int64)


def check_vocab_size(vocab_size: int) -> int:
    """``vocab_size`` if an integer in ``[1, 65535]``, else ``ValueError``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or not 1 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be an integer in [1, {MAX_VOCAB}] (token id 0xffff separates "
                         f"documents in a u16 index), got {vocab_size!r}")
    return int(vocab_size)


def check_span_limits(min_len: int, max_count: int) -> None:
    """``ValueError`` unless ``min_len >= MIN_SPAN_LEN`` and ``max_count >= 1`` are integers."""
    for name, value, least in (("min_len", min_len, MIN_SPAN_LEN), ("max_count", max_count, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


ENGINES = ("vectorized", "infini_gram", "reference")
"""Span engines, which find the same spans: ``vectorized`` (the default) searches the suffix array
(``table.0``) that infini-gram's indexer builds with numpy, all starts of all queries at once
(:mod:`attribution.span_search`); ``infini_gram`` asks infini-gram's engine to search it;
``reference`` is :class:`attribution.spans.ReferenceSpanMatcher` over the index's documents, in
memory, without the infini-gram package (its licence: ``docs/attribution.md``)."""
DEFAULT_ENGINE = "vectorized"
METADATA = "datanet-span-index.json"
FORMAT = "datanet-span-index/1"
CORPUS_FILES = (METADATA, "tokenized.0", "offset.0")
TABLE = "table.0"
TABLE_ENGINES = ("vectorized", "infini_gram")
"""The engines that search table.0: an index built for one serves the other."""
SENTINEL = (MAX_VOCAB, 0)
"""The last document of tokenized.0: a separator, then token 0."""
TOKEN_BYTES = 2


def check_engine(engine: str) -> str:
    """``engine`` if one of :data:`ENGINES`, else ``ValueError``."""
    if engine not in ENGINES:
        raise ValueError(f"span engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine


def _write_corpus(arrays: list[np.ndarray], vocab_size: int, directory: Path) -> dict:
    """Write tokenized.0 and offset.0 of the checked documents ``arrays`` into ``directory``; return the metadata."""
    lengths = np.array([len(a) for a in arrays] + [len(SENTINEL) - 1], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]) * TOKEN_BYTES  # (n_docs + 1,) bytes
    tokens = np.empty(int((lengths + 1).sum()), dtype="<u2")
    tokens[offsets // TOKEN_BYTES] = MAX_VOCAB
    for a, offset in zip(arrays, offsets):
        tokens[offset // TOKEN_BYTES + 1:offset // TOKEN_BYTES + 1 + len(a)] = a
    tokens[-1] = SENTINEL[1]
    tokens.tofile(directory / "tokenized.0")
    offsets.astype("<u8").tofile(directory / "offset.0")
    return {"format": FORMAT, "n_docs": len(arrays), "n_tokens": int(lengths[:-1].sum()), "vocab_size": vocab_size,
            "corpus_sha256": file_sha256(directory / "tokenized.0")}


def _run_indexer(directory: Path, raw: Path) -> None:
    """Build table.0 next to tokenized.0 in ``directory`` with infini-gram's indexer in a subprocess
    (it changes its working directory), or :class:`AttributionError` with its output."""
    open_files = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # the indexer sets both limits to this
    command = [sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(raw), "--save_dir", str(directory),
               "--token_dtype", "u16", "--shards", "1", "--cpus", "1", "--mem", "2", "--ulimit", str(open_files)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (directory / TABLE).is_file():
        raise AttributionError(f"span index build failed (exit {result.returncode}): {' '.join(command)}\n"
                               f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}")


def build_span_index(documents: Sequence[Sequence[int]], directory: Path, vocab_size: int,
                     engine: str = DEFAULT_ENGINE) -> SpanIndex:
    """Index ``documents`` (token ids in ``[0, vocab_size)``, ``vocab_size <= 65535``) at
    ``directory`` for ``engine`` (:data:`ENGINES`; all but ``reference`` build ``table.0``).

    ``directory`` must not exist: the index is built in a sibling temporary directory and renamed
    into place once complete, so a failed build leaves nothing at ``directory``. Bad input
    (``ValueError``) and an existing ``directory`` (``FileExistsError``) are refused before any
    file is written; a failed suffix-array build raises :class:`AttributionError` with the
    indexer's output.
    """
    vocab_size = check_vocab_size(vocab_size)
    engine = check_engine(engine)
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"span index directory {directory} already exists; an index is never rebuilt in place, "
                              "build into a new directory")
    if not directory.parent.is_dir():
        raise FileNotFoundError(f"span index directory {directory}: its parent {directory.parent} does not exist")
    arrays = [check_tokens(document, vocab_size, f"document {i}") for i, document in enumerate(documents)]
    if not arrays:
        raise ValueError("documents is empty: a span index needs at least one document")
    work = directory.parent / f".{directory.name}.{os.getpid()}.partial"
    work.mkdir()
    try:
        index, raw = work / "index", work / "raw"  # raw: the indexer's required, unused input directory
        index.mkdir()
        raw.mkdir()
        metadata = _write_corpus(arrays, vocab_size, index)
        if engine in TABLE_ENGINES:
            _run_indexer(index, raw)
        (index / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
        leftovers = sorted({p.name for p in index.iterdir()} - {*CORPUS_FILES, TABLE})
        if leftovers:
            raise AttributionError(f"span index build left unexpected files in {index}: {leftovers}")
        index.rename(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SpanIndex.open(directory, engine)


class SpanIndex:
    """A built span index, read-only: :meth:`spans` of a query, and the documents back.

    Open with :meth:`open` (or get one from :func:`build_span_index`). Opening checks the files'
    sizes against the metadata and the SHA-256 of tokenized.0 (one pass over the corpus); the
    engine is started on the first query.
    """

    def __init__(self, directory: Path, metadata: dict, tokens: np.ndarray, offsets: np.ndarray, engine: str) -> None:
        self.directory = directory
        self.engine = engine
        self.n_docs: int = metadata["n_docs"]
        self.n_tokens: int = metadata["n_tokens"]
        self.vocab_size: int = metadata["vocab_size"]
        self.corpus_sha256: str = metadata["corpus_sha256"]
        self._tokens = tokens  # (n_tokens + n_docs + 2,) u16 memmap of tokenized.0
        self._offsets = offsets  # (n_docs + 1,) byte offset of each document's separator, sentinel last

    @classmethod
    def open(cls, directory: Path, engine: str = DEFAULT_ENGINE) -> SpanIndex:
        """The index at ``directory``, queried by ``engine`` (:data:`ENGINES`), or
        ``FileNotFoundError``/:class:`AttributionError` naming the missing file or the disagreeing
        field."""
        engine = check_engine(engine)
        directory = Path(directory).absolute()
        for name in CORPUS_FILES + ((TABLE,) if engine in TABLE_ENGINES else ()):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"span index {directory}: {name} is missing"
                                        + (" (an index built for the reference engine has none)" if name == TABLE else ""))
        try:
            metadata = json.loads((directory / METADATA).read_text())
        except ValueError as error:
            raise AttributionError(f"span index {directory / METADATA}: not JSON ({error})") from None
        fields = ("format", "n_docs", "n_tokens", "vocab_size", "corpus_sha256")
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT or not set(fields) <= set(metadata):
            raise AttributionError(f"span index {directory / METADATA}: expected format {FORMAT!r} with fields "
                                   f"{fields}, got {metadata!r}"[:500])
        tokens = np.memmap(directory / "tokenized.0", dtype="<u2", mode="r")
        offsets = np.fromfile(directory / "offset.0", dtype="<u8").astype(np.int64)
        expected = {"tokenized.0 tokens": (len(tokens), metadata["n_tokens"] + metadata["n_docs"] + len(SENTINEL)),
                    "offset.0 entries": (len(offsets), metadata["n_docs"] + 1)}
        for what, (got, want) in expected.items():
            if got != want:
                raise AttributionError(f"span index {directory}: {what} {got}, expected {want} from {METADATA}")
        digest = file_sha256(directory / "tokenized.0")
        if digest != metadata["corpus_sha256"]:
            raise AttributionError(f"span index {directory}: tokenized.0 has SHA-256 {digest}, {METADATA} "
                                   f"records corpus_sha256 {metadata['corpus_sha256']}")
        return cls(directory, metadata, tokens, offsets, engine)

    def document(self, i: int) -> np.ndarray:
        """``(len_i,)`` ``uint16`` tokens of document ``i`` (a copy)."""
        if not 0 <= i < self.n_docs:
            raise IndexError(f"document {i} is outside [0, {self.n_docs}) of span index {self.directory}")
        first, stop = self._offsets[i] // TOKEN_BYTES + 1, self._offsets[i + 1] // TOKEN_BYTES
        return np.array(self._tokens[first:stop])

    def documents(self) -> list[np.ndarray]:
        """Every document's tokens, in index order (:meth:`document` of each)."""
        return [self.document(i) for i in range(self.n_docs)]

    def spans(self, query: Sequence[int], min_len: int, max_count: int) -> list[Span]:
        """The spans of ``query`` (token ids in ``[0, vocab_size)``) over the indexed documents, by
        increasing start; the semantics are in :mod:`attribution.spans`. ``min_len >= 2``."""
        return self._matcher.spans(query, min_len, max_count)

    def spans_batch(self, queries: Sequence[Sequence[int]], min_len: int, max_count: int) -> list[list[Span]]:
        """:meth:`spans` of each of ``queries``: searched together by the ``vectorized`` engine, one
        by one by the others."""
        if self.engine == "vectorized":
            return self._matcher.spans_batch(queries, min_len, max_count)
        check_span_limits(min_len, max_count)
        for g, query in enumerate(queries):  # a bad query is named by its place before any is searched
            check_tokens(query, self.vocab_size, f"query {g}")
        return [self.spans(query, min_len, max_count) for query in queries]

    @cached_property
    def _matcher(self) -> SuffixArraySearch | _EngineMatcher | ReferenceSpanMatcher:
        """The engine, started once."""
        if self.engine == "reference":
            from attribution.spans import ReferenceSpanMatcher  # attribution.spans imports this module

            return ReferenceSpanMatcher(self.documents(), self.vocab_size)
        if self.engine == "vectorized":
            from attribution.span_search import SuffixArraySearch  # it imports this module

            return SuffixArraySearch(self._tokens, self.directory / TABLE, self._offsets // TOKEN_BYTES, self.vocab_size)
        return _EngineMatcher(self)


class _EngineMatcher:
    """The infini-gram engine over a :class:`SpanIndex`'s files (the module docstring on its path)."""

    def __init__(self, index: SpanIndex) -> None:
        from infini_gram.engine import InfiniGramEngine  # loaded on first use only

        self._index = index
        descriptor = os.open(index.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:  # the engine maps its files while it starts; the descriptor is not needed afterwards
            self._engine = InfiniGramEngine(
                index_dir=f"/proc/self/fd/{descriptor}", eos_token_id=0, vocab_size=index.vocab_size, version=4,
                token_dtype="u16", load_to_ram=False, ds_prefetch_depth=0, sa_prefetch_depth=0, od_prefetch_depth=0,
                precompute_unigram_logprobs=False)  # prefetch 0: about half the latency on small indexes
        finally:
            os.close(descriptor)

    def spans(self, query: Sequence[int], min_len: int, max_count: int) -> list[Span]:
        """:meth:`SpanIndex.spans`, answered by the engine."""
        index = self._index
        check_span_limits(min_len, max_count)
        query = check_tokens(query, index.vocab_size, "query").tolist()
        if not query:
            return []
        result = self._engine.attribute(input_ids=query, delim_ids=[], min_len=int(min_len), max_cnt=int(max_count),
                                        enforce_bow=False)
        if "error" in result:
            raise AttributionError(f"span index {index.directory}: the engine refused the query: {result['error']}")
        spans = []
        for found in result["spans"]:
            pointers = np.array([doc["ptr"] for doc in found["docs"]], dtype=np.int64)  # byte offsets in tokenized.0
            documents = np.searchsorted(index._offsets, pointers, side="right") - 1
            offsets = (pointers - index._offsets[documents]) // TOKEN_BYTES - 1
            if len(pointers) != found["count"] or np.any(documents >= index.n_docs):
                raise AttributionError(f"span index {index.directory}: the engine listed {len(pointers)} occurrences "
                                       f"for a count of {found['count']}, or matched the sentinel document")
            order = np.lexsort((offsets, documents))
            spans.append(Span(found["l"], found["r"], found["count"], tuple(documents[order].tolist()),
                              tuple(offsets[order].tolist())))
        return spans
