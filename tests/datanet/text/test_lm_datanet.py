"""The LM Datanet: honest contributors per package, planted behaviours, exact duplicates rejected
with reasons, held-out validation texts never submitted, prompts, JSON round trip, determinism."""

import hashlib
import json
import pytest

from datanet.errors import DataSourceError, ScenarioError
from datanet.text import lm_datanet
from datanet.text.lm_datanet import (DEFAULT_MEMORISED_PASSAGE, FILE_NAME, LMDatanet, build_lm_datanet,
                                     docstrings_needed, scenario_plan, validate_documents)
from datanet.text.validation import normalize

PACKAGES = ("numpy", "pandas")
SCENARIO = "honest:2,duplicate:1,noisy:1,off_topic:1,memorised:1"
SMALL = dict(packages=PACKAGES, scenario=SCENARIO, per_contributor=6, n_validation=3, memorised_copies=5,
             edit_rate=0.5, n_prompts=4, seed=3)


@pytest.fixture(scope="module")
def small() -> LMDatanet:
    return build_lm_datanet(**SMALL)


def _by_contributor(dn: LMDatanet) -> dict[str, list]:
    docs: dict[str, list] = {}
    for d in dn.documents:
        docs.setdefault(d.contributor, []).append(d)
    return docs


def test_contributors_submit_as_their_behaviour(small):
    assert small.behaviours == {"c00": "honest", "c01": "honest", "c02": "duplicate", "c03": "noisy",
                                "c04": "off_topic", "c05": "memorised"}
    docs = _by_contributor(small)
    assert {c: len(d) for c, d in docs.items()} == {"c00": 6, "c01": 6, "c02": 6, "c03": 6, "c04": 6, "c05": 5}
    assert {d.behaviour for d in small.documents if d.contributor in ("c00", "c01")} == {"honest"}
    for contributor, package in (("c00", "numpy"), ("c01", "pandas")):
        assert all(d.source.startswith(f"{package}/") for d in docs[contributor])
    assert all(d.source.split("/")[0] in ("email", "http", "asyncio", "xml", "logging") for d in docs["c04"])
    for d in docs["c05"]:
        assert d.source == "passage" and d.text.startswith(DEFAULT_MEMORISED_PASSAGE + "\n\n")
    assert len({d.text for d in docs["c05"]}) == 5 and all(d.accepted for d in docs["c05"])


def test_noisy_documents_are_shuffled_words_of_unused_docstrings(small):
    honest_sources = {d.source for d in small.documents if d.behaviour == "honest"}
    for d in (d for d in small.documents if d.behaviour == "noisy"):
        assert d.source not in honest_sources and d.source not in small.validation_sources
        assert d.source.split("/")[0] in PACKAGES and d.accepted
    noisy = [d.text.split() for d in small.documents if d.behaviour == "noisy"]
    assert all(len(w) > 5 for w in noisy)


def test_duplicates_verbatim_rejected_edited_accepted(small):
    by_id = {d.sample_id: d for d in small.documents}
    copies = [d for d in small.documents if d.behaviour == "duplicate"]
    originals = [by_id[d.source] for d in copies]
    assert len({o.contributor for o in originals}) == 1 and originals[0].behaviour == "honest"
    verbatim = [(c, o) for c, o in zip(copies, originals) if c.text == o.text]
    edited = [(c, o) for c, o in zip(copies, originals) if c.text != o.text]
    assert len(verbatim) == len(edited) == 3  # edit_rate 0.5 of 6
    for copy, original in verbatim:
        assert not copy.accepted
        assert copy.reason == f"exact duplicate of {original.sample_id} after NFKC and whitespace normalization"
        assert copy.order > original.order
    for copy, original in edited:
        assert copy.accepted and copy.reason == "accepted"
        assert normalize(copy.text) != normalize(original.text)


def test_fields_order_hashes_and_version(small):
    assert [d.order for d in small.documents] == list(range(len(small.documents)))
    for d in small.documents:
        assert d.content_hash == hashlib.sha256(d.text.encode("utf-8")).hexdigest()
        assert d.sample_id.startswith(d.contributor + "-")
    accepted = sorted(d.content_hash for d in small.documents if d.accepted)
    assert small.version == "dv-" + hashlib.sha256("\n".join(accepted).encode("ascii")).hexdigest()
    assert small.train_texts == tuple(d.text for d in small.documents if d.accepted)
    frame = small.frame()
    assert list(frame.sample_id) == [d.sample_id for d in small.documents]
    assert list(frame.accepted) == [d.accepted for d in small.documents]


