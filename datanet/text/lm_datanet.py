"""An LM Datanet: contributors write text documents that a small causal LM is trained on.

Each honest contributor writes the docstrings of one installed package (one contributor per entry
of ``packages``). Planted behaviours beside them (``LM_BEHAVIOURS``):

- ``duplicate``: resubmits all the documents of a seeded honest contributor under its own id, an
  ``edit_rate`` share lightly edited (:func:`~datanet.text.behaviours.light_edit`), the rest
  verbatim. Validators reject the verbatim copies as exact duplicates; the edited copies are
  accepted and share long spans with their originals (span credit must not pay for them twice).
- ``noisy``: docstrings of the same packages with their words shuffled (garbage).
- ``off_topic``: docstrings of standard-library packages (``off_topic_packages``).
- ``memorised``: ``memorised_copies`` documents, each the fixed ``passage`` followed by a short
  varying text (the first line of a distinct docstring), so that exact-duplicate checks keep
  them and a small LM memorises the passage.

Non-copying contributors submit first (in the scenario's order), copiers after, so an original
always precedes its copies; ``order`` is each document's rank in that submission sequence.

Validation (:func:`validate_documents`) applies the single-document rules of
:mod:`datanet.text.validation` (invalid UTF-8, empty, control characters, over ``max_chars``) and
rejects exact duplicates (after NFKC and whitespace normalization) of an earlier accepted
document. Near duplicates are *not* rejected: the edited copies and the memorised passage's
repeats are what span attribution and leave-one-contributor-out retraining must be judged on.

The held-out validation texts come from the same packages and are never submitted; prompts are
the openings of the memorised passage and of validation texts (at most ``MAX_PROMPT_BYTES`` bytes). The behaviour column is planted
ground truth, for judging methods only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datanet.errors import DataSourceError, DatanetError, ScenarioError
from datanet.scenario import COPYING, parse_scenario, scenario_counts
from datanet.text.behaviours import light_edit
from datanet.text.docstrings import OFF_TOPIC_PACKAGES, docstring_corpus
from datanet.text.validation import MAX_CHARS, TextValidation, sample_reason, text_sha256
from datanet.validation import ACCEPTED, Decision, dataset_version

LM_BEHAVIOURS = ("honest", "duplicate", "noisy", "off_topic", "memorised")
DEFAULT_LM_PACKAGES = ("numpy", "pandas", "scipy", "sklearn", "torch")
DEFAULT_LM_SCENARIO = "honest:5,duplicate:1,noisy:1,off_topic:1,memorised:1"
"""One honest contributor per default package and one of each planted behaviour (9 contributors)."""
DEFAULT_MEMORISED_PASSAGE = (
    "The Quillfeather handshake opens every session with three beacons: a lantern frame, a ledger "
    "frame and a silence frame. The lantern frame carries the sender's tide number, the ledger frame "
    "echoes it backwards, and the silence frame waits exactly eleven ticks before either side may "
    "speak. A peer that answers during the silence is marked amber and must repeat the handshake from "
    "the lantern frame, while a peer that never answers is quietly forgotten after forty tides."
)
"""An invented paragraph (80 words) about a fictional protocol: text no installed docstring holds."""
LM_STREAM = 2
"""Mixed into the build's seed so its draws differ from the docstring corpus's (seeded by ``seed``)."""
FILE_NAME = "lm_datanet.json"
N_VALIDATION = 8
"""Default held-out validation texts per package."""
MEMORISED_COPIES = 20
"""Default documents of the memorised contributor."""
MAX_PROMPT_BYTES = 63
"""The longest prompt in UTF-8 bytes. A byte-level BPE token covers at least one byte, so a
prompt takes at most this many tokens (plus its ``eot``) of the model's positions, whatever the
tokenizer learnt; longer openings (URLs, dotted paths) are not used as prompts."""


@dataclass(frozen=True)
class LMDocument:
    """One submitted document and the validators' verdict on it.

    ``content_hash`` is the SHA-256 of the raw UTF-8 text (the exact duplicate check uses the
    normalized :func:`~datanet.text.validation.text_sha256`); ``order`` is the submission rank;
    ``reason`` is ``"accepted"`` or why not; ``behaviour`` and ``source`` (the docstring's
    ``package/path.py:line``, the copied sample id, or ``"passage"``) are planted ground truth.
    """

    sample_id: str
    contributor: str
    behaviour: str
    source: str
    text: str
    content_hash: str
    order: int
    accepted: bool
    reason: str


@dataclass(frozen=True)
class LMDatanet:
    """The documents of an LM Datanet in submission order, held-out texts and generation prompts.

    ``version`` names the accepted set (``dv-`` + SHA-256 of the accepted content hashes, as for
    tabular Datanets); ``behaviours`` maps contributor id -> planted behaviour; ``params`` are the
    build's arguments, ``provenance`` the package versions of the sources.
    """

    name: str
    version: str
    documents: tuple[LMDocument, ...]
    validation_texts: tuple[str, ...]
    validation_sources: tuple[str, ...]
    prompts: tuple[str, ...]
    memorised_passage: str
    behaviours: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> tuple[LMDocument, ...]:
        """The training documents (accepted), in submission order."""
        return tuple(d for d in self.documents if d.accepted)

    @property
    def train_texts(self) -> tuple[str, ...]:
        """Texts of the accepted documents (n_train,), in submission order."""
        return tuple(d.text for d in self.accepted)

    @property
    def train_contributors(self) -> tuple[str, ...]:
        """Contributor of each accepted document (n_train,)."""
        return tuple(d.contributor for d in self.accepted)

    @property
    def contributors(self) -> tuple[str, ...]:
        """Every contributor id, sorted (those with no accepted document too)."""
        return tuple(sorted(self.behaviours))

    @property
    def decisions(self) -> pd.DataFrame:
        """One row per submission, as tabular and text Datanets give it: ``sample_id, contributor,
        accepted, reason, content_hash``."""
        return self.frame()[["sample_id", "contributor", "accepted", "reason", "content_hash"]]

    def frame(self) -> pd.DataFrame:
        """One row per submitted document, the :class:`LMDocument` fields as columns."""
        return pd.DataFrame([asdict(d) for d in self.documents], columns=list(LMDocument.__dataclass_fields__))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it exactly."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMDatanet:
        """The LMDatanet :meth:`to_dict` gave ``data``."""
        return cls(**{**data, "documents": tuple(LMDocument(**d) for d in data["documents"]),
                      "validation_texts": tuple(data["validation_texts"]),
                      "validation_sources": tuple(data["validation_sources"]), "prompts": tuple(data["prompts"])})

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/lm_datanet.json`` (ASCII-escaped JSON) and return its path."""
        path = Path(directory) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="ascii")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LMDatanet:
        """Read the LMDatanet :meth:`save` wrote into ``directory``.

        Raises:
            DataSourceError: no ``lm_datanet.json`` in ``directory``.
        """
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            raise DataSourceError(f"{path}: no LM Datanet file (written by LMDatanet.save)")
        return cls.from_dict(json.loads(path.read_text(encoding="ascii")))


