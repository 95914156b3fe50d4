"""The docstring corpus: parsed from source in a fixed order, labelled by package, hashed."""

import hashlib
import json
import textwrap
from collections import Counter

import pytest

from datanet.errors import DataSourceError
from datanet.text.docstrings import docstring_corpus
from datanet.text.validation import validate_texts

ALPHA_INIT = '''
"""Alpha computes things with arrays and returns them to the caller, always in order."""
'''
ALPHA_CORE = '''
"""Core module of alpha: the place where the main routines live, long enough to keep."""


class Solver:
    """A solver that runs an iterative method until the residual falls below a tolerance."""

    def step(self):
        """Short."""


def helper(x):
    """Return x unchanged; this helper exists to show that functions are read in order."""
    return x
'''
BETA_INIT = '''
"""Beta draws figures: lines, bars and scatter plots, with labelled axes and a legend."""


def plot(y):
    """Plot the values of y against their index and return the axes that hold the line."""
'''


def _install(root, name, version, files):
    package = root / name
    package.mkdir()
    for rel, source in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    _install(tmp_path, "alphapkg", "1.2.3", {"__init__.py": ALPHA_INIT, "core.py": ALPHA_CORE,
                                             "tests/test_core.py": '"""A test module docstring that must be skipped by the reader."""'})
    _install(tmp_path, "betapkg", "0.9", {"__init__.py": BETA_INIT})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_reads_module_class_and_function_docstrings_in_file_then_source_order(fake_packages):
    corpus = docstring_corpus(("alphapkg", "betapkg"), per_package=100, min_chars=40)
    assert corpus.texts == (
        "Alpha computes things with arrays and returns them to the caller, always in order.",
        "Core module of alpha: the place where the main routines live, long enough to keep.",
        "A solver that runs an iterative method until the residual falls below a tolerance.",
        "Return x unchanged; this helper exists to show that functions are read in order.",
        "Beta draws figures: lines, bars and scatter plots, with labelled axes and a legend.",
        "Plot the values of y against their index and return the axes that hold the line.",
    )
    assert corpus.labels == ("alphapkg",) * 4 + ("betapkg",) * 2
    assert corpus.sources[0] == "alphapkg/__init__.py:2"
    assert corpus.sources[2] == "alphapkg/core.py:5"
    assert corpus.label_set == ("alphapkg", "betapkg")
    assert corpus.provenance["versions"] == {"alphapkg": "1.2.3", "betapkg": "0.9"}
    pairs = json.dumps([[t, lab] for t, lab in zip(corpus.texts, corpus.labels)], ensure_ascii=False,
                       separators=(",", ":"))
    assert corpus.provenance["corpus_sha256"] == hashlib.sha256(pairs.encode()).hexdigest()


def test_same_build_same_hash_and_an_edited_docstring_changes_it(fake_packages):
    first = docstring_corpus(("alphapkg", "betapkg"), min_chars=40)
    second = docstring_corpus(("alphapkg", "betapkg"), min_chars=40)
    assert first.provenance["corpus_sha256"] == second.provenance["corpus_sha256"]
    (fake_packages / "betapkg" / "__init__.py").write_text(BETA_INIT.replace("scatter", "pie"))
    third = docstring_corpus(("alphapkg", "betapkg"), min_chars=40)
    assert third.provenance["corpus_sha256"] != first.provenance["corpus_sha256"]


def test_per_package_cap_is_a_seeded_subsample_kept_in_source_order(fake_packages):
    full = docstring_corpus(("alphapkg", "betapkg"), min_chars=40)
    capped = [docstring_corpus(("alphapkg", "betapkg"), per_package=2, seed=s, min_chars=40) for s in range(6)]
    assert capped[0].texts == docstring_corpus(("alphapkg", "betapkg"), per_package=2, seed=0, min_chars=40).texts
    for corpus in capped:
        assert Counter(corpus.labels) == {"alphapkg": 2, "betapkg": 2}
        positions = [full.texts.index(t) for t in corpus.texts]
        assert positions == sorted(positions)
    assert len({c.texts for c in capped}) > 1  # the seed matters


def test_exact_and_near_duplicate_docstrings_are_kept_once(fake_packages):
    near_copy = ('def f():\n    """Alpha  computes things with arrays and returns them to the caller, '
                 'always in the order."""\n')
    (fake_packages / "betapkg" / "copy.py").write_text(ALPHA_CORE + "\n\n" + near_copy)
    corpus = docstring_corpus(("alphapkg", "betapkg"), min_chars=40)
    assert corpus.labels.count("alphapkg") == 4
    assert corpus.labels.count("betapkg") == 2  # betapkg/copy.py repeats alpha's docstrings: none kept


def test_min_chars_filters_short_docstrings(fake_packages):
    corpus = docstring_corpus(("alphapkg", "betapkg"), min_chars=5)
    assert "Short." in corpus.texts
    assert "Short." not in docstring_corpus(("alphapkg", "betapkg"), min_chars=40).texts


def test_a_missing_package_is_an_error_naming_it(fake_packages):
    with pytest.raises(DataSourceError, match="no_such_pkg_xyz"):
        docstring_corpus(("alphapkg", "no_such_pkg_xyz"))
    with pytest.raises(DataSourceError, match="at least 2"):
        docstring_corpus(("alphapkg",))


@pytest.mark.slow
def test_default_corpus_is_deterministic_and_about_1500_samples():
    first = docstring_corpus()
    second = docstring_corpus()
    assert first.provenance["corpus_sha256"] == second.provenance["corpus_sha256"]
    assert 1400 <= len(first) <= 1600
    assert set(first.labels) == {"numpy", "pandas", "scipy", "sklearn", "torch", "matplotlib", "transformers"}
    assert all(80 <= len(t) <= 2000 for t in first.texts)
    assert all(validate_texts(first.texts, first.labels, first.label_set).accepted)