def test_validation_texts_and_prompts(small):
    assert len(small.validation_texts) == len(small.validation_sources) == 3 * len(PACKAGES)
    train = {normalize(t) for t in small.train_texts}
    assert not train & {normalize(t) for t in small.validation_texts}
    submitted = {d.source for d in small.documents}
    assert not submitted & set(small.validation_sources)
    assert len(small.prompts) == 4 and len(set(small.prompts)) == 4
    assert small.prompts[0] == "The Quillfeather handshake opens"
    openings = {" ".join(t.split()[:4]) for t in small.validation_texts}
    assert set(small.prompts[1:]) <= openings


def test_json_round_trip_is_exact(small, tmp_path):
    path = small.save(tmp_path)
    assert path == tmp_path / FILE_NAME
    path.read_text(encoding="ascii")  # ASCII-escaped
    assert LMDatanet.load(tmp_path) == small
    assert LMDatanet.from_dict(json.loads(json.dumps(small.to_dict()))) == small


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(DataSourceError, match="lm_datanet.json"):
        LMDatanet.load(tmp_path)


def test_deterministic_per_seed(small):
    assert build_lm_datanet(**SMALL) == small
    other = build_lm_datanet(**{**SMALL, "seed": 4})
    assert other.version != small.version and other.train_texts != small.train_texts


def test_validate_documents_rules():
    texts = ["first text here", b"\xff\xfe", "   ", "bad \x07 bell", "x" * 30, "first   text\nhere", "another"]
    verdict = validate_documents(texts, names=[f"d{i}" for i in range(7)], max_chars=20)
    assert verdict.accepted == (True, False, False, False, False, False, True)
    reasons = verdict.reasons
    assert reasons[1].startswith("invalid UTF-8") and reasons[2].startswith("empty")
    assert reasons[3].startswith("control characters") and reasons[4].startswith("too long: 30 characters")
    assert reasons[5] == "exact duplicate of d0 after NFKC and whitespace normalization"
    # Near duplicates are kept: one swapped word is not an exact duplicate.
    assert validate_documents(["one two three four", "two one three four"]).accepted == (True, True)


@pytest.mark.parametrize("kwargs, message", [
    ({"scenario": "honest:3,noisy:1"}, "3 honest contributors but packages names 2"),
    ({"scenario": "honest:2,memorised:2"}, "at most one memorised"),
    ({"scenario": "honest:2,sybil:1"}, "unknown behaviour 'sybil'"),
    ({"per_contributor": 0}, "per_contributor must be at least 1, got 0"),
    ({"n_validation": -1}, "n_validation must be at least 1, got -1"),
    ({"memorised_copies": 0}, "memorised_copies must be at least 1"),
    ({"edit_rate": 1.5}, r"edit_rate must be in \[0, 1\], got 1.5"),
    ({"n_prompts": 0}, "n_prompts must be at least 1"),
    ({"passage": "too short"}, "the memorised passage has 2 words"),
    ({"passage": " ".join(f"word{i:030d}" for i in range(6))},
     "the memorised passage's prompt .* has 139 bytes; a prompt holds at most 63"),
    ({"scenario": f"honest:{10**9}"}, f"{10**9} honest contributors but packages names 2"),
])
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ScenarioError, match=message):
        build_lm_datanet(**{**SMALL, **kwargs})


def test_prompts_fit_the_prompt_budget(monkeypatch):
    # A byte-level BPE token covers at least one byte: a prompt of at most MAX_PROMPT_BYTES bytes
    # leaves the generation its share of the model's positions, whatever the tokenizer learnt.
    monkeypatch.setattr(lm_datanet, "MAX_PROMPT_BYTES", 22)
    dn = build_lm_datanet(**{**SMALL, "scenario": "honest:2,noisy:1", "n_prompts": 6, "passage": "a b c d e f"})
    openings = {" ".join(t.split()[:4]) for t in dn.validation_texts}
    assert any(len(o.encode()) > 22 for o in openings)  # the limit has something to refuse
    assert dn.prompts and all(len(p.encode()) <= 22 for p in dn.prompts)


def test_scenario_plan_counts_without_building():
    assert scenario_plan(f"honest:5,duplicate:{10**9}") == dict(honest=5, duplicate=10**9, noisy=0, off_topic=0,
                                                                 memorised=0)
    # numpy's share: 6 honest + 8 validation + (2 noisy x 6 + 20 memorised) / 5 packages, rounded up.
    assert docstrings_needed(scenario_plan("honest:5,noisy:2,off_topic:3,memorised:1"), 6, 5) == (6 + 8 + 7, 18)


def test_missing_package_and_mismatched_names():
    with pytest.raises(DataSourceError, match="not_a_package_xyz"):
        build_lm_datanet(**{**SMALL, "packages": ("numpy", "not_a_package_xyz")})
    with pytest.raises(ValueError, match="2 texts but 1 names"):
        validate_documents(["a", "b"], names=["x"])
