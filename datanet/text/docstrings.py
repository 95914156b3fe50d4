"""A real, offline text corpus: the docstrings of installed Python packages, labelled by package.

Source files are parsed with :mod:`ast`, never imported (importing runs code and makes reprs
depend on memory addresses and ``PYTHONHASHSEED``), so a build is deterministic for a given set
of installed versions: files in sorted relative-path order, docstrings in source order (module,
then classes and functions as they appear), then a seeded subsample per package.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datanet.errors import DataSourceError
from datanet.text.table import TextTable, corpus_hash
from datanet.text.validation import validate_texts

DEFAULT_PACKAGES = ("numpy", "pandas", "scipy", "sklearn", "torch", "matplotlib", "transformers")
# Import name -> distribution name, where they differ (for the recorded version).
DISTRIBUTIONS = {"sklearn": "scikit-learn"}
SKIPPED_DIRS = frozenset({"tests", "test", "testing", "_vendor", "vendored"})
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def package_root(package: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(package) if "." not in package else None
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(f"package {package!r} is not installed (or is not a package directory); "
                              f"install it or leave it out of packages")
    return Path(next(iter(spec.submodule_search_locations)))


def package_version(package: str) -> str:
    distribution = DISTRIBUTIONS.get(package, package)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataSourceError(f"package {package!r} has no installed distribution {distribution!r} "
                              f"to read its version from") from exc


def package_docstrings(package: str, min_chars: int = 80, max_chars: int = 2000) -> list[tuple[str, str]]:
    """Every docstring of ``package`` as (text, source) pairs, source = ``package/rel/path.py:line``.

    Texts are cleaned with :func:`inspect.cleandoc` and kept when ``min_chars <= len <= max_chars``.
    Files under test or vendored directories and files that do not parse are skipped.
    """
    root = package_root(package)
    files = sorted((p for p in root.rglob("*.py") if not SKIPPED_DIRS & set(p.relative_to(root).parts[:-1])),
                   key=lambda p: p.relative_to(root).as_posix())
    found: list[tuple[str, str]] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # invalid escapes in old sources
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = [tree] + sorted((n for n in ast.walk(tree) if isinstance(n, _DOCUMENTED[1:])),
                                key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:
            doc = ast.get_docstring(node, clean=False)
            if not doc:
                continue
            text = inspect.cleandoc(doc)
            if min_chars <= len(text) <= max_chars:
                line = node.body[0].lineno if isinstance(node, ast.Module) else node.lineno
                found.append((text, f"{package}/{rel}:{line}"))
    return found


def docstring_corpus(packages: Sequence[str] = DEFAULT_PACKAGES, per_package: int = 220, seed: int = 0,
                     min_chars: int = 80, max_chars: int = 2000) -> TextTable:
    """A corpus of up to ``per_package`` docstrings from each package, labelled by package name.

    Exact and near duplicates (:func:`~datanet.text.validation.validate_texts` with its defaults,
    over all packages in the given order) are dropped before sampling, so an honest contributor's
    share of the corpus is never rejected as a copy.

    Each package's docstrings are subsampled with ``numpy.random.default_rng(seed)`` (a package
    with fewer keeps all) and stay in source order; a package's generator is seeded by ``seed`` and
    its name. The default (7 packages × 220) is 1,540 samples. ``provenance`` holds the package versions, the parameters and the corpus hash.

    Raises:
        DataSourceError: a package not installed, fewer than 2 packages, or a package with no
            docstring in the length range.
    """
    if len(set(packages)) < 2 or len(set(packages)) != len(packages):
        raise DataSourceError(f"packages must name at least 2 distinct packages, got {list(packages)}")
    if per_package < 1:
        raise DataSourceError(f"per_package must be at least 1, got {per_package}")
    versions = {package: package_version(package) for package in packages}
    found = {package: package_docstrings(package, min_chars, max_chars) for package in packages}
    for package, docs in found.items():
        if not docs:
            raise DataSourceError(f"package {package!r} has no docstring of {min_chars}–{max_chars} characters")
    # Drop exact and near duplicates (the first occurrence stays) so the corpus passes text validation.
    everything = [(package, text, source) for package in packages for text, source in found[package]]
    verdict = validate_texts([t for _, t, _ in everything], [p for p, _, _ in everything], packages,
                             max_chars=max_chars)
    texts: list[str] = []
    labels: list[str] = []
    sources: list[str] = []
    for package in packages:
        kept = [(t, src) for (p, t, src), ok in zip(everything, verdict.accepted) if ok and p == package]
        rng = np.random.default_rng([seed, zlib.crc32(package.encode())])
        keep = range(len(kept)) if len(kept) <= per_package else np.sort(
            rng.choice(len(kept), size=per_package, replace=False))
        for i in keep:
            texts.append(kept[i][0])
            labels.append(package)
            sources.append(kept[i][1])
    provenance = {
        "kind": "docstrings",
        "versions": versions,
        "params": {"per_package": per_package, "seed": seed, "min_chars": min_chars, "max_chars": max_chars},
        "corpus_sha256": corpus_hash(texts, labels),
    }
    return TextTable(name="docstrings", texts=tuple(texts), labels=tuple(labels), sources=tuple(sources),
                     label_set=tuple(sorted(packages)), provenance=provenance)