def document_hash(text: str) -> str:
    """SHA-256 (hex) of the raw UTF-8 text: any change to the training text changes it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_documents(texts: Sequence[str | bytes], names: Sequence[str] | None = None,
                       max_chars: int = MAX_CHARS) -> TextValidation:
    """Judge ``texts`` (n,) in order: the single-sample rules of
    :func:`~datanet.text.validation.sample_reason` (without labels), then exact duplicates of an
    earlier accepted text. ``names`` (n,) label texts in duplicate reasons (default
    ``sample <index>``).

    Hand-written rather than :func:`~datanet.text.validation.validate_texts`, which always rejects
    near duplicates too (see the module docstring for why an LM Datanet keeps them).

    Raises:
        ValueError: ``names`` of another length than ``texts``, or ``max_chars`` < 1.
    """
    if names is not None and len(names) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(names)} names: lengths must match")
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    names = list(names) if names is not None else [f"sample {i}" for i in range(len(texts))]
    first_by_hash: dict[str, int] = {}
    reasons = []
    for index, raw in enumerate(texts):
        reason, text = sample_reason(raw, None, {None}, max_chars)
        if not reason:
            digest = text_sha256(text)
            if digest in first_by_hash:
                reason = f"exact duplicate of {names[first_by_hash[digest]]} after NFKC and whitespace normalization"
            else:
                first_by_hash[digest] = index
        reasons.append(reason)
    return TextValidation(accepted=tuple(not r for r in reasons), reasons=tuple(reasons))


def build_lm_datanet(packages: Sequence[str] = DEFAULT_LM_PACKAGES, scenario: str = DEFAULT_LM_SCENARIO,
                     per_contributor: int = 50, n_validation: int = N_VALIDATION, memorised_copies: int = MEMORISED_COPIES,
                     edit_rate: float = 0.5, n_prompts: int = 12, prompt_words: int = 4,
                     passage: str = DEFAULT_MEMORISED_PASSAGE, off_topic_packages: Sequence[str] = OFF_TOPIC_PACKAGES,
                     max_chars: int = MAX_CHARS, seed: int = 0) -> LMDatanet:
    """Build an LM Datanet (see the module docstring) from the installed ``packages``' docstrings.

    Args:
        packages: one honest contributor per package (the scenario's ``honest`` count must match).
        scenario: contributors by behaviour, e.g. ``"honest:5,duplicate:1,noisy:1,off_topic:1,memorised:1"``
            (behaviours from ``LM_BEHAVIOURS``; at most one ``memorised``).
        per_contributor: documents each honest, duplicate, noisy and off-topic contributor submits.
        n_validation: held-out validation texts per package.
        memorised_copies: documents the ``memorised`` contributor submits, each holding ``passage``.
        edit_rate: share of a duplicate contributor's copies lightly edited (the rest verbatim).
        n_prompts: prompts: the passage's opening (when a ``memorised`` contributor exists) and
            openings of seeded distinct validation texts, each at most ``MAX_PROMPT_BYTES`` bytes.
        prompt_words: words in a prompt.
        max_chars: longest document validators accept (and longest docstring drawn).
        seed: all draws; the same arguments and installed packages give the same Datanet.

    Defaults give 420 submissions, 395 accepted documents, 227k characters (63k tokens of a 4,096
    byte-level BPE) of training text and 40 validation texts; about 1.5 s to build.

    Raises:
        ScenarioError: a malformed scenario, an honest count other than ``len(packages)``, more
            than one memorised contributor, or a parameter out of range (named with its value).
        DataSourceError: a package not installed or with too few docstrings.
        DatanetError: validators accepted no document.
    """
    counts = scenario_plan(scenario, packages)
    _check_params(per_contributor, n_validation, memorised_copies, edit_rate, n_prompts, prompt_words, passage)
    behaviours = parse_scenario(scenario, None, LM_BEHAVIOURS)
    rng = np.random.default_rng([seed, LM_STREAM])
    per_package, n_off_topic = docstrings_needed(counts, per_contributor, len(packages), n_validation, memorised_copies)
    corpus = docstring_corpus(packages, per_package=per_package, seed=seed, max_chars=max_chars)
    honest: dict[str, list[tuple[str, str]]] = {}
    validation: list[tuple[str, str]] = []
    spare: list[tuple[str, str]] = []
    for package in packages:
        docs = [(t, s) for t, s, label in zip(corpus.texts, corpus.sources, corpus.labels) if label == package]
        if len(docs) < per_package:
            raise DataSourceError(f"package {package!r} has {len(docs)} docstrings of at most {max_chars} characters; "
                                  f"the LM Datanet needs {per_package} (lower per_contributor or n_validation)")
        drawn = [docs[i] for i in rng.permutation(len(docs))]
        honest[package] = drawn[:per_contributor]
        validation += drawn[per_contributor:per_contributor + n_validation]
        spare += drawn[per_contributor + n_validation:]
    spare = [spare[i] for i in rng.permutation(len(spare))]
    off_topic = _off_topic_docs(off_topic_packages, n_off_topic, seed, max_chars, rng)

    written: dict[str, list[tuple[str, str]]] = {}  # contributor -> (text, source) in submission order
    honest_ids = [c for c, b in behaviours.items() if b == "honest"]
    for contributor, package in zip(honest_ids, packages):
        written[contributor] = honest[package]
    for contributor in (c for c, b in behaviours.items() if b == "noisy"):
        written[contributor] = [(" ".join(rng.permutation(t.split())), s) for t, s in spare[:per_contributor]]
        spare = spare[per_contributor:]
    for contributor in (c for c, b in behaviours.items() if b == "off_topic"):
        written[contributor], off_topic = off_topic[:per_contributor], off_topic[per_contributor:]
    for contributor in (c for c, b in behaviours.items() if b == "memorised"):
        lines = _distinct_first_lines(spare, memorised_copies)
        written[contributor] = [(f"{passage}\n\n{line}", "passage") for line in lines]
    submissions = [(c, behaviours[c], f"{c}-{k:05d}", text, source)
                   for c in behaviours if behaviours[c] not in COPYING for k, (text, source) in enumerate(written[c])]
    for contributor in (c for c, b in behaviours.items() if b in COPYING):
        original = honest_ids[int(rng.integers(len(honest_ids)))]
        copied = [s for s in submissions if s[0] == original]
        edited = set(rng.choice(len(copied), size=round(edit_rate * len(copied)), replace=False).tolist())
        submissions += [(contributor, behaviours[contributor], f"{contributor}-{k:05d}",
                         light_edit(text, rng) if k in edited else text, sample_id)
                        for k, (_, _, sample_id, text, _) in enumerate(copied)]

    verdict = validate_documents([s[3] for s in submissions], [s[2] for s in submissions], max_chars)
    documents = tuple(LMDocument(sample_id, contributor, behaviour, source, text, document_hash(text), order, ok,
                                 reason or ACCEPTED)
                      for order, ((contributor, behaviour, sample_id, text, source), ok, reason)
                      in enumerate(zip(submissions, verdict.accepted, verdict.reasons)))
    if not any(d.accepted for d in documents):
        raise DatanetError(f"validators accepted none of the {len(documents)} LM documents; "
                           f"first reason: {documents[0].reason if documents else 'no documents'}")
    decisions = [Decision(d.sample_id, d.contributor, d.accepted, d.reason, d.content_hash) for d in documents]
    openings = [o for o in dict.fromkeys(" ".join(t.split()[:prompt_words]) for t, _ in validation)
                if len(o.encode("utf-8")) <= MAX_PROMPT_BYTES]
    n_openings = min(len(openings), n_prompts - counts["memorised"])
    prompts = ([" ".join(passage.split()[:prompt_words])] if counts["memorised"] else []) + [
        openings[i] for i in np.sort(rng.choice(len(openings), size=n_openings, replace=False))]
    params = {"packages": list(packages), "scenario": scenario, "per_contributor": per_contributor,
              "n_validation": n_validation, "memorised_copies": memorised_copies, "edit_rate": edit_rate,
              "n_prompts": n_prompts, "prompt_words": prompt_words, "off_topic_packages": list(off_topic_packages),
              "max_chars": max_chars, "seed": seed}
    provenance = {key: corpus.provenance[key] for key in ("versions", "corpus_sha256")}
    return LMDatanet(name="lm-docstrings", version=dataset_version(decisions), documents=documents,
                     validation_texts=tuple(t for t, _ in validation),
                     validation_sources=tuple(s for _, s in validation), prompts=tuple(prompts),
                     memorised_passage=passage, behaviours=behaviours, params=params, provenance=provenance)


def scenario_plan(scenario: str, packages: Sequence[str] = DEFAULT_LM_PACKAGES) -> dict[str, int]:
    """How many contributors of each of ``LM_BEHAVIOURS`` ``scenario`` names (0 for those it
    leaves out); nothing is built per contributor.

    Raises:
        ScenarioError: a malformed scenario, an honest count other than ``len(packages)`` (one
            honest contributor per package), or more than one memorised contributor.
    """
    counts = dict.fromkeys(LM_BEHAVIOURS, 0) | scenario_counts(scenario, None, LM_BEHAVIOURS)
    if counts["honest"] != len(packages):
        raise ScenarioError(f"scenario {scenario!r} has {counts['honest']} honest contributors but packages names "
                            f"{len(packages)} ({list(packages)}): one honest contributor per package")
    if counts["memorised"] > 1:
        raise ScenarioError(f"at most one memorised contributor (they share one passage); scenario {scenario!r} "
                            f"has {counts['memorised']}")
    return counts


def docstrings_needed(counts: dict[str, int], per_contributor: int, n_packages: int, n_validation: int = N_VALIDATION,
                      memorised_copies: int = MEMORISED_COPIES) -> tuple[int, int]:
    """Docstrings a build draws for contributors ``counts`` (:func:`scenario_plan`): from each of
    its ``n_packages`` packages (an honest share, the validation texts and a part of the noisy and
    memorised contributors' material), and from the off-topic packages in all."""
    n_spare = counts["noisy"] * per_contributor + counts["memorised"] * memorised_copies
    return per_contributor + n_validation + math.ceil(n_spare / n_packages), counts["off_topic"] * per_contributor


def _check_params(per_contributor: int, n_validation: int, memorised_copies: int, edit_rate: float, n_prompts: int,
                  prompt_words: int, passage: str) -> None:
    for name, value in (("per_contributor", per_contributor), ("n_validation", n_validation),
                        ("memorised_copies", memorised_copies), ("n_prompts", n_prompts),
                        ("prompt_words", prompt_words)):
        if value < 1:
            raise ScenarioError(f"{name} must be at least 1, got {value}")
    if not 0.0 <= edit_rate <= 1.0:
        raise ScenarioError(f"edit_rate must be in [0, 1], got {edit_rate}")
    if len(passage.split()) <= prompt_words:
        raise ScenarioError(f"the memorised passage has {len(passage.split())} words; it needs more than "
                            f"prompt_words ({prompt_words}) so that a prompt leaves something to reproduce")
    opening = " ".join(passage.split()[:prompt_words])
    if len(opening.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise ScenarioError(f"the memorised passage's prompt {opening!r} has {len(opening.encode('utf-8'))} bytes; "
                            f"a prompt holds at most {MAX_PROMPT_BYTES}")


def _off_topic_docs(packages: Sequence[str], n: int, seed: int, max_chars: int,
                    rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` seeded standard-library docstrings as (text, source), in corpus order (none when n = 0)."""
    if n == 0:
        return []
    corpus = docstring_corpus(packages, per_package=math.ceil(n / len(packages)), seed=seed, max_chars=max_chars,
                              name="off_topic")
    if len(corpus) < n:
        raise DataSourceError(f"off_topic_packages {list(packages)} give {len(corpus)} docstrings; {n} are needed")
    return [(corpus.texts[i], corpus.sources[i]) for i in np.sort(rng.choice(len(corpus), size=n, replace=False))]


def _distinct_first_lines(docs: Sequence[tuple[str, str]], n: int) -> list[str]:
    """The first ``n`` distinct first lines of ``docs`` (the memorised copies' varying text)."""
    lines = list(dict.fromkeys(text.split("\n", 1)[0].strip() for text, _ in docs))
    if len(lines) < n:
        raise DataSourceError(f"only {len(lines)} distinct docstring first lines are left for {n} memorised copies; "
                              f"lower memorised_copies or raise per_contributor")
    return lines[:n]
