"""A real, offline text corpus: the docstrings of installed Python packages, labelled by package.

Source files are parsed with :mod:`ast`, never imported (importing runs code and makes reprs
depend on memory addresses and ``PYTHONHASHSEED``), so a build is deterministic for a given set
of installed versions. Parsing is the cost (torch and transformers hold ~5,000 files), so a corpus
reads each package's files in a seeded order only until it has enough candidates: docstrings
in the length (and token) range, ``CANDIDATES_PER_SAMPLE`` per docstring it keeps. Duplicates are
dropped among the candidates, then a seeded subsample is kept in source order (files in sorted
relative-path order, docstrings as they appear: module, then classes and functions).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import platform
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from datanet.errors import DataSourceError
from datanet.text.table import TextTable, corpus_hash
from datanet.text.validation import validate_texts

DEFAULT_PACKAGES = ("numpy", "pandas", "scipy", "sklearn", "torch", "matplotlib", "transformers")
OFF_TOPIC_PACKAGES = ("email", "http", "asyncio", "xml", "logging")
"""Standard-library packages whose docstrings are another domain's text (off-topic submissions)."""
# Import name -> distribution name, where they differ (for the recorded version).
DISTRIBUTIONS = {"sklearn": "scikit-learn"}
SKIPPED_DIRS = frozenset({"tests", "test", "testing", "_vendor", "vendored"})
CANDIDATES_PER_SAMPLE = 2
"""Candidates gathered per docstring a package keeps (more when duplicates leave it short)."""
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def package_root(package: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(package) if "." not in package else None
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(f"package {package!r} is not installed (or is not a package directory); "
                              f"install it or leave it out of packages")
    return Path(next(iter(spec.submodule_search_locations)))


def package_version(package: str) -> str:
    """The installed distribution's version; for a standard-library package, Python's version."""
    if package in sys.stdlib_module_names:
        return platform.python_version()
    distribution = DISTRIBUTIONS.get(package, package)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataSourceError(f"package {package!r} has no installed distribution {distribution!r} "
                              f"to read its version from") from exc


def package_files(package: str) -> list[Path]:
    """The package's ``.py`` files in sorted relative-path order, test and vendored dirs left out."""
    root = package_root(package)
    return sorted((p for p in root.rglob("*.py") if not SKIPPED_DIRS & set(p.relative_to(root).parts[:-1])),
                  key=lambda p: p.relative_to(root).as_posix())


def file_docstrings(path: Path, source_prefix: str) -> list[tuple[str, str]]:
    """Every docstring of one source file as (text, source) pairs in source order (module, then
    classes and functions at any depth by position), cleaned with :func:`inspect.cleandoc`;
    source = ``source_prefix:line``. A file that does not parse has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # invalid escapes in old sources
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    found = []
    for node in [tree, *definitions(tree)]:
        doc = ast.get_docstring(node, clean=False)
        if doc:
            line = node.body[0].lineno if isinstance(node, ast.Module) else node.lineno
            found.append((inspect.cleandoc(doc), f"{source_prefix}:{line}"))
    return found


def definitions(tree: ast.Module) -> list[ast.AST]:
    """Every class and function of ``tree`` sorted by (line, column).

    Hand-walked because :func:`ast.walk` visits every expression node, about 20 times more nodes:
    definitions are statements, so only statement lists (bodies, ``else``/``finally`` blocks,
    ``except`` handlers and ``match`` cases) can hold them.
    """
    found = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DEFINITIONS):
            found.append(node)
        for field in _STATEMENT_LISTS:
            stack.extend(getattr(node, field, ()))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def package_docstrings(package: str, min_chars: int = 80, max_chars: int = 2000, max_tokens: int | None = None,
                       count_tokens: Callable[[str], int] | None = None) -> list[tuple[str, str]]:
    """Every docstring of ``package`` that :func:`fits`, as (text, source) pairs in source order,
    source = ``package/rel/path.py:line``. Reads every file (:func:`docstring_corpus` reads fewer)."""
    files = package_files(package)
    candidates = _candidates(package, files, range(len(files)), fits(min_chars, max_chars, max_tokens, count_tokens))
    return [(text, source) for _, text, source in candidates]


def fits(min_chars: int, max_chars: int, max_tokens: int | None,
         count_tokens: Callable[[str], int] | None) -> Callable[[str], bool]:
    """A test of ``min_chars <= len(text) <= max_chars`` and, when given, ``count_tokens(text) <=
    max_tokens`` (tokens counted only for texts in the length range).

    Raises:
        DataSourceError: ``max_tokens`` without ``count_tokens`` or the other way round, or a bound below 1.
    """
    if (max_tokens is None) != (count_tokens is None):
        raise DataSourceError(f"max_tokens ({max_tokens}) and count_tokens go together: give both or neither")
    if min(min_chars, max_chars, 1 if max_tokens is None else max_tokens) < 1:
        raise DataSourceError(f"min_chars, max_chars and max_tokens must be at least 1, "
                              f"got {min_chars}, {max_chars}, {max_tokens}")

    def fit(text: str) -> bool:
        if not min_chars <= len(text) <= max_chars:
            return False
        return count_tokens is None or count_tokens(text) <= max_tokens

    return fit


def _candidates(package: str, files: Sequence[Path], order: Sequence[int],
                fit: Callable[[str], bool]) -> Iterator[tuple[tuple[int, int], str, str]]:
    """``(source-order key, text, source)`` of each fitting docstring, reading ``files`` (the
    package's, from :func:`package_files`) in ``order``."""
    root = package_root(package)
    for index in order:
        prefix = f"{package}/{files[index].relative_to(root).as_posix()}"
        for position, (text, source) in enumerate(file_docstrings(files[index], prefix)):
            if fit(text):
                yield (int(index), position), text, source


def docstring_corpus(packages: Sequence[str] = DEFAULT_PACKAGES, per_package: int = 220, seed: int = 0,
                     min_chars: int = 80, max_chars: int = 2000, max_tokens: int | None = None,
                     count_tokens: Callable[[str], int] | None = None, name: str = "docstrings") -> TextTable:
    """A corpus of up to ``per_package`` docstrings from each package, labelled by package name.

    Candidates are the docstrings of ``min_chars``–``max_chars`` characters and, when
    ``max_tokens`` is given, at most ``max_tokens`` tokens by ``count_tokens`` (count the special
    tokens too, so the model sees every sample whole). Each package's files are read in a seeded
    order until it has ``CANDIDATES_PER_SAMPLE * per_package`` candidates. Exact and near duplicates
    among all candidates (:func:`~datanet.text.validation.validate_texts` with its defaults, packages
    in the given order, each in source order) are dropped; a package left short of ``per_package``
    reads twice as many candidates and the check reruns. Then ``per_package`` of each package's
    survivors are drawn and kept in source order (a package with fewer keeps all), so an honest
    contributor's share is never rejected as a copy. A package's generator is seeded by ``seed``
    and its name. Standard-library packages work too (their version is Python's).

    Returns:
        the corpus (7 × 220 = 1,540 samples by default); ``provenance`` holds the package
        versions, the parameters (``max_tokens`` included) and the corpus hash.

    Raises:
        DataSourceError: a package not installed, fewer than 2 packages, ``per_package`` < 1, bad
            bounds (see :func:`fits`), or a package with no docstring in range.
    """
    if len(set(packages)) < 2 or len(set(packages)) != len(packages):
        raise DataSourceError(f"packages must name at least 2 distinct packages, got {list(packages)}")
    if per_package < 1:
        raise DataSourceError(f"per_package must be at least 1, got {per_package}")
    fit = fits(min_chars, max_chars, max_tokens, count_tokens)
    versions = {package: package_version(package) for package in packages}
    files = {package: package_files(package) for package in packages}
    rngs = {package: np.random.default_rng([seed, zlib.crc32(package.encode())]) for package in packages}
    streams = {package: _candidates(package, files[package], rngs[package].permutation(len(files[package])), fit)
               for package in packages}
    found: dict[str, list[tuple[tuple[int, int], str, str]]] = {package: [] for package in packages}
    wanted = dict.fromkeys(packages, CANDIDATES_PER_SAMPLE * per_package)
    while True:
        for package in packages:
            found[package] += islice(streams[package], wanted[package] - len(found[package]))
        candidates = [(package, c) for package in packages for c in sorted(found[package])]
        verdict = validate_texts([c[1] for _, c in candidates], [p for p, _ in candidates], packages,
                                 max_chars=max_chars)
        kept = {package: [c for (p, c), ok in zip(candidates, verdict.accepted) if ok and p == package]
                for package in packages}
        short = [p for p in packages if len(kept[p]) < per_package and len(found[p]) == wanted[p]]
        if not short:
            break
        for package in short:
            wanted[package] *= 2
    texts: list[str] = []
    labels: list[str] = []
    sources: list[str] = []
    for package in packages:
        if not kept[package]:
            raise DataSourceError(f"package {package!r} has no docstring of {min_chars}–{max_chars} characters"
                                  + ("" if max_tokens is None else f" and at most {max_tokens} tokens"))
        keep = range(len(kept[package])) if len(kept[package]) <= per_package else np.sort(
            rngs[package].choice(len(kept[package]), size=per_package, replace=False))
        for i in keep:
            _, text, source = kept[package][i]
            texts.append(text)
            labels.append(package)
            sources.append(source)
    provenance = {
        "kind": "docstrings",
        "versions": versions,
        "params": {"per_package": per_package, "seed": seed, "min_chars": min_chars, "max_chars": max_chars,
                   "max_tokens": max_tokens},
        "corpus_sha256": corpus_hash(texts, labels),
    }
    return TextTable(name=name, texts=tuple(texts), labels=tuple(labels), sources=tuple(sources),
                     label_set=tuple(sorted(packages)), provenance=provenance)
